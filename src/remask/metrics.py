"""Metrics: error detection (AUROC, AP, ECE) and sample quality, with bootstrap intervals.

Sample-quality metrics are computed per *setting* (a list of texts) and pooled where a
per-text value would be biased on short texts (entropy, distinct-n, word validity). Every
metric comes with a percentile bootstrap interval over texts (``scipy.stats.bootstrap``).

- ``char_entropy``: unigram entropy of the pooled characters, in bits;
- ``word_validity``: share of words (see :func:`remask.data.words`) found in the train vocabulary;
- ``distinct_2`` / ``distinct_3``: distinct word n-grams over all word n-grams, pooled;
- ``rep_4``: seq-rep-4 (Welleck et al., 2020) on characters: per text, the share of character
  4-grams that repeat an earlier one of the same text; averaged over texts;
- ``judge_nll``: the causal judge's negative log-likelihood, bits per character, averaged over texts;
- ``ngram_jsd``: how far the texts' pooled character 3-gram distribution is from held-out text's
  (:class:`NgramReference`, the validation split): the Jensen-Shannon divergence in bits, in [0, 1].
  The judge's NLL rewards repetition and collapse; this measure punishes both (a collapsed set
  covers few 3-grams, a shuffled one the wrong ones), so a row that wins on NLL alone has not won.
  It is biased upwards on small sets (unseen 3-grams), so it compares sets of the same size only, and
  its intervals come from the delete-one jackknife (:func:`jackknife_interval`): a bootstrap
  resample duplicates texts, covers fewer 3-grams and would sit 0.03 bits above the estimate.

scikit-learn and SciPy are imported by the functions that use them: every sampling stage imports
this module for :func:`char_entropy` alone (through the tuning search), and the two libraries would
add 1-1.5 s to each of those processes' start.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from remask.data import words


# ---------------------------------------------------------------------------------------------
# Error detection


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of (share of items) * |observed rate - mean prob|."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if probs.size == 0:
        return float("nan")
    which = np.minimum((probs * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(labels[inside].mean() - probs[inside].mean())
    return float(total)


def reliability_table(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    """Per bin: mean predicted probability, observed error rate, count (empty bins left out)."""
    which = np.minimum((np.asarray(probs) * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append({"bin": b, "predicted": float(np.mean(probs[inside])), "observed": float(np.mean(labels[inside])),
                         "count": int(inside.sum())})
    return rows


def detection_metrics(scores: np.ndarray, labels: np.ndarray, is_probability: bool, bins: int = 10) -> dict:
    """AUROC and average precision of ``scores`` (higher: more likely an error); ECE if a probability."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    out = {"n": int(labels.size), "error_rate": float(labels.mean()) if labels.size else float("nan")}
    if 0 < labels.sum() < labels.size:
        out["auroc"] = float(roc_auc_score(labels, scores))
        out["average_precision"] = float(average_precision_score(labels, scores))
    else:
        out["auroc"] = out["average_precision"] = float("nan")
    if is_probability:
        out["ece"] = expected_calibration_error(scores, labels, bins)
    return out


