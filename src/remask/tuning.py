"""Every policy at its own best settings, tuned on one draw and reported on another.

A policy's knobs here: the sampling temperature, the selection rule (top-k, or Gumbel-top-k with
a noise temperature) and the draw knobs (the temperature's annealing over the steps and the
vocabulary filter, :mod:`remask.tempering`). Every policy gets the same search:

1. on the *tuning draw* (its own seed, ``sample.tuning_seed``, few samples), for each candidate
   (a selection rule with draw knobs: every pair of ``sample.tuning.selections`` and ``draws``),
   a secant search on the temperature until the samples' character entropy is within a tolerance
   of the test text's (entropy rises with the temperature; the same seed at every pilot makes the
   curve smooth). Each candidate starts from the previous one's temperature, so a search costs
   about three pilots per candidate; the cost is printed;
2. the candidate with the lowest judge NLL *interpolated at the text's entropy* between its pilots
   (:func:`nll_at_target`) is chosen: not at whichever pilot landed within the tolerance, which on
   frontiers this steep is 0.1-0.2 bits of noise;
3. the *report draw* (``sample.seed``, never the tuning seed) samples at two temperatures around
   the tuned one, ``T * (1 -/+ report_spread)``, so that :mod:`remask.frontier` interpolates the
   quality at the text's entropy instead of reading it off the tuned point.

No measurement of the report draw feeds back into a choice, so selection and measurement never
share samples. A rule that cannot reach the text's entropy within ``temperature_range`` is
recorded as such and not chosen. A candidate whose draw would show a critic inputs it was not
trained on (a fill annealed below its training temperatures) is left out of that row's search
(:func:`trained_draws`), and the stage says so.

There is one search, :func:`tune_row`, for every row: a row of a tier's grid, a row of a study
variant, an ablation arm's policy and the public peer. What differs between them is resolved once
into a :class:`RowPlan` (its name, what runs it, its budgets and sample counts) and a sampler
``draw_at(budget)`` (ours: :func:`sampler_draw_at`; the peer's: :func:`remask.peer.peer_draw_at`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from remask.config import DrawKnobs, PolicySampling, SampleSection, Tuning
from remask.data import CharTokenizer, reference_texts
from remask.errors import ConfigError
from remask.frontier import interpolate, segment
from remask.judge import judge_nll_bits
from remask.metrics import char_entropy
from remask.model import DiffusionTransformer
from remask.policies import get_policy, untrained_inputs
from remask.records import BudgetTuning, Candidate, Pilot, Searched, Tuned, TuningLog
from remask.sampling import SamplerOptions, diffusion_generate, steps_for_nfe
from remask.tempering import temperature_span

Measure = Callable[[float], tuple[float, float]]  # temperature -> (character entropy, judge NLL)
Draw = Callable[[float, Candidate, int, int], tuple[list[str], int]]  # (T, candidate, seed, n) -> (texts, NFE)
DrawAt = Callable[[int], tuple[Draw, int]]  # NFE budget -> (the sampler at that budget, its steps)

MAX_STEP = 1.5  # a secant step changes the temperature by at most this factor (a flat stretch of the curve)
FIRST_STEP = 1.15  # the step from a lone pilot towards the target
PROBE_STEP = 1.05  # the step past a pilot within the tolerance, so that the target is bracketed


def _next_temperature(seen: dict[float, tuple[float, float]], target: float, low: float, high: float) -> float:
    """The next pilot's temperature: regula falsi between the closest pilots on either side of the
    target where there are both, else the secant through the two closest (entropy rises with the
    temperature), its step bounded by :data:`MAX_STEP`, within ``[low, high]``."""
    below = [t for t, (e, _) in seen.items() if e < target]
    above = [t for t, (e, _) in seen.items() if e > target]
    if below and above:
        a, b = max(below), min(above)
    elif len(seen) >= 2:
        a, b = sorted(seen, key=lambda t: abs(seen[t][0] - target))[:2]
    else:
        only = next(iter(seen))
        return round(min(max(only * (FIRST_STEP if not above else 1 / FIRST_STEP), low), high), 6)
    ea, eb = seen[a][0], seen[b][0]
    nearest = a if abs(ea - target) < abs(eb - target) else b
    if (eb - ea) * (b - a) <= 0:  # noise made the curve look flat or falling: step towards the target instead
        guess = nearest * (FIRST_STEP if seen[nearest][0] < target else 1 / FIRST_STEP)
    else:
        guess = a + (target - ea) * (b - a) / (eb - ea)
    if not (below and above):
        guess = min(max(guess, nearest / MAX_STEP), nearest * MAX_STEP)
    return round(min(max(guess, low), high), 6)


def tune_temperature(
    measure: Measure, target: float, low: float, high: float, tolerance: float, max_pilots: int, start: float,
) -> tuple[float, bool, dict[float, tuple[float, float]]]:
    """The temperature in ``[low, high]`` whose entropy is within ``tolerance`` (relative) of
    ``target``, by a secant search from ``start``: ``(temperature, reached, {temperature: (entropy,
    judge NLL)})``. A pilot within the tolerance with no other on the far side of the target gets
    one more there (:data:`PROBE_STEP`), so that :func:`nll_at_target` interpolates instead of
    reading the landed pilot. Where the target lies outside the range, or ``max_pilots`` runs do
    not reach it, the closest pilot is returned with ``reached=False``."""
    seen: dict[float, tuple[float, float]] = {}
    temperature = round(min(max(start, low), high), 6)
    while len(seen) < max_pilots:
        seen[temperature] = measure(temperature)
        entropy = seen[temperature][0]
        if abs(entropy - target) <= tolerance * target:
            far_side = [e for e, _ in seen.values() if (e - target) * (entropy - target) < 0]
            probe = round(min(max(temperature * (PROBE_STEP if entropy < target else 1 / PROBE_STEP), low), high), 6)
            if not far_side and len(seen) < max_pilots and probe not in seen:
                seen[probe] = measure(probe)
            return temperature, True, seen
        temperature = _next_temperature(seen, target, low, high)
        if temperature in seen:  # pinned at a bound of the range: the target lies beyond it
            break
    closest = min(seen, key=lambda t: abs(seen[t][0] - target))
    return closest, abs(seen[closest][0] - target) <= tolerance * target, seen


def nll_at_target(seen: dict[float, tuple[float, float]], target: float) -> float:
    """The judge NLL at the target entropy, linear in entropy between the closest pilots on either
    side of it (or, where all lie on one side, on the line through the two closest): the quality
    at the entropy every row is compared at, not at whichever pilot landed within the tolerance
    (on a frontier of 2.5-4 bits of NLL per bit of entropy, a 1% miss is 0.1-0.2 bits). The same
    segment and line as the report's frontier (:func:`remask.frontier.segment`, ``interpolate``)."""
    points = [{"char_entropy": e, "judge_nll": n} for e, n in seen.values()]
    if len(points) == 1:
        return points[0]["judge_nll"]
    a, b, _ = segment([p["char_entropy"] for p in points], target)
    return float(interpolate(points[a], points[b], target)["judge_nll"])


