"""The `dglm` command line: a thin shell over the Python API.

Data goes to stdout, progress and messages to stderr. Errors a user can cause are one line on stderr
and a non-zero exit (DGLM_DEBUG=1 shows the traceback). Heavy libraries load inside commands, so
`dglm --help` stays fast.
"""

import typer

from dglm_cli import __version__
from dglm_cli.cli import bundle, classifiers, fetch, generate, info, score, steer, sweep, train

app = typer.Typer(
    name="dglm",
    help="Attribute-controlled text generation with Diffusion Guided Language Modeling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
app.command("generate", no_args_is_help=False)(generate.generate)
app.add_typer(bundle.app, name="bundle")
app.command("fetch")(fetch.fetch)
app.command("info")(info.info)
app.command("train-classifier")(classifiers.train_classifier)
app.add_typer(classifiers.app, name="classifiers")
app.command("score")(score.score)
app.command("sweep")(sweep.sweep)
app.command("train-diffusion")(train.train_diffusion)
app.command("train-decoder")(train.train_decoder)
app.command("train-steer")(steer.train_steer)
app.command("export")(train.export)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dglm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Attribute-controlled text generation with Diffusion Guided Language Modeling.

    A diffusion model proposes the sentence embedding of a continuation, linear classifiers steer
    the proposal, and a soft-prompted language model writes the text.
    """


def main() -> None:
    """Run the app; a usage error (unknown option, a value of the wrong type) is one line too, exit 2."""
    import sys

    try:
        result = app(standalone_mode=False)
    except _click_errors() as error:
        command = error.ctx.command_path.replace(error.ctx.find_root().info_name, "dglm", 1) if getattr(error, "ctx", None) else "dglm"
        hint = f" (see `{command} --help`)" if error.exit_code == 2 else ""
        line = " ".join(error.format_message().split())
        if not line:  # no_args_is_help: the help was the answer
            sys.exit(error.exit_code)
        print(f"dglm: error: {line}{hint}", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("dglm: error: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


def _click_errors() -> tuple[type[Exception], ...]:
    """ClickException of the click that typer uses (newer typer vendors its own copy)."""
    import importlib

    found = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(name).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)
