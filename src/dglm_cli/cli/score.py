"""`dglm score`: perplexity, diversity and attribute scores for generated JSONL, with a group summary."""

import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import typer

from dglm_cli import strict_json
from dglm_cli.cli._common import bundle_name, progress, quiet_libraries, stderr, user_errors
from dglm_cli.cli._options import Device, MaxDisagreement, PplModel, Quiet


@user_errors
def score(
    file: Annotated[str, typer.Argument(help="JSONL to score ('-' reads stdin), e.g. the output of `dglm generate`.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the scored records (JSONL) to this file.")] = None,
    records: Annotated[bool, typer.Option("--records", help="Write the scored records to stdout.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    limit: Annotated[int | None, typer.Option(help="Score only the first N records.")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip malformed lines (and count them) instead of stopping.")] = False,
    ppl_model: PplModel = None,
    no_ppl: Annotated[bool, typer.Option("--no-ppl", help="Skip perplexity.")] = False,
    classifier: Annotated[list[str], typer.Option("--classifier", "-c", help="A saved classifier (name or directory) to score with (repeatable).")] = [],
    bundle: Annotated[str | None, typer.Option(help="Also score with this bundle's classifiers (the guiding classifiers of its records).")] = None,
    scorer: Annotated[list[str], typer.Option("--scorer", "-s", help="An independent scorer: hf:PATH_OR_ID, a text-classification model (repeatable). VADER is always on.")] = [],
    text_field: Annotated[str, typer.Option(help="Field holding the text to score (dots reach nested fields).")] = "continuation",
    prompt_field: Annotated[str, typer.Option(help="Field holding the prompt ('' scores without prompts).")] = "prompt",
    group_by: Annotated[str | None, typer.Option(help="Group the summary by this field (default: the guidance settings).")] = None,
    max_disagreement: MaxDisagreement = 0.25,
    device: Device = "auto",
    batch_size: Annotated[int, typer.Option(help="Records scored together.")] = 16,
    quiet: Quiet = False,
) -> None:
    """Score generated text: perplexity given the prompt, distinct-n, repetition, attribute rates.

    Attribute rates come from saved classifiers (--classifier, --bundle) and from scorers independent
    of the guidance (VADER, --scorer hf:...). The summary table goes to stderr; --json prints it on
    stdout. Every scorer's name, version and settings are recorded in the summary.

    Examples:

      dglm generate --prompts prompts.txt --attr positive -n 4 | dglm score - --bundle default

      dglm score out.jsonl --ppl-model gpt2 --scorer hf:./sentiment-model -o scored.jsonl --json
    """
    from dglm_cli.errors import InputError

    if records and as_json:
        raise InputError("--records and --json both write to stdout; send the records to a file with --output")
    if batch_size < 1 or (limit is not None and limit < 1):
        raise InputError("--batch-size and --limit must be at least 1")
    if not 0 <= max_disagreement <= 1:
        raise InputError("--max-disagreement must be between 0 and 1")
    quiet_libraries()
    from dglm_cli import scoring
    from dglm_cli.devices import resolve_device

    resolved = resolve_device(device)
    with _input(file) as stream, _record_sink(output, records) as write:  # a missing file fails before any loading
        with stderr.status("loading scorers", spinner="dots") if not quiet else nullcontext():
            scorers = _load_scorers(scoring, ppl_model, no_ppl, classifier, bundle, scorer, resolved, batch_size)
        evaluation = scoring.Evaluation(group_by, max_disagreement)
        reader = scoring.RecordReader(stream, "stdin" if file == "-" else file, text_field, prompt_field, skip_bad)
        with progress(quiet) as bar:
            task = bar.add_task("scoring", total=limit or _count_lines(file))

            def on_record(scored: dict) -> None:
                write(scored)
                bar.advance(task)

            scoring.run(_first(reader, limit), scorers, evaluation, batch_size, on_record)
        summary = evaluation.summary(scorers.info(), scorers.labelers, input=file, skipped=len(reader.skipped))
        if summary["records"] == 0:
            raise InputError(f"{file}: no records to score" + (f" ({len(reader.skipped)} bad lines skipped)" if reader.skipped else ""))
    _report(summary, reader.skipped)
    if as_json:
        typer.echo(strict_json.dumps(strict_json.finite(summary), indent=2))


