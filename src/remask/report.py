"""The comparison: which policy is better, at which NFE, by how much, with which interval.

The report computes, then renders. :func:`compare_policies` builds :class:`Comparison` records
from the measured frontiers (:mod:`remask.frontier`): for every NFE budget, every policy against
``confidence``, against ``remdm_conf`` where it was sampled, against the best training-free policy
(the one with the lowest judge NLL on the *tuning* draw, so choosing it does not look at the
report samples), and a study variant's row also against ``confidence`` on the variant's own model:
the difference of each metric at each entropy level (the test text's, and a second, lower one that
every sampler reaches: :func:`remask.records.entropy_levels`) with a bootstrap interval of the
difference. Where the study's public peer (x-transformers' self-critic, :mod:`remask.peer`) was
sampled, our best learned and best training-free rows (chosen on the tuning draw) are compared
with it too; it is a baseline of its own kind (``peer``), not one of the goal's. The
renderers turn records into ``results/summary.md``; no conclusion is a fixed sentence.

Rules, so that no single metric can be gamed:

- equal NFE (each policy takes the most steps its passes allow); the ``oracle_loo`` ceiling runs
  at equal *steps* and is labelled as a ceiling, never as a contender;
- every policy at its own tuned settings (:mod:`remask.tuning`), measured on a fresh draw;
- at a named entropy level, interpolated on each policy's frontier between the report settings
  tuned for that level; the goal is judged at the test text's;
- A *beats* B when the interval of their judge-NLL difference lies below 0 and the interval of
  the word-validity difference does not lie below 0 (no worse); A *loses* when the judge-NLL
  interval lies above 0; otherwise the difference is not significant. A frontier that does not
  bracket the level (extrapolated) gives no verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from remask.frontier import difference
from remask.policies import get_policy
from remask.records import LEVELS, TEXT_LEVEL, Comparison, FrontierPoint, Setting, TuningLog, level_title, pool_label

BASELINE = "confidence"
REVISITING_BASELINE = "remdm_conf"  # the training-free policy that also revisits committed tokens


def kind_of(log: TuningLog) -> str:
    """A row's kind: the public peer's log says ``peer``; any other row's is that of the registered
    policy it runs."""
    return log.fields.get("kind") or get_policy(log.runs).kind


METRIC_NAMES = {"judge_nll": "judge NLL", "word_validity": "word validity", "rep_4": "rep-4",
                "ngram_jsd": "3-gram JSD"}
EXTRAPOLATED = "extrapolated"  # what stands where a value would be extrapolated: never a number
REP4_LIMIT = 1.5  # rep-4 at most this multiple of the test text's, for the goal


def best_of_kind(tuning: Mapping[str, TuningLog], budget: int, kind: str, level: str = TEXT_LEVEL) -> str | None:
    """The row of ``kind`` with the lowest judge NLL at the entropy ``level`` on the *tuning* draw
    (rows that reached the entropy first, then those whose search did not end at an edge of the
    temperature range, :attr:`~remask.records.LevelTuning.pinned`, whose report draw cannot bracket
    the level), so that choosing it never looks at the report samples."""
    at = {name: log.budgets[budget].levels[level] for name, log in tuning.items()
          if kind_of(log) == kind and budget in log.budgets and level in log.budgets[budget].levels}
    scored = [(not t.tuned.reached, t.pinned, t.tuned.judge_nll, name) for name, t in at.items()]
    return min(scored)[3] if scored else None


def is_same_model_baseline(log: TuningLog) -> bool:
    """Whether a row is one of a model's own training-free baselines: plain ``confidence``, or
    ``remdm_conf`` with a committed budget (the training-free row that revisits committed tokens
    as learned rows with a committed budget, or with the pool search, do)."""
    budget = log.fields.get("committed_budget")
    return (log.runs == BASELINE and budget is None) or (log.runs == REVISITING_BASELINE and budget is not None)


def same_model_baseline(tuning: Mapping[str, TuningLog], log: TuningLog) -> list[str]:
    """The training-free baselines (:func:`is_same_model_baseline`) sampled on the same study
    variant's model as ``log``'s row (none on the quick tier's model, or where that variant sampled
    none), so that a variant's row says whether its *score* helps apart from its *generator*."""
    if log.variant is None:
        return []
    return sorted(name for name, other in tuning.items() if other.variant == log.variant
                  and is_same_model_baseline(other))


def finalist_rows(tuning: Mapping[str, TuningLog], budget: int, level: str) -> list[str]:
    """The rows whose differences must decide at ``budget`` and ``level``: every model's training-free
    baselines (:func:`is_same_model_baseline`), the oracle ceiling, the public peer, and each model's
    best learned row, chosen on the tuning draw (never on the report draw it is then measured on)."""
    here = {name: log for name, log in tuning.items()
            if budget in log.budgets and level in log.budgets[budget].levels}
    chosen = {name for name, log in here.items() if is_same_model_baseline(log) or kind_of(log) in ("oracle", "peer")}
    for variant in {log.variant for log in here.values()}:
        best = best_of_kind({n: log for n, log in here.items() if log.variant == variant}, budget, "learned", level)
        chosen |= {best} if best else set()
    return sorted(chosen)


def best_training_free(tuning: Mapping[str, TuningLog], budget: int, level: str = TEXT_LEVEL) -> str:
    """The training-free policy with the lowest judge NLL at the entropy ``level`` on the tuning draw,
    among the rows of the grid's own model (a variant's or the peer's generator is another model)."""
    best = best_of_kind({n: log for n, log in tuning.items() if log.variant is None}, budget, "training_free", level)
    if best is None:
        raise ValueError(f"no training-free policy was sampled at NFE {budget} at the {level} level")
    return best