def candidates(ranks: bool, cfg: Tuning, draws: Sequence[DrawKnobs] | None) -> list[Candidate]:
    """The search's candidates: every selection rule with every draw knob (``draws`` ``None``: the
    row's own sampler). A sampler whose score is noise (``ranks`` false: the ``random`` policy) has
    no selection knob: only the first rule is tried."""
    rules = cfg.selections if ranks else cfg.selections[:1]
    return [Candidate(rule, knobs) for knobs in (draws if draws is not None else [None]) for rule in rules]


def tune_policy(
    searched: Sequence[Candidate], measure: Callable[[float, Candidate], tuple[float, float]], target: float,
    cfg: Tuning, start: float | None = None,
) -> Tuned:
    """Tune the temperature of every candidate and keep the one with the lowest judge NLL
    interpolated at ``target`` among those that reach it (none reach it: the closest entropy).

    ``measure(temperature, candidate)`` samples the tuning draw and returns its entropy and judge
    NLL. Each candidate's search starts from the previous one's temperature (``start``, else the
    middle of the range): neighbouring candidates land near each other, so that saves pilots."""
    low, high = cfg.temperature_range
    start = (low + high) / 2 if start is None else start
    outcomes, pilots, ranks = [], [], []
    for candidate in searched:
        temperature, reached, seen = tune_temperature(
            lambda t, c=candidate: measure(t, c), target, low, high, cfg.entropy_tolerance, cfg.max_pilots, start)
        pilots += [Pilot(candidate, t, e, n) for t, (e, n) in seen.items()]
        nll = nll_at_target(seen, target) if reached else None
        outcomes.append(Searched(candidate, temperature, reached, nll, len(seen)))
        ranks.append((not reached, nll if reached else abs(seen[temperature][0] - target)))
        start = temperature if reached else start
    best = outcomes[min(range(len(outcomes)), key=ranks.__getitem__)]
    return Tuned(best.candidate, best.temperature, best.reached, best.judge_nll, outcomes, pilots)


