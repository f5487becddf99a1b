"""What a trained steer reads in its latent: the hidden mood, or the row's own continuation.

    python benchmarks/steer_latent.py --run build/default-bundle/runs/steer --bundle build/default-bundle/default

For corpora written by scripts/build_default_bundle.py, whose pairs carry a hidden mood sentence (MOODS).
On the run's validation rows, the loss the steer trains on (cross-entropy against the amplified teacher over
the cached candidates, nats/token) is measured with each row's own latent, with the latent of another row
of the same mood, with one of the opposite mood, and with no steer. The steer's reading of the mood is the
gap between the two swaps. The rest of what it gains over a swapped latent is the row's content. A
logistic regression from the continuation embeddings to the mood shows how much the latent can say about it.
"""

import argparse
import sys
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

from dglm_cli.bundle import load_bundle
from dglm_cli.steer_runs import load_steer_run, steer_trainer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from build_default_bundle import MOODS  # noqa: E402


def moods_of(tokenizer, teacher_prefix_ids: list[list[int]]) -> torch.Tensor:
    """+1 / -1 per row: the mood of the hidden sentence its teacher read."""
    labels = []
    for text in tokenizer.batch_decode(teacher_prefix_ids, skip_special_tokens=True):
        positive = any(text.strip().startswith(s) for s in MOODS["positive"])
        if not positive and not any(text.strip().startswith(s) for s in MOODS["negative"]):
            raise SystemExit(f"a row's hidden sentence is not one of MOODS: {text[:60]!r}")
        labels.append(1.0 if positive else -1.0)
    return torch.tensor(labels)


def swap_within(moods: torch.Tensor, same: bool) -> torch.Tensor:
    """For each row, another row whose mood is the same (or the opposite), chosen deterministically."""
    picks = []
    for i, mood in enumerate(moods.tolist()):
        pool = [j for j, other in enumerate(moods.tolist()) if (other == mood) == same and j != i]
        picks.append(pool[i % len(pool)])
    return torch.tensor(picks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the steer run (its corpus and LM-state cache)")
    parser.add_argument("--bundle", required=True, help="a bundle holding the trained steer")
    args = parser.parse_args()
    spec = load_steer_run(args.run)
    trainer = steer_trainer(args.run, spec)
    objective = trainer.accelerator.unwrap_model(trainer.objective)
    objective.steer.load_state_dict({k: v.float() for k, v in load_bundle(args.bundle).steer.state_dict().items()})
    objective.eval()
    corpus, config = trainer.corpus, trainer.config
    moods = moods_of(load_bundle(spec.bundle).decoder.tokenizer, corpus.teacher_prefix_ids)
    train, val = corpus.train_indices, corpus.val_indices
    embeddings = corpus.continuation_embeddings.numpy()
    probe = LogisticRegression(max_iter=2000).fit(embeddings[train], moods[train].numpy())
    print(f"mood from the continuation embedding (logistic regression): {probe.score(embeddings[val], moods[val].numpy()):.3f} accuracy on {len(val)} rows")

    noise = torch.randn(len(val), corpus.continuation_embeddings.shape[1], generator=torch.Generator().manual_seed(config.seed + 12345))
    latents = trainer.noised_latents(val, torch.full((len(val),), trainer.inference_alpha2), noise)  # (B, D)
    hidden, candidates, target, teacher, owner = trainer.tokens(val)
    runs = {"own latent": (latents, True), "same-mood row's latent": (latents[swap_within(moods[val], True)], True),
            "opposite-mood row's latent": (latents[swap_within(moods[val], False)], True), "no steer": (latents, False)}
    print("| latent | teacher cross-entropy (nats/token) |\n|---|---:|")
    with torch.no_grad():
        for name, (z, steered) in runs.items():
            sums = trainer.loss_sums(objective, hidden, z[owner], candidates, target, teacher, steered)
            print(f"| {name} | {float(sums['teacher']) / sums['tokens']:.3f} |")


if __name__ == "__main__":
    main()
