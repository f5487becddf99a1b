"""Cost of one training step of the latent steer over the whole vocabulary against its top-K candidates.

    python benchmarks/steer_softmax.py                      # SmolLM2's shapes: V = 49,152, H = 576, 64 rows x 24 tokens
    python benchmarks/steer_softmax.py --tokens 512 --repeats 5

A step is the steer's forward pass, the per-token losses (target cross-entropy and KL to the base) and the
backward pass of the cross-entropy, as `dglm train-steer` takes it on cached final hidden states. The output
layer W is random: timing does not depend on its values. Three ways are timed:
- top-K: the steer re-ranks the base LM's K most probable tokens (`--candidates K`, the build's setting);
- whole vocabulary: `--candidates 0` as `SteerObjective` computes it (W·(h + delta) with the gradient, W·h without);
- whole vocabulary, naive: both W·h and W·delta through the graph, and the KL's backward at weight 0 (how it was
  computed before), kept here as the baseline the speed-up is measured against.
"""

import argparse
import time

import torch

from dglm_cli.devices import describe_cpu
from dglm_cli.objectives import SteerObjective
from dglm_cli.steer import LatentSteer, SteerConfig, candidate_losses, output_logits


def naive_losses(objective: SteerObjective, hidden, z, target):
    """The whole-vocabulary losses with both products through the graph, and a zero-weighted KL in the loss."""
    delta = objective.steer(hidden, z)  # (N, H)
    base, shift = output_logits(torch.stack([hidden, delta]), objective.weight, None)  # (N, V) each
    ce, kl, _ = candidate_losses(base, shift, target)
    return ce.mean() + 0.0 * kl.mean()


def timed(step, repeats: int) -> float:
    """Median seconds of `step` over `repeats` runs, after one warm-up run."""
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=49_152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--latent", type=int, default=384)
    parser.add_argument("--tokens", type=int, default=64 * 24, help="tokens per step (rows x continuation tokens)")
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    output_layer = torch.nn.Linear(args.hidden, args.vocab, bias=False)
    objective = SteerObjective(LatentSteer(SteerConfig(latent_dim=args.latent, hidden_dim=args.hidden)), output_layer)
    hidden, z = torch.randn(args.tokens, args.hidden), torch.randn(args.tokens, args.latent)
    base_logits = hidden @ objective.weight.T  # (N, V)
    top = base_logits.topk(args.candidates, dim=-1).indices  # (N, K)
    target = torch.randint(0, args.vocab, (args.tokens,))
    index = (top == target[:, None]).int().argmax(dim=1).masked_fill(~(top == target[:, None]).any(dim=1), -1)

    def step(candidates, target):
        ce, _, _ = objective(hidden, z, candidates, target)
        ce.mean().backward()

    seconds = {
        f"top {args.candidates}": timed(lambda: step(top, index), args.repeats),
        "whole vocabulary": timed(lambda: step(None, target), args.repeats),
        "whole vocabulary, naive": timed(lambda: naive_losses(objective, hidden, z, target).backward(), args.repeats),
    }
    print(f"{describe_cpu()}, {torch.get_num_threads()} threads; V = {args.vocab}, H = {args.hidden}, {args.tokens} tokens per step")
    for name, value in seconds.items():
        print(f"{name:>24}: {value:.3f} s per step")
    top_k, whole, naive = seconds.values()
    print(f"whole vocabulary / top {args.candidates}: {whole / top_k:.1f}x; naive / whole vocabulary: {naive / whole:.2f}x")


if __name__ == "__main__":
    main()
