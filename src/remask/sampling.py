"""Batched masked-diffusion generation with a pluggable re-masking policy and exact NFE counts.

Each of ``steps`` iterations:

1. one forward pass fills every masked position by sampling in float64 (the step's temperature
   under the annealing schedule, the vocabulary filter: :mod:`remask.tempering`);
2. unless it is the last iteration, the policy scores tokens and the ``k_i`` highest-scoring
   candidates are masked again, ``k_i`` from the schedule (:func:`remask.schedules.masked_counts`).

Protected positions (a prompt, or the known text around an infilling gap) are never masked or
changed. The last iteration re-masks nothing, so the output holds no ``[MASK]``.

Which tokens may be re-masked (the candidate pool): a policy's own (``filled``: the tokens just
filled, MaskGIT / LLaDA; ``all``: every token, so that committed ones compete with the fill), or,
with ``committed_budget`` = eta for an ``all`` policy, MaskGIT's ``k_i`` among the tokens just
filled *plus* ``round(eta * committed)`` committed tokens, both by the policy's score (ReMDM's
eta as a deterministic budget): a learned score can revisit old tokens without starving the fill,
and the schedule still commits the sequence. No extra pass: NFE is unchanged.

Noise, annealed linearly to 0 over the steps so that early steps explore and late steps follow
the policy (both off by default: deterministic top-k):

- ``randomness_strength`` r blends uniform noise into the probability-scaled policy scores,
  ``(1 - r_i) * score + r_i * U(0, 1)`` with r_i = r * (1 - i / (steps - 1)) (the design note);
- ``selection="gumbel"``: Gumbel-top-k on the log scores, ``log(score) + tau_i * G`` with
  tau_i = ``selection_temperature`` * (1 - i / (steps - 1)). At tau = 1 this draws the k tokens
  without replacement with probability proportional to their scores (an error probability), so
  the noise scales with the scores instead of swamping the small ones; tau -> 0 is top-k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from remask.drawing import fill, top_k_per_row
from remask.model import DiffusionTransformer
from remask.policies import Policy, StepState, get_policy, leave_one_out_probs
from remask.runtime import World, autocast
from remask.schedules import masked_counts
from remask.tempering import ANNEALING, step_probs, temperature_at


@dataclass
class TrajectoryStep:
    masked: torch.Tensor  # (N, L) bool, masked before this step's fill
    tokens: torch.Tensor  # (N, L) after the fill
    p_at_fill: torch.Tensor  # (N, L) probability each token had when it was filled (1 for protected)
    scores: torch.Tensor | None  # (N, L) policy scores (nan where not a candidate); None on the last step
    remasked: torch.Tensor  # (N, L) bool, masked again at the end of the step


@dataclass
class Generation:
    tokens: torch.Tensor  # (N, L)
    nfe: int  # forward passes per sample
    steps: int
    policy: str
    trajectory: list[TrajectoryStep] | None = field(default=None, repr=False)


SELECTIONS = ("topk", "gumbel")
STREAMS = ("sequential", "per_batch")  # how a draw spends its random streams (SamplerOptions)


@dataclass(frozen=True)
class SamplerOptions:
    """Everything that decides a run of the sampler but the model, the batch and the seed: the
    policy and its steps, the mask schedule, how tokens are drawn (the start temperature, its
    annealing to ``temperature_floor``, the vocabulary filter ``top_k_share`` and ``top_p``:
    :mod:`remask.tempering`) and how the tokens to re-mask are selected (noise blend, selection rule, the candidate pool's committed
    budget). ``batch_size`` is how many sequences run at once; it changes the order in which the
    seed's stream is spent, so it is part of what reproduces a draw, as ``streams`` is: ``sequential``
    spends one stream batch after batch, ``per_batch`` gives batch ``b`` a stream of its own
    (:func:`batch_seed`), so that a batch's texts do not depend on the batches before it or on which
    process draws it (sharded sampling under ``torchrun``). Pipeline stages build it from the
    ``sample`` section (:meth:`remask.config.SampleSection.sampler_options`, ``sample.streams``)."""

    steps: int
    policy: str = "confidence"
    schedule: str = "linear"
    temperature: float = 1.0
    anneal: str = "constant"
    temperature_floor: float = 0.0
    top_k_share: float = 1.0
    top_p: float = 1.0
    randomness_strength: float = 0.0
    selection: str = "topk"
    selection_temperature: float = 1.0
    committed_budget: float | None = None
    batch_size: int = 64
    streams: str = "sequential"

    def checked_policy(self) -> Policy:
        """The registered policy, after every option has been checked; a bad one raises ValueError."""
        chosen = get_policy(self.policy)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or not 0 <= self.randomness_strength <= 1:
            raise ValueError("temperature must be > 0, top_p in (0, 1], randomness_strength in [0, 1]")
        if self.anneal not in ANNEALING or self.temperature_floor < 0 or not 0 < self.top_k_share <= 1:
            raise ValueError(f"anneal must be one of {', '.join(ANNEALING)} with temperature_floor >= 0 and "
                             f"top_k_share in (0, 1]; got {self.anneal!r}, {self.temperature_floor}, {self.top_k_share}")
        if self.anneal == "constant" and self.temperature_floor != 0:
            raise ValueError(f"temperature_floor {self.temperature_floor} is read only by anneal='linear'")
        if self.streams not in STREAMS:
            raise ValueError(f"streams must be one of {', '.join(STREAMS)}, got {self.streams!r}")
        if self.selection not in SELECTIONS or self.selection_temperature < 0:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)} with selection_temperature >= 0, "
                             f"got {self.selection!r} at {self.selection_temperature}")
        budget = self.committed_budget
        if budget is not None and (chosen.candidates != "all" or not 0 <= budget <= 1):
            raise ValueError(f"committed_budget must lie in [0, 1] and needs a policy whose candidates are all tokens; "
                             f"got {budget} with policy {self.policy!r} (candidates {chosen.candidates})")
        return chosen


@dataclass(frozen=True)
class Known:
    """Tokens the sampler never masks or changes (a prompt, or the known text around an infilling
    gap): ``tokens`` (N, L) holds them where ``protected`` (N, L) is true."""

    tokens: torch.Tensor
    protected: torch.Tensor

    def rows(self, rows: slice, device: torch.device) -> "Known":
        return Known(self.tokens[rows].to(device), self.protected[rows].to(device))


def nfe_for(policy: str, steps: int, positions: int | None = None) -> int:
    """Forward passes of a run: one fill per step, plus the policy's extra passes per re-mask
    (per scored position for the leave-one-out oracle: ``positions``, the non-protected ones)."""
    chosen = get_policy(policy)
    extra = chosen.extra_passes
    if chosen.per_position:
        if positions is None:
            raise ValueError(f"the NFE of policy {policy!r} depends on the number of positions it scores")
        extra *= positions
    return steps + extra * (steps - 1)


def steps_for_nfe(policy: str, budget: int) -> int:
    """The most steps whose NFE fits ``budget`` (e.g. ``critic`` at NFE 32 takes 16 steps: 31 passes).

    The ``oracle_loo`` ceiling is run at equal *steps* instead: ``budget`` steps, whatever its NFE."""
    chosen = get_policy(policy)
    extra = 0 if chosen.per_position else chosen.extra_passes
    steps = (budget + extra) // (1 + extra)
    if steps < 1:
        raise ValueError(f"an NFE budget of {budget} allows no step of policy {policy!r}")
    return steps


def prefix_prompt(ids: Sequence[int], num_samples: int, length: int, mask_id: int) -> Known:
    """A prompt at the start of every sample, protected."""
    if len(ids) > length:
        raise ValueError(f"the prompt has {len(ids)} characters, longer than --length {length}")
    fixed = torch.full((num_samples, length), mask_id, dtype=torch.long)
    fixed[:, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
    protected = torch.zeros(num_samples, length, dtype=torch.bool)
    protected[:, : len(ids)] = True
    return Known(fixed, protected)


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch ``batch`` of a draw with ``per_batch`` streams: a stream of its own, derived
    from the draw's ``seed`` and the batch's index by NumPy's ``SeedSequence`` (independent streams)."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1, dtype=np.uint64)[0])


@torch.no_grad()
def diffusion_generate(
    model: DiffusionTransformer, num_samples: int, length: int, options: SamplerOptions, seed: int = 0,
    known: Known | None = None, record_trajectory: bool = False, progress: bool = False,
) -> Generation:
    """Generate ``num_samples`` sequences of ``length`` tokens with ``options``, around the
    ``known`` tokens (none by default); see the module docstring."""
    chosen, known = _checked(model, num_samples, length, options, known)
    return _generate(model, chosen, known, options, seed, World(), record_trajectory, progress)


@torch.no_grad()
def sharded_generate(model: DiffusionTransformer, num_samples: int, length: int, options: SamplerOptions, seed: int,
                     world: World) -> Generation:
    """:func:`diffusion_generate` in a distributed ``world`` (``torchrun``): each process draws every
    ``world.size``-th batch and every process returns every text, the texts one process draws. That
    needs ``per_batch`` streams: with the sequential one a batch's texts depend on every batch before it."""
    if world.distributed and options.streams != "per_batch":
        raise ValueError("sampling sharded over processes needs per_batch streams (sample.streams: per_batch): with "
                         "one sequential stream a batch's texts depend on every batch before it")
    chosen, known = _checked(model, num_samples, length, options, None)
    return _generate(model, chosen, known, options, seed, world, False, False)


