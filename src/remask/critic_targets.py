"""What the critic is shown and what it must say: critic targets in a registry.

A target is one small function ``(model, clean, noise, fill_logits, cfg) -> (critic_input,
labels)`` from a clean window, the batch's noise and the generator's detached logits at the masked
positions (the fill pass of the multi-task step), registered under the name ``critic.target``
selects. Every target fills with :func:`remask.drawing.sample_from_logits`, the sampler's own
float64 sampling; the positions whose labels enter the loss are the noise's
(:meth:`remask.noise.DiffusionNoise.critic_scope`: ``critic.label_scope``, less positions masked
again by ``critic.input: partial``).

- ``differs`` (the seed's): every masked position filled; label 1 where the token differs from the
  clean one. Its best predictor is the generator's probability given the visible text, i.e. the
  heuristic ``1 - p`` (Bayes-limited). The ``critic`` levers (random swaps, a two-step rollout,
  :func:`rollout_refill`) change what it is shown.
- ``loo`` (PRISM-style, Kim et al. 2025): only ``critic.fill_share`` of the masked positions are
  filled, the rest stay masked and the visible text is clean; same label, on the fills. With a
  mostly real context, the best score is ``1 - p_data(token | everything else shown)``: a
  leave-one-out plausibility, which read on committed tokens in the pass that fills the masked ones
  (``critic_fused``) is a refreshed confidence at no extra NFE.
- ``generated`` (Token-Critic, Lezama et al. 2022): label 1 on every generated token, also where
  the fill equals the clean token, 0 on clean ones (``label_scope: all``). Its best score is the
  sampler-vs-data density ratio of the whole shown sequence, which can see tokens that are
  plausible alone but incoherent together. With ``critic.rollout_share`` its rows are shown after a
  two-step rollout too (:func:`rollout_refill`): committed tokens with a stale confidence, the
  sampler's own states, as a post-hoc critic on a frozen generator learns from.

Training (:mod:`remask.objectives`) builds the batch here; validation's critic numbers use the
seed's label on full fills for every target, so that runs compare on one yardstick.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from remask.config import CriticSection
from remask.model import DiffusionTransformer
from remask.noise import DiffusionNoise
from remask.drawing import sample_from_logits, tempered_probs, token_probs, top_k_per_row

ROLLOUT_REMASK = 0.5  # share of the first fill that the rollout's confidence step masks again


def critic_batch(clean: torch.Tensor, masked: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's input and labels: samples at masked positions only, errors against clean text."""
    critic_input = torch.where(masked, sample, clean)
    return critic_input, (critic_input != clean).float()


Target = Callable[[DiffusionTransformer, torch.Tensor, DiffusionNoise, torch.Tensor, CriticSection],
                  tuple[torch.Tensor, torch.Tensor]]
TARGETS: dict[str, Target] = {}


def register(name: str) -> Callable[[Target], Target]:
    def wrap(fn: Target) -> Target:
        TARGETS[name] = fn
        return fn

    return wrap


def _fill_temperature(noise: DiffusionNoise, cfg: CriticSection) -> float | torch.Tensor:
    """The fill temperature of every masked position, ``(n_masked, 1)`` when drawn per sequence."""
    per_row = noise.temperature
    return cfg.sample_temperature if per_row is None else per_row[:, None].expand_as(noise.mask)[noise.mask][:, None]


def _partial_fill(model: DiffusionTransformer, clean: torch.Tensor, noise: DiffusionNoise, fill_logits: torch.Tensor,
                  cfg: CriticSection) -> torch.Tensor:
    """Clean visible text, generator samples at the filled share of the masked positions (on the
    rows of ``critic.rollout_share``, after a two-step rollout), [MASK] at the rest and at the
    positions masked again (``critic.input: partial``)."""
    temperature = _fill_temperature(noise, cfg)
    fills = sample_from_logits(fill_logits, noise.uniform[noise.mask], temperature)
    shown = torch.where(noise.filled, clean.masked_scatter(noise.mask, fills), clean)
    shown = shown.masked_fill(noise.mask & ~noise.filled, model.config.mask_id)
    shown = _rolled_out(model, shown, noise.filled, fill_logits, fills, noise, cfg)
    return shown if noise.remask is None else shown.masked_fill(noise.remask, model.config.mask_id)


def _rolled_out(model: DiffusionTransformer, shown: torch.Tensor, filled: torch.Tensor, fill_logits: torch.Tensor,
                fills: torch.Tensor, noise: DiffusionNoise, cfg: CriticSection) -> torch.Tensor:
    """``shown`` with the rows of ``noise.rollout`` taken one more sampler step (:func:`rollout_refill`
    of their ``filled`` positions); ``fills`` are the first fill's samples at every masked position."""
    if noise.rollout is None or not noise.rollout.any():
        return shown
    rows, temperature = noise.rollout, _fill_temperature(noise, cfg)
    p_fill = token_probs(tempered_probs(fill_logits, temperature, 1.0), fills)
    p_sampled = torch.zeros(noise.mask.shape, dtype=p_fill.dtype, device=shown.device).masked_scatter(noise.mask, p_fill)
    row_temperature = cfg.sample_temperature if noise.temperature is None else noise.temperature[rows][:, None, None]
    shown = shown.clone()
    shown[rows] = rollout_refill(model, shown[rows], filled[rows], p_sampled[rows], noise.uniform_refill[rows],
                                 row_temperature)
    return shown


@register("loo")
@torch.no_grad()
def loo_target(model: DiffusionTransformer, clean: torch.Tensor, noise: DiffusionNoise, fill_logits: torch.Tensor,
               cfg: CriticSection) -> tuple[torch.Tensor, torch.Tensor]:
    """A few fills in a real context, labelled by whether they differ from the clean token."""
    critic_input = _partial_fill(model, clean, noise, fill_logits, cfg)
    return critic_input, (critic_input != clean).float()


@register("generated")
@torch.no_grad()
def generated_target(model: DiffusionTransformer, clean: torch.Tensor, noise: DiffusionNoise,
                     fill_logits: torch.Tensor, cfg: CriticSection) -> tuple[torch.Tensor, torch.Tensor]:
    """Every shown token labelled by whether the generator wrote it, whatever its value."""
    return _partial_fill(model, clean, noise, fill_logits, cfg), noise.filled.float()


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


@register("differs")
@torch.no_grad()
def differs_target(
    model: DiffusionTransformer, clean: torch.Tensor, noise: DiffusionNoise, fill_logits: torch.Tensor,
    cfg: CriticSection,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's target with the ``critic`` levers: ``(critic_input, labels)`` from the clean
    window, the batch's noise and the generator's (detached) logits at the masked positions,
    ``(n_masked, V)`` in the row-major order of ``noise.mask``."""
    mask = noise.mask
    fills = sample_from_logits(fill_logits, noise.uniform[mask], _fill_temperature(noise, cfg))
    critic_input = _rolled_out(model, clean.masked_scatter(mask, fills), mask, fill_logits, fills, noise, cfg)
    target = (critic_input != clean).float()
    if noise.replace is not None:
        critic_input = torch.where(noise.replace, noise.replacement, critic_input)
        target = (critic_input != clean).float()
    if noise.remask is not None:
        critic_input = critic_input.masked_fill(noise.remask, model.config.mask_id)
    return critic_input, target