def added_information(labels: np.ndarray, heuristic: np.ndarray, critic: np.ndarray, folds: int = 5,
                      seed: int = 0) -> dict:
    """What the critic knows that the heuristic does not: cross-validated AUROC of a logistic
    regression on the heuristic's logit alone and on both logits (a fitted residual critic: the
    heuristic's logit plus a learned multiple of the critic's). ``gain`` near 0 means the critic
    adds nothing to the heuristic's ranking. Folds are stratified; with fewer than ``folds`` items
    of either class the numbers are nan, as AUROC is without both classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = np.asarray(labels).astype(int)
    if min(labels.sum(), labels.size - labels.sum()) < folds:
        nan = float("nan")
        return {"n": int(labels.size), "heuristic": nan, "stacked": nan, "gain": nan}

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p, dtype=np.float64), 1e-9, 1 - 1e-9)
        return np.log(p) - np.log1p(-p)

    both = np.stack([logit(heuristic), logit(critic)], axis=1)
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)

    def cv_auroc(features: np.ndarray) -> float:
        fitted = cross_val_predict(LogisticRegression(), features, labels, cv=split, method="decision_function")
        return float(roc_auc_score(labels, fitted))

    heuristic_only, stacked = cv_auroc(both[:, :1]), cv_auroc(both)
    return {"n": int(labels.size), "heuristic": heuristic_only, "stacked": stacked, "gain": stacked - heuristic_only}


def roc_points(scores: np.ndarray, labels: np.ndarray, max_points: int = 200) -> list[dict]:
    """A thinned ROC curve (fpr, tpr) for plotting."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(labels).astype(int), scores)
    keep = np.unique(np.linspace(0, len(fpr) - 1, num=min(max_points, len(fpr))).astype(int))
    return [{"fpr": round(float(fpr[i]), 5), "tpr": round(float(tpr[i]), 5)} for i in keep]


def pr_points(scores: np.ndarray, labels: np.ndarray, max_points: int = 200) -> list[dict]:
    """A thinned precision-recall curve (recall, precision) for plotting, from high recall to low."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(np.asarray(labels).astype(int), scores)
    keep = np.unique(np.linspace(0, len(recall) - 1, num=min(max_points, len(recall))).astype(int))
    return [{"recall": round(float(recall[i]), 5), "precision": round(float(precision[i]), 5)} for i in keep]


# ---------------------------------------------------------------------------------------------
# Text metrics on a single text


def entropy_bits(counts: np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def char_entropy(texts: Sequence[str]) -> float:
    return entropy_bits(np.array(list(Counter("".join(texts)).values())))


def word_validity(texts: Sequence[str], vocabulary: set[str]) -> float:
    tokens = [w for t in texts for w in words(t)]
    return sum(w in vocabulary for w in tokens) / len(tokens) if tokens else float("nan")


def word_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    tokens = words(text)
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    grams = [g for t in texts for g in word_ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def rep_4(text: str) -> float:
    """Share of character 4-grams that repeat an earlier 4-gram of the same text."""
    grams = [text[i : i + 4] for i in range(len(text) - 3)]
    return 1.0 - len(set(grams)) / len(grams) if grams else float("nan")


# ---------------------------------------------------------------------------------------------
# A setting's metrics with bootstrap intervals


def bootstrap_ci(
    n_items: int, statistic: Callable[[np.ndarray], float], resamples: int, level: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over resampled item indices."""
    from scipy.stats import bootstrap

    if n_items < 2:
        return (float("nan"), float("nan"))
    result = bootstrap(
        (np.arange(n_items),), lambda idx: statistic(idx.astype(int)), vectorized=False, paired=False,
        n_resamples=resamples, confidence_level=level, method="percentile", rng=np.random.default_rng(seed),
    )
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


NGRAM = 3  # characters per n-gram of ngram_jsd: 3 separates real, shuffled and collapsed text most


def char_ngrams(text: str, n: int = NGRAM) -> list[str]:
    return [text[i : i + n] for i in range(len(text) - n + 1)]


@dataclass(frozen=True)
class NgramReference:
    """Held-out text's character n-gram distribution, the one every sample set's is compared with."""

    probs: dict[str, float]

    @classmethod
    def of(cls, text: str) -> "NgramReference":
        counts = Counter(char_ngrams(text))
        total = sum(counts.values())
        return cls({gram: n / total for gram, n in counts.items()})


def jensen_shannon_bits(pooled: np.ndarray, reference: np.ndarray, absent: float) -> np.ndarray:
    """JSD (bits) between the rows of ``pooled`` (counts over some n-grams, (..., G)) and a reference
    distribution that puts ``reference`` (G,) on those n-grams and mass ``absent`` on others; exact,
    since an n-gram only one side has adds half its probability there."""
    p = pooled / np.maximum(pooled.sum(-1, keepdims=True), 1e-300)
    m = (p + reference) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(-1)
        kl_q = np.where(reference > 0, reference * np.log2(reference / m), 0.0).sum(-1) + absent
    return np.clip((kl_p + kl_q) / 2, 0.0, 1.0)