def _checked(model: DiffusionTransformer, num_samples: int, length: int, options: SamplerOptions,
             known: Known | None) -> tuple[Policy, Known]:
    """The arguments checked: the policy the options name (:meth:`SamplerOptions.checked_policy`) and the
    known tokens (all ``[MASK]`` and none protected by default)."""
    chosen = options.checked_policy()
    cfg = model.config
    if cfg.causal:
        raise ValueError("diffusion_generate needs a bidirectional (diffusion) model, not the causal judge")
    if not 1 <= length <= cfg.block_size:
        raise ValueError(f"length must be between 1 and the model's block_size {cfg.block_size}, got {length}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if known is None:
        known = Known(torch.full((num_samples, length), cfg.mask_id, dtype=torch.long),
                      torch.zeros(num_samples, length, dtype=torch.bool))
    if known.tokens.shape != (num_samples, length) or known.protected.shape != (num_samples, length):
        raise ValueError(f"the known tokens and their protected mask must both have shape ({num_samples}, {length})")
    if (known.tokens[known.protected] == cfg.mask_id).any():
        raise ValueError("a protected position holds [MASK]")
    return chosen, known


def _generate(model: DiffusionTransformer, chosen: Policy, known: Known, options: SamplerOptions, seed: int,
              world: World, record_trajectory: bool, progress: bool) -> Generation:
    """This process's batches of the draw (every ``world.size``-th, all of them alone), each from its
    stream, then every process's gathered in order."""
    device = next(model.parameters()).device
    sequential = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    outputs, trajectory = {}, [] if record_trajectory else None
    steps, batch_size = options.steps, options.batch_size
    mine = list(enumerate(range(0, len(known.tokens), batch_size)))[world.rank::world.size]
    bar = tqdm(total=len(mine) * steps, desc=f"sample {options.policy}", unit="step", disable=not progress,
               leave=False)
    passes = nfe_for(options.policy, steps, int((~known.protected).any(0).sum()))
    for batch, start in mine:
        rows = slice(start, start + batch_size)
        generator = sequential if options.streams == "sequential" else \
            torch.Generator().manual_seed(batch_seed(seed, batch))
        tokens, passes, steps_log = _generate_chunk(model, chosen, options, known.rows(rows, device), generator,
                                                    record_trajectory, bar)
        expected = nfe_for(options.policy, steps, int((~known.protected[rows]).any(0).sum()))
        if passes != expected:
            raise AssertionError(f"counted {passes} forward passes, expected {expected}")
        outputs[batch] = tokens.cpu()
        if trajectory is not None:
            trajectory.append(steps_log)
    bar.close()
    model.train(was_training)
    if world.distributed:  # every process returns every batch, in order
        gathered: list[dict[int, torch.Tensor]] = [{} for _ in range(world.size)]
        dist.all_gather_object(gathered, outputs)
        outputs = {batch: tokens for part in gathered for batch, tokens in part.items()}
    if trajectory is not None:
        trajectory = [_cat_steps([chunk[i] for chunk in trajectory]) for i in range(steps)]
    return Generation(torch.cat([outputs[b] for b in sorted(outputs)]), passes, steps, options.policy, trajectory)


def _generate_chunk(model: DiffusionTransformer, chosen: Policy, options: SamplerOptions, known: Known,
                    generator: torch.Generator, record: bool, bar: tqdm) -> tuple[torch.Tensor, int, list]:
    mask_id, steps, device = model.config.mask_id, options.steps, known.tokens.device
    protected = known.protected
    tokens = torch.where(protected, known.tokens, torch.full_like(known.tokens, mask_id))
    free = ~protected
    counts = torch.tensor([masked_counts(int(n), steps, options.schedule) for n in free.sum(1).tolist()],
                          device=device)
    p_at_fill = torch.ones(tokens.shape, dtype=torch.float64, device=device)
    passes = 0

    def forward(seq: torch.Tensor, head: str, copies: int = 1) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One pass per sequence of the batch (``copies`` when ``seq`` stacks that many copies of it)."""
        nonlocal passes
        passes += copies
        with autocast(device):
            out = model(seq, head=head)
        return tuple(o.float() for o in out) if head == "both" else out.float()

    log = []
    critic_at_fill = None
    strength = options.randomness_strength
    for i in range(steps):
        masked = tokens == mask_id
        if chosen.fused:  # the critic head judges the committed tokens in the pass that fills the rest
            logits, critic_logits = forward(tokens, "both")
            critic_at_fill = torch.sigmoid(critic_logits.double())
        else:
            logits = forward(tokens, "lm")
        temperature = temperature_at(options.anneal, options.temperature, options.temperature_floor, i, steps)
        probs = step_probs(logits, temperature, options.top_k_share, options.top_p)
        tokens, p_current = fill(probs, tokens, masked, generator)
        p_at_fill = torch.where(masked, p_current, p_at_fill)
        filled, last = tokens, i == steps - 1
        scores, remask = None, torch.zeros_like(masked)
        if not last:
            state = StepState(tokens, masked, protected, p_current, p_at_fill, generator,
                              lambda s: forward(s, "critic"), critic_at_fill,
                              lambda s, scored: leave_one_out_probs(lambda x, n: forward(x, "lm", n), s, scored, mask_id))
            scores = chosen.score(state).double()
            anneal = 1.0 - i / (steps - 1)
            if strength * anneal > 0:
                noise = torch.rand(tokens.shape, generator=generator, dtype=torch.float64).to(device)
                scores = (1.0 - strength * anneal) * scores + strength * anneal * noise
            if options.selection == "gumbel":
                scores = _gumbel_keys(scores, options.selection_temperature * anneal, generator)
            remask = _choose(scores, masked, free, counts[:, i], chosen.candidates, options.committed_budget)
            scores = scores.masked_fill(~(masked if chosen.candidates == "filled" else free), float("nan"))
            tokens = tokens.masked_fill(remask, mask_id)
        if record:
            log.append(TrajectoryStep(masked.cpu(), filled.cpu(), p_at_fill.float().cpu(),
                                      None if scores is None else scores.float().cpu(), remask.cpu()))
        bar.update(1)
    return tokens, passes, log


def _choose(scores: torch.Tensor, just_filled: torch.Tensor, free: torch.Tensor, k: torch.Tensor,
            candidates: str, committed_budget: float | None) -> torch.Tensor:
    """The tokens to re-mask: the top ``k`` of the policy's pool, or with a committed budget the top
    ``k`` just filled plus the top ``round(budget * committed)`` committed tokens."""
    if committed_budget is None:
        pool = just_filled if candidates == "filled" else free
        return top_k_per_row(scores.masked_fill(~pool, float("nan")), k)
    committed = free & ~just_filled
    extra = torch.round(committed_budget * committed.sum(1)).long()
    return top_k_per_row(scores.masked_fill(~just_filled, float("nan")), k) | \
        top_k_per_row(scores.masked_fill(~committed, float("nan")), extra)


def _gumbel_keys(scores: torch.Tensor, tau: float, generator: torch.Generator) -> torch.Tensor:
    """Gumbel-top-k keys ``log(score) + tau * G``: the top k of them are a draw without replacement
    with probability proportional to ``score ** (1 / tau)``."""
    keys = scores.clamp_min(1e-12).log()
    if tau <= 0:
        return keys
    uniform = torch.rand(scores.shape, generator=generator, dtype=torch.float64).clamp_(1e-300, 1 - 1e-16)
    return keys + tau * -(-uniform.log()).log().to(scores.device)


def _cat_steps(parts: list[TrajectoryStep]) -> TrajectoryStep:
    scores = None if parts[0].scores is None else torch.cat([p.scores for p in parts])
    return TrajectoryStep(
        torch.cat([p.masked for p in parts]), torch.cat([p.tokens for p in parts]),
        torch.cat([p.p_at_fill for p in parts]), scores, torch.cat([p.remasked for p in parts]),
    )
