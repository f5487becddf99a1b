"""`dglm bundle`: make, inspect and verify bundles."""

import json
from pathlib import Path
from typing import Annotated

import typer

from dglm_cli.cli._common import quiet_libraries, stderr, user_errors
from dglm_cli.cli._options import Force

app = typer.Typer(help="Make, inspect and verify model bundles.", no_args_is_help=True)


@app.command("tiny")
@user_errors
def tiny(
    out: Annotated[Path, typer.Argument(help="Directory to create.")],
    decoder: Annotated[str, typer.Option(help="Tiny decoder family: gpt2 or llama.")] = "gpt2",
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation.")] = 0,
    force: Force = False,
) -> None:
    """Write a small, randomly initialised bundle for smoke tests and examples (its text is gibberish)."""
    quiet_libraries()
    from dglm_cli.errors import InputError
    from dglm_cli.tiny import DECODER_FAMILIES, make_tiny_bundle

    if decoder not in DECODER_FAMILIES:
        raise InputError(f"--decoder must be one of {', '.join(DECODER_FAMILIES)}")
    path = make_tiny_bundle(out, decoder, seed, overwrite=force)
    stderr.print(f"wrote tiny {decoder} bundle")
    typer.echo(str(path))


@app.command("info")
@user_errors
def info(
    path: Annotated[str, typer.Argument(help="Bundle directory or name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Also check every file's sha256.")] = False,
) -> None:
    """Show a bundle's manifest: format, encoder, decoder, classifiers."""
    from dglm_cli.bundle import find_bundle, read_manifest, verify_files

    directory = find_bundle(path)
    manifest = read_manifest(directory)
    if verify:
        verify_files(directory, manifest)
    if as_json:
        typer.echo(json.dumps(manifest, indent=2))
        return
    from dglm_cli.assets import describe

    classifiers = sorted({Path(f).parts[1] for f in manifest.get("files", {}) if f.startswith("classifiers/")})
    typer.echo(f"bundle      {directory}")
    typer.echo(f"format      {manifest['format_version']} (dglm {manifest.get('dglm_version', '?')})")
    typer.echo(f"encoder     {describe(manifest.get('encoder', {}))}")
    typer.echo(f"decoder     {describe(manifest.get('decoder', {}))}")
    typer.echo(f"classifiers {', '.join(classifiers) or 'none'}")
    typer.echo(f"created     {manifest.get('created_at', '?')}")
    if verify:
        typer.echo(f"verified    {len(manifest.get('files', {}))} files")
