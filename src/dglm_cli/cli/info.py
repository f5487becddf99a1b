"""`dglm info`: versions, devices, cache locations, cached assets, bundles and classifiers."""

import json
from typing import Annotated

import typer

from dglm_cli.cli._common import user_errors

PACKAGES = ("dglm", "torch", "transformers", "sentence-transformers", "huggingface-hub", "gguf")


@user_errors
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object instead of text.")] = False,
) -> None:
    """Show versions, devices, where dglm and Hugging Face keep files, and what is cached there."""
    report = collect()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from dglm_cli.cli.fetch import human_size

    for name, version in report["versions"].items():
        typer.echo(f"{name:<22} {version or 'not installed'}")
    typer.echo(f"{'devices':<22} {', '.join(report['devices'])}")
    typer.echo(f"{'DGLM_HOME':<22} {report['dglm_home']}")
    typer.echo(f"{'HF cache':<22} {report['hf_cache']}")
    typer.echo(f"{'offline':<22} {'yes (HF_HUB_OFFLINE)' if report['offline'] else 'no'}")
    typer.echo("cached assets:" if report["assets"] else "cached assets: none (see `dglm fetch --help`)")
    for asset in report["assets"]:
        typer.echo(f"  {asset['name']:<18} {human_size(asset['bytes']):>9}  {asset['path']}  ({asset['source']})")
    for kind in ("bundles", "classifiers"):
        typer.echo(f"{kind}: {', '.join(report[kind]) or 'none'}")


def collect() -> dict:
    import importlib.metadata

    from huggingface_hub import constants

    from dglm_cli import fetch
    from dglm_cli.paths import dglm_home

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    home = dglm_home()
    return {
        "versions": {package: version(package) for package in PACKAGES},
        "devices": devices(),
        "dglm_home": str(home),
        "hf_cache": constants.HF_HUB_CACHE,
        "offline": fetch.is_offline(),
        "assets": [
            {"name": asset.name, "role": asset.role, "source": source.describe(), "path": str(path), "bytes": size}
            for asset, source, path, size in fetch.cached_assets()
        ],
        "bundles": _subdirectories(home / "bundles"),
        "classifiers": _subdirectories(home / "classifiers"),
    }


def devices() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    else:
        found.append("no CUDA")
    return found


def _subdirectories(path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) if path.is_dir() else []