@dataclass(frozen=True)
class NgramCounts:
    """Per-text counts of the n-grams a setting's texts hold, with the reference's probability of each
    and the reference's mass on every other n-gram."""

    counts: np.ndarray  # (n, G)
    reference: np.ndarray  # (G,)
    absent: float

    @classmethod
    def of(cls, texts: Sequence[str], reference: NgramReference) -> "NgramCounts":
        grams = [Counter(char_ngrams(t)) for t in texts]
        columns = sorted(set().union(*grams))
        index = {g: i for i, g in enumerate(columns)}
        counts = np.zeros((len(texts), len(columns)))
        for row, counter in enumerate(grams):
            for gram, n in counter.items():
                counts[row, index[gram]] = n
        probs = np.array([reference.probs.get(g, 0.0) for g in columns])
        return cls(counts, probs, max(0.0, 1.0 - float(probs.sum())))

    def jsd(self, idx: np.ndarray) -> np.ndarray:
        """``ngram_jsd`` of the texts ``idx`` (..., m), pooled per resample (a multiplicity matrix
        times the counts, so a thousand resamples never hold a (1000, m, G) array)."""
        flat = idx.reshape(-1, idx.shape[-1])
        times = np.zeros((flat.shape[0], self.counts.shape[0]))
        np.add.at(times, (np.arange(flat.shape[0])[:, None], flat), 1.0)
        return jensen_shannon_bits(times @ self.counts, self.reference, self.absent).reshape(idx.shape[:-1])


def jackknife_interval(data: tuple, statistic, level: float, pair: bool) -> tuple[float, float]:
    """A normal interval around the estimate with the delete-one jackknife's standard error, for a
    statistic that resampling with replacement biases (:data:`JACKKNIFED`). ``statistic(*arrays)``
    takes index arrays of shape (..., m); paired data drop text ``i`` from every array at once,
    unpaired data one array at a time (the variance is the sum over the arrays)."""
    from scipy.stats import norm

    full = [np.asarray(d) for d in data]
    estimate = float(statistic(*full))
    groups = [list(range(len(full)))] if pair else [[k] for k in range(len(full))]
    variance = 0.0
    for group in groups:
        n = len(full[group[0]])
        left = ~np.eye(n, dtype=bool)
        arrays = [full[k][np.nonzero(left)[1]].reshape(n, n - 1) if k in group else np.broadcast_to(full[k], (n, len(full[k])))
                  for k in range(len(full))]
        replicates = np.asarray(statistic(*arrays), dtype=np.float64)
        variance += (n - 1) / n * float(((replicates - replicates.mean()) ** 2).sum())
    half = float(norm.ppf(0.5 + level / 2)) * variance ** 0.5
    return estimate - half, estimate + half


