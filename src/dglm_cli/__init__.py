"""dglm: Diffusion Guided Language Modeling (Lovelace et al., ACL Findings 2024).

Importing this package is cheap; the heavy parts (torch, transformers) load on first use:

    from dglm_cli import Pipeline
    pipe = Pipeline.from_bundle("path/to/bundle")
    for record in pipe.generate(["The restaurant on the corner"], attrs=["positive"]):
        print(record["continuation"])
"""

from dglm_cli._version import __version__

__all__ = ["Pipeline", "GenerationSettings", "__version__"]


def __getattr__(name: str):
    if name in ("Pipeline", "GenerationSettings"):
        from dglm_cli import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'dglm_cli' has no attribute {name!r}")
