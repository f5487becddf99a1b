"""The DGLM pipeline: prefix -> guided latent proposal -> soft prompt -> continuation. No printing here."""

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from dglm_cli import assets
from dglm_cli._version import __version__
from dglm_cli.attributes import AttributeSpec, resolve
from dglm_cli.bundle import Bundle, load_bundle
from dglm_cli.classifier_store import guidance_classifiers
from dglm_cli.devices import resolve_device
from dglm_cli.errors import InputError
from dglm_cli.guidance import AGGREGATES, GRADIENTS, AttributeTarget, classifier_guidance
from dglm_cli.records import Prompt
from dglm_cli.rng import RecordRNG
from dglm_cli.sampler import SAMPLERS, sample
from dglm_cli.schedule import diffuse
from dglm_cli.steer import BoundSteer

# Defaults from benchmarks/diffusion.py: 20 DDPM steps with the fast gradient at s = 7 reach the guiding
# classifier's target probability and the closeness to the true continuation of 50 steps with the paper's
# full gradient at s = 5 (the previous defaults) in a fifth of the diffusion time. A bundle's steer may
# carry its own default scale (SteerConfig.guidance_scale).
DEFAULT_GUIDANCE_SCALE = 7.0


@dataclass
class GenerationSettings:
    num_samples: int = 1
    guidance_scale: float | None = None  # s in ε̂' = ε̂ + s·σ·∇L; None: the bundle's steer's default, else DEFAULT_GUIDANCE_SCALE
    cfg: float = 1.0  # classifier-free guidance weight on the prefix (1 = conditional only)
    decoder_cfg: float = 1.0  # classifier-free guidance weight on the soft prompt, in the decoder (1 = off)
    steps: int = 20
    sampler: str = "ddpm"
    max_new_tokens: int = 32
    top_p: float = 0.9
    temperature: float = 1.0
    repetition_penalty: float = 1.2
    mc_samples: int = 32  # K, Monte-Carlo samples per guidance step
    aggregate: str = "lgd"
    guidance_gradient: str = "fast"  # skip the backward pass through the denoiser (guidance.py step 6); "full": the paper's
    renoise_alpha2: float | None = None  # None: the prompt generator's inference_alpha2
    steer: float | None = None  # strength s of the bundle's latent steer (0: off); None: the bundle's default, 0 without one
    seed: int = 0
    batch_size: int = 16

    def validate(self) -> None:
        checks = [
            (self.num_samples >= 1, "--num-samples must be at least 1"),
            (self.steps >= 1, "--steps must be at least 1"),
            (self.sampler in SAMPLERS, f"--sampler must be one of {', '.join(SAMPLERS)}"),
            (self.aggregate in AGGREGATES, f"aggregate must be one of {', '.join(AGGREGATES)}"),
            (self.guidance_gradient in GRADIENTS, f"--guidance-gradient must be one of {', '.join(GRADIENTS)}"),
            (0 < self.top_p <= 1, "--top-p must be in (0, 1]"),
            (self.temperature >= 0, "--temperature must be >= 0"),
            (self.max_new_tokens >= 1, "--max-new-tokens must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.guidance_scale is None or self.guidance_scale >= 0, "--guidance must be >= 0"),
            (self.decoder_cfg >= 0, "--decoder-cfg must be >= 0"),
            (self.mc_samples >= 1, "mc_samples must be at least 1"),
            (self.repetition_penalty > 0, "--repetition-penalty must be > 0"),
            (self.renoise_alpha2 is None or 0 < self.renoise_alpha2 <= 1, "re-noise α² must be in (0, 1]"),
            (self.steer is None or self.steer >= 0, "--steer must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


@dataclass(frozen=True)
class RecordPlan:
    id: str
    prompt: Prompt
    sample: int
    seed: int


class Pipeline:
    def __init__(self, bundle: Bundle, device: torch.device):
        self.bundle = bundle
        self.device = device
        self.timings: dict[str, float] = defaultdict(float)  # seconds per stage, summed over batches

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[name] += time.perf_counter() - started

    @classmethod
    def from_bundle(cls, name_or_path, device: str = "auto") -> "Pipeline":
        resolved = resolve_device(device)
        return cls(load_bundle(name_or_path, resolved), resolved)

    def targets(self, attrs: Sequence[str | AttributeSpec] = (), avoid: Sequence[str | AttributeSpec] = ()) -> list[AttributeTarget]:
        specs = [a if isinstance(a, AttributeSpec) else AttributeSpec.parse(a) for a in attrs]
        specs += [a if isinstance(a, AttributeSpec) else AttributeSpec.parse(a, avoid=True) for a in avoid]
        if not specs:
            return []
        classifiers, refused = guidance_classifiers(self.bundle, self.device)  # the bundle's own + saved ones
        return [resolve(spec, classifiers, refused) for spec in specs]

    def plan(self, prompts: Sequence[Prompt], targets: list[AttributeTarget], settings: GenerationSettings) -> list[RecordPlan]:
        """Every record to generate, prompt-major; record seeds are seed, seed + 1, ... in that order."""
        key = self._settings_key(targets, settings)
        plans = []
        for prompt in prompts:
            for sample_index in range(settings.num_samples):
                seed = settings.seed + len(plans)
                plan_id = f"{_short_hash(f'{key}/{prompt.text}/{seed}')}-{prompt.id}-{sample_index}"
                plans.append(RecordPlan(plan_id, prompt, sample_index, seed))
        return plans

    def generate(
        self,
        prompts: Sequence[Prompt | str],
        attrs: Sequence[str | AttributeSpec] = (),
        avoid: Sequence[str | AttributeSpec] = (),
        settings: GenerationSettings | None = None,
        skip_ids: set[str] = frozenset(),
        on_progress: Callable[[int], None] | None = None,
    ) -> Iterator[dict]:
        """Yield one record (design.md §4 schema) per sample, skipping ids in `skip_ids`.

        Records are generated in fixed batches of the full plan, so a resumed run regenerates exactly
        the records an uninterrupted run would have written.
        """
        settings = settings or GenerationSettings()
        settings.validate()
        self.steer_strength(settings)  # a steer asked of a bundle without one fails here, before any work starts
        prompts = [p if isinstance(p, Prompt) else Prompt(str(i), p) for i, p in enumerate(prompts)]
        targets = self.targets(attrs, avoid)  # bad names fail here, before any work starts
        self.check_lengths(prompts, settings)  # and too long generations
        return self._generate(self.plan(prompts, targets, settings), targets, settings, skip_ids, on_progress)

    def check_lengths(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> None:
        """Refuse, before any work, a generation longer than the decoder's position limit."""
        decoder = self.bundle.decoder
        limit = decoder.max_positions
        if limit is None or not prompts:
            return
        longest = max(len(ids) for ids in decoder.tokenize([p.text for p in prompts]))
        soft = self.bundle.prompt_generator.config.prompt_length
        if longest + soft + settings.max_new_tokens > limit:
            room = limit - longest - soft
            advice = f"use --max-new-tokens {room} or less" if room >= 1 else "shorten the prompt"
            raise InputError(
                f"--max-new-tokens {settings.max_new_tokens}: the longest prompt ({longest} tokens) + {soft} soft-prompt vectors + "
                f"{settings.max_new_tokens} new tokens exceed the decoder's limit of {limit} positions; {advice}"
            )

    def _generate(self, plans, targets, settings, skip_ids, on_progress) -> Iterator[dict]:
        for start in range(0, len(plans), settings.batch_size):
            batch = plans[start : start + settings.batch_size]
            todo = [p.id not in skip_ids for p in batch]
            if any(todo):
                continuations = self.continue_batch(batch, targets, settings)
                for plan, continuation, keep in zip(batch, continuations, todo):
                    if keep:
                        yield self._record(plan, continuation, targets, settings)
            if on_progress:
                on_progress(len(batch))

    def continue_batch(self, batch: list[RecordPlan], targets: list[AttributeTarget], settings: GenerationSettings) -> list[str]:
        seeds = [p.seed for p in batch]
        prefixes = [p.prompt.text for p in batch]
        return self.decode(prefixes, seeds, self.propose(prefixes, seeds, targets, settings), settings)

    @torch.no_grad()
    def decode(self, prefixes: list[str], seeds: list[int], x: torch.Tensor, settings: GenerationSettings) -> list[str]:
        """Steps 5-6: the decoder's continuation of each prefix, following the latent x (B, D)."""
        b = self.bundle
        # 5. re-noise at a fixed α² and map to k soft prompts (B, k, E)
        alpha2 = torch.full((len(prefixes),), self._renoise_alpha2(settings), device=self.device)
        noisy = diffuse(x, RecordRNG(seeds, "renoise", self.device).randn(x.shape[1]), alpha2)
        soft = b.prompt_generator(noisy, alpha2)
        # 6. the decoder writes the continuation after [prefix][soft prompt]; the steer, when on, reads the same
        #    latent at the LM's output (a steer trained without the soft prompt replaces it)
        strength, steer = self.steer_strength(settings), None
        if strength:
            steer = BoundSteer(b.steer, b.decoder.model.get_output_embeddings(), noisy, strength, settings.top_p)
            soft = soft if b.steer.config.soft_prompt else soft[:, :0]
        with self._stage("decode"):
            return b.decoder.generate(
                prefixes, soft, RecordRNG(seeds, "tokens", self.device), settings.max_new_tokens,
                settings.top_p, settings.temperature, settings.repetition_penalty, cfg=settings.decoder_cfg, steer=steer,
            )

    @torch.no_grad()
    def propose(self, prefixes: list[str], seeds: list[int], targets: list[AttributeTarget], settings: GenerationSettings) -> torch.Tensor:
        """Steps 1-4: the diffusion model's proposal for each prefix's continuation, the latent of a unit-norm embedding (B, D)."""
        b = self.bundle
        # 1. prefix latents c = z-score(encoder(prefix))  (B, D)
        with self._stage("encode"):
            context = b.stats.to_latent(self._encode(prefixes))
        # 2. z_1 ~ N(0, I)  (B, D)
        z = RecordRNG(seeds, "init", self.device).randn(context.shape[1])
        # 3. denoiser with classifier-free guidance on the prefix, wrapped by classifier guidance
        denoise = b.denoiser.denoise_fn(context, settings.cfg)
        denoise = classifier_guidance(
            denoise, targets, self.guidance_scale(settings), b.stats.to_embedding,
            RecordRNG(seeds, "guidance", self.device), settings.mc_samples, settings.aggregate,
            settings.guidance_gradient,
        )
        # 4. reverse diffusion -> x̂ (B, D), mapped to the unit sphere and back to a latent
        with self._stage("diffusion"):
            x = sample(denoise, z, settings.steps, settings.sampler, RecordRNG(seeds, "sampler", self.device))
        return b.stats.to_latent(b.stats.to_embedding(x))

    def _encode(self, texts: list[str]) -> torch.Tensor:
        unique = list(dict.fromkeys(texts))
        embeddings = self.bundle.encoder.encode(unique).to(self.device)
        return embeddings[[unique.index(t) for t in texts]]

    def _renoise_alpha2(self, settings: GenerationSettings) -> float:
        return settings.renoise_alpha2 or self.bundle.prompt_generator.config.inference_alpha2

    def guidance_scale(self, settings: GenerationSettings) -> float:
        """The classifier-guidance scale s: --guidance; else, with the steer on, the steer's (its latents pushed far
        enough for it to read them); else DEFAULT_GUIDANCE_SCALE (so --steer 0 is the bundle without its steer)."""
        if settings.guidance_scale is not None:
            return settings.guidance_scale
        steer = self.bundle.steer
        if steer is not None and steer.config.guidance_scale is not None and self.steer_strength(settings):
            return steer.config.guidance_scale
        return DEFAULT_GUIDANCE_SCALE

    def steer_strength(self, settings: GenerationSettings) -> float:
        steer = self.bundle.steer
        if settings.steer is None:
            return steer.config.strength if steer is not None else 0.0
        if settings.steer and steer is None:
            raise InputError(f"--steer {settings.steer:g}: bundle {self.bundle.name} has no steer (train one with `dglm train-steer`)")
        return settings.steer

    def _guidance_block(self, targets: list[AttributeTarget], settings: GenerationSettings) -> dict:
        attrs = [
            {"name": t.requested or t.label, "classifier": t.name, "label": t.label, "weight": t.weight, "avoid": t.avoid}
            for t in targets
        ]
        scale = self.guidance_scale(settings) if targets else 0.0
        return {"attrs": attrs, "scale": scale, "cfg": settings.cfg, "steps": settings.steps, "sampler": settings.sampler}

    def _settings_key(self, targets, settings: GenerationSettings) -> str:
        fields = asdict(settings)
        del fields["batch_size"], fields["seed"]  # neither changes a record's content given its own seed (part of the id)
        del fields["steer"]  # keyed by its effective strength, and only when on: records without a steer keep their ids
        fields["guidance_scale"] = self.guidance_scale(settings)  # keyed by the effective scale: --guidance 7 and the default 7 give one id
        if strength := self.steer_strength(settings):
            fields["steer"] = strength
        return json.dumps([self._guidance_block(targets, settings), fields, self.bundle.sha256], sort_keys=True)

    def _record(self, plan: RecordPlan, continuation: str, targets, settings: GenerationSettings) -> dict:
        b = self.bundle
        return {
            "id": plan.id,
            "prompt_id": plan.prompt.id,
            "sample": plan.sample,
            "prompt": plan.prompt.text,
            "continuation": continuation,
            "guidance": self._guidance_block(targets, settings),
            "seed": plan.seed,
            "meta": {
                "dglm_version": __version__,
                "bundle": b.name,
                "bundle_sha256": b.sha256,
                "encoder": assets.describe(b.encoder.config.reference),
                "decoder": assets.describe(b.decoder.config.reference),
                "device": str(self.device),
                "top_p": settings.top_p,
                "temperature": settings.temperature,
                "repetition_penalty": settings.repetition_penalty,
                "max_new_tokens": settings.max_new_tokens,
                "mc_samples": settings.mc_samples,
                "aggregate": settings.aggregate,
                "guidance_gradient": settings.guidance_gradient,
                "renoise_alpha2": self._renoise_alpha2(settings),
                "decoder_cfg": settings.decoder_cfg,
                "steer": self.steer_strength(settings),
            },
        }


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]
