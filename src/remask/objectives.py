"""The training losses, one forward call each so that DDP sees a single forward per step.

Multi-task step (the design note, with the label trap avoided):

1. generator loss: cross-entropy on masked positions of the masked input (the generator head
   and the loss run on those positions only); the self-correcting generator
   (``train.self_correct``) also sees a share of its visible tokens replaced and learns the
   clean token there, so that its probability of a committed token means something;
2. the critic's input and labels from the generator's detached logits (the target
   ``critic.target`` names in :data:`remask.critic_targets.TARGETS`), for the
   ``critic.row_share`` of the sequences the critic is trained on (evenly spaced rows);
3. second forward pass on the critic's input through the critic head, BCE with logits, on the
   positions chosen by ``critic.label_scope``: ``filled`` (default; every token the sampler
   commits at inference was filled) or ``all`` (visible positions added as negatives). On half
   the rows (the default) this pass costs half a generator pass, so a multi-task step costs
   about 1.5 generator-only steps instead of 2;
4. ``loss = loss_gen + alpha * loss_critic`` (alpha warmed up linearly), one backward.

``alpha`` and the loss normalisers arrive as tensors: they change every step, and a Python float
would make ``torch.compile`` specialise on (and recompile for) each new value.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from remask.config import CriticSection, TrainSection
from remask.critic_targets import TARGETS
from remask.model import DiffusionTransformer, token_cross_entropy
from remask.noise import DiffusionNoise
from remask.drawing import sample_from_logits
from remask.schedules import elbo_weight

Norm = dict[str, torch.Tensor]


class DiffusionObjective(nn.Module):
    """Generator loss plus ``alpha`` times critic loss; returns the loss and its parts."""

    def __init__(self, model: DiffusionTransformer, train: TrainSection, critic: CriticSection):
        super().__init__()
        self.model, self.train_cfg, self.critic_cfg = model, train, critic

    def forward(self, clean: torch.Tensor, noise: DiffusionNoise, alpha: torch.Tensor, norm: Norm) -> dict[str, torch.Tensor]:
        mask = noise.mask
        scored = mask if noise.corrupt is None else mask | noise.corrupt  # the positions the generator loss reads
        hidden = self.model.body(self.generator_input(clean, noise))
        logits = self.model.lm_logits(hidden[scored])  # (n_scored, V): the loss reads no other position
        ce = F.cross_entropy(logits.float(), clean[scored], reduction="none")
        if self.train_cfg.elbo_weighting:
            weight = elbo_weight(noise.t, self.train_cfg.mask_schedule)[:, None].expand_as(mask)[scored]
            loss_gen = (ce * weight).sum() / norm["tokens"]
        else:
            loss_gen = ce.sum() / norm["masked"]
        out = {"loss_gen": loss_gen}
        if self.train_cfg.alpha == 0:  # the generator-only baseline skips the critic pass
            out["loss"] = loss_gen
            return out
        cfg, judged = self.critic_cfg, noise.critic_view()
        fill_logits = logits.detach().float()
        if noise.corrupt is not None:
            fill_logits = fill_logits[mask[scored]]
        if noise.critic_rows is not None:  # the fills of the critic's rows, in the same row-major order
            fill_logits = fill_logits[noise.critic_rows[:, None].expand_as(mask)[mask]]
            clean = clean[noise.critic_rows]
        critic_input, target = TARGETS[cfg.target](self.model, clean, judged, fill_logits, cfg)
        if cfg.detach_body:
            with torch.no_grad():
                hidden = self.model.body(critic_input)
            critic_logits = self.model.critic_logits(hidden)
        else:
            critic_logits = self.model(critic_input, head="critic")
        pos_weight = None if cfg.pos_weight == 1.0 else torch.tensor(cfg.pos_weight, device=critic_logits.device)
        bce = F.binary_cross_entropy_with_logits(critic_logits.float(), target, reduction="none", pos_weight=pos_weight)
        loss_critic = (bce * judged.critic_scope(cfg.label_scope)).sum() / norm["critic"]
        out["loss_critic"] = loss_critic
        out["loss"] = loss_gen + alpha * loss_critic
        return out

    @torch.no_grad()
    def generator_input(self, clean: torch.Tensor, noise: DiffusionNoise) -> torch.Tensor:
        """The masked window; for the self-correcting generator (``train.self_correct``) a share of
        its visible tokens replaced by samples of a no-grad generator pass that had them masked too
        (what the sampler commits), or by random characters."""
        mask_id = self.model.config.mask_id
        masked = clean.masked_fill(noise.mask, mask_id)
        if noise.corrupt is None:
            return masked
        if noise.corrupt_chars is not None:
            return torch.where(noise.corrupt, noise.corrupt_chars, masked)
        logits = self.model.lm_logits(self.model.body(masked.masked_fill(noise.corrupt, mask_id))[noise.corrupt])
        samples = sample_from_logits(logits.float(), noise.corrupt_uniform[noise.corrupt], 1.0)
        return masked.masked_scatter(noise.corrupt, samples)


class AutoregressiveObjective(nn.Module):
    """Next-character cross-entropy, for the causal judge."""

    def __init__(self, model: DiffusionTransformer):
        super().__init__()
        self.model = model

    def forward(self, window: torch.Tensor, norm: Norm) -> dict[str, torch.Tensor]:
        logits = self.model(window[:, :-1], head="lm")
        loss = token_cross_entropy(logits, window[:, 1:]).sum() / norm["tokens"]
        return {"loss": loss, "loss_gen": loss}
