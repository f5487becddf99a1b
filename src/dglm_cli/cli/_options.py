"""Options that several commands share, declared once so their flags and help stay the same everywhere.

Defaults stay in each command's signature; `tests/test_generate_cli.py` checks that the generation
options' defaults there equal `GenerationSettings`'.
"""

from typing import Annotated

import typer

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
BundleName = Annotated[str, typer.Option(help="Bundle directory or name.")]
Force = Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")]
PROMPTS_FILE_HELP = "File of prompts, one per line or JSONL with a 'prompt' field; '-' reads stdin."

# Generation (generate and sweep)
Steps = Annotated[int, typer.Option(help="Diffusion sampling steps.")]
Sampler = Annotated[str, typer.Option(help="Diffusion sampler: ddpm or ddim.")]
Cfg = Annotated[float, typer.Option(help="Classifier-free guidance weight on the prefix (1 = off).")]
DecoderCfg = Annotated[float, typer.Option(help="Classifier-free guidance weight on the soft prompt in the decoder: > 1 follows the latent more closely, at twice the decode cost (1 = off).")]
Steer = Annotated[float | None, typer.Option(help="Strength of the bundle's latent steer on the decoder's output (0 = off; default: the bundle's, off for a bundle without one).")]
McSamples = Annotated[int, typer.Option(help="Monte-Carlo samples per guidance step.")]
MaxNewTokens = Annotated[int, typer.Option(help="Tokens to generate per continuation.")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling threshold.")]

# Scoring (score and sweep)
PplModel = Annotated[str | None, typer.Option(help="Causal LM for perplexity: a directory or Hub id (default: the default decoder).")]
MaxDisagreement = Annotated[float, typer.Option(help="Warn when the guiding classifier and an independent scorer disagree on more than this share.")]
