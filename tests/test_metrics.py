import math

import numpy as np
import pytest

from remask.metrics import (
    char_entropy,
    detection_metrics,
    distinct_n,
    expected_calibration_error,
    rep_4,
    text_metrics,
    word_validity,
)


def test_word_validity_on_hand_made_text():
    vocab = {"to", "be", "or", "not", "o'er"}
    assert word_validity(["To be, or NOT to bee!"], vocab) == pytest.approx(5 / 6)
    assert word_validity(["O'er the hills"], vocab) == pytest.approx(1 / 3)
    assert math.isnan(word_validity(["123 ..."], vocab))


def test_char_entropy():
    assert char_entropy(["abab"]) == pytest.approx(1.0)
    assert char_entropy(["aaaa"]) == pytest.approx(0.0)
    assert char_entropy(["ab", "cd"]) == pytest.approx(2.0)  # pooled over texts


def test_repeated_4grams():
    assert rep_4("abcdefgh") == 0.0
    assert rep_4("abcabcabc") == pytest.approx(1 - 3 / 6)  # abca bcab cabc then repeats
    assert rep_4("you you your you") > rep_4("the quick brown fox")


def test_distinct_n():
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)


def test_ece_perfect_and_overconfident():
    probs = np.array([0.2] * 5 + [0.8] * 5)
    labels = np.array([1, 0, 0, 0, 0, 1, 1, 1, 1, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(4, 0.9), np.array([1, 0, 0, 0])) == pytest.approx(0.65)


def test_detection_metrics():
    out = detection_metrics(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]), is_probability=True)
    assert out["auroc"] == pytest.approx(0.75)
    assert 0 < out["average_precision"] <= 1 and "ece" in out
    assert "ece" not in detection_metrics(np.array([1.0, 2.0]), np.array([0, 1]), is_probability=False)
    assert math.isnan(detection_metrics(np.array([0.1, 0.2]), np.array([0, 0]), True)["auroc"])


def test_text_metrics_intervals_contain_the_estimate():
    texts = ["the king is dead", "long live the king", "to be or not to be", "what light", "all the world"] * 4
    out = text_metrics(texts, {"the", "king", "to", "be"}, judge_nll=[2.0 + 0.1 * i for i in range(20)],
                       resamples=200, seed=1)
    for name in ("char_entropy", "word_validity", "distinct_2", "distinct_3", "rep_4", "judge_nll"):
        lo, hi = out[f"{name}_ci"]
        assert lo <= out[name] + 1e-9 and out[name] <= hi + 1e-9, name
    assert out["judge_nll"] == pytest.approx(2.95)
    assert text_metrics(texts, set(), None, resamples=200, seed=1) == text_metrics(texts, set(), None, resamples=200, seed=1)


def test_added_information_sees_a_critic_that_knows_more_and_one_that_knows_nothing():
    from remask.metrics import added_information

    rng = np.random.default_rng(0)
    labels = rng.random(4000) < 0.3
    heuristic = np.clip(0.3 + 0.2 * labels + 0.25 * rng.standard_normal(4000), 0.01, 0.99)
    informed = np.clip(0.3 + 0.2 * labels + 0.25 * rng.standard_normal(4000), 0.01, 0.99)  # independent evidence
    copy = np.clip(heuristic + 0.01 * rng.standard_normal(4000), 0.01, 0.99)  # the heuristic, noisier
    assert added_information(labels, heuristic, informed)["gain"] > 0.05
    assert abs(added_information(labels, heuristic, copy)["gain"]) < 0.005
    few_errors = np.r_[np.ones(3), np.zeros(97)]  # fewer errors than folds: no honest estimate
    assert np.isnan(added_information(few_errors, heuristic[:100], copy[:100])["gain"])


def test_evidence_section_tests_both_predictions_on_the_numbers():
    from remask.report import render_evidence

    def block(critic, confidence, first=None):
        out = {"critic": {"auroc": critic}, "confidence": {"auroc": confidence}}
        return out | ({"first_pass": {"auroc": first}} if first is not None else {})

    detection = {"one-step": block(0.79, 0.86), "states": block(0.77, 0.82, 0.84)}
    small = {"heuristic": 0.86, "stacked": 0.861, "gain": 0.001}
    holds = render_evidence(detection, {"one-step": small, "states": small})
    assert "Prediction 1 holds on 1 of 1" in holds[-1] and "prediction 2 holds on 2 of 2" in holds[-1]
    assert "| states | 0.770 | 0.820 | 0.840 | 0.860 | 0.861 | +0.0010 |" in holds
    detection["states"] = block(0.77, 0.82, 0.80)
    fails = render_evidence(detection, {"one-step": small, "states": {**small, "gain": 0.03}})
    assert "Prediction 1 holds on 0 of 1" in fails[-1] and "prediction 2 holds on 1 of 2" in fails[-1]
    assert "does not fully explain" in fails[-1]