def _load_scorers(scoring, ppl_model, no_ppl, classifiers, bundle, specs, device, batch_size):
    """Cheap checks first (unknown classifier names), the perplexity LM last."""
    encoders = scoring.EncoderCache(device)
    labelers = [scoring.load_classifier_scorer(name, encoders) for name in classifiers]
    if bundle:
        known = {s.name for s in labelers}
        labelers += [s for s in scoring.bundle_classifier_scorers(bundle_name(bundle), encoders) if s.name not in known]
    labelers.append(scoring.VaderScorer())
    labelers += [scoring.load_hf_scorer(spec, device, batch_size) for spec in specs]
    perplexity = None if no_ppl else scoring.load_perplexity_scorer(scoring.ppl_reference(ppl_model), device, batch_size)
    return scoring.Scoring(perplexity, labelers)


@contextmanager
def _input(file: str):
    """The input as a binary stream (decoded per line, so a bad line can be named and skipped)."""
    from dglm_cli.records import open_binary

    stream = open_binary(file)
    if file == "-":
        yield stream
        return
    with stream:
        yield stream


@contextmanager
def _record_sink(output: Path | None, to_stdout: bool):
    """A function that writes one scored record; a file appears (by rename) only when scoring succeeds."""
    if to_stdout:
        yield lambda record: (sys.stdout.write(strict_json.jsonl_line(record)), sys.stdout.flush())
        return
    if output is None:
        yield lambda record: None
        return
    from dglm_cli.files import atomic_file

    with atomic_file(output, "w", encoding="utf-8") as tmp:
        yield lambda record: tmp.write(strict_json.jsonl_line(record))


def _first(items, limit: int | None):
    for count, item in enumerate(items):
        if limit is not None and count >= limit:
            return
        yield item


def _count_lines(file: str) -> int | None:
    if file == "-":
        return None
    with open(file, "rb") as f:
        return sum(1 for line in f if line.strip())


def _report(summary: dict, skipped: list[str]) -> None:
    stderr.print(f"dglm score: {summary['records']} records in {len(summary['groups'])} group(s)", markup=False)
    for number, group in enumerate(summary["groups"], 1):
        stderr.print(f"  [{number}] {group['group']}", markup=False, highlight=False)
    for table in summary_tables(summary):
        stderr.print(table)
    if skipped:
        stderr.print(f"skipped {len(skipped)} bad line(s); first: {skipped[0]}", markup=False)
    for warning in summary["warnings"]:
        stderr.print(f"warning: {warning}", style="yellow", markup=False)


def summary_tables(summary: dict) -> list:
    """Text metrics per group, then attribute rates per group, scorer and label (the guided labels only, if any).

    Groups appear by number; `_report` prints the legend.
    """
    from rich import box
    from rich.table import Table

    text = Table(box=box.SIMPLE_HEAD)
    for column in ("#", "n", "empty", "ppl mean", "ppl med", "dist-1", "dist-2", "dist-3", "rep", "len"):
        text.add_column(column, justify="right", no_wrap=True)
    rates = Table(title="attribute rates (95% Wilson interval)", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("#", "scorer", "label", "rate", "95% CI", "agrees with guide"):
        rates.add_column(column, justify="left" if column in ("scorer", "label") else "right", overflow="fold")
    for number, group in enumerate(summary["groups"], 1):
        text.add_row(
            str(number), str(group["records"]), str(group["empty"]),
            _number(group["perplexity"]["mean"]), _number(group["perplexity"]["median"]),
            *(_number(group[f"distinct_{k}"], 3) for k in (1, 2, 3)),
            _number(group["repetition"], 3), _number(group["mean_length"], 1),
        )
        for scorer, label, rate in _shown_rates(group):
            agreement = group["agreement"].get(scorer)
            agrees = f"{agreement['share']:.0%} of {agreement['compared']}" if agreement else ""
            rates.add_row(str(number), scorer, label, f"{rate['rate']:.2f}", f"{rate['low']:.2f}–{rate['high']:.2f}", agrees)
    return [text, rates]


def _shown_rates(group: dict):
    """Each scorer's rate of the group's guided labels (all its labels when the group has none)."""
    targets = {t.split(":")[-1].lower() for t in group["targets"]}
    for scorer, by_label in group["attributes"].items():
        for label, rate in by_label.items():
            if not targets or label.lower() in targets:
                yield scorer, label, rate


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"

