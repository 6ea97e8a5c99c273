"""The training loop: masked-diffusion multi-task (generator + critic) or causal (the judge).

One linear loop serves one device or many (``torchrun`` + DDP, one branch in
:func:`remask.runtime.init_world`). All randomness of a step (windows, mask times, masks,
the generator samples shown to the critic) is drawn for the *global* batch from one seeded
``torch.Generator`` and each rank takes its slice, so a DDP run sees exactly the data of a
single-process run with the same global batch, and resuming restores the generator state.

Multi-task step (the design note, with the label trap avoided):

1. generator loss: cross-entropy on masked positions of the masked input;
2. sample the generator's logits (float64, no grad) at masked positions only;
3. ``critic_input = where(masked, sample, clean)``, ``target = critic_input != clean``
   (compared with the clean tokens, never with ignore-index targets);
4. second forward pass on ``critic_input`` through the critic head, BCE with logits, on the
   positions chosen by ``critic.label_scope``: ``filled`` (default; every token the sampler
   commits at inference was filled, so this is the distribution the critic is used on) or
   ``all`` (visible positions added as negatives);
5. ``loss = loss_gen + alpha * loss_critic`` (alpha warmed up linearly), one backward.

The ``critic`` section's levers change what the critic is shown in step 3: fills at random
temperatures, swapped visible tokens, a partly re-masked input (for ``critic_fused``), or, for a
share of the sequences, the state after a two-step ``confidence`` rollout (:func:`rollout_refill`,
one more no-grad pass), so that it learns on committed tokens whose confidence is stale.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from remask import checkpoint
from remask.config import CriticSection, OptimSection, TrainSection
from remask.data import CharTokenizer, fixed_windows, load_meta, load_split, sample_windows
from remask.model import DiffusionTransformer, ModelConfig, token_cross_entropy
from remask.runtime import World, autocast, barrier, close_world, init_world
from remask.sampling import inverse_cdf, tempered_probs, top_k_per_row
from remask.schedules import elbo_weight, masked_fraction

Objective = Literal["diffusion", "autoregressive"]
EVAL_SEED_OFFSET = 1_000_003  # evaluation masks come from their own generator, never the training one


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


@dataclass(frozen=True)
class RunSpec:
    """What one training run trains, with which settings, and where it writes."""

    variant: str
    objective: Objective
    model: ModelConfig
    optim: OptimSection
    out_dir: Path
    live_dir: Path
    diffusion: TrainSection | None = None
    critic: CriticSection | None = None
    init_from: Path | None = None  # start from this model directory's weights (a fresh run only)

    @property
    def alpha(self) -> float:
        return self.diffusion.alpha if self.diffusion is not None else 0.0

    def fingerprint(self, data_meta: dict) -> str:
        """Everything that changes the result; a saved state resumes only under the same one."""
        payload = {
            "variant": self.variant,
            "objective": self.objective,
            "model": self.model.to_dict(),
            "optim": self.optim.model_dump(exclude={"resume", "device", "compile"}),
            "diffusion": self.diffusion.model_dump(exclude={"resume", "device", "compile"}) if self.diffusion else None,
            "critic": self.critic.model_dump() if self.critic else None,
            "data": data_meta.get("bin_sha256"),
            "code": _code_digest(),
            "init_from": checkpoint.weights_digest(self.init_from) if self.init_from else None,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _code_digest() -> str:
    """Hash of the modules that decide what a training step computes: edited code never resumes."""
    import remask

    digest = hashlib.sha256()
    for name in ("model.py", "train.py", "schedules.py", "sampling.py", "data.py"):
        digest.update((Path(remask.__file__).parent / name).read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Noise for one global batch


@dataclass
class DiffusionNoise:
    t: torch.Tensor  # (B,) diffusion time per sequence
    mask: torch.Tensor  # (B, T) bool, True where the input is [MASK]
    uniform: torch.Tensor  # (B, T) float64, drives the inverse-CDF sample shown to the critic
    # Optional, drawn only when a critic option asks for them (so the default run's stream is unchanged):
    temperature: torch.Tensor | None = None  # (B,) float64, sampling temperature of the critic's fill
    replace: torch.Tensor | None = None  # (B, T) bool, visible tokens swapped for random characters
    replacement: torch.Tensor | None = None  # (B, T) long, the random characters
    remask: torch.Tensor | None = None  # (B, T) bool, positions of the filled sequence masked again
    rollout: torch.Tensor | None = None  # (B,) bool, sequences whose critic input is a two-step rollout
    uniform_refill: torch.Tensor | None = None  # (B, T) float64, drives the rollout's second fill

    def _map(self, fn) -> "DiffusionNoise":
        return DiffusionNoise(**{f.name: None if (v := getattr(self, f.name)) is None else fn(v) for f in fields(self)})

    def rows(self, start: int, stop: int) -> "DiffusionNoise":
        return self._map(lambda v: v[start:stop])

    def to(self, device: torch.device) -> "DiffusionNoise":
        return self._map(lambda v: v.to(device))

    def critic_scope(self, label_scope: str) -> torch.Tensor:
        """Positions whose critic label enters the loss: filled (or all) positions, plus swapped
        visible ones, less those masked again in the critic's input (they show no token to judge)."""
        scope = self.mask if label_scope == "filled" else torch.ones_like(self.mask)
        if self.replace is not None:
            scope = scope | self.replace
        if self.remask is not None:
            scope = scope & ~self.remask
        return scope


