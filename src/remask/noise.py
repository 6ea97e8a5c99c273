"""All randomness of one training batch, drawn for the *global* batch from one generator.

Each DDP rank takes its slice (:meth:`DiffusionNoise.rows`), so N processes see exactly the data of
one process with the same global batch, and resuming restores the generator's state.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from remask.config import CriticSection, TrainSection
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
    fill_keep: torch.Tensor | None = None  # (B, T) bool, masked positions the critic's input fills (critic.fill_share)
    corrupt: torch.Tensor | None = None  # (B, T) bool, visible tokens the self-correcting generator sees replaced
    corrupt_uniform: torch.Tensor | None = None  # (B, T) float64, drives the replacement samples
    corrupt_chars: torch.Tensor | None = None  # (B, T) long, random replacement characters (source random)

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

    @property
    def filled(self) -> torch.Tensor:
        """Masked positions that the critic's input fills with a generator sample (the others stay masked)."""
        return self.mask if self.fill_keep is None else self.mask & self.fill_keep

    def critic_scope(self, label_scope: str) -> torch.Tensor:
        """Positions whose critic label enters the loss: filled positions (or every position that
        shows a token), plus swapped visible ones, less those masked again in the critic's input
        (they show no token to judge)."""
        scope = self.filled if label_scope == "filled" else ~self.mask | self.filled
        if self.replace is not None:
            scope = scope | self.replace
        if self.remask is not None:
            scope = scope & ~self.remask
        return scope


def draw_noise(
    batch: int, length: int, schedule: str, eps: float, generator: torch.Generator,
    critic: CriticSection | None = None, n_chars: int | None = None, train: TrainSection | None = None,
) -> DiffusionNoise:
    """All randomness of one global batch; ``critic`` adds what its options need, ``train`` what the
    self-correcting generator needs (``n_chars``: the number of real characters, for random
    replacements). Options draw after the defaults, so a default run's stream never changes."""
    t = eps + (1.0 - eps) * torch.rand(batch, generator=generator, dtype=torch.float64)
    mask = torch.rand(batch, length, generator=generator, dtype=torch.float64) < masked_fraction(t, schedule)[:, None]
    uniform = torch.rand(batch, length, generator=generator, dtype=torch.float64)
    noise = DiffusionNoise(t.float(), mask, uniform)
    if critic is not None:
        _draw_critic_noise(noise, critic, generator, n_chars)
    if train is not None and train.self_correct > 0:
        _draw_corruption(noise, train, generator, n_chars)
    return noise


def _draw_critic_noise(noise: DiffusionNoise, critic: CriticSection, generator: torch.Generator,
                       n_chars: int | None) -> None:
    batch, length = noise.mask.shape
    mask = noise.mask
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
    if critic.fill_share < 1:
        noise.fill_keep = torch.rand(batch, length, generator=generator, dtype=torch.float64) < critic.fill_share


def _draw_corruption(noise: DiffusionNoise, train: TrainSection, generator: torch.Generator, n_chars: int | None) -> None:
    batch, length = noise.mask.shape
    noise.corrupt = ~noise.mask & (torch.rand(batch, length, generator=generator, dtype=torch.float64) < train.self_correct)
    if train.self_correct_source == "samples":
        noise.corrupt_uniform = torch.rand(batch, length, generator=generator, dtype=torch.float64)
    else:
        if n_chars is None:
            raise ValueError("train.self_correct_source random needs the number of characters")
        noise.corrupt_chars = torch.randint(0, n_chars, (batch, length), generator=generator)


def evenly_spaced_rows(batch: int, share: float) -> torch.Tensor:
    """``(batch,)`` bool, ``round(share * batch)``-ish rows spread evenly over the batch (row r is
    chosen when ``floor((r + 1) * share)`` steps up). Fixed, not drawn: the random stream is the
    same for any share, and every DDP rank's slice of the global batch gets its part."""
    r = torch.arange(batch, dtype=torch.float64)
    return torch.floor((r + 1) * share) > torch.floor(r * share)