@dataclass(frozen=True)
class SettingSamples:
    """Per-text statistics of one setting's texts, the items every pooled metric and its bootstrap
    resample (:func:`text_metrics`, :mod:`remask.frontier`)."""

    counts: np.ndarray  # (n, A) character counts
    judge_nll: np.ndarray | None  # (n,) bits per character
    valid_words: np.ndarray  # (n,)
    total_words: np.ndarray  # (n,)
    rep_4: np.ndarray  # (n,)
    ngrams: NgramCounts | None = None  # None: no reference text to compare with (no ngram_jsd)

    def stats(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Pooled metrics of the texts ``idx`` (..., n): entropy, word validity and the 3-gram
        divergence pooled over characters, words and 3-grams, judge NLL and rep-4 averaged over texts."""
        counts = self.counts[idx].sum(-2)
        p = counts / counts.sum(-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.where(p > 0, p * np.log2(p), 0.0).sum(-1)
        out = {
            "char_entropy": entropy,
            "judge_nll": self.judge_nll[idx].mean(-1),
            "word_validity": self.valid_words[idx].sum(-1) / np.maximum(self.total_words[idx].sum(-1), 1.0),
            "rep_4": np.nanmean(self.rep_4[idx], axis=-1),
        }
        if self.ngrams is not None:
            out["ngram_jsd"] = self.ngrams.jsd(idx)
        return out


def setting_samples(texts: Sequence[str], judge_nll: Sequence[float] | None, vocabulary: set[str],
                    alphabet: Sequence[str] | None = None, reference: NgramReference | None = None) -> SettingSamples:
    """The per-text statistics of ``texts``; ``alphabet`` (default: their own characters) must hold
    every character of them, and is shared where settings are compared; with a ``reference``, the
    3-gram divergence from it too."""
    alphabet = sorted(set("".join(texts))) if alphabet is None else alphabet
    index = {c: i for i, c in enumerate(alphabet)}
    counts = np.zeros((len(texts), max(len(alphabet), 1)))
    for row, text in enumerate(texts):
        for char, n in Counter(text).items():
            counts[row, index[char]] = n
    tokens = [words(t) for t in texts]
    return SettingSamples(counts, None if judge_nll is None else np.asarray(judge_nll, dtype=np.float64),
                          np.array([sum(w in vocabulary for w in ws) for ws in tokens], dtype=np.float64),
                          np.array([len(ws) for ws in tokens], dtype=np.float64),
                          np.array([rep_4(t) for t in texts], dtype=np.float64),
                          None if reference is None else NgramCounts.of(texts, reference))


def text_metrics(
    texts: Sequence[str],
    vocabulary: set[str],
    judge_nll: Sequence[float] | None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    reference: NgramReference | None = None,
) -> dict[str, float | list[float]]:
    """All sample-quality metrics of one setting, each with ``<name>_ci = [low, high]``."""
    items = setting_samples(texts, judge_nll, vocabulary, reference=reference)
    gram_ids: dict[int, list[np.ndarray]] = {}
    for n in (2, 3):
        table: dict[tuple[str, ...], int] = {}
        gram_ids[n] = [np.array([table.setdefault(g, len(table)) for g in word_ngrams(t, n)], dtype=np.int64) for t in texts]

    def distinct(n: int) -> Callable[[np.ndarray], float]:
        def stat(idx: np.ndarray) -> float:
            joined = np.concatenate([gram_ids[n][i] for i in idx]) if len(idx) else np.array([])
            return np.unique(joined).size / joined.size if joined.size else float("nan")

        return stat

    statistics: dict[str, Callable[[np.ndarray], float]] = {
        "char_entropy": lambda idx: entropy_bits(items.counts[idx].sum(0)),
        "word_validity": lambda idx: items.valid_words[idx].sum() / max(items.total_words[idx].sum(), 1.0),
        "distinct_2": distinct(2),
        "distinct_3": distinct(3),
        "rep_4": lambda idx: float(np.nanmean(items.rep_4[idx])),
    }
    if items.judge_nll is not None:
        statistics["judge_nll"] = lambda idx: float(items.judge_nll[idx].mean())
    if items.ngrams is not None:
        statistics["ngram_jsd"] = lambda idx: float(items.ngrams.jsd(idx))
    everything = np.arange(len(texts))
    out: dict[str, float | list[float]] = {"n_texts": len(texts)}
    for offset, (name, stat) in enumerate(statistics.items()):
        out[name] = float(stat(everything))
        if name == "ngram_jsd":  # duplicated texts cover fewer 3-grams: a resample would bias it upward
            out[f"{name}_ci"] = list(jackknife_interval((everything,), items.ngrams.jsd, level, pair=True))
        else:
            out[f"{name}_ci"] = list(bootstrap_ci(len(texts), stat, resamples, level, seed + offset))
    return out
