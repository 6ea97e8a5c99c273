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

The search and the report draw run once per *entropy level* (:func:`remask.records.entropy_levels`): the test
text's, and a second, lower one (``sample.tuning.second_level`` times the text's) where samplers
that never reach the text's entropy (the public peer's) can be compared too. The second level's
search starts from each candidate's pilots at the text's, so it costs about one or two pilots per
candidate; its report temperatures bracket the second level, and the report compares each level
between the settings drawn for it.

No measurement of the report draw feeds back into a choice, so selection and measurement never
share samples. A rule that cannot reach the text's entropy within ``temperature_range`` is
recorded as such and not chosen. A candidate whose draw would show a critic inputs it was not
trained on (a fill annealed below its training temperatures) is left out of that row's search
(:func:`trained_search`), and the stage says so.

There is one search, :func:`tune_row`, for every row: a row of a tier's grid, a row of a study
variant, an ablation arm's policy and the public peer. What differs between them is resolved once
into a :class:`RowPlan` (its name, what runs it, its budgets and sample counts) and a sampler
``draw_at(budget)`` (ours: :func:`sampler_draw_at`; the peer's: :func:`remask.peer.peer_draw_at`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
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
from remask.records import TEXT_LEVEL, BudgetTuning, Candidate, LevelTuning, Pilot, Searched, Tuned, TuningLog
from remask.runtime import World
from remask.sampling import SamplerOptions, sharded_generate, steps_for_nfe
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
    guess = round(min(max(guess, low), high), 6)
    if guess in seen and low < guess < high:  # noise led back to a pilot already run, inside the range
        guess = _past_the_pilots(seen, target, low, high)
    return guess


def _past_the_pilots(seen: dict[float, tuple[float, float]], target: float, low: float, high: float) -> float:
    """A temperature no pilot has run where noise made the curve look falling and the step led back
    to a pilot: past the coldest pilot where all lie above the target, past the hottest where all
    lie below, else midway between the pilots on either side. Without it the search stopped there
    as if pinned at a bound of the range, and reported a reachable target as not reached."""
    below = [t for t, (e, _) in seen.items() if e < target]
    above = [t for t, (e, _) in seen.items() if e > target]
    if not below:
        guess = min(seen) / FIRST_STEP
    elif not above:
        guess = max(seen) * FIRST_STEP
    else:
        guess = (max(below) + min(above)) / 2
    return round(min(max(guess, low), high), 6)


def tune_temperature(
    measure: Measure, target: float, low: float, high: float, tolerance: float, max_pilots: int, start: float,
    known: dict[float, tuple[float, float]] | None = None,
) -> tuple[float, bool, dict[float, tuple[float, float]]]:
    """The temperature in ``[low, high]`` whose entropy is within ``tolerance`` (relative) of
    ``target``, by a secant search from ``start`` (or, given ``known`` pilots of the same candidate
    from a search at another target, from the secant through them): ``(temperature, reached,
    {temperature: (entropy, judge NLL)})``, the known pilots included. At most ``max_pilots`` new
    runs. A pilot within the tolerance with no other on the far side of the target gets one more
    there (:data:`PROBE_STEP`), so that :func:`nll_at_target` interpolates instead of reading the
    landed pilot. Where the target lies outside the range, or the runs do not reach it, the closest
    pilot is returned with ``reached=False``."""
    seen = dict(known or {})
    temperature = _next_temperature(seen, target, low, high) if seen else round(min(max(start, low), high), 6)
    for ran in range(1, max_pilots + 1):
        if temperature in seen:  # pinned at a bound of the range: the target lies beyond it
            break
        seen[temperature] = measure(temperature)
        entropy = seen[temperature][0]
        if abs(entropy - target) <= tolerance * target:
            far_side = [e for e, _ in seen.values() if (e - target) * (entropy - target) < 0]
            probe = round(min(max(temperature * (PROBE_STEP if entropy < target else 1 / PROBE_STEP), low), high), 6)
            if not far_side and ran < max_pilots and probe not in seen:
                seen[probe] = measure(probe)
            return temperature, True, seen
        temperature = _next_temperature(seen, target, low, high)
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


def candidates(ranks: bool, cfg: Tuning, draws: Sequence[DrawKnobs] | None,
               committed_budget: float | None = None) -> list[Candidate]:
    """The search's first candidates: every selection rule with every draw knob (``cfg.search``
    ``grid``) or with the first only (``coordinate``: the others are tried next with the winner's
    rule, :func:`rounds`); ``draws`` ``None``: the row's own sampler. All on the row's re-masking
    pool (``committed_budget``). A sampler whose score is noise (``ranks`` false: the ``random``
    policy) has no selection knob: only the first rule is tried."""
    rules = cfg.selections if ranks else cfg.selections[:1]
    first = draws if draws is not None else [None]
    first = first[:1] if cfg.search == "coordinate" else first
    return [Candidate(rule, knobs, committed_budget) for knobs in first for rule in rules]


Round = Callable[[Candidate], list[Candidate]]  # the winner so far -> the candidates to try next


def rounds(cfg: Tuning, draws: Sequence[DrawKnobs] | None, pools: Sequence[float]) -> list[Round]:
    """The coordinate steps after :func:`candidates`: with ``cfg.search`` ``coordinate``, the winner's
    rule with every draw knob; then, where the row's pool is open, the winner's rule and draw knobs
    with every pool of ``pools``. Each costs one candidate per value instead of multiplying them."""
    steps: list[Round] = []
    if cfg.search == "coordinate" and draws:
        steps.append(lambda winner: [replace(winner, knobs=knobs) for knobs in draws])
    if pools:
        steps.append(lambda winner: [replace(winner, committed_budget=budget) for budget in pools])
    return steps


def _search(searched: Sequence[Candidate], measure: Callable[[float, Candidate], tuple[float, float]], target: float,
            cfg: Tuning, start: float, known: Sequence[Pilot]) -> tuple[list[Searched], list[Pilot], list[tuple]]:
    """Tune every candidate's temperature: its outcome, the pilots run, and its rank (reached
    first, then the judge NLL interpolated at ``target``, else the distance from it)."""
    low, high = cfg.temperature_range
    outcomes, pilots, ranks = [], [], []
    for candidate in searched:
        before = {p.temperature: (p.char_entropy, p.judge_nll) for p in known if p.candidate == candidate}
        temperature, reached, seen = tune_temperature(
            lambda t, c=candidate: measure(t, c), target, low, high, cfg.entropy_tolerance, cfg.max_pilots, start,
            before)
        ran = [Pilot(candidate, t, e, n) for t, (e, n) in seen.items() if t not in before]
        pilots += ran
        nll = nll_at_target(seen, target) if reached else None
        outcomes.append(Searched(candidate, temperature, reached, nll, len(ran)))
        ranks.append((not reached, nll if reached else abs(seen[temperature][0] - target)))
        start = temperature if reached else start
    return outcomes, pilots, ranks


def tune_policy(
    searched: Sequence[Candidate], measure: Callable[[float, Candidate], tuple[float, float]], target: float,
    cfg: Tuning, start: float | None = None, known: Sequence[Pilot] = (), then: Sequence[Round] = (),
) -> Tuned:
    """Tune the temperature of every candidate and keep the one with the lowest judge NLL
    interpolated at ``target`` among those that reach it (none reach it: the closest entropy).

    ``measure(temperature, candidate)`` samples the tuning draw and returns its entropy and judge
    NLL. Each candidate's search starts from the previous one's temperature (``start``, else the
    middle of the range): neighbouring candidates land near each other, so that saves pilots. A
    candidate with ``known`` pilots (its search at another entropy level, on the same draw) starts
    from them instead, and they count in its interpolation but not among the pilots recorded here.
    ``then``: coordinate steps (:func:`rounds`), each trying the candidates it makes of the winner so
    far (those not tried yet), starting from the winner's temperature."""
    low, high = cfg.temperature_range
    start = (low + high) / 2 if start is None else start
    outcomes, pilots, ranks = _search(searched, measure, target, cfg, start, known)
    for widen in then:
        winner = outcomes[min(range(len(outcomes)), key=ranks.__getitem__)]
        tried = [o.candidate for o in outcomes]
        more = _search([c for c in widen(winner.candidate) if c not in tried], measure, target, cfg,
                       winner.temperature, [*known, *pilots])
        outcomes, pilots, ranks = outcomes + more[0], pilots + more[1], ranks + more[2]
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
    draw's samples per temperature and the tuning draw's per pilot, the ``model`` it samples, the
    draw knobs searched (``None``: the row's own sampler's), its ``search`` (the tier's settings with
    the row's own selection rules and temperature range, :meth:`remask.config.PolicySampling.tuning`)
    and the re-masking ``pools`` searched after the draw knobs (committed budgets: only for a row
    whose policy may re-mask any token and whose pool the row does not fix)."""

    name: str
    fields: dict[str, Any]
    ranks: bool
    budgets: tuple[int, ...]
    num_samples: int
    tuning_samples: int
    model: str
    draws: tuple[DrawKnobs, ...] | None  # the draw knobs searched; None: the row's own sampler's
    search: Tuning
    pools: tuple[float, ...] = ()

    @classmethod
    def of(cls, name: str, spec: PolicySampling, cfg: SampleSection, policy: str, model: Path,
           search: Tuning) -> "RowPlan":
        """A row of a grid running the registered ``policy`` (``spec``'s ``None``: the tier's value)
        under the row's ``search`` (its ``spec.tuning``, narrowed to the draw knobs the model was
        trained for, :func:`trained_search`) and, where its pool is open (the policy may re-mask any
        token, the row fixes no budget, and it is no oracle ceiling, whose cost per pilot is a pass
        per position), over the search's ``committed_budgets``."""
        chosen = get_policy(policy)
        open_pool = spec.committed_budget is None and chosen.candidates == "all" and chosen.kind != "oracle"
        return cls(name, {"runs": policy, "committed_budget": spec.committed_budget}, chosen.ranks,
                   tuple(spec.nfe_budgets or cfg.nfe_budgets), spec.num_samples or cfg.num_samples,
                   spec.tuning_samples or search.num_samples, str(model), tuple(search.draws), search,
                   tuple(search.committed_budgets) if open_pool else ())


def trained_search(policy: str, training: dict, cfg: Tuning, log: Callable[[str], None]) -> Tuning:
    """``cfg`` narrowed to the draw knobs under which ``policy`` reads only inputs the model (its
    training record ``training``) was trained on: a critic trained on fills at 0.7-2.0 is never run
    on a fill annealed below 0.7. The others are left out of its search, and ``log`` says so."""
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
    return cfg.with_(draws=kept)


@dataclass(frozen=True)
class Search:
    """What every row's search shares: the judge that scores the pilots, the entropy levels they aim
    at (:func:`remask.records.entropy_levels`; :data:`TEXT_LEVEL` first), the sample section (tuning settings,
    tuning seed), the report draw's seed, and where progress goes."""

    judge: DiffusionTransformer
    tokenizer: CharTokenizer
    levels: Mapping[str, float]
    sample: SampleSection
    report_seed: int
    log: Callable[[str], None] = print


def sampler_draw_at(model: DiffusionTransformer, tokenizer: CharTokenizer, cfg: SampleSection, policy: str,
                    world: World = World()) -> DrawAt:
    """Our sampler as a :data:`DrawAt`: ``policy`` at the most steps each budget allows, with the
    sample section's options and each candidate's knobs and re-masking pool; in a distributed
    ``world``, every draw's batches shared among the processes (the same texts)."""
    def draw_at(budget: int) -> tuple[Draw, int]:
        steps = steps_for_nfe(policy, budget)
        options = SamplerOptions(steps=steps, policy=policy, batch_size=cfg.batch_size, streams=cfg.streams,
                                 **cfg.sampler_options())

        def draw(temperature: float, candidate: Candidate, seed: int, n: int) -> tuple[list[str], int]:
            rule = candidate.selection
            run = replace(options, temperature=temperature, selection=rule.rule, selection_temperature=rule.temperature,
                          committed_budget=candidate.committed_budget, **candidate.knobs.sampler_options())
            result = sharded_generate(model, n, cfg.length, run, seed, world)
            return [tokenizer.decode(ids.tolist()) for ids in result.tokens], result.nfe
        return draw, steps
    return draw_at


def report_rows(name: str, fields: Mapping[str, Any], texts: Sequence[str], **setting: Any) -> list[dict]:
    """Report samples as every stage writes them: the row's ``name`` and ``fields``, where and how
    they were drawn (``setting``: budget, level, steps, NFE, temperature, the candidate's fields,
    seed), each text with its index in the seed's stream."""
    return [{"policy": name, **fields, **setting, "index": i, "text": text} for i, text in enumerate(texts)]


def tune_row(plan: RowPlan, draw_at: DrawAt, search: Search) -> tuple[list[dict], TuningLog]:
    """The search of this module for one row at each of its budgets and entropy levels, then the
    report draw: ``(report samples, tuning log)``, each sample a dict holding the row's ``fields``
    and the ``level`` its temperature was tuned for. The search at a later level starts from each
    candidate's pilots at the earlier ones (the same tuning draw)."""
    cfg = search.sample
    if search.report_seed == cfg.tuning_seed:
        raise ValueError(f"the report seed {search.report_seed} is the tuning seed: a draw is never both")
    log = TuningLog(plan.name, plan.fields, plan.model, search.levels[TEXT_LEVEL], cfg.tuning_seed, search.report_seed)
    samples, start = [], None
    tuning = plan.search
    searched = candidates(plan.ranks, tuning, plan.draws, plan.fields["committed_budget"])
    then = rounds(tuning, plan.draws, plan.pools)
    for budget in plan.budgets:
        draw, steps = draw_at(budget)
        levels, known = {}, []
        for level, target in search.levels.items():
            label = f"[{plan.name} NFE {budget}, {level} level]"
            began = time.perf_counter()

            def measure(temperature: float, candidate: Candidate, draw: Draw = draw, label: str = label,
                        target: float = target) -> tuple[float, float]:
                texts, _ = draw(temperature, candidate, cfg.tuning_seed, plan.tuning_samples)
                entropy = char_entropy(texts)
                nll = sum(judge_nll_bits(search.judge, search.tokenizer, texts)) / len(texts)
                search.log(f"{label} tuning pilot: {candidate.label}, T={temperature:.4f}: entropy {entropy:.3f} "
                           f"(target {target:.3f}), judge NLL {nll:.3f}")
                return entropy, nll

            tuned = tune_policy(searched, measure, target, tuning, start, known, then)
            known += tuned.pilots
            if level == TEXT_LEVEL:
                start = tuned.temperature
            search.log(f"{label} search: {len(tuned.searched)} candidates, {len(tuned.pilots)} pilots of "
                       f"{plan.tuning_samples} samples in {time.perf_counter() - began:.0f} s; tuned: "
                       f"{tuned.candidate.label}, T={tuned.temperature:.4f}"
                       + ("" if tuned.reached else f" (entropy {target:.3f} was not reached within the tolerance)"))
            temperatures = report_temperatures(tuned.temperature, tuning)
            for temperature in temperatures:
                texts, nfe = draw(temperature, tuned.candidate, search.report_seed, plan.num_samples)
                samples += report_rows(plan.name, plan.fields, texts, nfe_budget=budget, level=level, steps=steps,
                                       nfe=nfe, temperature=temperature, **tuned.candidate.fields(),
                                       seed=search.report_seed)
            levels[level] = LevelTuning(target, tuned, temperatures)
        log.budgets[budget] = BudgetTuning(steps, nfe, levels)
    return samples, log
