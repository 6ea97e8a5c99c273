"""Noise schedules: how much of a sequence is masked at diffusion time ``t`` in [0, 1].

``t = 1`` is fully masked, ``t = 0`` is clean. One function serves training (a random ``t``
per sequence) and sampling (how many tokens stay masked after each step), so the two can
never drift apart.

- ``linear``: m(t) = t.
- ``cosine``: m(t) = sin(pi t / 2), MaskGIT's cosine written as a function of time: few tokens
  are revealed in early steps, more in later ones.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Schedule = Literal["linear", "cosine"]
SCHEDULES: tuple[str, ...] = ("linear", "cosine")


def _check(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def masked_fraction(t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Expected share of masked tokens at time ``t``."""
    _check(schedule)
    return t if schedule == "linear" else torch.sin(0.5 * math.pi * t)


def elbo_weight(t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """MDLM's continuous-time ELBO weight m'(t) / m(t) on the cross-entropy of masked tokens."""
    _check(schedule)
    if schedule == "linear":
        return 1.0 / t
    half = 0.5 * math.pi * t
    return 0.5 * math.pi * torch.cos(half) / torch.sin(half)


def masked_counts(n_positions: int, steps: int, schedule: Schedule) -> list[int]:
    """Tokens left masked after each of ``steps`` sampler steps; the last entry is always 0.

    Non-increasing, so every step commits at least as many tokens as it leaves.
    """
    _check(schedule)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    times = torch.tensor([1.0 - (i + 1) / steps for i in range(steps)], dtype=torch.float64)
    counts = torch.round(masked_fraction(times, schedule) * n_positions).long().tolist()
    counts[-1] = 0
    return counts
