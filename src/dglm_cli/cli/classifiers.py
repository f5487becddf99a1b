"""`dglm train-classifier` and `dglm classifiers list|show|rm|export`."""

import json
import re
import time
from pathlib import Path
from typing import Annotated

import typer

from dglm_cli import strict_json
from dglm_cli.cli._common import progress, quiet_libraries, stderr, user_errors

app = typer.Typer(help="Manage saved attribute classifiers (each label is an --attr for generate).", no_args_is_help=True)


@user_errors
def train_classifier(
    data: Annotated[str, typer.Argument(help="Labeled CSV, TSV or JSONL file; '-' reads stdin.")],
    name: Annotated[str | None, typer.Option(help="Name to save the classifier under (default: the file name).")] = None,
    text_col: Annotated[str | None, typer.Option(help="Column holding the text (default: auto-detected).")] = None,
    label_col: Annotated[str | None, typer.Option(help="Column holding the label (default: auto-detected).")] = None,
    format: Annotated[str | None, typer.Option("--format", help="csv, tsv or jsonl (default: from the extension or content).")] = None,
    encoder: Annotated[str | None, typer.Option(help="Sentence-transformers directory or Hub id org/name[@revision] (default: all-MiniLM-L6-v2).")] = None,
    bundle: Annotated[str | None, typer.Option(help="Use this bundle's encoder, so the classifier guides that bundle.")] = None,
    C: Annotated[float | None, typer.Option("--C", help="Inverse regularisation strength (default: chosen on a validation split).")] = None,
    balanced: Annotated[bool, typer.Option("--balanced", help="Weight the classes inversely to their frequency.")] = False,
    test_size: Annotated[float, typer.Option(help="Fraction of the rows held out for the reported metrics.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test splits.")] = 0,
    device: Annotated[str, typer.Option(help="Where the encoder runs: auto, cpu, cuda or cuda:N.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace a saved classifier of the same name.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or warnings on stderr.")] = False,
) -> None:
    """Train a logistic-regression classifier on encoder embeddings of labeled text, and save it.

    Each label becomes an attribute for `dglm generate --attr LABEL`.

    Examples:

      dglm train-classifier reviews.csv --name sentiment

      cat labeled.jsonl | dglm train-classifier - --name topic --text-col body --label-col topic --json
    """
    from dglm_cli import classifier_store
    from dglm_cli.classifier_training import TrainingSettings, encoder_source, train_classifier
    from dglm_cli.devices import resolve_device
    from dglm_cli.tabular import read_labeled

    settings = TrainingSettings(C=C, balanced=balanced, test_size=test_size, seed=seed)
    settings.validate()
    source = encoder_source(encoder, bundle)
    if name is not None or data != "-":
        name = classifier_store.check_name(name or _name_from_file(data))
        classifier_store.check_free(name, force)  # fail before any work
    rows = read_labeled(data, format, text_col, label_col)
    if name is None:
        name = classifier_store.check_name(_slug(rows.label_col))
        classifier_store.check_free(name, force)
    quiet_libraries()
    started = time.perf_counter()
    with progress(quiet) as bar:
        task = bar.add_task("encoding", total=None, visible=False)
        report = train_classifier(
            rows, source, settings, str(resolve_device(device)),
            on_progress=lambda done, total: bar.update(task, completed=done, total=total, visible=True),
        )
    path = classifier_store.save(name, report.classifier, force)
    seconds = time.perf_counter() - started
    if not quiet:
        for warning in report.warnings:
            stderr.print(f"warning: {warning}", markup=False)
    summary = _summary(name, path, report, seconds)
    typer.echo(strict_json.dumps(strict_json.finite(summary), indent=2) if as_json else _render_training(summary))


def _name_from_file(data: str) -> str:
    return _slug(Path(data).stem)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "classifier"


def _summary(name: str, path: Path, report, seconds: float) -> dict:
    config = report.classifier.config
    return {
        "name": name,
        "path": str(path),
        "labels": config.labels,
        "encoder": config.encoder_ref.description,
        "C": config.info["C"],
        "rows": report.rows,
        "encoded": report.encoded,
        "seconds": round(seconds, 2),
        "metrics": config.metrics,
        "warnings": report.warnings,
    }


def _render_training(summary: dict) -> str:
    rows = summary["rows"]
    lines = [
        f"classifier  {summary['name']}  (labels: {', '.join(summary['labels'])})",
        f"encoder     {summary['encoder']}  ({summary['encoded']} texts encoded, {rows['used'] - summary['encoded']} from cache)",
        f"rows        {rows['read']} read, {rows['used']} used: {rows['train']} train, {rows['test']} held out",
        f"C           {summary['C']:g}",
        *_render_metrics(summary["metrics"]),
        f"saved       {summary['path']}  ({summary['seconds']:.1f} s)",
        f"use it      dglm generate --attr {_attr_example(summary['name'], summary['labels'][-1])} ...",
    ]
    return "\n".join(lines)


