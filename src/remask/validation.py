"""Validation metrics of a training run, on fixed windows with fixed noise.

Masks and samples come from a generator seeded once per evaluation: every evaluation of a run,
and of every variant, sees the same masks, so curves and variants compare like for like.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from remask.config import CriticSection, TrainSection
from remask.critic_targets import critic_batch
from remask.metrics import detection_metrics
from remask.model import DiffusionTransformer, token_cross_entropy
from remask.noise import draw_noise
from remask.runtime import autocast
from remask.drawing import sample_from_logits, tempered_probs, token_probs
from remask.schedules import elbo_weight


@torch.no_grad()
def evaluate_diffusion(
    model: DiffusionTransformer,
    windows: torch.Tensor,
    train: TrainSection,
    critic: CriticSection,
    seed: int,
    batch_size: int,
) -> dict[str, float]:
    """Generator loss, an ELBO bound in bits/char, and the critic against the confidence baseline."""
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
        p_sampled = token_probs(tempered_probs(logits, critic.sample_temperature, 1.0), sample)
        critic_scores.append(critic_logits[noise.mask].cpu())
        confidence_scores.append((1.0 - p_sampled)[noise.mask].float().cpu())
        labels.append(target[noise.mask].cpu())
    model.train(was_training)
    y = torch.cat(labels).numpy()
    return {
        "gen_loss": ce_sum / max(masked, 1),
        "bpc_bound": ce_weighted / tokens / math.log(2),
        "critic_loss": bce_sum / max(bce_count, 1),
        "critic_auroc": detection_metrics(torch.cat(critic_scores).numpy(), y, is_probability=False)["auroc"],
        "confidence_auroc": detection_metrics(torch.cat(confidence_scores).numpy(), y, is_probability=False)["auroc"],
        "error_rate": float(y.mean()) if len(y) else float("nan"),
    }


@torch.no_grad()
def evaluate_autoregressive(model: DiffusionTransformer, windows: torch.Tensor, batch_size: int) -> dict[str, float]:
    """The judge's next-character loss on the validation windows, in nats and bits per character."""
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
