"""What the critic is shown and what it must say: its input sequence and its labels.

The seed's target (``differs``): every masked position is filled with a generator sample (no
grad, float64), the critic reads ``where(masked, sample, clean)`` and labels a token an error
when it differs from the clean token. Labels compare with the clean tokens, never with
ignore-index targets (the -100 trap would mark every visible token as an error).

The ``critic`` section's levers change what the critic is shown: fills at random temperatures,
swapped visible tokens, a partly re-masked input (for ``critic_fused``), or, for a share of the
sequences, the state after a two-step ``confidence`` rollout (:func:`rollout_refill`, one more
no-grad pass), so that it learns on committed tokens whose confidence is stale. Training
(:mod:`remask.objectives`) and validation (:mod:`remask.validation`) build the batch here.
"""

from __future__ import annotations

import torch

from remask.config import CriticSection
from remask.model import DiffusionTransformer
from remask.noise import DiffusionNoise
from remask.sampling import sample_from_logits, tempered_probs, top_k_per_row

ROLLOUT_REMASK = 0.5  # share of the first fill that the rollout's confidence step masks again


def critic_batch(clean: torch.Tensor, masked: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's input and labels: samples at masked positions only, errors against clean text."""
    critic_input = torch.where(masked, sample, clean)
    return critic_input, (critic_input != clean).float()


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


@torch.no_grad()
def differs_target(
    model: DiffusionTransformer, clean: torch.Tensor, noise: DiffusionNoise, fill_logits: torch.Tensor,
    cfg: CriticSection,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's target with the ``critic`` levers: ``(critic_input, labels)`` from the clean
    window, the batch's noise and the generator's (detached) logits at the masked positions,
    ``(n_masked, V)`` in the row-major order of ``noise.mask``."""
    mask = noise.mask
    per_row = noise.temperature
    temperature = cfg.sample_temperature if per_row is None else per_row[:, None].expand_as(mask)[mask][:, None]
    fills = sample_from_logits(fill_logits, noise.uniform[mask], temperature)
    critic_input, target = critic_batch(clean, mask, clean.masked_scatter(mask, fills))
    if noise.rollout is not None and noise.rollout.any():
        rows = noise.rollout
        p_fill = tempered_probs(fill_logits, temperature, 1.0).gather(-1, fills[:, None]).squeeze(-1)
        p_sampled = torch.zeros(mask.shape, dtype=p_fill.dtype, device=mask.device).masked_scatter(mask, p_fill)
        row_temperature = cfg.sample_temperature if per_row is None else per_row[rows][:, None, None]
        critic_input = critic_input.clone()
        critic_input[rows] = rollout_refill(model, critic_input[rows], mask[rows], p_sampled[rows],
                                            noise.uniform_refill[rows], row_temperature)
        target = (critic_input != clean).float()
    if noise.replace is not None:
        critic_input = torch.where(noise.replace, noise.replacement, critic_input)
        target = (critic_input != clean).float()
    if noise.remask is not None:
        critic_input = critic_input.masked_fill(noise.remask, model.config.mask_id)
    return critic_input, target