def compare_policies(
    samples: Mapping[tuple[str, int, str], Sequence], frontiers: Mapping[tuple[str, int, str], FrontierPoint],
    tuning: Mapping[str, TuningLog], levels: Mapping[str, float], resamples: int, level: float, seed: int,
) -> list[Comparison]:
    """Every policy against ``confidence`` and against the best training-free policy, per budget
    and entropy level, and our best learned and best training-free rows (chosen on the tuning draw)
    against the public peer's row.

    ``samples[(policy, budget, level)]``: its report settings for that level
    (:class:`remask.metrics.SettingSamples`); ``frontiers``: the :class:`FrontierPoint` of each;
    ``tuning``: the tuning logs; ``levels``: each level's entropy (bits)."""
    pairs: list[tuple[int, str, str, str]] = []  # (budget, level, policy, baseline): each bootstrapped below

    def compare(budget: int, at: str, policy: str, baseline: str) -> Comparison:
        diff = difference(samples[(policy, budget, at)], samples[(baseline, budget, at)], levels[at], resamples, level,
                          seed)
        bracketed = frontiers[(policy, budget, at)].bracketed and frontiers[(baseline, budget, at)].bracketed
        return Comparison(budget, policy, baseline, diff, bracketed, kind_of(tuning[policy]), kind_of(tuning[baseline]),
                          at)

    for budget in sorted({b for _, b, _ in samples}):
        for at in levels:
            rows = sorted(p for p, b, lv in samples if b == budget and lv == at)
            if not rows:
                continue
            # the grid's baselines where the tier has a grid on the quick tier's model (the scale axis has none:
            # each of its rows is compared with its own model's baselines only): `confidence`, `remdm_conf`, the
            # grid's fixed-pool `remdm_conf_budget` where sampled, and the best training-free row
            grid = [p for p in rows if tuning[p].variant is None]
            baselines = [BASELINE, REVISITING_BASELINE, *(p for p in grid if is_same_model_baseline(tuning[p])),
                         best_training_free(tuning, budget, at)] if grid else []
            for policy in rows:
                # a row on a study variant's model is also compared with `confidence` and `remdm_conf` with a
                # committed budget on that same model (where sampled): the score apart from the variant's generator
                own = same_model_baseline(tuning, tuning[policy])
                pairs += [(budget, at, policy, baseline) for baseline in dict.fromkeys(baselines + own)
                          if policy != baseline and (baseline, budget, at) in samples]
            # our best rows of each kind (tuning draw, every model's) against the public peer's
            ours = [best_of_kind({p: tuning[p] for p in rows}, budget, kind, at) for kind in ("learned", "training_free")]
            pairs += [(budget, at, mine, peer) for mine in ours if mine is not None
                      for peer in rows if kind_of(tuning[peer]) == "peer"]
    return [compare(*pair) for pair in tqdm(pairs, desc="comparisons", unit="pair")]


@dataclass(frozen=True)
class Answer:
    """The question's answer at one budget and entropy level: the best learned row (chosen on the
    tuning draw), its comparisons with the grid's training-free baselines (``against``: ``confidence``,
    ``remdm_conf`` and its fixed-pool row where sampled) and with its own model's (``own``), its rep-4,
    and the oracle ceiling's comparison with ``confidence`` (``oracle``) where one was sampled."""

    budget: int
    level: str
    row: str
    against: tuple[Comparison, ...]
    own: tuple[Comparison, ...]
    rep_4: float | None  # None: extrapolated
    rep_4_limit: float
    oracle: Comparison | None

    @property
    def beats(self) -> bool:
        """Beats every grid baseline (judge NLL, word validity and 3-gram JSD agreeing: ``Comparison.outcome``)
        with rep-4 within :data:`REP4_LIMIT` times the text's."""
        return bool(self.against) and all(r.outcome == "beats" for r in self.against) and \
            self.rep_4 is not None and self.rep_4 <= self.rep_4_limit

    @property
    def gap(self) -> Comparison | None:
        """The row's comparison with ``confidence``."""
        return next((r for r in self.against if r.baseline == BASELINE), None)

    @property
    def headroom_share(self) -> float | None:
        """The share of the oracle's headroom over ``confidence`` (judge NLL, point estimates) that the row
        reaches, in [0, 1]; ``None`` where the oracle's headroom is not measured as above 0 (its interval
        against ``confidence`` does not lie below 0) or a frontier is extrapolated."""
        gap, oracle = self.gap, self.oracle
        if gap is None or oracle is None or not (gap.bracketed and oracle.bracketed):
            return None
        headroom = -oracle.differences["judge_nll"]["difference"]
        if oracle.differences["judge_nll"]["ci"][1] >= 0 or headroom <= 0:
            return None
        return min(1.0, max(0.0, -gap.differences["judge_nll"]["difference"] / headroom))

    def to_dict(self) -> dict:
        return {"budget": self.budget, "level": self.level, "row": self.row, "beats": self.beats,
                "outcomes": {r.baseline: r.outcome for r in self.against + self.own},
                "judge_nll_vs_confidence": None if self.gap is None else self.gap.differences["judge_nll"],
                "oracle_vs_confidence": None if self.oracle is None else self.oracle.differences["judge_nll"],
                "headroom_share": self.headroom_share, "rep_4": self.rep_4, "rep_4_limit": self.rep_4_limit}


def answers(records: Sequence[Comparison], frontiers: Mapping[tuple[str, int, str], FrontierPoint],
            tuning: Mapping[str, TuningLog], reference: Mapping) -> list[Answer]:
    """Per budget and entropy level with a grid on the quick tier's model, the best learned row
    (the tuning draw's, :func:`best_of_kind`, across every model) and what the report draw says of it."""
    out = []
    for budget, level in sorted({(r.budget, r.level) for r in records}, key=lambda k: level_order(*k)):
        here = {p: tuning[p] for p, b, lv in frontiers if b == budget and lv == level}
        grid = {p for p, log in here.items() if log.variant is None}
        best = best_of_kind(here, budget, "learned", level)
        if best is None or not grid:
            continue
        own = set(same_model_baseline(tuning, tuning[best]))
        mine = [r for r in records if r.budget == budget and r.level == level and r.policy == best]
        oracle = [r for r in records if r.budget == budget and r.level == level and r.kind == "oracle"
                  and r.baseline == BASELINE]
        out.append(Answer(budget, level, best,
                          tuple(r for r in mine if r.baseline in grid and r.baseline_kind == "training_free"
                                and is_grid_baseline(tuning[r.baseline])),
                          tuple(r for r in mine if r.baseline in own), frontiers[(best, budget, level)].value("rep_4"),
                          REP4_LIMIT * reference["rep_4"], oracle[0] if oracle else None))
    return out


def is_grid_baseline(log: TuningLog) -> bool:
    """``confidence``, ``remdm_conf`` or a fixed-pool ``remdm_conf``: the training-free rows a learned
    row must beat to answer the question."""
    return is_same_model_baseline(log) or log.runs == REVISITING_BASELINE


