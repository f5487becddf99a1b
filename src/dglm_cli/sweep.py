"""Sweeps: one attribute generated and scored over a grid of guidance scales × steer strengths. No printing here.

Every point of the grid uses the same prompts and per-record seeds, so points differ only in guidance and
steer. A sweep writes records.jsonl (the scored records, each with a "sweep" field {"scale", "steer"}),
sweep.csv (one row per point), summary.json (the scoring summary grouped by point, plus the rows) and
sweep.png (the attribute rate against perplexity). Used by `dglm sweep`:

    points = grid(GenerationSettings(num_samples=4), scales=[0, 2, 5], steers=[None])
    prepared = prepare(Pipeline.from_bundle("default"), "positive", points)
    result = prepared.run(read_prompts("prompts.txt"), Path("sweep"))
"""

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dglm_cli import scoring, strict_json
from dglm_cli.errors import InputError
from dglm_cli.files import atomic_file, write_json
from dglm_cli.pipeline import AttributeTarget, GenerationSettings, Pipeline
from dglm_cli.records import Prompt

CSV_COLUMNS = [
    "scale", "steer", "records", "empty", "judge", "rate", "rate_low", "rate_high", "guide_rate", "guide_low", "guide_high",
    "agreement", "ppl_mean", "ppl_median", "distinct_1", "distinct_2", "distinct_3", "repetition", "mean_length", "seconds",
]


@dataclass
class Grid:
    """The settings of every point: `base` at each scale × steer strength, steer-major."""

    base: GenerationSettings
    points: list[GenerationSettings]


def grid(base: GenerationSettings, scales: Sequence[float], steers: Sequence[float | None]) -> Grid:
    """Every point validated (a bad setting fails before any loading). A steer of None is the bundle's own."""
    points = [replace(base, guidance_scale=scale, steer=strength) for strength in steers for scale in scales]
    for point in points:
        point.validate()
    return Grid(base, points)


@dataclass
class SweepResult:
    rows: list[dict]  # one per point, keyed by CSV_COLUMNS
    summary: dict  # scoring.Evaluation's summary grouped by "sweep", with attribute, judge and settings
    out_dir: Path

    @property
    def csv(self) -> Path:
        return self.out_dir / "sweep.csv"

    @property
    def plot(self) -> Path:
        return self.out_dir / "sweep.png"


@dataclass
class Sweep:
    """A sweep ready to run: the pipeline, the resolved attribute, the grid, the loaded scorers and the judge."""

    pipeline: Pipeline
    attr: str
    target: AttributeTarget
    grid: Grid
    strengths: list[float]  # the steer strength each point uses
    scorers: scoring.Scoring
    judge: str
    judge_warning: str | None = None  # set when no independent scorer knows the label

    @property
    def attribute(self) -> str:
        return f"{self.target.name}:{self.target.label}"

    @property
    def guide(self) -> str:
        return guide_name(self.target)

    def run(self, prompts: Sequence[Prompt], out_dir: Path, max_disagreement: float = scoring.MAX_DISAGREEMENT,
            on_progress: Callable[[int], None] | None = None) -> SweepResult:
        """Generate and score every point, then write records.jsonl, sweep.csv, summary.json and sweep.png."""
        base = self.grid.base
        evaluation = scoring.Evaluation("sweep", max_disagreement)  # one group per point
        seconds = []
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(out_dir / "records.jsonl", "w", encoding="utf-8") as records_file:
            for point, strength in zip(self.grid.points, self.strengths):
                started = time.perf_counter()
                records = list(self.pipeline.generate(prompts, [self.attr], [], point, on_progress=on_progress))
                seconds.append(time.perf_counter() - started)
                for record in records:
                    record["sweep"] = {"scale": point.guidance_scale, "steer": strength}
                batch = [scoring.Item(i, r, r["prompt"], r["continuation"]) for i, r in enumerate(records, 1)]
                scoring.run(batch, self.scorers, evaluation, base.batch_size, lambda r: records_file.write(strict_json.jsonl_line(r)))
        summary = evaluation.summary(self.scorers.info(), self.scorers.labelers, attribute=self.attribute, judge=self.judge, settings=vars(base))
        label = self.target.label
        rows = [sweep_row(group["key"], group, self.judge, self.guide, label, took) for group, took in zip(summary["groups"], seconds)]
        write_outputs(out_dir, rows, summary, self.attribute, self.judge)
        return SweepResult(rows, summary, out_dir)


def prepare(pipeline: Pipeline, attr: str, settings: Grid, ppl_model: str | None = None, no_ppl: bool = False,
            scorer_specs: Sequence[str] = (), judge: str | None = None) -> Sweep:
    """Resolve the attribute and the steer of every point, load the scorers and pick the judge.

    An unknown attribute, a steer the bundle lacks or a bad --judge fails here, before any generation.
    """
    target = pipeline.targets([attr])[0]
    strengths = [pipeline.steer_strength(point) for point in settings.points]
    scorers = load_scorers(pipeline, target, ppl_model, no_ppl, scorer_specs, settings.base.batch_size)
    chosen, warning = pick_judge(scorers, judge, guide_name(target), target.label)
    return Sweep(pipeline, attr, target, settings, strengths, scorers, chosen, warning)


def guide_name(target: AttributeTarget) -> str:
    """The guiding classifier's scorer name."""
    return f"clf:{target.name}"


