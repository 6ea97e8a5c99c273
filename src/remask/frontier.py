"""A policy's quality at the test text's entropy, and the interval of a difference between two.

Judge NLL falls as diversity collapses, so policies are compared where their samples are as
diverse as the test text: on each policy's quality-diversity frontier (its report settings,
one point per temperature), every metric is interpolated linearly in character entropy between
the two settings that bracket the text's entropy. A point outside the settings' range would be an
extrapolation: it is flagged (``bracketed: False``) and holds no value at all (``None``), so that
no extrapolated number reaches a summary, a metrics file or a notebook.

Intervals come from a percentile bootstrap over texts (``scipy.stats.bootstrap``), paired by
text where the settings hold equally many (text ``i`` of every report setting shares the report
seed's stream: :func:`paired`), the entropies recomputed and the interpolation redone in each
replicate, so an interval includes the uncertainty of where the text's entropy falls. The 3-gram
divergence is the exception: a resample with duplicated texts covers fewer 3-grams, which biases
it upward by more than its spread, so its intervals use the delete-one jackknife's standard error
(:func:`remask.metrics.jackknife_interval`). A
comparison bootstraps the *difference* of two policies' interpolated values: "A beats B" means
that interval excludes 0, never that two intervals side by side do not overlap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from remask.metrics import SettingSamples, jackknife_interval

METRICS = ("judge_nll", "word_validity", "rep_4", "ngram_jsd")  # ngram_jsd where a reference text was given
LOWER_IS_BETTER = {"judge_nll": True, "word_validity": False, "rep_4": True, "ngram_jsd": True}
# resampling with replacement biases these: a resample duplicates texts, so it covers fewer 3-grams and its
# divergence from held-out text is about 0.03 bits higher, more than the spread; their intervals come from the
# delete-one jackknife instead (:func:`remask.metrics.jackknife_interval`)
JACKKNIFED = {"ngram_jsd"}
# shares of words or 4-grams: a bootstrap replicate whose resampled entropies no longer bracket the level
# extends the line past its settings, which could carry a share below 0 or above 1; it is clipped there
SHARES = {"word_validity", "rep_4"}


def measured(settings: Sequence[SettingSamples]) -> tuple[str, ...]:
    """The metrics of :data:`METRICS` every one of ``settings`` has."""
    have = [set(s.stats(np.arange(1))) for s in settings]
    return tuple(m for m in METRICS if all(m in h for h in have))


def segment(entropies: Sequence[float], target: float) -> tuple[int, int, bool]:
    """Indices of the two settings to interpolate between at ``target`` and whether they bracket it."""
    if len(entropies) < 2:
        raise ValueError("a frontier needs at least two settings (report temperatures)")
    order = np.argsort(entropies)
    sorted_h = np.asarray(entropies)[order]
    upper = int(np.searchsorted(sorted_h, target))
    bracketed = 0 < upper < len(sorted_h)
    upper = min(max(upper, 1), len(sorted_h) - 1)
    return int(order[upper - 1]), int(order[upper]), bracketed


def interpolate(lo: dict, hi: dict, target: float) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` that ``lo`` has, at entropy ``target`` on the line through
    ``lo`` and ``hi`` (a share of :data:`SHARES` kept within [0, 1])."""
    span = hi["char_entropy"] - lo["char_entropy"]
    with np.errstate(divide="ignore", invalid="ignore"):  # equal entropies: the mean of the two points
        weight = np.where(span == 0, 0.5, (target - lo["char_entropy"]) / np.where(span == 0, 1.0, span))
    line = {m: lo[m] + weight * (hi[m] - lo[m]) for m in METRICS if m in lo}
    return {m: np.clip(v, 0.0, 1.0) if m in SHARES else v for m, v in line.items()}


def at_entropy(settings: Sequence[SettingSamples], target: float) -> dict:
    """Point estimates of every metric at ``target`` with the two settings used and ``bracketed``;
    an extrapolated point (``bracketed`` false) holds no value (``None``): it is no measurement."""
    points = [s.stats(np.arange(len(s.judge_nll))) for s in settings]
    a, b, bracketed = segment([float(p["char_entropy"]) for p in points], target)
    values = interpolate(points[a], points[b], target)
    return {**{m: float(v) if bracketed else None for m, v in values.items()}, "segment": [a, b],
            "bracketed": bracketed}