def render_answer(found: Sequence[Answer], levels: Mapping[str, float]) -> list[str]:
    """The answer, one line per budget and level: the best learned row and **beats**, or its measured
    gap to ``confidence`` and the share of the oracle's headroom it reaches; a blank line closes it."""
    if not found:
        return []
    lines = ["## The answer, per budget and entropy level", "",
             "The best learned row at each budget and level, chosen on the tuning draw among every model's learned "
             "rows (a row whose search ended at an edge of the temperature range comes after the others: its report "
             "draw cannot bracket the level), measured on the report draw. It **beats** when its judge-NLL interval "
             "lies below 0 against "
             f"every training-free baseline of the grid (`{BASELINE}`, `{REVISITING_BASELINE}` and its fixed pool "
             f"where sampled) with word validity no worse and 3-gram JSD no further from real text, and rep-4 at most "
             f"{REP4_LIMIT}x the text's; otherwise its gap to `{BASELINE}` and the share of the oracle ceiling's "
             "headroom over it that the row reaches (point estimates; none where the oracle's own interval does not "
             "lie below 0).", ""]
    for a in found:
        where = f"NFE {a.budget}, {level_title(a.level, levels[a.level])}"
        against = "; ".join(f"vs `{r.baseline}` {r.outcome}" for r in a.against)
        own = "; ".join(f"vs `{r.baseline}` {r.outcome}" for r in a.own)
        rep = EXTRAPOLATED if a.rep_4 is None else f"{a.rep_4:.3f}"
        tail = f" On its own model: {own}." if own else ""
        if a.beats:
            lines.append(f"- {where}: `{a.row}` **beats** ({against}; rep-4 {rep}, limit {a.rep_4_limit:.3f}).{tail}")
            continue
        gap = EXTRAPOLATED if a.gap is None else fmt_difference(a.gap.differences["judge_nll"])
        if a.oracle is None:
            ceiling = "no oracle sampled here"
        elif not a.oracle.bracketed:
            ceiling = f"the oracle's headroom is {EXTRAPOLATED}"
        else:
            share = a.headroom_share
            ceiling = (f"the oracle ceiling vs `{BASELINE}` {fmt_difference(a.oracle.differences['judge_nll'])}: "
                       + ("no headroom measured above 0" if share is None else f"{share:.0%} of its headroom reached"))
        lines.append(f"- {where}: `{a.row}` does not beat them ({against}; rep-4 {rep}, limit {a.rep_4_limit:.3f}); "
                     f"judge NLL vs `{BASELINE}` {gap}; {ceiling}.{tail}")
    return lines + [""]


def fmt_ci(value: float | None, ci: Sequence[float] | None, digits: int = 3, sign: bool = False) -> str:
    """A value with its interval and the interval's half-width; ``None`` (an extrapolated point)
    is written :data:`EXTRAPOLATED`, never as a number."""
    if value is None or ci is None:
        return EXTRAPOLATED
    spec = f"+.{digits}f" if sign else f".{digits}f"
    return f"{value:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}] (±{(ci[1] - ci[0]) / 2:.{digits}f})"


def fmt(row: Mapping, metric: str, digits: int = 3) -> str:
    """``metric`` of a measurement (``metric`` and ``<metric>_ci`` keys) with its interval, or
    :data:`EXTRAPOLATED`; a metric the measurement lacks is ``-``."""
    if metric not in row:
        return "-"
    return fmt_ci(row[metric], row.get(f"{metric}_ci"), digits)


def fmt_difference(d: Mapping, digits: int = 3) -> str:
    """One metric's difference (:func:`remask.frontier.difference`) with its interval."""
    return fmt_ci(d["difference"], d["ci"], digits, sign=True)


def level_order(budget: int, level: str, row: str = "") -> tuple:
    """The order of every table and list of the summary: by budget, then level (the text's first), then row."""
    return budget, list(LEVELS).index(level), row