def load_scorers(pipeline: Pipeline, target: AttributeTarget, ppl_model: str | None, no_ppl: bool, specs: Sequence[str],
                 batch_size: int) -> scoring.Scoring:
    """Perplexity, the guiding classifier and the bundle's others, any Hugging Face scorers, VADER."""
    bundle = pipeline.bundle
    perplexity = None if no_ppl else scoring.load_perplexity_scorer(scoring.ppl_reference(ppl_model), pipeline.device, batch_size)
    classifiers = {**bundle.classifiers, target.name: target.classifier}
    hashes = bundle.manifest.get("files", {})
    guides = [
        scoring.ClassifierScorer(name, c, bundle.encoder, f"{bundle.path}/classifiers/{name}", hashes.get(f"classifiers/{name}/model.safetensors"))
        for name, c in classifiers.items()
    ]
    hf = [scoring.load_hf_scorer(spec, pipeline.device, batch_size) for spec in specs]
    return scoring.Scoring(perplexity, [*guides, *hf, scoring.VaderScorer()])


def pick_judge(scorers: scoring.Scoring, requested: str | None, guide: str, label: str) -> tuple[str, str | None]:
    """The scorer that decides the plotted attribute rate (independent of the guidance when possible), and a
    warning when only the guiding classifier knows the label."""
    names = [s.name for s in scorers.labelers]
    if requested is not None:
        chosen = next((s for s in scorers.labelers if s.name == requested), None)
        if chosen is None:
            raise InputError(f"--judge {requested!r} is not one of the scorers: {', '.join(names)}")
        if not scoring.matching_label(chosen.labels, label):
            raise InputError(f"--judge {requested} has no label {label!r} (its labels: {', '.join(chosen.labels)})")
        return requested, None
    for s in scorers.labelers:
        if s.independent and scoring.matching_label(s.labels, label):
            return s.name, None
    return guide, f"no independent scorer knows the label {label!r}; the rate is judged by the guiding classifier itself"


def sweep_row(point: dict, group: dict, judge: str, guide: str, label: str, seconds: float) -> dict:
    """One CSV row from a group of the summary; `point` is the group's key, the records' "sweep" field."""

    def rate(scorer: str) -> dict:
        rates = group["attributes"].get(scorer, {})
        own = scoring.matching_label(list(rates), label)
        return rates[own] if own else {"rate": None, "low": None, "high": None}

    judged, guided = rate(judge), rate(guide)
    agreement = group["agreement"].get(judge, {}).get("share") if judge != guide else None
    return {
        "scale": point["scale"], "steer": point["steer"], "records": group["records"], "empty": group["empty"], "judge": judge,
        "rate": judged["rate"], "rate_low": judged["low"], "rate_high": judged["high"],
        "guide_rate": guided["rate"], "guide_low": guided["low"], "guide_high": guided["high"], "agreement": agreement,
        "ppl_mean": group["perplexity"]["mean"], "ppl_median": group["perplexity"]["median"],
        "distinct_1": group["distinct_1"], "distinct_2": group["distinct_2"], "distinct_3": group["distinct_3"],
        "repetition": group["repetition"], "mean_length": group["mean_length"], "seconds": round(seconds, 3),
    }


def write_outputs(out_dir: Path, rows: list[dict], summary: dict, attribute: str, judge: str) -> None:
    """sweep.csv, summary.json (the summary with the rows) and sweep.png, each renamed into place when complete."""
    with atomic_file(out_dir / "sweep.csv", "w", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    write_json(out_dir / "summary.json", strict_json.finite({**summary, "rows": rows}))
    plot_tradeoff(rows, out_dir / "sweep.png", attribute, judge, _ppl_model_name(summary))


def _ppl_model_name(summary: dict) -> str | None:
    return next((s.get("model") for s in summary["scorers"] if s["name"] == "perplexity"), None)


def plot_tradeoff(rows: list[dict], path: Path, attribute: str, judge: str, ppl_model: str | None) -> None:
    """Attribute rate (with its 95% interval) against perplexity, one point per scale; s=0 starred."""
    from matplotlib.figure import Figure

    with_ppl = ppl_model is not None and any(r["ppl_mean"] is not None for r in rows)
    points = [r for r in rows if r["rate"] is not None and (not with_ppl or r["ppl_mean"] is not None)]
    xs = [r["ppl_mean"] if with_ppl else r["scale"] for r in points]
    ys = [r["rate"] for r in points]
    errors = [[r["rate"] - r["rate_low"] for r in points], [r["rate_high"] - r["rate"] for r in points]]
    figure = Figure(figsize=(6.4, 4.8), dpi=110)
    ax = figure.subplots()
    ax.errorbar(xs, ys, yerr=errors, fmt="o-", color="tab:blue", ecolor="0.6", capsize=3, label="one point per scale (95% CI)")
    steered = len({r["steer"] for r in points}) > 1
    for x, y, r in zip(xs, ys, points):
        ax.annotate(f"s={r['scale']:g}" + (f", steer {r['steer']:g}" if steered else ""), (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    unguided = [(x, y) for x, y, r in zip(xs, ys, points) if r["scale"] == 0]
    if unguided:
        ax.scatter(*zip(*unguided), marker="*", s=260, color="tab:red", zorder=3, label="unguided (s=0)")
    ax.set_xlabel(f"perplexity (mean, {ppl_model})" if with_ppl else "guidance scale")
    ax.set_ylabel(f"rate of {attribute.split(':')[-1]!r} by {judge}")
    ax.set_ylim(-0.03, 1.03)
    ax.margins(x=0.1)  # room for the s=… labels
    ax.set_title(f"dglm sweep: {attribute}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    figure.tight_layout()
    with atomic_file(path, "wb") as f:
        figure.savefig(f, format="png")
