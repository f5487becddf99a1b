"""`dglm sweep`: generate and score at several guidance scales; a CSV, a plot and a table of the trade-off."""

import csv
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from dglm_cli import strict_json
from dglm_cli.cli._common import progress, quiet_libraries, stderr, user_errors
from dglm_cli.cli._options import (
    PROMPTS_FILE_HELP,
    BundleName,
    Cfg,
    DecoderCfg,
    Device,
    MaxDisagreement,
    MaxNewTokens,
    McSamples,
    PplModel,
    Quiet,
    Sampler,
    Steps,
    TopP,
)

CSV_COLUMNS = [
    "scale", "records", "empty", "judge", "rate", "rate_low", "rate_high", "guide_rate", "guide_low", "guide_high",
    "agreement", "ppl_mean", "ppl_median", "distinct_1", "distinct_2", "distinct_3", "repetition", "mean_length", "seconds",
]


@user_errors
def sweep(
    prompts: Annotated[str, typer.Option(help=PROMPTS_FILE_HELP)],
    attr: Annotated[str, typer.Option("--attr", "-a", help="The attribute to steer toward: LABEL or CLASSIFIER:LABEL.")],
    scales: Annotated[str, typer.Option(help="Comma-separated guidance scales; 0 (unguided) is always included.")] = "0,2,5,7,10",
    bundle: BundleName = "default",
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="Samples per prompt and scale.")] = 4,
    steps: Steps = 20,
    sampler: Sampler = "ddpm",
    cfg: Cfg = 1.0,
    decoder_cfg: DecoderCfg = 1.0,
    mc_samples: McSamples = 32,
    max_new_tokens: MaxNewTokens = 32,
    top_p: TopP = 0.9,
    seed: Annotated[int, typer.Option(help="Base seed; every scale uses the same per-record seeds.")] = 0,
    ppl_model: PplModel = None,
    no_ppl: Annotated[bool, typer.Option("--no-ppl", help="Skip perplexity (the plot then shows the rate against the scale).")] = False,
    scorer: Annotated[list[str], typer.Option("--scorer", "-s", help="An independent scorer: hf:PATH_OR_ID (repeatable). VADER is always on.")] = [],
    judge: Annotated[str | None, typer.Option(help="Scorer whose rate is plotted (default: the first independent scorer that knows the label).")] = None,
    max_disagreement: MaxDisagreement = 0.25,
    out_dir: Annotated[Path, typer.Option(help="Directory for sweep.csv, sweep.png, summary.json and records.jsonl.")] = Path("sweep"),
    batch_size: Annotated[int, typer.Option(help="Records generated and scored together.")] = 16,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Trade-off of one attribute across guidance scales: attribute rate against perplexity and diversity.

    Every scale uses the same prompts and per-record seeds, so the scales differ only in guidance.

    Example:

      dglm sweep --prompts prompts.txt --attr positive --scales 0,1,2,5,10 -n 8 --out-dir sweep-positive
    """
    from dglm_cli.errors import InputError

    scale_list = _parse_scales(scales)
    if not 0 <= max_disagreement <= 1:
        raise InputError("--max-disagreement must be between 0 and 1")
    quiet_libraries()
    from dglm_cli import scoring
    from dglm_cli.cli.generate import _bundle_name
    from dglm_cli.pipeline import GenerationSettings, Pipeline
    from dglm_cli.records import read_prompts

    items = read_prompts(prompts)
    base = GenerationSettings(
        num_samples=num_samples, steps=steps, sampler=sampler, cfg=cfg, decoder_cfg=decoder_cfg, mc_samples=mc_samples,
        max_new_tokens=max_new_tokens, top_p=top_p, seed=seed, batch_size=batch_size,
    )
    base.validate()
    with stderr.status("loading bundle and scorers", spinner="dots") if not quiet else nullcontext():
        pipeline = Pipeline.from_bundle(_bundle_name(bundle), device)
        target = pipeline.targets([attr])[0]  # an unknown attribute fails here, before any work
        scorers = _scorers(scoring, pipeline, target, ppl_model, no_ppl, scorer, batch_size)
    guide = f"clf:{target.name}"
    judge = _judge(scoring, scorers, judge, guide, target.label)
    evaluation = scoring.Evaluation("guidance.scale", max_disagreement)
    seconds = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    with _atomic_text(out_dir / "records.jsonl") as records_file, progress(quiet) as bar:
        task = bar.add_task("generating", total=len(scale_list) * len(items) * num_samples)
        for scale in scale_list:
            started = time.perf_counter()
            records = list(pipeline.generate(items, [attr], [], replace(base, guidance_scale=scale), on_progress=lambda n: bar.advance(task, n)))
            seconds[scale] = time.perf_counter() - started
            batch = [scoring.Item(i, r, r["prompt"], r["continuation"]) for i, r in enumerate(records, 1)]
            scoring.run(batch, scorers, evaluation, batch_size, lambda r: records_file.write(strict_json.dumps(strict_json.finite(r)) + "\n"))
    summary = evaluation.summary(scorers.info(), scorers.labelers, attribute=f"{target.name}:{target.label}", judge=judge, settings=vars(base))
    by_scale = {group["key"]: group for group in summary["groups"]}
    rows = [_row(scale, by_scale[scale], judge, guide, target.label, seconds[scale]) for scale in scale_list]
    _write_outputs(out_dir, rows, summary, f"{target.name}:{target.label}", judge)
    stderr.print(_table(rows, f"{target.name}:{target.label}", judge))
    for warning in summary["warnings"]:
        stderr.print(f"warning: {warning}", style="yellow", markup=False)
    typer.echo(str(out_dir / "sweep.csv"))
    typer.echo(str(out_dir / "sweep.png"))


def _parse_scales(text: str) -> list[float]:
    from dglm_cli.errors import InputError
    from dglm_cli.validation import RULES, is_number, number

    parts = [part for part in text.split(",") if part.strip()]
    if not all(is_number(part) for part in parts):
        raise InputError(f"--scales {text!r}: expected comma-separated numbers such as 0,1,2,5,10")
    values = [number(part, "--scales", RULES["guidance"]) for part in parts]
    return sorted({0.0, *values})


def _scorers(scoring, pipeline, target, ppl_model, no_ppl, specs, batch_size):
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


def _judge(scoring, scorers, requested: str | None, guide: str, label: str) -> str:
    """The scorer that decides the plotted attribute rate: independent of the guidance when possible."""
    from dglm_cli.errors import InputError

    names = [s.name for s in scorers.labelers]
    if requested is not None:
        chosen = next((s for s in scorers.labelers if s.name == requested), None)
        if chosen is None:
            raise InputError(f"--judge {requested!r} is not one of the scorers: {', '.join(names)}")
        if not scoring.matching_label(chosen.labels, label):
            raise InputError(f"--judge {requested} has no label {label!r} (its labels: {', '.join(chosen.labels)})")
        return requested
    for s in scorers.labelers:
        if s.independent and scoring.matching_label(s.labels, label):
            return s.name
    stderr.print(f"warning: no independent scorer knows the label {label!r}; the rate is judged by the guiding classifier itself", style="yellow", markup=False)
    return guide


def _row(scale: float, group: dict, judge: str, guide: str, label: str, seconds: float) -> dict:
    def rate(scorer: str) -> dict:
        rates = group["attributes"].get(scorer, {})
        own = next((k for k in rates if k.lower() == label.lower()), None)
        return rates[own] if own else {"rate": None, "low": None, "high": None}

    judged, guided = rate(judge), rate(guide)
    agreement = group["agreement"].get(judge, {}).get("share") if judge != guide else None
    return {
        "scale": scale, "records": group["records"], "empty": group["empty"], "judge": judge,
        "rate": judged["rate"], "rate_low": judged["low"], "rate_high": judged["high"],
        "guide_rate": guided["rate"], "guide_low": guided["low"], "guide_high": guided["high"], "agreement": agreement,
        "ppl_mean": group["perplexity"]["mean"], "ppl_median": group["perplexity"]["median"],
        "distinct_1": group["distinct_1"], "distinct_2": group["distinct_2"], "distinct_3": group["distinct_3"],
        "repetition": group["repetition"], "mean_length": group["mean_length"], "seconds": round(seconds, 3),
    }


def _write_outputs(out_dir: Path, rows: list[dict], summary: dict, attribute: str, judge: str) -> None:
    with _atomic_text(out_dir / "sweep.csv") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    with _atomic_text(out_dir / "summary.json") as f:
        f.write(strict_json.dumps(strict_json.finite({**summary, "rows": rows}), indent=2))
        f.write("\n")
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
    for x, y, r in zip(xs, ys, points):
        ax.annotate(f"s={r['scale']:g}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
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
    with _atomic_binary(path) as f:
        figure.savefig(f, format="png")


def _table(rows: list[dict], attribute: str, judge: str):
    from rich import box
    from rich.table import Table

    table = Table(title=f"dglm sweep: {attribute}, rate judged by {judge}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("scale", "n", "rate", "95% CI", "guide", "agree", "ppl", "dist-2", "rep", "sec"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in rows:
        interval = "-" if r["rate"] is None else f"{r['rate_low']:.2f}–{r['rate_high']:.2f}"
        table.add_row(
            f"{r['scale']:g}", str(r["records"]), _number(r["rate"]), interval, _number(r["guide_rate"]),
            _number(r["agreement"]), _number(r["ppl_mean"], 1), _number(r["distinct_2"]),
            _number(r["repetition"]), f"{r['seconds']:.0f}",
        )
    return table


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class _atomic_text:
    """A text file written to a temporary sibling and renamed into place on success."""

    mode = "w"

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        kwargs = {"encoding": "utf-8"} if "b" not in self.mode else {}
        self.file = tempfile.NamedTemporaryFile(self.mode, dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp", delete=False, **kwargs)
        return self.file

    def __exit__(self, kind, *exc):
        self.file.close()
        if kind is None:
            os.replace(self.file.name, self.path)
        else:
            os.unlink(self.file.name)
        return False


class _atomic_binary(_atomic_text):
    mode = "wb"