def render_settings(frontiers: Mapping[tuple[str, int, str], FrontierPoint], reference: Mapping,
                    levels: Mapping[str, float]) -> list[str]:
    """Each policy's tuned settings and its quality at each entropy level, per budget."""
    named = "; ".join(level_title(level, target) for level, target in levels.items())
    lines = ["## Each policy at its tuned settings, at each entropy level", "",
             f"Interpolated at each entropy level ({named}) between the two report temperatures tuned for that level; "
             "95% bootstrap intervals over texts, paired by text, with their half-width (±; the 3-gram "
             "JSD's: the jackknife's). *Knobs*: "
             "the selection rule and draw knobs chosen on the tuning draw at that level (*not reached*: no pilot came "
             "within the tolerance of the level). *Extrapolated*: the report draw's entropies do not bracket the "
             "level, so there is no value to show. 3-gram JSD: the Jensen-Shannon divergence (bits) of the samples' character "
             "3-gram distribution from the validation split's (lower: closer to real text; the test text's own value "
             "is the floor at this sample size).", "",
             "| NFE budget | level | policy | kind | steps | NFE | knobs | report temperatures | judge NLL | word validity "
             "| rep-4 | 3-gram JSD | frontier |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (policy, budget, level), f in sorted(frontiers.items(), key=lambda kv: level_order(kv[0][1], kv[0][2], kv[0][0])):
        kind = f.kind.replace("_", "-") + {"oracle": " (ceiling, equal steps)",
                                           "peer": " (public implementation)"}.get(f.kind, "")
        lines.append(
            f"| {budget} | {level} | `{policy}` | {kind} | {f.steps} | {f.nfe} | {f.selection_label}"
            f"{'' if f.reached else ' (not reached)'} | {', '.join(f'{t:.3f}' for t in f.report_temperatures)} "
            f"| {fmt(f.point, 'judge_nll')} | {fmt(f.point, 'word_validity')} | {fmt(f.point, 'rep_4')} | "
            f"{fmt(f.point, 'ngram_jsd')} | {'bracketed' if f.bracketed else EXTRAPOLATED} |")
    lines.append(f"| - | - | test text | - | - | - | - | - | {fmt(reference, 'judge_nll')} | "
                 f"{fmt(reference, 'word_validity')} | {fmt(reference, 'rep_4')} | {fmt(reference, 'ngram_jsd')} | - |")
    return lines


def render_verdict(records: Sequence[Comparison], best: Mapping[tuple[int, str], str],
                   levels: Mapping[str, float], finalists: Mapping | None = None) -> list[str]:
    """One line per comparison, its differences and the outcome they imply, per budget and entropy
    level; ``best``: the best training-free policy of each budget and level (chosen on the tuning
    draw); ``finalists``: the study's ``finalists.json`` (the rows drawn again on more texts)."""
    second = ", and a second, lower one that every sampler reaches, the public peer's included" if len(levels) > 1 else ""
    lines = ["## Verdict", "",
             f"Differences are *policy minus baseline* at a named entropy level (the test text's{second}), with a 95% "
             "bootstrap interval of the difference, paired by text where both hold equally many texts, and its "
             "half-width (lower judge NLL, rep-4 and 3-gram JSD, higher word validity "
             "are better). A policy beats its baseline when the judge-NLL interval lies below 0, the word-validity "
             "interval does not lie below 0 and the 3-gram JSD interval does not lie above 0; *disagree*: the judge "
             "NLL and the 3-gram JSD point opposite ways, both intervals excluding 0 (a better judge NLL with 3-gram "
             "statistics further from real text is the judge rewarding repetition and collapse, so no win; a worse "
             "judge NLL with statistics closer to real text is no plain loss); *mixed*: judge NLL better, word "
             "validity worse. The 3-gram JSD's intervals are the "
             "jackknife's (a bootstrap resample duplicates texts and biases it upward). Baselines: "
             f"`{BASELINE}`, `{REVISITING_BASELINE}` (where sampled), and the best training-free policy, chosen by its "
             "judge NLL on the tuning draw. `<row>@<variant>`: a row sampled on a study variant's model, also compared "
             f"with `{BASELINE}@<variant>` and `remdm_conf_budget@<variant>` (the same model), so that the score's "
             "effect reads apart from the variant's generator.", ""]
    for budget, level in sorted({(r.budget, r.level) for r in records}, key=lambda k: level_order(*k)):
        lines += [f"### NFE {budget}, at {level_title(level, levels[level])}", "",
                  f"Best training-free policy (tuning draw): `{best[(budget, level)]}`."]
        chosen = (finalists or {}).get("rows", {}).get(str(budget), {}).get(level)
        if chosen:
            lines[-1] += (" Finalists (each model's baselines, the oracle, each model's best learned row on the tuning "
                          "draw, the peer), with their texts per report setting: " + ", ".join(
                              f"`{r}` {finalists['texts'].get(r, 'its report draw')}" for r in chosen) + ".")
        lines.append("")
        for r in (r for r in records if r.budget == budget and r.level == level):
            ceiling = " (oracle ceiling at equal steps, not a contender)" if r.kind == "oracle" else ""
            parts = "; ".join(f"{METRIC_NAMES[m]} {fmt_difference(d)}" for m, d in r.differences.items()) \
                if r.bracketed else f"{EXTRAPOLATED} (a frontier does not bracket this level)"
            lines.append(f"- `{r.policy}`{ceiling} vs `{r.baseline}`: {parts}: **{r.outcome}**.")
        lines.append("")
    return lines[:-1]


def render_goal(records: Sequence[Comparison], frontiers: Mapping[tuple[str, int, str], FrontierPoint],
                reference: Mapping, detection: Mapping | None, generator_losses: Mapping[str, float]) -> list[str]:
    """The project's goal, criterion by criterion, each measured here and marked met or not: a
    learned policy beats both ``confidence`` and the best training-free policy at every budget,
    at the test text's entropy, with rep-4 at most 1.5x the text's; its refreshed-target AUROC
    0.05 above the stale confidence's; the generator within 1% of generator-only."""
    lines = ["## The goal, criterion by criterion", "", "| criterion | measured | met |", "|---|---|---|"]
    records = [r for r in records if r.level == TEXT_LEVEL]
    frontiers = {(p, b): f for (p, b, level), f in frontiers.items() if level == TEXT_LEVEL}
    limit = REP4_LIMIT * reference["rep_4"]
    met_by: dict[str, list[bool]] = {}
    for budget in sorted({r.budget for r in records}):
        for policy in sorted({r.policy for r in records if r.budget == budget and r.kind == "learned"}):
            mine = [r for r in records if r.budget == budget and r.policy == policy and r.baseline_kind != "peer"]
            rep = frontiers[(policy, budget)].value("rep_4")
            met = all(r.outcome == "beats" for r in mine) and rep is not None and rep <= limit
            met_by.setdefault(policy, []).append(met)
            measured = "; ".join(f"vs `{r.baseline}`: {r.outcome}" for r in mine)
            shown = EXTRAPOLATED if rep is None else f"{rep:.3f}"
            lines.append(f"| NFE {budget}: `{policy}` beats every training-free baseline at the "
                         f"text's entropy, rep-4 <= {REP4_LIMIT}x the text's | {measured}; rep-4 {shown} "
                         f"(limit {limit:.3f}) | {'yes' if met else 'no'} |")
    if detection and "refreshed" in detection:
        pooled = detection["refreshed"]["pooled"]
        learned = {k: v["auroc"] for k, v in pooled.items() if k not in ("confidence", "oracle_loo")}
        best = max(learned, key=learned.get)
        gap = learned[best] - pooled["confidence"]["auroc"]
        ci = pooled[best].get("auroc_vs_confidence_ci")
        met = gap >= 0.05 and (ci is None or ci[0] > 0)  # and, where measured, its interval above 0
        shown = fmt_ci(gap, ci, sign=True) if ci else f"{gap:+.3f}"
        lines.append(f"| refreshed-target AUROC >= the stale confidence's + 0.05 (the difference's interval above 0) | "
                     f"`{best}` {learned[best]:.3f} vs confidence {pooled['confidence']['auroc']:.3f} ({shown}) | "
                     f"{'yes' if met else 'no'} |")
    if "generator_only" in generator_losses:
        for name, loss in generator_losses.items():
            if name == "generator_only":
                continue
            change = loss / generator_losses["generator_only"] - 1
            lines.append(f"| the `{name}` generator's validation loss within 1% of generator-only | {change:+.2%} | "
                         f"{'yes' if change <= 0.01 else 'no'} |")
    if met_by and not any(all(m) for m in met_by.values()):
        lines += ["", *render_closest(records, frontiers, limit)]
    return lines


def render_closest(records: Sequence[Comparison], frontiers: Mapping[tuple[str, int], FrontierPoint],
                   limit: float) -> list[str]:
    """Where no learned policy meets the goal: the one that came closest (the lowest worst-case
    upper bound of its judge-NLL difference from ``confidence`` over the budgets), what it misses,
    and how far the oracle ceiling is from it where both were sampled."""
    worst: dict[str, float] = {}
    for r in records:
        if r.kind == "learned" and r.baseline == BASELINE and r.bracketed:
            worst[r.policy] = max(worst.get(r.policy, float("-inf")), r.differences["judge_nll"]["ci"][1])
    if not worst:
        return ["No learned policy has a bracketed frontier to compare."]
    closest = min(worst, key=worst.get)
    lines = [f"No learned policy meets the goal at every budget. Closest: `{closest}` (the lowest upper bound of its "
             f"judge-NLL difference from `{BASELINE}`, over the budgets):"]
    for budget in sorted({r.budget for r in records if r.policy == closest}):
        mine = [r for r in records if r.policy == closest and r.budget == budget and r.baseline_kind != "peer"]
        missed = [f"vs `{r.baseline}` {r.outcome} (judge NLL {fmt_difference(r.differences['judge_nll'])})"
                  for r in mine if r.outcome != "beats"]
        rep = frontiers[(closest, budget)].value("rep_4")
        if rep is None or rep > limit:
            missed.append(f"rep-4 {EXTRAPOLATED if rep is None else f'{rep:.3f}'} above the limit {limit:.3f}")
        oracle = [f for (p, b), f in frontiers.items() if b == budget and f.kind == "oracle" and f.bracketed]
        gap = "" if not oracle or not frontiers[(closest, budget)].bracketed else (
                                     f"; the oracle ceiling's judge NLL is "
                                     f"{oracle[0].value('judge_nll') - frontiers[(closest, budget)].value('judge_nll'):+.3f} from "
                                     "it (point estimates)")
        lines.append(f"- NFE {budget}: misses " + ("; ".join(missed) or "nothing") + gap + ".")
    return lines


def render_peer(records: Sequence[Comparison], frontiers: Mapping[tuple[str, int, str], FrontierPoint],
                settings: Sequence[Setting], peer: Mapping, generator_losses: Mapping[str, float]) -> list[str]:
    """The public peer's row: what it is, how it was trained, where its own sampler lands at each
    entropy level, and whether our best learned and best training-free rows (chosen on the tuning draw)
    beat it at each budget and level. ``peer``: ``training`` (its training metrics) and ``tuning`` (its
    :class:`TuningLog`)."""
    rows = sorted({p for (p, _, _), f in frontiers.items() if f.kind == "peer"})
    if not rows:
        return []
    row, training, log = rows[0], peer["training"], peer["tuning"]
    ours = ", ".join(f"`{k}` {v:.4f}" for k, v in generator_losses.items() if k in ("multitask", "generator_only"))
    lines = ["## The public peer: x-transformers' self-critic", "",
             f"`{row}` is lucidrains' `{log.runs}`: `NonAutoregressiveWrapper(self_token_critic=True)`, trained here "
             "with its own loss on the windows, steps, batch and optimiser of `models/multitask` "
             f"({training['parameters']:,} parameters; ours {training['parameters_ours']:,}), sampled with its own "
             "sampler (two passes per step: the fill and the critic), its start temperature and critic noise put "
             "through the search every row gets. Its generator's validation loss on our windows and masks: "
             f"{training['val']['gen_loss']:.4f} (ours: {ours}).", ""]
    for budget, done in sorted(log.budgets.items()):
        pilots = [p for tuned in done.levels.values() for p in tuned.tuned.pilots]
        top = max(pilots, key=lambda pilot: pilot.char_entropy)
        for level, tuned in done.levels.items():
            mine = sorted((s for s in settings if s.row == row and s.budget == budget and s.level == level),
                          key=lambda s: s.temperature)
            drawn = "; ".join(f"T={s.temperature:.2f}: entropy {s.metrics['char_entropy']:.3f}, judge NLL "
                              f"{s.metrics['judge_nll']:.3f}" for s in mine)
            masks = sum(log.masks_left.at(budget, log.report_seed, s.temperature, tuned.tuned.selection) for s in mine)
            reach = (f"reaches {LEVELS[level]} ({tuned.target:.3f} bits)" if tuned.tuned.reached else
                     f"does not reach {LEVELS[level]} ({tuned.target:.3f} bits) anywhere in the search: at most "
                     f"{top.char_entropy:.3f} bits on the tuning draw (T={top.temperature:.2f}, {top.rule.label})")
            lines.append(f"- NFE {budget} ({done.steps} steps): its sampler {reach}. Report draw "
                         f"({mine[0].selection_label}): {drawn}; {masks} `[MASK]` tokens left in its texts (shown to the "
                         f"judge as {log.extra['mask_stand_in']!r}).")
    lines += ["", "| NFE budget | level | our best learned and best training-free row (tuning draw) | peer | judge NLL difference | "
              "word validity | rep-4 | 3-gram JSD | outcome |", "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for r in sorted((r for r in records if r.baseline_kind == "peer"),
                    key=lambda r: level_order(r.budget, r.level)):
        # an extrapolated difference is no measurement: its cells say so instead of showing numbers
        cells = [fmt_difference(r.differences[m]) if r.bracketed and m in r.differences else
                 "-" if r.bracketed else f"- ({EXTRAPOLATED})" for m in ("judge_nll", "word_validity", "rep_4", "ngram_jsd")]
        lines.append(f"| {r.budget} | {r.level} | `{r.policy}` | `{r.baseline}` | {' | '.join(cells)} | {r.outcome} |")
        verdicts.append(f"at NFE {r.budget}, {LEVELS[r.level]}, `{r.policy}` " + {
            "beats": "beats it", "loses": "loses to it", "no significant difference": "is level with it (no significant "
            "difference)", "mixed": "has a better judge NLL but a worse word validity than it",
            "disagree": "has a better judge NLL but 3-gram statistics further from real text than it"
            if r.judge_favoured else "has a worse judge NLL but 3-gram statistics closer to real text than it",
            "no verdict": "cannot be compared with it there (a frontier is "
            "extrapolated; judge NLL at a lower entropy is not a better text, a collapsed sampler scores well)"}[r.outcome])
    if verdicts:
        lines += ["", "Our best rows against the peer (each row's annealing and vocabulary filter searched like the peer's "
                  "start temperature): " + "; ".join(verdicts) + "."]
    return lines + render_model_and_sampler(records, row)


def render_model_and_sampler(records: Sequence[Comparison], row: str) -> list[str]:
    """The peer's model apart from its sampler, where our sampler also ran on its generator
    (``<row>@peer``): its generator under our sampler against ours (the model), and its own sampler
    against ours on its generator (the sampler and its critic)."""
    model = [r for r in records if r.policy.endswith("@peer") and r.baseline == BASELINE]
    sampler = [r for r in records if r.policy == row and r.baseline.endswith("@peer")]
    if not (model or sampler):
        return []
    lines = ["", "Its model apart from its sampler (judge NLL, policy minus baseline):", ""]
    for r in sorted([*model, *sampler], key=lambda r: level_order(r.budget, r.level, r.policy)):
        what = "its generator under our sampler vs ours" if r in model else "its own sampler vs ours, on its generator"
        shown = fmt_difference(r.differences["judge_nll"]) if r.bracketed else EXTRAPOLATED
        lines.append(f"- NFE {r.budget}, {LEVELS[r.level]}: {what} (`{r.policy}` vs `{r.baseline}`): {shown}: "
                     f"**{r.outcome}**.")
    return lines


def render_search(tuning: Mapping[str, TuningLog]) -> list[str]:
    """What each row's search chose at each budget and entropy level, every candidate's judge NLL
    at the level on the tuning draw, and what each draw knob did on average against the first, per
    level (the measured effect of a knob, on the tuning draw: for choosing, so noisier than the
    verdict)."""
    seen = {level for log in tuning.values() for done in log.budgets.values() for level in done.levels}
    lines = ["## The search over each row's knobs (tuning draw)", "",
             "Every row tries its candidates on the tuning draw (selection rules with draw knobs: the temperature's "
             "annealing and the vocabulary filter; every combination, or with `sample.tuning.search: coordinate` the "
             "rules first, then the winner's rule with each draw knob; then, where the row's pool is open, the "
             "winner's with each re-masking pool); each candidate's judge NLL is interpolated at the entropy level "
             "between its pilots, and the lowest wins (**bold**). "
             + ("The search at the second level starts from each candidate's pilots at the text's (*pilots*: the runs "
                "each level added). " if len(seen) > 1 else "")
             + "These are the tuning draw's few samples: they choose, the verdict above measures.", "",
             "| NFE budget | level | row | candidate | temperature | judge NLL at the level | pilots |",
             "|---|---|---|---|---|---|---|"]
    effects: dict[tuple[str, str], list[float]] = {}
    reference = None
    for name, log in sorted(tuning.items()):
        for budget, done in sorted(log.budgets.items()):
            for level, tuned in done.levels.items():
                searched = tuned.tuned.searched
                reference_of = (searched[0].candidate.knobs, searched[0].candidate.committed_budget)
                first = {c.candidate.selection: c for c in searched
                         if (c.candidate.knobs, c.candidate.committed_budget) == reference_of}
                reference = reference or searched[0].candidate.knobs
                for c in searched:
                    chosen = c.candidate == tuned.tuned.candidate
                    nll = "not reached" if c.judge_nll is None else f"{c.judge_nll:.3f}"
                    label = f"**{c.candidate.label}**" if chosen else c.candidate.label
                    lines.append(f"| {budget} | {level} | `{name}` | {label} | {c.temperature:.3f} | {nll} | {c.pilots} |")
                    base = first.get(c.candidate.selection)
                    if c.candidate.knobs is not None and base is not None and base is not c and \
                            c.candidate.committed_budget == base.candidate.committed_budget and \
                            None not in (c.judge_nll, base.judge_nll):
                        effects.setdefault((level, c.candidate.knobs.label), []).append(c.judge_nll - base.judge_nll)
    pilots = sum(len(t.tuned.pilots) for log in tuning.values() for d in log.budgets.values() for t in d.levels.values())
    lines += ["", f"{pilots} pilots in all."]
    for level in LEVELS:
        mine = {label: v for (at, label), v in effects.items() if at == level}
        if mine and reference is not None:
            lines += ["", f"What each draw knob did against `{reference.label}` with the same selection rule, at "
                      f"{LEVELS[level]} (tuning draw, judge NLL at the level, every row and budget where both reached it): "
                      + "; ".join(f"`{label}` {sum(v) / len(v):+.3f} bits on average, better in "
                                  f"{sum(x < 0 for x in v)} of {len(v)}" for label, v in mine.items()) + "."]
    return lines


def render_refreshed(refreshed: Mapping) -> list[str]:
    """Every score against the judge's leave-one-out plausibility of the sampler's own tokens, with
    intervals over samples and each score's difference from the stale confidence."""
    samples = refreshed.get("samples")
    lines = ["## Detection against a refreshed, independent target", "",
             f"Unconditional samples of `{refreshed['policy']}` ({refreshed['steps']} steps"
             + ("" if samples is None else f", {samples} samples") + "); "
             + ("every token of the fill halfway through and of the final samples is" if "positions" not in refreshed
                else f"{refreshed['positions']} random tokens of each sample's fill halfway through and final text are")
             + " labelled by the judge's leave-one-out probability "
             "p_J(token | every other token), exact by Bayes under the causal judge. *Implausible*: p_J < "
             f"{refreshed['implausible_below']:g}. AUROC and average precision rank implausible tokens; Spearman: "
             "correlation with -log p_J. `confidence` is stale (fixed when the token was filled); `oracle_loo` is the "
             "generator's own leave-one-out probability, one pass per position: a ceiling, not a one-pass score. "
             "Intervals: 95% percentile bootstrap over samples (a sample's tokens resampled together); *vs "
             "confidence*: the AUROC difference from the stale confidence on the same resamples. With few samples "
             "the intervals are wide: they say how little a table of this size can tell.", "",
             "| states | score | AUROC | AUROC vs confidence | AP | Spearman | implausible share | tokens |",
             "|---|---|---|---|---|---|---|---|"]
    for label, block in [*refreshed["states"].items(), ("pooled", refreshed["pooled"])]:
        for name, m in block.items():
            shown = f"`{name}`" + (" (oracle)" if name == "oracle_loo" else "")
            gap = fmt_interval(m, "auroc_vs_confidence", sign=True)
            lines.append(f"| {label} | {shown} | {fmt_interval(m, 'auroc')} | {gap} | "
                         f"{fmt_interval(m, 'average_precision')} | {fmt_interval(m, 'spearman')} | "
                         f"{m['error_rate']:.3f} | {m['n']} |")
    return lines


def fmt_interval(m: Mapping, metric: str, sign: bool = False) -> str:
    """``metric`` of a detection table with its bootstrap interval where it has one (``-``: absent)."""
    if metric not in m:
        return "-"
    ci = m.get(f"{metric}_ci")
    return fmt_ci(m[metric], ci, sign=sign) if ci else f"{m[metric]:{'+.3f' if sign else '.3f'}}"


def render_seed_detection(detection: Mapping[str, Mapping]) -> list[str]:
    """The seed's view: detection of "differs from the clean text", Bayes-limited by the heuristic."""
    lines = ["## The seed's view: detecting \"differs from the clean text\" (Bayes-limited)", "",
             "The seed's label. Its best possible score is the generator's probability given the visible text (see "
             "below), so these numbers bound what any critic of this label can reach; they are kept for comparison "
             "with earlier runs. `critic_fused`: the score the `critic_fused` policy ranks by; sampler states only.", "",
             "| input | critic AUROC | critic_fused AUROC | confidence AUROC | critic AP | confidence AP | "
             "critic ECE | confidence ECE |", "|---|---|---|---|---|---|---|---|"]
    for label, block in detection.items():
        c, h = block["critic"], block["confidence"]
        fused = f"{block['critic_fused']['auroc']:.3f}" if "critic_fused" in block else "-"
        lines.append(
            f"| {label} | {c['auroc']:.3f} | {fused} | {h['auroc']:.3f} | {c['average_precision']:.3f} | "
            f"{h['average_precision']:.3f} | {c.get('ece', float('nan')):.3f} | {h.get('ece', float('nan')):.3f} |")
    return lines


def render_report_settings(settings: Sequence[Setting], reference: Mapping) -> list[str]:
    """Every report setting as measured (the frontier's points), with its own intervals."""
    lines = ["## Every report setting", "",
             "| NFE budget | level | policy | knobs | temperature | steps | NFE | entropy | judge NLL | word validity | "
             "distinct-2 | rep-4 | 3-gram JSD |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sorted(settings, key=lambda s: (*level_order(s.budget, s.level, s.row), s.temperature)):
        m = s.metrics
        lines.append(
            f"| {s.budget} | {s.level} | {s.row} | {s.selection_label} | {s.temperature:.3f} | {s.steps} | {s.nfe} | "
            f"{m['char_entropy']:.3f} | {fmt(m, 'judge_nll')} | {fmt(m, 'word_validity')} | {m['distinct_2']:.3f} | "
            f"{m['rep_4']:.3f} | {fmt(m, 'ngram_jsd')} |")
    lines.append(f"| - | - | test text | - | - | - | - | {reference['char_entropy']:.3f} | {fmt(reference, 'judge_nll')} | "
                 f"{fmt(reference, 'word_validity')} | {reference['distinct_2']:.3f} | {reference['rep_4']:.3f} | "
                 f"{fmt(reference, 'ngram_jsd')} |")
    return lines


@dataclass(frozen=True)
class SummaryInputs:
    """Everything ``results/summary.md`` is rendered from, computed by ``evaluate_samples``:
    ``frontiers[(row, budget, level)]`` and ``settings`` as in its ``metrics.json``, the comparison
    records, the best training-free row of each budget and level, the detection tables, the
    generators' validation losses, the seeds of the two draws, every row's tuning log, each entropy
    level's value (bits), the answer per budget and level (:func:`answers`), the ablation arms' metrics
    (study), who wrote it, the public peer's ``training`` record and :class:`TuningLog` (study), and the
    study's finalists."""

    reference: Mapping
    judge_row: Mapping
    frontiers: Mapping[tuple[str, int, str], FrontierPoint]
    records: Sequence[Comparison]
    best: Mapping[tuple[int, str], str]
    settings: Sequence[Setting]
    detection: Mapping
    generator_losses: Mapping[str, float]
    tuning_seed: int
    report_seed: int
    tuning: Mapping[str, TuningLog]
    levels: Mapping[str, float]
    answers: Sequence[Answer]
    ablation: Sequence[Mapping] = ()
    generated_by: str = "`evaluate_samples` stage of `dvc repro`"
    peer: Mapping | None = None
    finalists: Mapping | None = None  # the study's finalists.json


def render_summary(inputs: SummaryInputs) -> str:
    """``results/summary.md`` from computed records."""
    reference, judge_row, frontiers, records = inputs.reference, inputs.judge_row, inputs.frontiers, inputs.records
    settings, detection, generator_losses = inputs.settings, inputs.detection, inputs.generator_losses
    lines = [
        "# Does a learned re-masking policy beat the heuristics at equal compute?", "",
        f"_Generated by the {inputs.generated_by}; do not edit by hand._", "",
        f"Every policy is tuned on its own draw (seed {inputs.tuning_seed}: the temperature that reaches each entropy "
        "level, for every candidate selection rule and draw knobs, and the candidate with the best judge NLL "
        "interpolated there) and reported on a "
        f"fresh draw (seed {inputs.report_seed}) at two temperatures around each level's tuned one. Entropy levels: "
        + "; ".join(level_title(level, target) for level, target in inputs.levels.items()) + ". Judge NLL: bits per character "
        "under the causal judge (lower is better); word validity: share of words found in the train split's "
        "vocabulary; rep-4: share of repeated character 4-grams per sample; 3-gram JSD: the Jensen-Shannon "
        "divergence of the samples' character 3-grams from the validation split's (lower is closer to real text).", "",
        f"Test text (reference): judge NLL {fmt(reference, 'judge_nll')}, entropy {reference['char_entropy']:.3f}, "
        f"word validity {reference['word_validity']:.3f}, rep-4 {reference['rep_4']:.3f}. The judge's own samples "
        f"(autoregressive, temperature 1): judge NLL {fmt(judge_row, 'judge_nll')}, entropy "
        f"{judge_row['char_entropy']:.3f}, word validity {judge_row['word_validity']:.3f}.", "",
        *render_answer(inputs.answers, inputs.levels),
        *render_verdict(records, inputs.best, inputs.levels, inputs.finalists), "",
        *render_goal(records, frontiers, reference, detection, generator_losses), "",
    ]
    if inputs.peer is not None:
        lines += [*render_peer(records, frontiers, settings, inputs.peer, generator_losses), ""]
    lines += [*render_settings(frontiers, reference, inputs.levels), "", *render_search(inputs.tuning), ""]
    if {"multitask", "generator_only"} <= set(generator_losses):
        change = generator_losses["multitask"] / generator_losses["generator_only"] - 1
        lines += ["## What the critic costs the generator", "",
                  "Validation loss of the generator (cross-entropy on masked positions, nats): "
                  + ", ".join(f"`{k}` {v:.4f}" for k, v in generator_losses.items())
                  + f". The multitask generator's loss is {change:+.2%} relative to the generator-only baseline"
                  + "".join(f"; `{k}`'s {v / generator_losses['generator_only'] - 1:+.2%}" for k, v in
                            generator_losses.items() if k not in ("multitask", "generator_only")) + ".", ""]
    lines += [*render_refreshed(detection["refreshed"]), "", *render_seed_detection(detection["seed"]), "",
              *render_evidence(detection["seed"], detection["added"]), ""]
    if inputs.ablation:
        lines += [*render_ablation(inputs.ablation), ""]
    lines += render_report_settings(settings, reference)
    return "\n".join(lines) + "\n"


NEGLIGIBLE_GAIN = 0.01  # AUROC the critic must add to the heuristic to count as knowing something it does not


def render_evidence(detection: Mapping[str, Mapping], added: Mapping[str, Mapping]) -> list[str]:
    """Why a critic trained on "differs from the clean text" cannot beat the heuristic, and the two
    predictions of that argument, tested on the measured detection numbers."""
    lines = [
        "## Why a critic of \"differs from the clean text\" cannot win: what its label can know",
        "",
        "The critic is trained to predict whether a generated token differs from the clean text. The generator's "
        "tokens are drawn given the visible (protected) text only, so they carry no information about the hidden "
        "clean text beyond it: for any detector, the best possible score is 1 - P(clean token = current token | "
        "visible text). On a one-step fill the heuristic 1 - p *is* the model's estimate of it, so a critic can "
        "only win where the generator is miscalibrated; on sampler states the model's estimate of it is "
        "`first_pass` (1 - p of the current token with every non-protected position masked: no training, one pass "
        "per window). Two predictions follow, tested here:",
        "",
        "1. on sampler states `first_pass` detects errors at least as well as the stale confidence and the critic;",
        f"2. fitted together with the heuristic (cross-validated logistic regression on both logits, a post-hoc "
        f"residual critic), the critic adds less than {NEGLIGIBLE_GAIN} AUROC.",
        "",
        "| input | critic | confidence | first_pass | confidence alone, fitted | confidence + critic, fitted | "
        "critic adds |",
        "|---|---|---|---|---|---|---|",
    ]
    first_holds, gain_holds = [], []
    for label, info in added.items():
        block = detection[label]
        first = block.get("first_pass", {}).get("auroc")
        lines.append(
            f"| {label} | {block['critic']['auroc']:.3f} | {block['confidence']['auroc']:.3f} | "
            f"{'-' if first is None else f'{first:.3f}'} | {info['heuristic']:.3f} | {info['stacked']:.3f} | "
            f"{info['gain']:+.4f} |"
        )
        if first is not None:
            first_holds.append(first >= max(block["critic"]["auroc"], block["confidence"]["auroc"]))
        gain_holds.append(info["gain"] < NEGLIGIBLE_GAIN)
    lines += [
        "",
        f"Prediction 1 holds on {sum(first_holds)} of {len(first_holds)} sampler-state inputs; prediction 2 holds "
        f"on {sum(gain_holds)} of {len(gain_holds)} inputs. "
        + ("So the critic head learned (a noisier copy of) what the generator already knows, and no critic lever "
           "(the study tier's ablation) can change what the label carries: to beat the heuristic a critic needs a "
           "target that is not a function of one reference text, such as the refreshed target above."
           if first_holds and all(first_holds) and all(gain_holds) else
           "The argument does not fully explain these numbers; see the rows where a prediction fails."),
    ]
    return lines


def render_ablation(arms: Sequence[Mapping]) -> list[str]:
    """The ablation table: one row per arm (one lever changed), its cost and what it changed.

    Each arm's policies are tuned and reported like the main comparison (at NFE ``nfe``) and
    compared with ``confidence`` sampled from the *same* arm's model, by the interval of the
    difference at the text's entropy."""
    first = arms[0]
    policies = list(dict.fromkeys(p for arm in arms for p in [*arm["frontier"], *arm["not_trained_for"]]
                                  if p != BASELINE))
    lines = [
        "## Ablation: one critic lever at a time", "",
        f"Every arm continues `models/multitask` for the same number of steps with one lever changed (`baseline`: none). "
        f"Rollout AUROC: detection of \"differs from the clean text\" on the confidence policy's infilling states. "
        f"Samples at NFE {first['nfe']}, every policy tuned on the tuning draw and reported on a fresh one; cells: "
        "judge NLL at the text's entropy; differences: policy minus the same arm's `confidence`, 95% interval, "
        "with the re-masking pool its search chose where the policy may re-mask any token. "
        "*Not trained for it*: the arm's lever removes an input the policy reads, so it is not run there.", "",
        "| arm | lever | val gen loss | AUROC critic | AUROC critic_fused | AUROC confidence | "
        + " | ".join(f"`{p}`" for p in [BASELINE, *policies]) + " | "
        + " | ".join(f"`{p}` - `{BASELINE}`" for p in policies) + " |",
        "|" + "---|" * (6 + 1 + 2 * len(policies)),
    ]
    for arm in arms:
        lever = ", ".join(f"{s}.{k}={v}" for s, kv in arm["overrides"].items() for k, v in kv.items()) or "none"
        auroc = arm["rollout_auroc"]
        cells = [fmt(arm["frontier"][p], "judge_nll") if p in arm["frontier"] else "not trained for it"
                 for p in [BASELINE, *policies]]
        diffs = []
        for p in policies:
            if p not in arm["frontier"]:
                diffs.append("-")
                continue
            r = Comparison(arm["nfe"], p, BASELINE, arm["differences"][p],
                           arm["frontier"][p]["bracketed"] and arm["frontier"][BASELINE]["bracketed"])
            budget = arm.get("tuned", {}).get(p, {}).get("committed_budget")
            pool = "" if budget is None else f" ({pool_label(budget)})"  # the pool its search chose, where open
            diffs.append(f"{fmt_difference(r.differences['judge_nll'])}: {r.outcome}{pool}")
        lines.append(
            f"| {arm['arm']} | {lever} | {arm['val']['gen_loss']:.4f} | {auroc['critic']:.3f} | "
            f"{auroc.get('critic_fused', float('nan')):.3f} | {auroc['confidence']:.3f} | " + " | ".join(cells) + " | "
            + " | ".join(diffs) + " |")
    return lines
