"""The training losses, one forward call each so that DDP sees a single forward per step.

Multi-task step (the design note, with the label trap avoided):

1. generator loss: cross-entropy on masked positions of the masked input;
2. the critic's input and labels from the generator's detached logits
   (:func:`remask.critic_targets.differs_target`, with the ``critic`` section's levers);
3. second forward pass on the critic's input through the critic head, BCE with logits, on the
   positions chosen by ``critic.label_scope``: ``filled`` (default; every token the sampler
   commits at inference was filled) or ``all`` (visible positions added as negatives);
4. ``loss = loss_gen + alpha * loss_critic`` (alpha warmed up linearly), one backward.

``alpha`` and the loss normalisers arrive as tensors: they change every step, and a Python float
would make ``torch.compile`` specialise on (and recompile for) each new value.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from remask.config import CriticSection, TrainSection
from remask.critic_targets import differs_target
from remask.model import DiffusionTransformer, token_cross_entropy
from remask.noise import DiffusionNoise
from remask.schedules import elbo_weight

Norm = dict[str, torch.Tensor]


class DiffusionObjective(nn.Module):
    """Generator loss plus ``alpha`` times critic loss; returns the loss and its parts."""

    def __init__(self, model: DiffusionTransformer, train: TrainSection, critic: CriticSection):
        super().__init__()
        self.model, self.train_cfg, self.critic_cfg = model, train, critic

    def forward(self, clean: torch.Tensor, noise: DiffusionNoise, alpha: torch.Tensor, norm: Norm) -> dict[str, torch.Tensor]:
        masked_input = clean.masked_fill(noise.mask, self.model.config.mask_id)
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
        critic_input, target = differs_target(self.model, clean, noise, logits.detach(), cfg)
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

    def forward(self, window: torch.Tensor, norm: Norm) -> dict[str, torch.Tensor]:
        logits = self.model(window[:, :-1], head="lm")
        loss = token_cross_entropy(logits, window[:, 1:]).sum() / norm["tokens"]
        return {"loss": loss, "loss_gen": loss}