def _attr_example(name: str, label: str) -> str:
    """NAME:LABEL, with an explicit weight when the label is a number (else it would read as the weight)."""
    try:
        float(label)
    except ValueError:
        return f"{name}:{label}"
    return f"{name}:{label}:1"


def _render_metrics(metrics: dict) -> list[str]:
    scores = f"accuracy {metrics['accuracy']:.3f}   macro-F1 {metrics['macro_f1']:.3f}"
    if "roc_auc" in metrics:
        scores += f"   ROC-AUC {metrics['roc_auc']:.3f}"
    labels = metrics["confusion_matrix"]["labels"]
    width = max(9, *(len(label) + 2 for label in labels))
    lines = [f"held out    {scores}   (majority class {metrics['majority_baseline']:.3f})", ""]
    lines.append(f"{'label':<{width}}{'precision':>10}{'recall':>8}{'support':>9}")
    for label, m in metrics["per_label"].items():
        lines.append(f"{label:<{width}}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['support']:>9}")
    lines += ["", "confusion matrix (rows: true label, columns: predicted)", " " * width + "".join(f"{label:>{width}}" for label in labels)]
    for label, counts in zip(labels, metrics["confusion_matrix"]["rows_true_columns_predicted"]):
        lines.append(f"{label:<{width}}" + "".join(f"{n:>{width}}" for n in counts))
    return lines + [""]


@app.command("list")
@user_errors
def list_classifiers(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """List saved classifiers: name, labels, encoder, held-out accuracy, rows, creation time."""
    from dglm_cli import classifier_store

    saved = classifier_store.list_saved()
    if as_json:
        typer.echo(strict_json.dumps(strict_json.finite([{"name": s.name, "path": str(s.path), **s.config} for s in saved]), indent=2))
        return
    if not saved:
        stderr.print(f"no saved classifiers in {classifier_store.store_dir()} (train one with `dglm train-classifier`)")
        return
    table = [("NAME", "LABELS", "ENCODER", "ACCURACY", "ROWS", "CREATED")]
    for s in saved:
        info, metrics = s.config.get("info", {}), s.config.get("metrics", {})
        accuracy = f"{metrics['accuracy']:.3f}" if "accuracy" in metrics else "-"
        table.append((
            s.name, ",".join(s.labels), s.config.get("encoder", {}).get("description", "?"), accuracy,
            str(info.get("rows", {}).get("used", "-")), info.get("created_at", "-"),
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@app.command("show")
@user_errors
def show(
    name: Annotated[str, typer.Argument(help="A saved classifier.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print its config as JSON on stdout.")] = False,
) -> None:
    """Show a saved classifier: labels, encoder, training data and held-out metrics."""
    from dglm_cli import classifier_store

    saved = classifier_store.get(name)
    if as_json:
        typer.echo(strict_json.dumps(strict_json.finite({"name": saved.name, "path": str(saved.path), **saved.config}), indent=2))
        return
    config, info = saved.config, saved.config.get("info", {})
    encoder = saved.encoder
    data = info.get("data", {})
    lines = [
        f"classifier  {saved.name}  ({saved.path})",
        f"labels      {', '.join(saved.labels)}",
        f"encoder     {encoder.description or '?'}  [{encoder.identity or '?'}]",
        f"data        {data.get('source', '?')} ({data.get('format', '?')}, text={data.get('text_col', '?')}, label={data.get('label_col', '?')}), sha256 {info.get('data_sha256', '?')[:16]}",
        f"rows        {json.dumps(info.get('rows', {}))}",
        f"C           {info.get('C', '?')}",
        f"created     {info.get('created_at', '?')}",
    ]
    if config.get("metrics"):
        lines += _render_metrics(config["metrics"])
    typer.echo("\n".join(lines).rstrip())


@app.command("rm")
@user_errors
def rm(name: Annotated[str, typer.Argument(help="A saved classifier.")]) -> None:
    """Delete a saved classifier."""
    from dglm_cli import classifier_store

    path = classifier_store.remove(name)
    stderr.print(f"removed {name} ({path})", markup=False)


@app.command("export")
@user_errors
def export(
    name: Annotated[str, typer.Argument(help="A saved classifier.")],
    bundle: Annotated[str, typer.Argument(help="Bundle directory or name to copy it into.")],
    as_name: Annotated[str | None, typer.Option("--as", help="Name inside the bundle (default: the same).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a classifier of that name in the bundle.")] = False,
) -> None:
    """Copy a saved classifier into a bundle, so it travels with it (the manifest's checksums are updated)."""
    from dglm_cli import classifier_store

    path = classifier_store.export(name, bundle, as_name, force)
    stderr.print(f"exported {name} to {path}", markup=False)
    typer.echo(str(path))