def report_temperatures(tuned: float, cfg: Tuning) -> list[float]:
    """The report draw's two temperatures around the tuned one, within the tuning range."""
    low, high = cfg.temperature_range
    return sorted({round(min(max(tuned * (1 + s), low), high), 6) for s in (-cfg.report_spread, cfg.report_spread)})


def target_entropy(data_dir: Path, tokenizer: CharTokenizer, num_samples: int, length: int) -> float:
    """The character entropy every row is tuned to reach: the test text's, on the windows the
    report compares with (:func:`remask.data.reference_texts`)."""
    return char_entropy(reference_texts(data_dir, tokenizer, num_samples, length))


@dataclass(frozen=True)
class RowPlan:
    """One row with its exceptions to the tier's settings resolved: its reported ``name``, the
    ``fields`` that say what runs it (written into its tuning log and every report sample), whether
    its score ranks tokens (``ranks``: a selection rule matters), its NFE ``budgets``, the report
    draw's samples per temperature and the tuning draw's per pilot, and the ``model`` it samples."""

    name: str
    fields: dict[str, Any]
    ranks: bool
    budgets: tuple[int, ...]
    num_samples: int
    tuning_samples: int
    model: str
    draws: tuple[DrawKnobs, ...] | None  # the draw knobs searched; None: the row's own sampler's

    @classmethod
    def of(cls, name: str, spec: PolicySampling, cfg: SampleSection, policy: str, model: Path,
           draws: Sequence[DrawKnobs]) -> "RowPlan":
        """A row of a grid running the registered ``policy`` (``spec``'s ``None``: the tier's value),
        searched over ``draws`` (:func:`trained_draws`)."""
        return cls(name, {"runs": policy, "committed_budget": spec.committed_budget}, get_policy(policy).ranks,
                   tuple(spec.nfe_budgets or cfg.nfe_budgets), spec.num_samples or cfg.num_samples,
                   spec.tuning_samples or cfg.tuning.num_samples, str(model), tuple(draws))


def trained_draws(policy: str, training: dict, cfg: Tuning, log: Callable[[str], None]) -> list[DrawKnobs]:
    """The draw knobs of ``cfg`` under which ``policy`` reads only inputs the model (its training
    record ``training``) was trained on: a critic trained on fills at 0.7-2.0 is never run on a fill
    annealed below 0.7. The others are left out of its search, and ``log`` says so."""
    low, high = cfg.temperature_range
    kept = []
    for knobs in cfg.draws:
        lowest = min(low, temperature_span(knobs.anneal, low, knobs.floor)[0])
        missing = untrained_inputs(policy, training, (lowest, high))
        if missing:
            log(f"[{policy}] draw knobs '{knobs.label}' left out of the search: it would read {'; '.join(missing)}")
        else:
            kept.append(knobs)
    if not kept:
        raise ConfigError(f"sample.tuning.draws: no candidate is one policy {policy!r} was trained for")
    return kept


