"""All randomness of one training batch, drawn for the *global* batch from one generator.

Each DDP rank takes its slice (:meth:`DiffusionNoise.rows`), so N processes see exactly the data of
one process with the same global batch, and resuming restores the generator's state.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from remask.config import CriticSection
from remask.schedules import masked_fraction


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
    critic_rows: torch.Tensor | None = None  # (B,) bool, the sequences the critic is trained on (None: all)

    def _map(self, fn) -> "DiffusionNoise":
        return DiffusionNoise(**{f.name: None if (v := getattr(self, f.name)) is None else fn(v) for f in fields(self)})

    def rows(self, start: int, stop: int) -> "DiffusionNoise":
        return self._map(lambda v: v[start:stop])

    def to(self, device: torch.device) -> "DiffusionNoise":
        return self._map(lambda v: v.to(device))

    def critic_view(self) -> "DiffusionNoise":
        """The noise of the sequences the critic is trained on (``critic.row_share``)."""
        if self.critic_rows is None:
            return self
        return self._map(lambda v: v[self.critic_rows])

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
    if critic.row_share < 1:
        noise.critic_rows = evenly_spaced_rows(batch, critic.row_share)
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


def evenly_spaced_rows(batch: int, share: float) -> torch.Tensor:
    """``(batch,)`` bool, ``round(share * batch)``-ish rows spread evenly over the batch (row r is
    chosen when ``floor((r + 1) * share)`` steps up). Fixed, not drawn: the random stream is the
    same for any share, and every DDP rank's slice of the global batch gets its part."""
    r = torch.arange(batch, dtype=torch.float64)
    return torch.floor((r + 1) * share) > torch.floor(r * share)