def test_the_ngram_divergence_orders_real_shuffled_and_collapsed_text():
    """Held-out real text is closest to the reference; shuffling characters keeps their frequencies
    but breaks the 3-grams; repeating a few texts covers a fraction of them, and the fewer, the further."""
    import random

    from remask.metrics import NgramReference, setting_samples

    rng = random.Random(0)
    words = "the king and queen of england would speak with thee my lord upon this matter tonight".split()
    corpus = " ".join(rng.choice(words) for _ in range(20000))
    reference = NgramReference.of(corpus[: len(corpus) // 2])
    held_out = corpus[len(corpus) // 2:]
    real = [held_out[i * 64:(i + 1) * 64] for i in range(64)]
    shuffled = ["".join(rng.sample(t, len(t))) for t in real]
    sets = {"real": real, "shuffled": shuffled, "collapsed to 8": real[:8] * 8, "collapsed to 1": real[:1] * 64}
    jsd = {name: float(setting_samples(texts, None, set(), reference=reference).ngrams.jsd(np.arange(64)))
           for name, texts in sets.items()}
    assert 0 <= jsd["real"] < 0.5 * min(jsd["shuffled"], jsd["collapsed to 8"])
    assert jsd["collapsed to 8"] < jsd["collapsed to 1"] <= 1
    # exact against scipy's divergence on the pooled counts
    from collections import Counter

    from scipy.spatial.distance import jensenshannon

    counts = Counter(t[i:i + 3] for t in real for i in range(len(t) - 2))
    keys = sorted(set(counts) | set(reference.probs))
    p = np.array([counts[k] for k in keys], dtype=float)
    q = np.array([reference.probs.get(k, 0.0) for k in keys])
    assert jsd["real"] == pytest.approx(jensenshannon(p / p.sum(), q / q.sum(), base=2) ** 2)
    # resampled texts (a bootstrap's rows) pool like the texts themselves
    items = setting_samples(real, None, set(), reference=reference)
    twice = items.ngrams.jsd(np.array([[0, 0, 1], [2, 3, 4]]))
    assert twice.shape == (2,)
    assert twice[1] == pytest.approx(float(setting_samples(real[2:5], None, set(), reference=reference).ngrams.jsd(np.arange(3))))


def test_the_ngram_divergence_interval_is_centred_on_its_estimate_where_a_bootstrap_would_miss_it():
    """A bootstrap resample duplicates texts, covers fewer 3-grams and sits above the estimate; the
    jackknife's interval holds the estimate, in one setting and on a frontier's difference."""
    import random

    from remask.frontier import difference, frontier_point
    from remask.metrics import NgramReference, bootstrap_ci, setting_samples

    rng = random.Random(1)
    words = "the king and queen of england would speak with thee my lord upon this matter tonight".split()
    corpus = " ".join(rng.choice(words) for _ in range(40000))
    reference = NgramReference.of(corpus[:100000])
    texts = [corpus[100000 + i * 48:100000 + (i + 1) * 48] for i in range(96)]
    metrics = text_metrics(texts, set(), [1.0] * 96, 200, 0.95, 0, reference)
    low, high = metrics["ngram_jsd_ci"]
    assert low < metrics["ngram_jsd"] < high
    items = setting_samples(texts, None, set(), reference=reference)
    biased = bootstrap_ci(96, lambda idx: float(items.ngrams.jsd(idx)), 200, 0.95, 0)
    assert biased[0] > metrics["ngram_jsd"]  # what a percentile bootstrap would have printed

    def setting(chunk, drift):
        lines = [t[drift:] + t[:drift] for t in texts[chunk::2]]
        return setting_samples(lines, [1.0 + 0.01 * len(set(t)) for t in lines], set(), "".join(sorted(set(corpus))),
                               reference)

    a, b = [setting(0, 0), setting(1, 0)], [setting(0, 3), setting(1, 3)]
    entropies = [s.stats(np.arange(48))["char_entropy"] for s in a]
    target = float(np.mean(entropies))
    point = frontier_point(a, target, resamples=100)
    assert point["bracketed"] and point["ngram_jsd_ci"][0] < point["ngram_jsd"] < point["ngram_jsd_ci"][1]
    gap = difference(a, b, target, resamples=100)["ngram_jsd"]
    assert gap["ci"][0] < gap["difference"] < gap["ci"][1]