def draw_noise(
    batch: int, length: int, schedule: str, eps: float, generator: torch.Generator,
    critic: CriticSection | None = None, n_chars: int | None = None,
) -> DiffusionNoise:
    """All randomness of one global batch; ``critic`` adds what its options need (``n_chars``:
    the number of real characters, for random replacements)."""
    t = eps + (1.0 - eps) * torch.rand(batch, generator=generator, dtype=torch.float64)
    mask = torch.rand(batch, length, generator=generator, dtype=torch.float64) < masked_fraction(t, schedule)[:, None]
    uniform = torch.rand(batch, length, generator=generator, dtype=torch.float64)
    noise = DiffusionNoise(t.float(), mask, uniform)
    if critic is None:
        return noise
    if critic.sample_temperature_spread > 0:
        spread = critic.sample_temperature_spread * torch.rand(batch, generator=generator, dtype=torch.float64)
        noise.temperature = critic.sample_temperature + spread
    if critic.replace_visible > 0:
        if n_chars is None:
            raise ValueError("critic.replace_visible needs the number of characters")
        noise.replace = ~mask & (torch.rand(batch, length, generator=generator, dtype=torch.float64) < critic.replace_visible)
        noise.replacement = torch.randint(0, n_chars, (batch, length), generator=generator)
    if critic.input == "partial":
        share = torch.rand(batch, generator=generator, dtype=torch.float64)
        noise.remask = torch.rand(batch, length, generator=generator, dtype=torch.float64) < share[:, None]
    if critic.rollout_share > 0:
        noise.rollout = torch.rand(batch, generator=generator, dtype=torch.float64) < critic.rollout_share
        noise.uniform_refill = torch.rand(batch, length, generator=generator, dtype=torch.float64)
    return noise


ROLLOUT_REMASK = 0.5  # share of the first fill that the rollout's confidence step masks again


@torch.no_grad()
def rollout_refill(
    model: DiffusionTransformer, critic_input: torch.Tensor, masked: torch.Tensor, p_sampled: torch.Tensor,
    uniform: torch.Tensor, temperature: float | torch.Tensor,
) -> torch.Tensor:
    """The second step of a two-step ``confidence`` rollout, as the sampler would take it.

    Of the tokens filled in the first step (``masked``), the least confident half is masked again
    and refilled in one more pass, which sees the kept ones as context. The kept tokens are now
    committed with a stale confidence, the states a critic meets at inference.
    """
    k = torch.round(ROLLOUT_REMASK * masked.sum(1)).long()
    refill = top_k_per_row((1.0 - p_sampled).masked_fill(~masked, float("nan")), k)
    logits = model(critic_input.masked_fill(refill, model.config.mask_id), head="lm")
    sample = sample_from_logits(logits.float(), uniform, temperature)
    return torch.where(refill, sample, critic_input)


