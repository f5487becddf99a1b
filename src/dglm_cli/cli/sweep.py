"""`dglm sweep`: options, the table and the paths; the sweep itself is dglm_cli.sweep."""

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from dglm_cli.cli._common import bundle_name, progress, quiet_libraries, stderr, user_errors
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
    Steer,
    Steps,
    TopP,
)


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
    steer: Steer = None,
    steers: Annotated[str | None, typer.Option(help="Comma-separated strengths of the bundle's latent steer, each swept at every scale (default: --steer alone).")] = None,
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
    """Trade-off of one attribute across guidance scales (and steer strengths): attribute rate against
    perplexity and diversity.

    Every point uses the same prompts and per-record seeds, so the points differ only in guidance and steer.

    Examples:

      dglm sweep --prompts prompts.txt --attr positive --scales 0,1,2,5,10 -n 8 --out-dir sweep-positive

      dglm sweep --prompts prompts.txt --attr positive --scales 5 --steers 0,0.5,1,2 --out-dir steer-positive
    """
    from dglm_cli.errors import InputError

    scale_list = _parse_scales(scales)
    steer_list = [steer] if steers is None else _parse_numbers(steers, "--steers", "steer")
    if not 0 <= max_disagreement <= 1:
        raise InputError("--max-disagreement must be between 0 and 1")
    quiet_libraries()
    from dglm_cli import sweep as sweeps
    from dglm_cli.pipeline import GenerationSettings, Pipeline
    from dglm_cli.records import read_prompts

    items = read_prompts(prompts)
    base = GenerationSettings(
        num_samples=num_samples, steps=steps, sampler=sampler, cfg=cfg, decoder_cfg=decoder_cfg, mc_samples=mc_samples,
        max_new_tokens=max_new_tokens, top_p=top_p, seed=seed, batch_size=batch_size,
    )
    grid = sweeps.grid(base, scale_list, steer_list)
    with stderr.status("loading bundle and scorers", spinner="dots") if not quiet else nullcontext():
        pipeline = Pipeline.from_bundle(bundle_name(bundle), device)
        prepared = sweeps.prepare(pipeline, attr, grid, ppl_model, no_ppl, scorer, judge)
    if prepared.judge_warning:
        stderr.print(f"warning: {prepared.judge_warning}", style="yellow", markup=False)
    with progress(quiet) as bar:
        task = bar.add_task("generating", total=len(grid.points) * len(items) * num_samples)
        result = prepared.run(items, out_dir, max_disagreement, on_progress=lambda n: bar.advance(task, n))
    stderr.print(_table(result.rows, prepared.attribute, prepared.judge))
    for warning in result.summary["warnings"]:
        stderr.print(f"warning: {warning}", style="yellow", markup=False)
    typer.echo(str(result.csv))
    typer.echo(str(result.plot))


def _parse_scales(text: str) -> list[float]:
    return sorted({0.0, *_parse_numbers(text, "--scales", "guidance")})


def _parse_numbers(text: str, option: str, rule: str) -> list[float]:
    """Comma-separated numbers, each checked by the validation rule of one value (finite, in range), in the
    order given, without repeats."""
    from dglm_cli.errors import InputError
    from dglm_cli.validation import RULES, is_number, number

    parts = [part for part in text.split(",") if part.strip()]
    if not parts or not all(is_number(part) for part in parts):
        raise InputError(f"{option} {text!r}: expected comma-separated numbers such as 0,1,2,5,10")
    return list(dict.fromkeys(number(part, option, RULES[rule]) for part in parts))


def _table(rows: list[dict], attribute: str, judge: str):
    from rich import box
    from rich.table import Table

    table = Table(title=f"dglm sweep: {attribute}, rate judged by {judge}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("scale", "steer", "n", "rate", "95% CI", "guide", "agree", "ppl", "dist-2", "rep", "sec"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in rows:
        interval = "-" if r["rate"] is None else f"{r['rate_low']:.2f}–{r['rate_high']:.2f}"
        table.add_row(
            f"{r['scale']:g}", f"{r['steer']:g}", str(r["records"]), _number(r["rate"]), interval, _number(r["guide_rate"]),
            _number(r["agreement"]), _number(r["ppl_mean"], 1), _number(r["distinct_2"]),
            _number(r["repetition"]), f"{r['seconds']:.0f}",
        )
    return table


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
