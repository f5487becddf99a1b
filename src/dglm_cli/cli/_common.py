"""Shared CLI plumbing: the stderr console, one-line errors, quiet HF libraries, progress bars, the --bundle name."""

import functools
import os
import sys
from collections.abc import Callable

import typer
from rich.console import Console

from dglm_cli.errors import DGLMError
from dglm_cli.files import first_line
from dglm_cli.validation import check_options

stderr = Console(stderr=True, highlight=False)
DEFAULT_BUNDLE = "default"


def user_errors(function: Callable) -> Callable:
    """Turn a DGLMError into one line on stderr and its exit code (DGLM_DEBUG=1 re-raises)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            check_options(function.__name__, kwargs)  # every numeric option: finite and in range, before any work
            return function(*args, **kwargs)
        except DGLMError as error:
            if os.environ.get("DGLM_DEBUG"):
                raise
            fail(str(error), error.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:  # an OSError, so caught before the clause below
            sys.stderr.close()  # downstream closed the pipe (e.g. `| head`): stop quietly
            raise typer.Exit(0) from None
        except OSError as error:  # a file or device the user pointed at: unreadable, unwritable, full disk
            if os.environ.get("DGLM_DEBUG"):
                raise
            where = f": {error.filename}" if error.filename else ""
            fail(f"{error.strerror or first_line(error)}{where}", 1)

    return wrapper


def fail(message: str, code: int = 1) -> None:
    """Print `dglm: error: MESSAGE` as a single line on stderr and exit."""
    line = " ".join(message.split())
    print(f"dglm: error: {line}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def quiet_libraries() -> None:
    """Silence transformers/hub progress bars and advice; dglm reports progress itself."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from dglm_cli.loaders import quiet_transformers

    quiet_transformers()


def progress(quiet: bool):
    """A rich progress bar on stderr (disabled with --quiet)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=quiet,
        transient=False,
    )


def bundle_name(name: str) -> str:
    """--bundle as given, or the installed default bundle's path (one line saying how to make one if there is none)."""
    from dglm_cli.bundle import find_bundle
    from dglm_cli.errors import BundleError

    if name != DEFAULT_BUNDLE:
        return name
    try:
        return str(find_bundle(DEFAULT_BUNDLE))
    except BundleError:
        raise BundleError(
            "no default bundle is installed yet; make one with `dglm bundle tiny DIR` and pass --bundle DIR"
        ) from None