def sample_from_logits(logits: torch.Tensor, uniform: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sample in float64 (low precision distorts the tail), driven by pre-drawn uniforms so that
    every DDP rank can take its slice of the global batch's noise."""
    return inverse_cdf(tempered_probs(logits, temperature, 1.0), uniform)


def critic_batch(clean: torch.Tensor, masked: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's input and labels: samples at masked positions only, errors against clean text.

    Labels compare the filled sequence with the clean tokens, so a visible position (shown
    clean) is never an error; comparing with ignore-index targets (-100) would mark every
    visible token as one.
    """
    critic_input = torch.where(masked, sample, clean)
    return critic_input, (critic_input != clean).float()


# ---------------------------------------------------------------------------------------------
# Objectives: one forward call each, so DDP sees a single forward per step


class DiffusionObjective(nn.Module):
    """Generator loss plus ``alpha`` times critic loss; returns the loss and its parts."""

    def __init__(self, model: DiffusionTransformer, train: TrainSection, critic: CriticSection):
        super().__init__()
        self.model, self.train_cfg, self.critic_cfg = model, train, critic

    def forward(
        self, clean: torch.Tensor, noise: DiffusionNoise, alpha: float, norm: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        mask_id = self.model.config.mask_id
        masked_input = clean.masked_fill(noise.mask, mask_id)
        logits = self.model(masked_input, head="lm")
        ce = token_cross_entropy(logits, clean)
        if self.train_cfg.elbo_weighting:
            weight = elbo_weight(noise.t, self.train_cfg.mask_schedule)[:, None]
            loss_gen = (ce * noise.mask * weight).sum() / norm["tokens"]
        else:
            loss_gen = (ce * noise.mask).sum() / norm["masked"]
        out = {"loss_gen": loss_gen}
        if self.train_cfg.alpha == 0:  # the generator-only baseline skips the critic pass
            out["loss"] = loss_gen
            return out
        cfg = self.critic_cfg
        with torch.no_grad():
            temperature = cfg.sample_temperature if noise.temperature is None else noise.temperature[:, None, None]
            sample = sample_from_logits(logits.detach(), noise.uniform, temperature)
            critic_input, target = critic_batch(clean, noise.mask, sample)
            if noise.rollout is not None and noise.rollout.any():
                rows = noise.rollout
                row_temperature = temperature if noise.temperature is None else temperature[rows]
                p_sampled = tempered_probs(logits.detach()[rows], row_temperature, 1.0).gather(
                    -1, sample[rows].unsqueeze(-1)).squeeze(-1)
                critic_input = critic_input.clone()
                critic_input[rows] = rollout_refill(self.model, critic_input[rows], noise.mask[rows], p_sampled,
                                                    noise.uniform_refill[rows], row_temperature)
                target = (critic_input != clean).float()
            if noise.replace is not None:
                critic_input = torch.where(noise.replace, noise.replacement, critic_input)
                target = (critic_input != clean).float()
            if noise.remask is not None:
                critic_input = critic_input.masked_fill(noise.remask, mask_id)
        if cfg.detach_body:
            with torch.no_grad():
                hidden = self.model.body(critic_input)
            critic_logits = self.model.critic_head(hidden).squeeze(-1)
        else:
            critic_logits = self.model(critic_input, head="critic")
        pos_weight = None if cfg.pos_weight == 1.0 else torch.tensor(cfg.pos_weight, device=critic_logits.device)
        bce = F.binary_cross_entropy_with_logits(critic_logits.float(), target, reduction="none", pos_weight=pos_weight)
        loss_critic = (bce * noise.critic_scope(cfg.label_scope)).sum() / norm["critic"]
        out["loss_critic"] = loss_critic
        out["loss"] = loss_gen + alpha * loss_critic
        return out


class AutoregressiveObjective(nn.Module):
    """Next-character cross-entropy, for the causal judge."""

    def __init__(self, model: DiffusionTransformer):
        super().__init__()
        self.model = model

    def forward(self, window: torch.Tensor, norm: dict[str, float]) -> dict[str, torch.Tensor]:
        logits = self.model(window[:, :-1], head="lm")
        ce = token_cross_entropy(logits, window[:, 1:]).sum()
        loss = ce / norm["tokens"]
        return {"loss": loss, "loss_gen": loss}


# ---------------------------------------------------------------------------------------------
# Evaluation on fixed validation windows


@torch.no_grad()
def evaluate_diffusion(
    model: DiffusionTransformer,
    windows: torch.Tensor,
    train: TrainSection,
    critic: CriticSection,
    seed: int,
    batch_size: int,
) -> dict[str, float]:
    """Generator loss, an ELBO bound in bits/char, and the critic against the confidence baseline.

    Masks and samples come from a generator seeded with ``seed``: every evaluation of a run, and
    of every variant, sees the same masks.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    ce_sum = ce_weighted = bce_sum = 0.0
    masked = tokens = bce_count = 0
    critic_scores, confidence_scores, labels = [], [], []
    for start in range(0, len(windows), batch_size):
        clean = windows[start : start + batch_size]
        noise = draw_noise(len(clean), clean.size(1), train.mask_schedule, train.mask_eps, gen)
        clean, noise = clean.to(device), noise.to(device)
        with autocast(device):
            logits = model(clean.masked_fill(noise.mask, model.config.mask_id), head="lm").float()
        ce = token_cross_entropy(logits, clean)
        ce_sum += float((ce * noise.mask).sum())
        ce_weighted += float((ce * noise.mask * elbo_weight(noise.t, train.mask_schedule)[:, None]).sum())
        masked += int(noise.mask.sum())
        tokens += clean.numel()
        sample = sample_from_logits(logits, noise.uniform, critic.sample_temperature)
        critic_input, target = critic_batch(clean, noise.mask, sample)
        with autocast(device):
            critic_logits = model(critic_input, head="critic").float()
        bce = F.binary_cross_entropy_with_logits(critic_logits, target, reduction="none")
        scope = noise.mask if critic.label_scope == "filled" else torch.ones_like(noise.mask)
        bce_sum += float((bce * scope).sum())
        bce_count += int(scope.sum())
        p_sampled = torch.softmax(logits.double() / critic.sample_temperature, -1).gather(-1, sample[..., None])[..., 0]
        critic_scores.append(critic_logits[noise.mask].cpu())
        confidence_scores.append((1.0 - p_sampled)[noise.mask].float().cpu())
        labels.append(target[noise.mask].cpu())
    model.train(was_training)
    y = torch.cat(labels).numpy()
    both_classes = 0 < y.sum() < len(y)
    return {
        "gen_loss": ce_sum / max(masked, 1),
        "bpc_bound": ce_weighted / tokens / math.log(2),
        "critic_loss": bce_sum / max(bce_count, 1),
        "critic_auroc": float(roc_auc_score(y, torch.cat(critic_scores).numpy())) if both_classes else float("nan"),
        "confidence_auroc": float(roc_auc_score(y, torch.cat(confidence_scores).numpy())) if both_classes else float("nan"),
        "error_rate": float(y.mean()) if len(y) else float("nan"),
    }


@torch.no_grad()
def evaluate_autoregressive(model: DiffusionTransformer, windows: torch.Tensor, batch_size: int) -> dict[str, float]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        window = windows[start : start + batch_size].to(device)
        with autocast(device):
            logits = model(window[:, :-1], head="lm").float()
        total += float(token_cross_entropy(logits, window[:, 1:]).sum())
        count += window[:, 1:].numel()
    model.train(was_training)
    return {"gen_loss": total / count, "bpc": total / count / math.log(2)}


# ---------------------------------------------------------------------------------------------
# The loop


def learning_rate(step: int, cfg: OptimSection) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` at ``max_steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (cfg.lr - cfg.min_lr)


def alpha_at(step: int, cfg: TrainSection | None) -> float:
    if cfg is None or cfg.alpha == 0:
        return 0.0
    if cfg.alpha_warmup_steps == 0:
        return cfg.alpha
    return cfg.alpha * min(1.0, (step + 1) / cfg.alpha_warmup_steps)


def make_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms and biases), as in nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


@dataclass
class TrainResult:
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    seconds: float = 0.0


def train(spec: RunSpec, data_dir: str | Path, stop_after: int | None = None, progress: bool = True) -> TrainResult:
    """Train ``spec`` on the prepared data in ``data_dir``; resumable, and DDP-aware.

    ``stop_after`` ends the run after that many steps (with a checkpoint), as an interruption
    would; the tests use it to check that resuming reproduces an uninterrupted run.
    """
    world, device = init_world(spec.optim.device)
    try:
        return _train(spec, Path(data_dir), world, device, stop_after, progress)
    finally:
        close_world(world)


def _train(
    spec: RunSpec, data_dir: Path, world: World, device: torch.device, stop_after: int | None, progress: bool
) -> TrainResult:
    from dvclive import Live

    cfg = spec.optim
    if cfg.batch_size % world.size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world.size} processes")
    meta = load_meta(data_dir)
    tokenizer = CharTokenizer.from_dict(meta["tokenizer"])
    train_data, val_data = load_split(data_dir, "train", meta), load_split(data_dir, "val", meta)
    fingerprint = spec.fingerprint(meta)
    block = spec.model.block_size + (1 if spec.objective == "autoregressive" else 0)

    torch.manual_seed(cfg.seed)
    model = DiffusionTransformer(spec.model)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    step, resumed_from = 0, None
    state_path = spec.out_dir / checkpoint.TRAIN_STATE
    if cfg.resume and state_path.is_file():
        state = checkpoint.load_train_state(state_path)
        if state.get("fingerprint") == fingerprint and int(state["step"]) >= cfg.max_steps:
            if world.is_main:
                print(f"[{spec.variant}] {state_path} is a finished run; training afresh")
        elif state.get("fingerprint") == fingerprint:
            checkpoint.check_state_dict(model, state["model"], state_path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            step = resumed_from = int(state["step"])
            if world.is_main:
                print(f"[{spec.variant}] resuming from {state_path} at step {step}")
        elif world.is_main:
            print(f"[{spec.variant}] {state_path} was saved with other settings; starting afresh")
    if resumed_from is None and spec.init_from is not None:
        fresh = checkpoint.init_from_checkpoint(model, spec.init_from)
        if world.is_main:
            print(f"[{spec.variant}] starting from the weights of {spec.init_from}"
                  + (f"; {', '.join(fresh)} start fresh (another shape)" if fresh else ""))
    model.to(device)
    # optimizer state follows the parameters to the device
    for st in optimizer.state.values():
        for k, v in st.items():
            if torch.is_tensor(v) and k != "step":
                st[k] = v.to(device)

    if spec.objective == "diffusion":
        objective: nn.Module = DiffusionObjective(model, spec.diffusion, spec.critic)
    else:
        objective = AutoregressiveObjective(model)
    uses_critic = spec.objective == "diffusion" and spec.alpha > 0
    if world.distributed:
        objective = DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=not uses_critic
        )
    step_fn = torch.compile(objective) if cfg.compile else objective

    val_windows = fixed_windows(val_data, cfg.eval_batches * cfg.batch_size, block)
    live = None
    if world.is_main:
        for stale in spec.out_dir.glob(".*.tmp"):  # left by a process killed while writing
            stale.unlink()
        if resumed_from is None:
            _clear_live_dir(spec.live_dir)
        else:
            _truncate_live_dir(spec.live_dir, resumed_from)
        live = Live(str(spec.live_dir), dvcyaml=False, save_dvc_exp=False, resume=resumed_from is not None)

    def save(at_step: int) -> None:
        if not world.is_main:
            return
        checkpoint.save_train_state(
            state_path,
            {
                "step": at_step,
                "fingerprint": fingerprint,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
            },
        )
        checkpoint.save_model(
            spec.out_dir,
            model,
            tokenizer,
            {"variant": spec.variant, "objective": spec.objective, "alpha": spec.alpha, "step": at_step,
             "fingerprint": fingerprint},
        )

    def evaluate() -> dict[str, float]:
        if spec.objective == "diffusion":
            return evaluate_diffusion(model, val_windows, spec.diffusion, spec.critic, cfg.seed + EVAL_SEED_OFFSET, cfg.batch_size)
        return evaluate_autoregressive(model, val_windows, cfg.batch_size)

    rows = cfg.batch_size // world.size
    lo, hi = world.rank * rows, (world.rank + 1) * rows
    last_step = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
    bar = tqdm(
        total=cfg.max_steps, initial=step, desc=f"train {spec.variant}", unit="step",
        disable=not (progress and world.is_main), dynamic_ncols=True,
    )
    metrics: dict[str, float] = {}
    running: dict[str, list[float]] = {}
    started = time.perf_counter()
    model.train()
    while step < last_step:
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        window = sample_windows(train_data, cfg.batch_size, block, generator)
        if spec.objective == "diffusion":
            noise = draw_noise(cfg.batch_size, block, spec.diffusion.mask_schedule, spec.diffusion.mask_eps, generator,
                               spec.critic if uses_critic else None, spec.model.mask_id)
            # losses are normalised by global counts and scaled by the world size, so that DDP's
            # gradient average equals the single-process gradient of the global batch
            norm = {"masked": max(int(noise.mask.sum()), 1) / world.size, "tokens": noise.mask.numel() / world.size}
            if uses_critic:
                norm["critic"] = max(int(noise.critic_scope(spec.critic.label_scope).sum()), 1) / world.size
            with autocast(device):
                out = step_fn(window[lo:hi].to(device), noise.rows(lo, hi).to(device), alpha_at(step, spec.diffusion), norm)
        else:
            norm = {"tokens": cfg.batch_size * (block - 1) / world.size}
            with autocast(device):
                out = step_fn(window[lo:hi].to(device), norm)
        loss = out["loss"]
        if not torch.isfinite(loss).all():
            bar.close()
            raise TrainingError(
                f"[{spec.variant}] loss is {float(loss.detach())} at step {step}; stopping. "
                f"The last good checkpoint in {spec.out_dir} is kept."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        bar.update(1)
        for name, value in out.items():
            running.setdefault(name, []).append(float(value.detach()))
        if live is not None and (step % 10 == 0 or step == last_step):
            live.step = step
            for name, values in running.items():
                live.log_metric(f"train/{name}", float(np.mean(values)))
            live.log_metric("train/lr", lr)
            bar.set_postfix(loss=f"{np.mean(running['loss']):.3f}")
            running.clear()
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            if world.is_main:
                metrics = evaluate()
                live.step = step
                for name, value in metrics.items():
                    live.log_metric(f"val/{name}", value)
                live.make_summary()
            barrier(world)
        if step % cfg.checkpoint_every == 0 or step == last_step:
            save(step)
            barrier(world)
    bar.close()
    if live is not None:
        live.step = step
        live.make_summary()
    return TrainResult(step, metrics, resumed_from, time.perf_counter() - started)


def _clear_live_dir(live_dir: Path) -> None:
    import shutil

    if live_dir.exists():
        shutil.rmtree(live_dir)


def _truncate_live_dir(live_dir: Path, step: int) -> None:
    """Drop logged rows past ``step``: they were logged after the checkpoint we resume from.

    A summary cut short by a kill is removed; DVCLive writes a new one at the next evaluation.
    """
    summary = live_dir / "metrics.json"
    if summary.is_file():
        try:
            json.loads(summary.read_text())
        except json.JSONDecodeError:
            summary.unlink()
    for tsv in live_dir.glob("plots/metrics/**/*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header, rows = lines[0], lines[1:]
        col = header.split("\t").index("step")
        kept = [r for r in rows if int(r.split("\t")[col]) <= step]
        tsv.write_text("\n".join([header, *kept]) + "\n")
