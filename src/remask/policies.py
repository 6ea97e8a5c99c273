"""Re-masking policies: small functions in a registry, each scoring tokens as likely errors.

A policy returns, for every position, a score in [0, 1] (higher: re-mask first) and declares
which positions it may choose from:

- ``filled``: only the tokens filled in this step (MaskGIT / LLaDA semantics);
- ``all``: every non-protected token, so tokens committed earlier can be revisited.

Scores are probability-scaled so that the sampler's noise blend means the same thing for
every policy (the design note blended noise into raw critic logits, whose scale is arbitrary).

| policy              | kind          | candidates | extra passes per re-masking step | score                              |
|---------------------|---------------|------------|----------------------------------|------------------------------------|
| `random`            | training-free | filled     | 0 | uniform noise                                                        |
| `confidence`        | training-free | filled     | 0 | 1 - p(sampled token), from the pass that filled it                   |
| `remdm_conf`        | training-free | all        | 0 | 1 - p recorded when each token was filled (ReMDM-style, stale)       |
| `critic`            | learned       | all        | 1 | sigmoid(critic logit) on the filled sequence                         |
| `critic_confidence` | learned       | all        | 1 | 0.5 * sigmoid(critic) + 0.5 * (1 - p recorded when filled)           |
| `critic_fused`      | learned       | all        | 0 | committed: sigmoid(critic logit) of the fill pass; just filled: 1 - p |
| `oracle_loo`        | oracle        | all        | 1 per position | 1 - p(token given every other token), position masked alone |
| `self_planning`     | learned       | all        | 0 | 1 - p(current token) from the fill pass, committed tokens too (P2) |

`critic_fused` reads the critic head in the same forward pass that fills the masked positions, so
re-masking with the critic costs no extra NFE; its critic judges committed tokens while the other
positions are still masked, the input that ``critic.input: partial`` trains it on.

`self_planning` needs a self-correcting generator (``train.self_correct > 0``): only one trained
to see replaced visible tokens gives its probability of a committed token a meaning (elsewhere the
generator head is never trained at visible positions).

Every policy whose candidates are all tokens also runs with the sampler's ``committed_budget``
option (:func:`remask.sampling.diffusion_generate`): MaskGIT's choice among the tokens just filled,
plus a budget of committed tokens chosen by the same score.

`oracle_loo` is a ceiling, not a contender: the generator's own leave-one-out probability of
every token, one pass per position (L extra passes per step), what a one-pass learned score of
"implausible given the rest of the current sequence" can at best approach. It is compared at equal
*steps*, never at equal NFE.

A policy only reads what its model was trained on: :func:`untrained_inputs` compares a policy's
needs with the training record a checkpoint carries (``config.json``: objective, alpha, critic
settings) and the sampling temperatures, and :func:`require_trained` refuses a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from remask.errors import ConfigError

CRITIC_BLEND = 0.5  # weight of the critic in `critic_confidence`; the rest is the stale confidence


@dataclass
class StepState:
    """What a policy may look at after the fill of one sampler step."""

    tokens: torch.Tensor  # (N, L) the filled sequence
    just_filled: torch.Tensor  # (N, L) bool, positions filled in this step
    protected: torch.Tensor  # (N, L) bool, positions the sampler never changes
    p_current: torch.Tensor  # (N, L) prob of each current token under this step's sampling distribution
    p_at_fill: torch.Tensor  # (N, L) prob each token had when it was filled (stale for earlier steps)
    generator: torch.Generator
    critic: Callable[[torch.Tensor], torch.Tensor]  # error logits of a sequence; costs one forward pass
    critic_at_fill: torch.Tensor | None = None  # (N, L) error prob of the tokens visible in the fill pass (fused)
    leave_one_out: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # see leave_one_out_probs


Kind = Literal["training_free", "learned", "oracle"]


@dataclass(frozen=True)
class Policy:
    name: str
    kind: Kind
    candidates: Literal["filled", "all"]
    extra_passes: int  # forward passes a re-masking step adds beyond the fill (per position if per_position)
    score: Callable[[StepState], torch.Tensor]
    doc: str
    fused: bool = False  # reads the critic head in the fill pass (StepState.critic_at_fill)
    per_position: bool = False  # extra_passes counts per scored position (the leave-one-out oracle)
    ranks: bool = True  # False: the score is noise, so a selection rule changes nothing (no search over it)
    reads: Literal["generator", "critic", "self_correction"] = "generator"  # what its model must be trained for

    @property
    def reads_critic(self) -> bool:
        return self.reads == "critic"


POLICIES: dict[str, Policy] = {}


def register(name: str, kind: Kind, candidates: Literal["filled", "all"], extra_passes: int = 0,
             fused: bool = False, per_position: bool = False, ranks: bool = True,
             reads: Literal["generator", "critic", "self_correction"] | None = None):
    def wrap(fn: Callable[[StepState], torch.Tensor]) -> Callable[[StepState], torch.Tensor]:
        needs = reads or ("critic" if kind == "learned" else "generator")
        POLICIES[name] = Policy(name, kind, candidates, extra_passes, fn, (fn.__doc__ or "").strip(), fused,
                                per_position, ranks, needs)
        return fn

    return wrap


def get_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}")
    return POLICIES[name]


@register("random", "training_free", candidates="filled", ranks=False)
def random_scores(state: StepState) -> torch.Tensor:
    """Uniformly among the tokens just filled."""
    return torch.rand(state.tokens.shape, generator=state.generator, dtype=torch.float64).to(state.tokens.device)


@register("confidence", "training_free", candidates="filled")
def confidence(state: StepState) -> torch.Tensor:
    """The heuristic: 1 - p(sampled token) among the tokens just filled."""
    return 1.0 - state.p_current


@register("remdm_conf", "training_free", candidates="all")
def remdm_conf(state: StepState) -> torch.Tensor:
    """ReMDM-style re-masking without training: every token's confidence from when it was filled,
    so committed tokens can be revisited (a deterministic top-k form of ReMDM's confidence schedule)."""
    return 1.0 - state.p_at_fill


@register("critic", "learned", candidates="all", extra_passes=1)
def critic(state: StepState) -> torch.Tensor:
    """The learned critic's error probability on the filled sequence."""
    return torch.sigmoid(state.critic(state.tokens).double())


@register("critic_confidence", "learned", candidates="all", extra_passes=1)
def critic_confidence(state: StepState) -> torch.Tensor:
    """Blend: CRITIC_BLEND * critic + (1 - CRITIC_BLEND) * (1 - confidence recorded at fill time)."""
    return CRITIC_BLEND * torch.sigmoid(state.critic(state.tokens).double()) + (1 - CRITIC_BLEND) * (
        1.0 - state.p_at_fill
    )


@register("critic_fused", "learned", candidates="all", fused=True)
def critic_fused(state: StepState) -> torch.Tensor:
    """One pass per step: committed tokens by the critic head of the fill pass, just-filled ones by 1 - p."""
    return torch.where(state.just_filled, 1.0 - state.p_current, state.critic_at_fill)


@register("critic_committed", "learned", candidates="all", extra_passes=1)
def critic_committed(state: StepState) -> torch.Tensor:
    """``critic_fused``'s split with a fresh pass: committed tokens by the critic reading the whole
    new fill (one extra pass per step), the tokens just filled by 1 - p."""
    return torch.where(state.just_filled, 1.0 - state.p_current, torch.sigmoid(state.critic(state.tokens).double()))


@register("oracle_loo", "oracle", candidates="all", extra_passes=1, per_position=True)
def oracle_loo(state: StepState) -> torch.Tensor:
    """Ceiling: 1 - the generator's leave-one-out probability of every current token (one pass per position)."""
    return 1.0 - state.leave_one_out(state.tokens, ~state.protected)


@register("self_planning", "learned", candidates="all", reads="self_correction")
def self_planning(state: StepState) -> torch.Tensor:
    """P2-style self-planning: 1 - p(current token) from the fill pass, at committed tokens too."""
    return 1.0 - state.p_current


def leave_one_out_probs(
    forward_lm: Callable[[torch.Tensor, int], torch.Tensor], tokens: torch.Tensor, scored: torch.Tensor, mask_id: int,
    positions_per_pass: int = 16,
) -> torch.Tensor:
    """p(current token | every other token) under the generator, at temperature 1: for each scored
    position, one pass over the sequences with that position alone masked. ``forward_lm(seqs, n)``
    returns the generator's logits of ``seqs`` (``n`` stacked copies of the batch, counted as ``n``
    passes). ``scored``: (N, L) bool; nan elsewhere. Shared by the ``oracle_loo`` policy and the
    refreshed detection table, so both read the same oracle."""
    n, length = tokens.shape
    out = torch.full(tokens.shape, float("nan"), dtype=torch.float64, device=tokens.device)
    columns = scored.any(0).nonzero().flatten().tolist()
    rows = torch.arange(n, device=tokens.device)
    for start in range(0, len(columns), positions_per_pass):
        group = columns[start : start + positions_per_pass]
        stacked = tokens.repeat(len(group), 1)  # copy g of the batch has position group[g] masked
        where = torch.tensor(group, device=tokens.device).repeat_interleave(n)
        stacked[torch.arange(len(stacked), device=tokens.device), where] = mask_id
        logits = forward_lm(stacked, len(group)).double()
        probs = torch.softmax(logits[torch.arange(len(stacked), device=tokens.device), where], dim=-1)
        current = probs.gather(-1, tokens[rows.repeat(len(group)), where].unsqueeze(-1)).squeeze(-1)
        out[rows.repeat(len(group)), where] = current
    return torch.where(scored, out, torch.full_like(out, float("nan")))


def untrained_inputs(policy: str, training: dict, temperatures: tuple[float, float]) -> list[str]:
    """What ``policy`` would read at sampling temperatures within ``temperatures`` that a model with
    the training record ``training`` (``config.json`` of a checkpoint) was not trained on; empty
    when every input is a trained one. The generator head is trained on masked inputs by any
    diffusion objective; a critic head only at the fill temperatures and on the inputs its
    ``critic`` settings show it."""
    chosen = get_policy(policy)
    if training.get("objective") != "diffusion":
        return [f"a diffusion generator (objective {training.get('objective')!r})"]
    if chosen.reads == "self_correction":
        if not training.get("self_correct", 0) > 0:
            return ["a self-correcting generator (train.self_correct > 0: trained on replaced visible tokens)"]
        return []
    if not chosen.reads_critic:
        return []
    if not training.get("alpha", 0) > 0:
        return ["a trained critic head (alpha > 0)"]
    critic = training.get("critic")
    if critic is None:
        return ["a record of the critic's training settings (config.json key 'critic'; retrain)"]
    low = critic["sample_temperature"]
    high = low + critic["sample_temperature_spread"]
    missing = []
    if temperatures[0] < low - 1e-9 or temperatures[1] > high + 1e-9:
        missing.append(f"critic fills at temperatures {temperatures[0]:g}-{temperatures[1]:g} (trained on "
                       f"{low:g}-{high:g}: critic.sample_temperature and sample_temperature_spread)")
    if chosen.fused and critic["input"] != "partial" and critic.get("target") != "loo":
        missing.append("critic inputs with masked positions (critic.input: partial, or target loo)")
    return missing


def require_trained(policy: str, training: dict, temperatures: tuple[float, float], where: str) -> None:
    """Refuse to run ``policy`` on a model (``where``) that was not trained for its inputs."""
    missing = untrained_inputs(policy, training, temperatures)
    if missing:
        raise ConfigError(f"policy {policy!r} needs {'; '.join(missing)}, which {where} was not trained on")