def paired(*settings: SettingSamples) -> bool:
    """Whether a bootstrap pairs ``settings`` by text: where they hold equally many texts. Text ``i``
    of every report setting comes from the same place in the report seed's stream, so a row's two
    temperatures (and, at the first step, two rows) are positively correlated by text; resampling
    them independently would misstate the interval of a weighted sum or a difference. Pairing
    texts that happen to be independent leaves the interval's expected width as it is."""
    return len({len(s.judge_nll) for s in settings}) == 1


def _resampled(settings: Sequence[SettingSamples], pair: tuple[int, int], target: float):
    """The statistic scipy's bootstrap resamples: metrics at ``target`` from resampled text indices."""
    def stat(idx_lo: np.ndarray, idx_hi: np.ndarray) -> dict[str, np.ndarray]:
        lo = settings[pair[0]].stats(idx_lo.astype(int))
        hi = settings[pair[1]].stats(idx_hi.astype(int))
        return interpolate(lo, hi, target)
    return stat


def _interval(data: tuple, statistic, resamples: int, level: float, seed: int, pair: bool,
              metric: str) -> tuple[float, float]:
    from scipy.stats import bootstrap  # here, not at the top: the sampling stages import segment, not this

    if metric in JACKKNIFED:
        return jackknife_interval(data, statistic, level, pair)
    result = bootstrap(data, statistic, vectorized=True, paired=pair, n_resamples=resamples,
                       confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def frontier_point(settings: Sequence[SettingSamples], target: float, resamples: int = 1000, level: float = 0.95,
                   seed: int = 0) -> dict:
    """:func:`at_entropy` with a bootstrap interval ``<metric>_ci`` of every metric (``None`` where
    the point is extrapolated), texts paired across the two settings where :func:`paired`."""
    point = at_entropy(settings, target)
    a, b = point["segment"]
    data = (np.arange(len(settings[a].judge_nll)), np.arange(len(settings[b].judge_nll)))
    stat = _resampled(settings, (a, b), target)
    for offset, metric in enumerate(measured(settings)):
        point[f"{metric}_ci"] = None if not point["bracketed"] else list(_interval(
            data, lambda x, y, axis=-1, m=metric: stat(x, y)[m], resamples, level, seed + offset,
            paired(settings[a], settings[b]), metric))
    return point


def difference(a: Sequence[SettingSamples], b: Sequence[SettingSamples], target: float, resamples: int = 1000,
               level: float = 0.95, seed: int = 0, pair: bool | None = None) -> dict[str, dict]:
    """``a - b`` of every metric at ``target``, with a bootstrap interval of the difference:
    ``{metric: {"difference", "ci", "better"}}``, ``better`` +1 where the interval shows ``a``
    better, -1 worse, 0 where it includes 0. Texts are paired across the four settings where
    :func:`paired` (``pair`` forces it either way). Where either frontier is extrapolated there
    is no difference to measure: every value is ``None`` and ``better`` 0."""
    pa, pb = at_entropy(a, target), at_entropy(b, target)
    (a0, a1), (b0, b1) = pa["segment"], pb["segment"]
    metrics = list(measured([*a, *b]))
    if not (pa["bracketed"] and pb["bracketed"]):
        return {m: {"difference": None, "ci": None, "better": 0} for m in metrics}
    stat_a, stat_b = _resampled(a, (a0, a1), target), _resampled(b, (b0, b1), target)
    four = (a[a0], a[a1], b[b0], b[b1])
    data = tuple(np.arange(len(s.judge_nll)) for s in four)
    pair = paired(*four) if pair is None else pair
    out = {}
    for offset, metric in enumerate(metrics):
        low, high = _interval(
            data, lambda w, x, y, z, axis=-1, m=metric: stat_a(w, x)[m] - stat_b(y, z)[m], resamples, level,
            seed + offset, pair, metric)
        sign = -1 if LOWER_IS_BETTER[metric] else 1
        better = sign if low > 0 else -sign if high < 0 else 0
        out[metric] = {"difference": pa[metric] - pb[metric], "ci": [low, high], "better": better}
    return out
