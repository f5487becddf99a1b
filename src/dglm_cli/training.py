"""Training loops for the denoiser and the prompt generator, with resumable run directories.

Every random draw of step s comes from a generator seeded by (seed, s), and the batch of step s is a
slice of a per-epoch permutation seeded by (seed, epoch): the data position and the randomness are
functions of the step, so a resumed run reproduces an uninterrupted one exactly (on CPU).
Runs go through Hugging Face Accelerate: one process needs no configuration, and the same command
under `accelerate launch` trains with DDP (each process takes its slice of the global batch).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dglm_cli import checkpoints, strict_json
from dglm_cli.adapters import adapter_rank, adapter_state, add_adapters, load_adapter_state
from dglm_cli.bundle import is_bundle, read_decoder_weights
from dglm_cli.corpus import LatentCorpus
from dglm_cli.decoder import SoftPromptDecoder
from dglm_cli.denoiser import Denoiser
from dglm_cli.encoder import LatentStats
from dglm_cli.errors import InputError
from dglm_cli.files import first_line
from dglm_cli.lm_states import LMStates
from dglm_cli.objectives import (
    AdaptiveLogSNRSampler,
    DecoderObjective,
    DiffusionObjective,
    SteerObjective,
    asymmetric_weight,
    cosine_with_warmup,
)
from dglm_cli.prompt_generator import PromptGenerator
from dglm_cli.rng import RecordRNG
from dglm_cli.sampler import sample
from dglm_cli.schedule import diffuse
from dglm_cli.steer import LatentSteer, Teacher

KINDS = ("diffusion", "decoder", "steer")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    max_steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    lm_lr: float = 3e-5  # for the LM when it is fine-tuned
    train_lm: bool = False
    lora_rank: int = 0  # > 0: fine-tune the LM through low-rank adapters of this rank instead (lr lm_lr)
    bag_of_words_weight: float = 0.0  # weight of the bag-of-words loss at the soft positions (decoder runs)
    kl_weight: float = 0.0  # weight of KL(steered ‖ base) beside the target's cross-entropy (steer runs)
    teacher_weight: float = 0.0  # share of the teacher's cross-entropy in the steer's loss, the target's has the rest
    teacher_cfg: float = 1.0  # g: the teacher's distribution amplified as log p_base + g·(log p_teacher − log p_base)
    contrast_cfg: float = 0.0  # g_c: and pushed away from the LM given a pair's contrast, + g_c·(log p_teacher − log p_contrast)
    patience: int = 0  # stop after this many validations without a better loss (0: never; steer runs)
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices only, not on biases, gains or the null embedding
    grad_clip: float = 1.0
    ema_beta: float = 0.9999
    ema_power: float = 0.75
    cfg_dropout: float = 0.1
    eval_every: int = 250
    save_every: int = 250
    val_batches: int = 4
    val_sample_steps: int = 25
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or fp32 / bf16
    adam_beta2: float = 0.999  # official code: 0.999 for the denoiser, 0.99 for the prompt generator
    seed: int = 0

    def validate(self) -> None:
        positive = ("max_steps", "batch_size", "eval_every", "save_every", "val_batches", "val_sample_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr <= 0 or self.lm_lr <= 0:
            raise InputError("learning rates must be positive")
        if self.lora_rank < 0 or self.bag_of_words_weight < 0 or self.kl_weight < 0 or self.patience < 0:
            raise InputError("--lora-rank, --bag-of-words-weight, --kl-weight and --patience must be >= 0")
        if not 0 <= self.teacher_weight <= 1:
            raise InputError("--teacher-weight must be between 0 and 1")
        if self.lora_rank and self.train_lm:
            raise InputError("--train-lm and --lora-rank exclude each other: fine-tune the whole LM or adapters")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}")


@dataclass
class StepReport:
    step: int
    max_steps: int
    metrics: dict = field(default_factory=dict)
    examples_per_s: float = 0.0


class ExponentialMovingAverage:
    """Shadow weights; decay = min(β, 1 − (1 + step)^−power) (the warm-up of ema-pytorch, power 3/4)."""

    def __init__(self, module: torch.nn.Module, beta: float, power: float):
        self.beta, self.power = beta, power
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        decay = min(self.beta, 1 - (1 + step) ** -self.power)
        for key, value in module.state_dict().items():
            self.shadow[key].lerp_(value.detach().float(), 1 - decay)


class Trainer:
    """Shared machinery: accelerator, optimizer, schedule, EMA, checkpoints, metrics."""

    kind: str

    def __init__(self, run_dir: Path, head: torch.nn.Module, objective: torch.nn.Module, corpus: LatentCorpus, config: TrainConfig):
        from accelerate import Accelerator

        self.run_dir, self.head, self.corpus, self.config = run_dir, head, corpus, config
        cuda = torch.cuda.is_available()
        precision = {"auto": "bf16" if cuda else "no", "fp32": "no", "bf16": "bf16"}[config.precision]
        self.accelerator = Accelerator(mixed_precision=precision, cpu=not cuda)
        self.device = self.accelerator.device
        self.stats = LatentStats(corpus.stats.mean, corpus.stats.std).to(self.device)
        objective.to(self.device)
        self.ema = ExponentialMovingAverage(head, config.ema_beta, config.ema_power)
        self.optimizer = torch.optim.AdamW(self._param_groups(objective), betas=(0.9, config.adam_beta2), eps=1e-8)
        self.objective, self.optimizer = self.accelerator.prepare(objective, self.optimizer)
        self.step = 0

    def _param_groups(self, objective) -> list[dict]:
        decay, no_decay, lm = [], [], []
        for name, p in objective.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("lm."):
                lm.append(p)
            else:
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay, "base_lr": self.config.lr},
            {"params": no_decay, "weight_decay": 0.0, "base_lr": self.config.lr},
        ]
        if lm:
            groups.append({"params": lm, "weight_decay": 0.0, "base_lr": self.config.lm_lr})
        return groups

    # ------------------------------------------------------------ data and randomness

    def batch_indices(self, step: int) -> torch.Tensor:
        """This process's slice of the global batch of `step` (training rows of the corpus)."""
        train = self.corpus.train_indices
        per_process, world = self.config.batch_size, self.accelerator.num_processes
        global_batch = per_process * world
        start = step * global_batch
        epoch_first, epoch_last = start // len(train), (start + global_batch - 1) // len(train)
        order = torch.cat([self._permutation(e, len(train)) for e in range(epoch_first, epoch_last + 1)])
        window = order[start - epoch_first * len(train) :][:global_batch]
        rank = self.accelerator.process_index
        return train[window[rank * per_process : (rank + 1) * per_process]]

    def _permutation(self, epoch: int, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch))

    def step_generator(self, step: int) -> torch.Generator:
        rank = self.accelerator.process_index
        return torch.Generator().manual_seed((self.config.seed * 1_000_003 + step) * 1009 + rank)

    # ------------------------------------------------------------ loop

    def train(
        self,
        max_steps: int | None = None,
        time_budget_s: float | None = None,
        on_step: Callable[[StepReport], None] | None = None,
    ) -> int:
        max_steps = max_steps or self.config.max_steps
        started, examples = time.perf_counter(), 0
        if self.step == 0:  # the untrained baseline, for comparison with every later validation
            self.log({"step": 0} | {f"val_{k}": v for k, v in self.validate().items()})
        while self.step < max_steps and not self.converged():
            lr_scale = cosine_with_warmup(self.step, self.config.warmup_steps, max_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_scale
            metrics = self.train_step(self.step)
            self.accelerator.clip_grad_norm_(self.objective.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.ema.update(self.head, self.step)
            self.step += 1
            examples += self.config.batch_size * self.accelerator.num_processes
            out_of_time = time_budget_s is not None and time.perf_counter() - started >= time_budget_s
            last = self.step == max_steps or out_of_time
            if self.step % self.config.eval_every == 0 or last:
                metrics |= {f"val_{k}": v for k, v in self.validate().items()}
                self.observe_validation(metrics)
            metrics |= {"step": self.step, "lr": self.config.lr * lr_scale}
            self.log(metrics)
            if self.step % self.config.save_every == 0 or last or self.converged():
                self.save()
            if on_step:
                on_step(StepReport(self.step, max_steps, metrics, examples / (time.perf_counter() - started)))
            if out_of_time:
                break
        return self.step

    def train_step(self, step: int) -> dict:
        raise NotImplementedError

    def validate(self) -> dict:
        raise NotImplementedError

    def observe_validation(self, metrics: dict) -> None:
        """Called with each step's metrics after a validation (early stopping keeps its state here)."""

    def converged(self) -> bool:
        """Whether training should stop before max_steps (early stopping)."""
        return False

    def log(self, metrics: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(strict_json.jsonl_line(metrics))

    # ------------------------------------------------------------ checkpoints

    def trained_lm_state(self) -> dict[str, torch.Tensor] | None:
        return None

    def load_trained_lm_state(self, state: dict[str, torch.Tensor]) -> None:
        self.accelerator.unwrap_model(self.objective).lm.load_state_dict(state)

    def initialize_from(self, source: Path) -> None:
        """Start a new run from another run's latest weights (head, EMA and trained LM part), or from a
        bundle's (its prompt generator as head and EMA, its adapters as the LM part); step stays 0."""
        if is_bundle(source):
            weights, lm = read_decoder_weights(source)
            if lm is not None and self.trained_lm_state() is None:
                raise InputError(f"--init-from: {source} has decoder adapters; train with --lora-rank {adapter_rank(lm)}")
            checkpoint = checkpoints.Checkpoint(0, source, weights, weights, {}, {}, lm)
        else:
            checkpoint = checkpoints.load_checkpoint(source)
        if checkpoint is None:
            raise InputError(f"--init-from: {source} has no checkpoint")
        try:
            self._restore_weights(checkpoint)
        except (KeyError, RuntimeError) as error:
            raise InputError(f"--init-from: {source} does not fit this run ({first_line(error)})") from None

    def _restore_weights(self, checkpoint) -> None:
        """The head, its EMA and the trained LM part (when this run trains one) from a checkpoint."""
        self.head.load_state_dict(checkpoint.weights)
        if checkpoint.lm is not None and self.trained_lm_state() is not None:
            self.load_trained_lm_state(checkpoint.lm)
        self.ema.shadow = {k: v.float().clone() for k, v in checkpoint.ema.items()}

    def save(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            checkpoints.save_checkpoint(
                self.run_dir,
                self.step,
                weights=self.head.state_dict(),
                ema=self.ema.shadow,
                optimizer=self.optimizer.state_dict(),
                extra=self.extra_state(),
                lm=self.trained_lm_state(),
            )
        self.accelerator.wait_for_everyone()

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def resume(self) -> bool:
        """Continue from the last checkpoint (True); without one (killed before the first), start over at
        step 0 with the metrics of the lost steps removed (False)."""
        checkpoint = checkpoints.load_checkpoint(self.run_dir)
        if checkpoint is None:
            if self.accelerator.is_main_process:
                _truncate_metrics(self.run_dir / "metrics.jsonl", 0)
            return False
        self._restore_weights(checkpoint)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.load_extra_state(checkpoint.extra)
        self.step = checkpoint.step
        if self.accelerator.is_main_process:
            _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        return True


class DiffusionTrainer(Trainer):
    kind = "diffusion"

    def __init__(self, run_dir: Path, denoiser: Denoiser, corpus: LatentCorpus, config: TrainConfig):
        self.sampler = AdaptiveLogSNRSampler()
        super().__init__(run_dir, denoiser, DiffusionObjective(denoiser, config.cfg_dropout), corpus, config)

    def latents(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stats.to_latent(self.corpus.continuation_embeddings[rows].to(self.device))
        c = self.stats.to_latent(self.corpus.prefix_embeddings[rows].to(self.device))
        return x, c

    def train_step(self, step: int) -> dict:
        generator = self.step_generator(step)
        x, c = self.latents(self.batch_indices(step))
        # 1. γ from the adaptive sampler with its density; 2. ε; 3. prefix-dropout draws
        logsnr, density = self.sampler.sample(len(x), generator)
        noise = torch.randn(x.shape, generator=generator)
        dropout_draw = torch.rand(len(x), generator=generator)
        logsnr, density, noise, dropout_draw = (t.to(self.device) for t in (logsnr, density, noise, dropout_draw))
        # 4. unweighted v-losses L(γ), importance-weighted objective mean(w(γ) / p(γ) · L(γ))
        with self.accelerator.autocast():
            losses = self.objective(x, c, logsnr, noise, dropout_draw)
        weight = asymmetric_weight(logsnr)
        loss = (weight / density * losses).mean()
        self.accelerator.backward(loss)
        # 5. the sampler's bins learn from every process's weighted losses
        gathered_logsnr, gathered_losses = self.accelerator.gather((logsnr, weight * losses.detach()))
        self.sampler.update(gathered_logsnr, gathered_losses)
        return {"loss": loss.item()}

    @torch.no_grad()
    def validate(self) -> dict:
        rows = self.corpus.val_indices[: self.config.batch_size * self.config.val_batches]
        x, c = self.latents(rows)
        generator = torch.Generator().manual_seed(self.config.seed + 12345)
        logsnr = torch.empty(len(x)).uniform_(-15, 15, generator=generator).to(self.device)
        noise = torch.randn(x.shape, generator=generator).to(self.device)
        no_dropout = torch.ones(len(x), device=self.device)
        model = self.accelerator.unwrap_model(self.objective)
        model.eval()
        losses = model(x, c, logsnr, noise, no_dropout)
        weighted = (asymmetric_weight(logsnr) * losses).mean().item()
        cosine = self.sample_cosine(x[: self.config.batch_size], c[: self.config.batch_size])
        model.train()
        return {"loss": weighted, "uniform_loss": losses.mean().item(), "cosine": cosine}

    def sample_cosine(self, x: torch.Tensor, c: torch.Tensor) -> float:
        """Mean cosine between sampled and true continuation embeddings, with the EMA weights (paper's check)."""
        denoiser = self.ema_denoiser()
        seeds = list(range(len(x)))
        z = RecordRNG(seeds, "init", self.device).randn(x.shape[1])
        sampled = sample(denoiser.denoise_fn(c), z, self.config.val_sample_steps, "ddpm", RecordRNG(seeds, "sampler", self.device))
        return torch.nn.functional.cosine_similarity(self.stats.to_embedding(sampled), self.stats.to_embedding(x)).mean().item()

    def ema_denoiser(self) -> Denoiser:
        denoiser = Denoiser(self.head.config).to(self.device).eval()
        denoiser.load_state_dict(self.ema.shadow)
        return denoiser

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"sampler.ema": self.sampler.state_dict()["ema"]}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.sampler.load_state_dict({"ema": tensors["sampler.ema"]})


class DecoderTrainer(Trainer):
    kind = "decoder"

    def __init__(self, run_dir: Path, prompt_generator: PromptGenerator, decoder: SoftPromptDecoder, corpus: LatentCorpus, config: TrainConfig):
        if config.lora_rank:
            add_adapters(decoder.model, config.lora_rank)
        else:
            decoder.model.requires_grad_(config.train_lm)
        decoder.model.train(config.train_lm)
        self.decoder = decoder
        rows = corpus.train_indices.tolist()
        self.train_lengths = torch.tensor([len(corpus.prefix_ids[r]) + len(corpus.continuation_ids[r]) for r in rows])
        super().__init__(run_dir, prompt_generator, DecoderObjective(prompt_generator, decoder), corpus, config)

    def _permutation(self, epoch: int, n: int) -> torch.Tensor:
        """The epoch's shuffled order, regrouped so each global batch holds examples of similar length."""
        order = super()._permutation(epoch, n)
        lengths = self.train_lengths[order]
        global_batch = self.config.batch_size * self.accelerator.num_processes
        return group_by_length(order, lengths, global_batch, generator=torch.Generator().manual_seed(self.config.seed + epoch))

    def token_rows(self, rows: torch.Tensor) -> tuple[list[list[int]], list[list[int]]]:
        rows = rows.tolist()
        return [self.corpus.prefix_ids[r] for r in rows], [self.corpus.continuation_ids[r] for r in rows]

    def train_step(self, step: int) -> dict:
        generator = self.step_generator(step)
        rows = self.batch_indices(step)
        x = self.stats.to_latent(self.corpus.continuation_embeddings[rows].to(self.device))
        # Gaussian noise augmentation: t ~ U(0, 1), α² from the shifted cosine schedule
        t = torch.rand(len(x), generator=generator, dtype=torch.float64)
        noise = torch.randn(x.shape, generator=generator).to(self.device)
        alpha2 = self.accelerator.unwrap_model(self.objective).noise_level(t).float().to(self.device)
        weight = self.config.bag_of_words_weight
        with self.accelerator.autocast():
            nll, counts, bag_of_words = self.objective(x, alpha2, noise, *self.token_rows(rows), bag_of_words=weight > 0)
        loss = nll.sum() / counts.sum().clamp(min=1)
        if bag_of_words is None:
            self.accelerator.backward(loss)
            return {"loss": loss.item()}
        self.accelerator.backward(loss + weight * bag_of_words.mean())
        return {"loss": loss.item(), "bag_of_words_loss": bag_of_words.mean().item()}

    @torch.no_grad()
    def validate(self) -> dict:
        """Continuation loss with the true latent, a shuffled latent, and no soft prompt (nats/token)."""
        objective = self.accelerator.unwrap_model(self.objective)
        objective.eval()
        totals = {"true_latent": [0.0, 0], "shuffled_latent": [0.0, 0], "no_prompt": [0.0, 0]}
        val = self.corpus.val_indices
        alpha2_value = objective.prompt_generator.config.inference_alpha2
        generator = torch.Generator().manual_seed(self.config.seed + 12345)
        for start in range(0, min(len(val), self.config.batch_size * self.config.val_batches), self.config.batch_size):
            rows = val[start : start + self.config.batch_size]
            prefix_ids, continuation_ids = self.token_rows(rows)
            x = self.stats.to_latent(self.corpus.continuation_embeddings[rows].to(self.device))
            noise = torch.randn(x.shape, generator=generator).to(self.device)
            alpha2 = torch.full((len(x),), alpha2_value, device=self.device)
            for name, latent in (("true_latent", x), ("shuffled_latent", x.roll(1, dims=0))):
                nll, counts, _ = objective(latent, alpha2, noise, prefix_ids, continuation_ids)
                totals[name][0] += nll.sum().item()
                totals[name][1] += counts.sum().item()
            empty = x.new_zeros(len(x), 0, self.decoder.config.embedding_dim)
            nll, counts = self.decoder.continuation_nll(prefix_ids, empty, continuation_ids)
            totals["no_prompt"][0] += nll.sum().item()
            totals["no_prompt"][1] += counts.sum().item()
        objective.train()
        self.decoder.model.train(self.config.train_lm)
        return {name: total / max(count, 1) for name, (total, count) in totals.items()}

    def trained_lm_state(self) -> dict[str, torch.Tensor] | None:
        if self.config.lora_rank:
            return adapter_state(self.decoder.model)
        return self.decoder.model.state_dict() if self.config.train_lm else None

    def load_trained_lm_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.config.lora_rank:
            load_adapter_state(self.decoder.model, state)
        else:
            super().load_trained_lm_state(state)


class SteerTrainer(Trainer):
    """The latent steer on cached LM states (dglm_cli.lm_states), in the bundle's latent space.

    A step takes a batch of corpus rows and all their continuation tokens. Validation reports the loss
    over the candidates with the true latent, a shuffled latent and no steer (nats/token), and keeps the
    best weights: with `patience`, training stops once that many validations bring no better loss, and
    the steer that is exported is the best one.
    """

    kind = "steer"

    def __init__(self, run_dir: Path, steer: LatentSteer, output_layer: torch.nn.Linear, states: LMStates, corpus: LatentCorpus,
                 stats: LatentStats, inference_alpha2: float, config: TrainConfig):
        self.states, self.inference_alpha2 = states, inference_alpha2
        super().__init__(run_dir, steer, SteerObjective(steer, output_layer), corpus, config)
        self.stats = stats.to(self.device)  # the bundle's latent space, which the steer reads at generation
        self.best = {"loss": float("inf"), "step": 0, "stale": 0}
        self.best_weights = {k: v.detach().clone() for k, v in steer.state_dict().items()}

    def tokens(self, rows: torch.Tensor) -> tuple:
        """(hidden (T, H), candidates (T, K) or None, target index (T,), the teacher over the candidates or None,
        the row of each token (T,)) of these rows' tokens."""
        tokens, owner = self.states.tokens_of(rows)
        hidden = self.states.hidden[tokens].to(self.device).float()
        candidates = None if self.states.candidates is None else self.states.candidates[tokens].to(self.device).long()
        return hidden, candidates, self.states.target_index(tokens).to(self.device), self.teacher(tokens), owner.to(self.device)

    def teacher(self, tokens: torch.Tensor) -> Teacher | None:
        """The teacher at these tokens (T,), with its contrast when the run pushes away from one."""
        states, config = self.states, self.config
        if states.teacher is None or not config.teacher_weight:
            return None
        contrast = states.contrast[tokens].to(self.device).float() if states.contrast is not None and config.contrast_cfg else None
        return Teacher(states.teacher[tokens].to(self.device).float(), config.teacher_cfg, contrast, config.contrast_cfg)

    def noised_latents(self, rows: torch.Tensor, alpha2: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The rows' continuation latents in the bundle's latent space, noised at α² (B,) by noise (B, D) -> (B, D)."""
        return diffuse(self.stats.to_latent(self.corpus.continuation_embeddings[rows].to(self.device)), noise, alpha2)

    def loss_sums(self, objective, hidden, z, candidates, target, teacher, steered: bool = True) -> dict:
        """Per-token losses summed: the target's cross-entropy, KL to the base, the teacher's cross-entropy
        (with a teacher); and the counts they are averaged over (covered targets, tokens)."""
        ce, kl, soft = objective(hidden, z, candidates, target, teacher, steered)
        sums = {"ce": ce.sum(), "kl": kl.sum(), "covered": (target >= 0).sum(), "tokens": len(target)}
        return sums | ({"teacher": soft.sum()} if soft is not None else {})

    def loss_means(self, sums: dict) -> dict:
        """Means of `loss_sums` and the objective: (1 − w)·ce + w·teacher + β·kl, w = --teacher-weight with a teacher."""
        means = {"ce": sums["ce"] / max(sums["covered"], 1), "kl": sums["kl"] / max(sums["tokens"], 1)}
        weight = 0.0
        if "teacher" in sums:
            means["teacher"], weight = sums["teacher"] / max(sums["tokens"], 1), self.config.teacher_weight
        means["objective"] = (1 - weight) * means["ce"] + weight * means.get("teacher", 0.0)
        if self.config.kl_weight:  # else the KL is only reported, and the backward pass skips it
            means["objective"] = means["objective"] + self.config.kl_weight * means["kl"]
        return means

    def train_step(self, step: int) -> dict:
        generator = self.step_generator(step)
        rows = self.batch_indices(step)
        # Gaussian noise augmentation of the latent, as the prompt generator's: t ~ U(0, 1), α² from the shifted schedule
        t = torch.rand(len(rows), generator=generator, dtype=torch.float64)
        noise = torch.randn(len(rows), self.stats.mean.shape[0], generator=generator).to(self.device)
        alpha2 = self.accelerator.unwrap_model(self.objective).noise_level(t).float().to(self.device)
        hidden, candidates, target, teacher, owner = self.tokens(rows)
        with self.accelerator.autocast():
            sums = self.loss_sums(self.objective, hidden, self.noised_latents(rows, alpha2, noise)[owner], candidates, target, teacher)
        means = self.loss_means(sums)
        self.accelerator.backward(means["objective"])
        return {"loss": means.pop("objective").item()} | {k: v.item() for k, v in means.items()}

    @torch.no_grad()
    def validate(self) -> dict:
        """The objective (loss), the target's cross-entropy (nats per covered token) and, with a teacher, the
        teacher's cross-entropy, each with the true latent, a shuffled latent and no steer; KL to the base
        with the true latent; the share of targets among the candidates."""
        objective = self.accelerator.unwrap_model(self.objective)
        objective.eval()
        totals = {name: {} for name in ("true_latent", "shuffled_latent", "no_steer")}
        generator = torch.Generator().manual_seed(self.config.seed + 12345)
        for rows in self.corpus.val_indices.split(self.config.batch_size):
            noise = torch.randn(len(rows), self.stats.mean.shape[0], generator=generator).to(self.device)
            latents = self.noised_latents(rows, torch.full((len(rows),), self.inference_alpha2, device=self.device), noise)  # (B, D)
            hidden, candidates, target, teacher, owner = self.tokens(rows)
            runs = {"true_latent": (latents[owner], True), "shuffled_latent": (latents.roll(1, dims=0)[owner], True), "no_steer": (latents[owner], False)}
            for name, (z, steered) in runs.items():
                for key, value in self.loss_sums(objective, hidden, z, candidates, target, teacher, steered).items():
                    totals[name][key] = totals[name].get(key, 0.0) + float(value)
        objective.train()
        means = {name: self.loss_means(sums) for name, sums in totals.items()}
        metrics = {"loss": means["true_latent"]["objective"], "kl": means["true_latent"]["kl"]}
        for name, values in means.items():
            metrics |= {name: values["ce"]} | ({f"teacher_{name}": values["teacher"]} if "teacher" in values else {})
        return metrics | {"coverage": totals["true_latent"]["covered"] / max(totals["true_latent"]["tokens"], 1)}

    def observe_validation(self, metrics: dict) -> None:
        if metrics["val_loss"] < self.best["loss"]:
            self.best = {"loss": metrics["val_loss"], "step": self.step, "stale": 0}
            self.best_weights = {k: v.detach().clone() for k, v in self.head.state_dict().items()}
        else:
            self.best["stale"] += 1

    def converged(self) -> bool:
        return 0 < self.config.patience <= self.best["stale"]

    def extra_state(self) -> dict[str, torch.Tensor]:
        best = {f"best.{k}": v for k, v in self.best_weights.items()}
        return best | {"best_loss": torch.tensor(self.best["loss"], dtype=torch.float64), "best_step": torch.tensor(self.best["step"]),
                       "stale": torch.tensor(self.best["stale"])}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.best = {"loss": tensors["best_loss"].item(), "step": int(tensors["best_step"]), "stale": int(tensors["stale"])}
        self.best_weights = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}


def group_by_length(order: torch.Tensor, lengths: torch.Tensor, batch: int, generator: torch.Generator, window: int = 32) -> torch.Tensor:
    """Sort each run of `window` batches of `order` by length, then shuffle those batches among themselves.

    Padding to the longest row then costs little, and every example is still seen once per epoch.
    """
    span = batch * window
    grouped = []
    for start in range(0, len(order), span):
        chunk = order[start : start + span][lengths[start : start + span].argsort(stable=True)]
        batches = list(chunk.split(batch))
        grouped += [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return torch.cat(grouped)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from."""
    if not path.exists():
        return
    kept = [line for line, metrics in metric_lines(path) if metrics.get("step", 0) <= last_step]
    from dglm_cli.bundle import write_text

    write_text(path, "".join(line + "\n" for line in kept))


def metric_lines(path: Path) -> list[tuple[str, dict]]:
    """The non-blank lines of metrics.jsonl, each with its parsed object; a torn last line (a write cut by a
    kill) is left out, like a torn record; any other line that is not a JSON object is an InputError naming it."""
    from dglm_cli.records import json_object

    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            parsed.append((line, json_object(line, f"{path}:{number}")))
        except InputError:
            if number == len(lines):
                break
            raise
    return parsed

