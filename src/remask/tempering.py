"""How the sampler shapes each step's draw: the temperature over the steps and the vocabulary filter.

Two knobs taken from x-transformers' ``NonAutoregressiveWrapper.generate`` (2.31.10), whose
sampler wrote better text than ours at a lower entropy (issue 26), and offered here to every policy:

- an *annealing schedule* of the sampling temperature over the steps (:data:`ANNEALING`):
  ``constant`` keeps the start temperature ``T`` at every step; ``linear`` goes from ``T`` at the
  first step to ``floor`` at the last, ``T_i = T + (floor - T) * i / (steps - 1)`` (x-transformers
  anneals to 0: a greedy last step). Early steps, which fill most of the sequence, explore; late
  steps, which fill the few positions left, follow the model;
- a *vocabulary filter* before the draw: ``top_k_share`` keeps the ``ceil(share * V)`` most likely
  tokens of each position (x-transformers' ``top_k`` with ``filter_thres`` 0.7 keeps 30%), then
  nucleus truncation ``top_p`` on what is left (:func:`remask.drawing.tempered_probs`).

A temperature of 0 is greedy: the most likely token with probability 1. Neither knob changes the
number of forward passes. This module is the sampler's; training never anneals or filters, so
:mod:`remask.drawing` (which training shares) stays as it is.
"""

from __future__ import annotations

import math

import torch

from remask.drawing import tempered_probs

ANNEALING = ("constant", "linear")


def temperature_at(anneal: str, start: float, floor: float, step: int, steps: int) -> float:
    """The sampling temperature of step ``step`` (0-based) of ``steps``."""
    if anneal == "constant":
        return start
    if anneal == "linear":
        return floor if step >= steps - 1 else start + (floor - start) * step / (steps - 1)
    raise ValueError(f"unknown annealing {anneal!r}; choose one of {', '.join(ANNEALING)}")


def temperature_span(anneal: str, start: float, floor: float) -> tuple[float, float]:
    """The lowest and highest temperature a run visits (what a critic must have been trained on)."""
    if anneal == "constant":
        return start, start
    return min(start, floor), max(start, floor)


def keep_top_share(logits: torch.Tensor, share: float) -> torch.Tensor:
    """``logits`` with all but the ``ceil(share * V)`` largest of each row set to ``-inf``."""
    if share >= 1.0:
        return logits
    keep = max(1, math.ceil(share * logits.size(-1)))
    values, index = logits.topk(keep, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, index, values)


def step_probs(logits: torch.Tensor, temperature: float, top_k_share: float, top_p: float) -> torch.Tensor:
    """The distribution one step draws from, in float64: the vocabulary filter, then the temperature
    and nucleus truncation; temperature 0 is the greedy one-hot."""
    logits = keep_top_share(logits.double(), top_k_share)
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).double()
    return tempered_probs(logits, temperature, top_p)