@dataclass(frozen=True)
class Search:
    """What every row's search shares: the judge that scores the pilots, the entropy they aim at,
    the sample section (tuning settings, tuning seed), the report draw's seed, and where progress
    goes."""

    judge: DiffusionTransformer
    tokenizer: CharTokenizer
    target: float
    sample: SampleSection
    report_seed: int
    log: Callable[[str], None] = print


def sampler_draw_at(model: DiffusionTransformer, tokenizer: CharTokenizer, cfg: SampleSection, policy: str,
                    committed_budget: float | None) -> DrawAt:
    """Our sampler as a :data:`DrawAt`: ``policy`` at the most steps each budget allows, with the
    sample section's options and the row's ``committed_budget``."""
    def draw_at(budget: int) -> tuple[Draw, int]:
        steps = steps_for_nfe(policy, budget)
        options = SamplerOptions(steps=steps, policy=policy, committed_budget=committed_budget,
                                 batch_size=cfg.batch_size, **cfg.sampler_options())

        def draw(temperature: float, candidate: Candidate, seed: int, n: int) -> tuple[list[str], int]:
            rule = candidate.selection
            run = replace(options, temperature=temperature, selection=rule.rule, selection_temperature=rule.temperature,
                          **candidate.knobs.sampler_options())
            result = diffusion_generate(model, n, cfg.length, run, seed=seed)
            return [tokenizer.decode(ids.tolist()) for ids in result.tokens], result.nfe
        return draw, steps
    return draw_at


def tune_row(plan: RowPlan, draw_at: DrawAt, search: Search) -> tuple[list[dict], TuningLog]:
    """The search of this module for one row at each of its budgets, then the report draw:
    ``(report samples, tuning log)``, each sample a dict holding the row's ``fields``."""
    cfg = search.sample
    if search.report_seed == cfg.tuning_seed:
        raise ValueError(f"the report seed {search.report_seed} is the tuning seed: a draw is never both")
    log = TuningLog(plan.name, plan.fields, plan.model, search.target, cfg.tuning_seed, search.report_seed)
    samples, start = [], None
    searched = candidates(plan.ranks, cfg.tuning, plan.draws)
    for budget in plan.budgets:
        draw, steps = draw_at(budget)
        label = f"[{plan.name} NFE {budget}]"
        began = time.perf_counter()

        def measure(temperature: float, candidate: Candidate, draw: Draw = draw,
                    label: str = label) -> tuple[float, float]:
            texts, _ = draw(temperature, candidate, cfg.tuning_seed, plan.tuning_samples)
            entropy = char_entropy(texts)
            nll = sum(judge_nll_bits(search.judge, search.tokenizer, texts)) / len(texts)
            search.log(f"{label} tuning pilot: {candidate.label}, T={temperature:.4f}: entropy {entropy:.3f} "
                       f"(target {search.target:.3f}), judge NLL {nll:.3f}")
            return entropy, nll

        tuned = tune_policy(searched, measure, search.target, cfg.tuning, start)
        start = tuned.temperature
        search.log(f"{label} search: {len(searched)} candidates, {len(tuned.pilots)} pilots of "
                   f"{plan.tuning_samples} samples in {time.perf_counter() - began:.0f} s; tuned: "
                   f"{tuned.candidate.label}, T={tuned.temperature:.4f}"
                   + ("" if tuned.reached else " (the text's entropy was not reached within the tolerance)"))
        drawn = []
        for temperature in report_temperatures(tuned.temperature, cfg.tuning):
            texts, nfe = draw(temperature, tuned.candidate, search.report_seed, plan.num_samples)
            drawn += [{"policy": plan.name, **plan.fields, "nfe_budget": budget, "steps": steps, "nfe": nfe,
                       "temperature": temperature, **tuned.candidate.fields(), "seed": search.report_seed,
                       "index": i, "text": text} for i, text in enumerate(texts)]
        log.budgets[budget] = BudgetTuning(drawn[0]["steps"], drawn[0]["nfe"], tuned,
                                           sorted({r["temperature"] for r in drawn}))
        samples += drawn
    return samples, log
