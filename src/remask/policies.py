"""Re-masking policies: small functions in a registry, each scoring tokens as likely errors.

A policy returns, for every position, a score in [0, 1] (higher: re-mask first) and declares
which positions it may choose from:

- ``filled``: only the tokens filled in this step (MaskGIT / LLaDA semantics);
- ``all``: every non-protected token, so tokens committed earlier can be revisited.

Scores are probability-scaled so that the sampler's noise blend means the same thing for
every policy (the design note blended noise into raw critic logits, whose scale is arbitrary).

| policy              | candidates | extra forward passes per re-masking step | score                              |
|---------------------|------------|------------------------------------------|------------------------------------|
| `random`            | filled     | 0 | uniform noise                                                               |
| `confidence`        | filled     | 0 | 1 - p(sampled token), from the pass that filled it                          |
| `confidence_all`    | all        | 0 | 1 - p(current token) at every position, from this step's single pass        |
| `remdm_conf`        | all        | 0 | 1 - p recorded when each token was filled (ReMDM-style, stale for old ones) |
| `critic`            | all        | 1 | sigmoid(critic logit) on the filled sequence                                |
| `critic_confidence` | all        | 1 | 0.5 * sigmoid(critic) + 0.5 * (1 - p recorded when the token was filled)    |
| `critic_fused`      | all        | 0 | committed tokens: sigmoid(critic logit) from the fill pass; just filled: 1 - p |

`critic_fused` reads the critic head in the same forward pass that fills the masked positions, so
re-masking with the critic costs no extra NFE; its critic judges committed tokens while the other
positions are still masked, the input that ``critic.input: partial`` trains it on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

CRITIC_BLEND = 0.5  # weight of the critic in `critic_confidence`; the rest is the stale confidence


@dataclass
class StepState:
    """What a policy may look at after the fill of one sampler step."""

    tokens: torch.Tensor  # (N, L) the filled sequence
    just_filled: torch.Tensor  # (N, L) bool, positions filled in this step
    p_current: torch.Tensor  # (N, L) prob of each current token under this step's sampling distribution
    p_at_fill: torch.Tensor  # (N, L) prob each token had when it was filled (stale for earlier steps)
    generator: torch.Generator
    critic: Callable[[torch.Tensor], torch.Tensor]  # error logits of a sequence; costs one forward pass
    critic_at_fill: torch.Tensor | None = None  # (N, L) error prob of the tokens visible in the fill pass (fused)


@dataclass(frozen=True)
class Policy:
    name: str
    candidates: Literal["filled", "all"]
    extra_passes: int  # forward passes a re-masking step adds beyond the fill
    score: Callable[[StepState], torch.Tensor]
    doc: str
    fused: bool = False  # reads the critic head in the fill pass (StepState.critic_at_fill)


POLICIES: dict[str, Policy] = {}


def register(name: str, candidates: Literal["filled", "all"], extra_passes: int = 0, fused: bool = False):
    def wrap(fn: Callable[[StepState], torch.Tensor]) -> Callable[[StepState], torch.Tensor]:
        POLICIES[name] = Policy(name, candidates, extra_passes, fn, (fn.__doc__ or "").strip(), fused)
        return fn

    return wrap


def get_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}")
    return POLICIES[name]


@register("random", candidates="filled")
def random_scores(state: StepState) -> torch.Tensor:
    """Uniformly among the tokens just filled."""
    return torch.rand(state.tokens.shape, generator=state.generator, dtype=torch.float64).to(state.tokens.device)


@register("confidence", candidates="filled")
def confidence(state: StepState) -> torch.Tensor:
    """The heuristic: 1 - p(sampled token) among the tokens just filled."""
    return 1.0 - state.p_current


@register("confidence_all", candidates="all")
def confidence_all(state: StepState) -> torch.Tensor:
    """1 - p(current token) for every token, from the same pass (P2-style self-planning)."""
    return 1.0 - state.p_current


@register("remdm_conf", candidates="all")
def remdm_conf(state: StepState) -> torch.Tensor:
    """ReMDM-style re-masking without training: every token's confidence from when it was filled,
    so committed tokens can be revisited (a deterministic top-k form of ReMDM's confidence schedule)."""
    return 1.0 - state.p_at_fill


@register("critic", candidates="all", extra_passes=1)
def critic(state: StepState) -> torch.Tensor:
    """The learned critic's error probability on the filled sequence."""
    return torch.sigmoid(state.critic(state.tokens).double())


@register("critic_confidence", candidates="all", extra_passes=1)
def critic_confidence(state: StepState) -> torch.Tensor:
    """Blend: CRITIC_BLEND * critic + (1 - CRITIC_BLEND) * (1 - confidence recorded at fill time)."""
    return CRITIC_BLEND * torch.sigmoid(state.critic(state.tokens).double()) + (1 - CRITIC_BLEND) * (
        1.0 - state.p_at_fill
    )


@register("critic_fused", candidates="all", fused=True)
def critic_fused(state: StepState) -> torch.Tensor:
    """One pass per step: committed tokens by the critic head of the fill pass, just-filled ones by 1 - p."""
    return torch.where(state.just_filled, 1.0 - state.p_current, state.critic_at_fill)
