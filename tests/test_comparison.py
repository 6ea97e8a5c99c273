"""The comparison harness: tuning on one draw, reporting on another, frontiers, intervals of the
difference, the refreshed detection target and the check that every policy reads trained inputs."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO_PARAMS, params_with
from remask.config import DrawKnobs, PolicySampling, SelectionRule
from remask.data import CharTokenizer
from remask.errors import ConfigError
from remask.frontier import difference, frontier_point, interpolate, segment
from remask.metrics import setting_samples
from remask.judge import judge_leave_one_out, judge_nll_bits
from remask.model import DiffusionTransformer, ModelConfig
from remask.policies import POLICIES, leave_one_out_probs, require_trained, untrained_inputs
from remask.records import Candidate, Comparison, FrontierPoint, TuningLog, entropy_levels
from remask.report import kind_of, render_goal
from remask.tuning import (RowPlan, Search, candidates, nll_at_target, report_temperatures, trained_search,
                           rounds, tune_policy, tune_row, tune_temperature)

TOPK, GUMBEL = SelectionRule(rule="topk"), SelectionRule(rule="gumbel", temperature=1.0)
CONSTANT = DrawKnobs(anneal="constant", top_k_share=1.0, top_p=1.0)
PEERS = DrawKnobs(anneal="linear", floor=0.7, top_k_share=0.3, top_p=1.0)


# --- seeds: tuning and reporting never share a draw ------------------------------------------


def test_tuning_and_report_seeds_must_differ():
    with pytest.raises(ConfigError, match="tuning_seed must differ from seed"):
        params_with({"sample": {"seed": 3, "tuning_seed": 3}})
    with pytest.raises(ConfigError, match="ablation.seed must differ from sample.tuning_seed"):
        params_with({"sample": {"seed": 0, "tuning_seed": 1}, "ablation": {"seed": 1}})
    cfg = REPO_PARAMS.sample.with_(seed=0, tuning_seed=1)
    plan = RowPlan.of("confidence", PolicySampling(), cfg, "confidence", Path("models/multitask"), cfg.tuning)
    with pytest.raises(ValueError, match="report seed 1 is the tuning seed"):
        tune_row(plan, lambda budget: (None, 8), Search(None, None, {"text": 4.0}, cfg, report_seed=1))


def test_tune_row_tunes_on_the_tuning_seed_and_reports_on_the_other(monkeypatch):
    """Every pilot samples the tuning seed; the returned rows are the report seed's only."""
    import remask.tuning as tuning

    seeds = []

    class Result:
        def __init__(self, n):
            self.tokens, self.nfe = torch.zeros(n, 8, dtype=torch.long), 8

    def fake_generate(model, n, length, options, seed, world):
        assert not world.distributed
        seeds.append((seed, n, options.temperature))
        return Result(n)

    tok = CharTokenizer("ab")
    monkeypatch.setattr(tuning, "sharded_generate", fake_generate)
    monkeypatch.setattr(tuning, "char_entropy", lambda texts: 3.0 + seeds[-1][2])  # entropy = 3 + T
    monkeypatch.setattr(tuning, "judge_nll_bits", lambda judge, tok, texts: [1.0] * len(texts))
    cfg = REPO_PARAMS.sample.with_(seed=0, tuning_seed=5, length=8, tuning=REPO_PARAMS.sample.tuning.with_(
        num_samples=3, selections=[TOPK], draws=[CONSTANT]))
    plan = RowPlan.of("confidence", PolicySampling(num_samples=6, nfe_budgets=[8]), cfg, "confidence", Path("m"),
                      cfg.tuning)
    draw_at = tuning.sampler_draw_at(None, tok, cfg, "confidence")
    levels = entropy_levels(4.3, cfg.tuning.with_(second_level=0.9))
    rows, log = tune_row(plan, draw_at, Search(None, tok, levels, cfg, report_seed=0, log=lambda m: None))
    assert log.to_dict()["budgets"]["8"]["steps"] == 8 and log.report_seed == 0 and log.tuning_seed == 5
    pilots = [s for s in seeds if s[1] == 3]
    assert pilots and {s[0] for s in pilots} == {5}
    assert {s[0] for s in seeds if s[1] == 6} == {0} and {r["seed"] for r in rows} == {0}
    for level, target in levels.items():  # each level tuned to its own entropy, reported at its own temperatures
        tuned = log.budgets[8].levels[level].tuned
        assert tuned.reached and abs(tuned.temperature + 3 - target) <= cfg.tuning.entropy_tolerance * target
        mine = [r for r in rows if r["level"] == level]
        assert sorted({r["temperature"] for r in mine}) == report_temperatures(tuned.temperature, cfg.tuning)
        assert len(mine) == 12 and {r["selection"] for r in mine} == {"topk"}
    # the second level starts from the text level's pilots (the secant through them lands at once)
    assert len(log.budgets[8].levels["second"].tuned.pilots) < len(log.budgets[8].levels["text"].tuned.pilots)
    assert TuningLog.from_dict(json.loads(json.dumps(log.to_dict()))).to_dict() == log.to_dict()


# --- tuning -------------------------------------------------------------------------------


def test_tune_temperature_converges_from_its_start_and_stops_within_the_tolerance():
    calls = []

    def measure(t):
        calls.append(t)
        return 3.5 + 2.0 * math.log(t), 0.0  # entropy rises with T

    t, reached, seen = tune_temperature(measure, 4.8, 0.7, 2.0, tolerance=0.005, max_pilots=7, start=1.35)
    assert reached and abs(3.5 + 2.0 * math.log(t) - 4.8) <= 0.005 * 4.8
    assert len(calls) == len(seen) <= 5 and calls[0] == 1.35  # a secant search: a few pilots, not Brent's endpoints
    entropies = [e for e, _ in seen.values()]
    assert min(entropies) < 4.8 < max(entropies)  # bracketed, so that the judge NLL is interpolated there
    # out of reach: pinned at the bound, the closest pilot, not reached
    t, reached, seen = tune_temperature(measure, 9.0, 0.7, 2.0, tolerance=0.005, max_pilots=7, start=1.35)
    assert not reached and t == 2.0 and len(seen) < 7
    # too few pilots to converge: the closest one, flagged
    t, reached, seen = tune_temperature(measure, 4.8, 0.7, 2.0, tolerance=1e-6, max_pilots=3, start=1.35)
    assert not reached and len(seen) == 3


def test_a_noisy_pilot_that_leads_back_to_one_already_run_does_not_end_the_search():
    """The oracle's search at 4,500 steps (scale axis, 6-text pilots): T 1.85 landed 1.2% above the
    target, the step down to 1.6087 landed higher still (noise), and the secant from the nearest
    pilot led back to 1.6087: the search stopped as if pinned at a bound and reported the target
    not reached. It now goes past the coldest pilot and reaches it."""
    def measure(t):
        noisy = {1.85: 4.859, 1.608696: 4.916}
        return noisy.get(t, 4.803 + 1.2 * (t - 1.5)), 0.0

    t, reached, seen = tune_temperature(measure, 4.803, 0.7, 3.0, tolerance=0.01, max_pilots=7, start=1.85)
    assert reached and t < 1.608696 and abs(seen[t][0] - 4.803) <= 0.01 * 4.803
    assert list(seen)[:3] == [1.85, 1.608696, round(1.608696 / 1.15, 6)]
    # all below the target, the hottest pilot noisy: past the hottest instead
    def rising(t):
        noisy = {1.0: 4.70, 1.15: 4.60}
        return noisy.get(t, 4.6 + 0.5 * (t - 1.0)), 0.0

    t, reached, seen = tune_temperature(rising, 4.803, 0.7, 3.0, tolerance=0.01, max_pilots=7, start=1.0)
    assert reached and list(seen)[:3] == [1.0, 1.15, round(1.15 * 1.15, 6)]


def test_the_judge_nll_is_interpolated_at_the_target_entropy_not_read_at_the_landed_pilot():
    # a frontier of 3 bits of NLL per bit of entropy: a pilot 1% (0.048 bits) off the target is 0.14 bits off
    seen = {1.2: (4.752, 3.0), 1.4: (4.9, 3.444)}
    assert nll_at_target(seen, 4.8) == pytest.approx(3.144)
    assert nll_at_target({1.2: (4.752, 3.0), 1.1: (4.7, 2.844)}, 4.8) == pytest.approx(3.144)  # one side: the line


def test_tune_policy_chooses_the_interpolated_best_on_a_synthetic_frontier():
    """A candidate whose pilot lands just below the target looks better at that pilot than it is at
    the target; the interpolated choice sees through it."""
    def measure(t, candidate):
        steep = candidate.selection == TOPK  # 4 bits of NLL per bit of entropy, 0.05 bits worse at the target
        entropy = 2.0 + 2.0 * t
        return entropy, (3.05 + 4.0 * (entropy - 4.6)) if steep else (3.0 + 1.0 * (entropy - 4.6))

    cfg = REPO_PARAMS.sample.tuning.with_(selections=[TOPK, GUMBEL], draws=[CONSTANT], entropy_tolerance=0.02)
    tuned = tune_policy(candidates(True, cfg, cfg.draws), measure, 4.6, cfg)
    assert tuned.selection == GUMBEL and tuned.reached and tuned.judge_nll == pytest.approx(3.0)
    topk = next(c for c in tuned.searched if c.candidate.selection == TOPK)
    assert topk.judge_nll == pytest.approx(3.05)
    assert {p.candidate.selection.rule for p in tuned.pilots} == {"topk", "gumbel"}
    # random's score is noise: a selection rule changes nothing, so only the first is tried, with every draw knob
    both = cfg.with_(draws=[CONSTANT, PEERS])
    assert [c.label for c in candidates(False, both, both.draws)] == ["top-k; T constant",
                                                                      "top-k; T linear to 0.7, top-k 30%"]
    assert len(candidates(True, both, both.draws)) == 4 and candidates(True, both, None)[0].knobs is None


def test_the_pool_is_searched_after_the_other_knobs_with_the_winners_rule_and_draw():
    """A committed budget is a coordinate step: the winner's rule and draw knobs with each pool,
    not every pool with every rule; a better pool wins and the cost is one candidate per pool."""
    def measure(t, candidate):
        entropy = 2.0 + 2.0 * t
        pool_gain = {None: 0.0, 0.0: 0.1, 0.02: -0.2}[candidate.committed_budget]
        rule_gain = 0.0 if candidate.selection == GUMBEL else 0.3
        return entropy, 3.0 + rule_gain + pool_gain + (entropy - 4.6)

    cfg = REPO_PARAMS.sample.tuning.with_(selections=[TOPK, GUMBEL], draws=[CONSTANT], entropy_tolerance=0.02)
    tuned = tune_policy(candidates(True, cfg, cfg.draws), measure, 4.6, cfg, then=rounds(cfg, cfg.draws, [0.0, 0.02]))
    assert tuned.candidate == Candidate(GUMBEL, CONSTANT, 0.02) and tuned.judge_nll == pytest.approx(2.8)
    assert [c.candidate.label for c in tuned.searched] == [
        "top-k; T constant", "gumbel 1; T constant", "gumbel 1; T constant; just filled",
        "gumbel 1; T constant; +2% committed"]
    sampling = REPO_PARAMS.for_tier("study").sample  # the study searches pools; the quick tier has none
    plan = RowPlan.of("critic_fused", PolicySampling(), sampling, "critic_fused", Path("m"), sampling.tuning)
    assert plan.pools == tuple(sampling.tuning.committed_budgets) and plan.pools
    for policy, spec in (("confidence", PolicySampling()), ("critic_fused", PolicySampling(committed_budget=0.02)),
                         ("oracle_loo", PolicySampling())):  # a fixed pool, a filled-only policy, the ceiling
        assert RowPlan.of(policy, spec, sampling, policy, Path("m"), sampling.tuning).pools == ()


def test_a_coordinate_search_tries_the_rules_then_the_winners_draw_knobs_then_its_pools():
    def measure(t, candidate):
        entropy = 2.0 + 2.0 * t
        gain = (0.0 if candidate.selection == GUMBEL else 0.3) + (-0.1 if candidate.knobs == PEERS else 0.0)
        return entropy, 3.0 + gain + (entropy - 4.6)

    cfg = REPO_PARAMS.sample.tuning.with_(selections=[TOPK, GUMBEL], draws=[CONSTANT, PEERS], entropy_tolerance=0.02,
                                          search="coordinate")
    first = candidates(True, cfg, cfg.draws)
    assert [c.label for c in first] == ["top-k; T constant", "gumbel 1; T constant"]  # the rules, on the first knobs
    tuned = tune_policy(first, measure, 4.6, cfg, then=rounds(cfg, cfg.draws, [0.0]))
    assert [c.candidate.label for c in tuned.searched] == [
        "top-k; T constant", "gumbel 1; T constant", "gumbel 1; T linear to 0.7, top-k 30%",
        "gumbel 1; T linear to 0.7, top-k 30%; just filled"]  # 2 + 1 + 1 candidates, not 2 x 2 + 1
    assert tuned.candidate == Candidate(GUMBEL, PEERS) and tuned.judge_nll == pytest.approx(2.9)
    grid = cfg.with_(search="grid")
    assert len(candidates(True, grid, grid.draws)) == 4 and rounds(grid, grid.draws, []) == []


def test_a_row_may_narrow_its_own_search_and_the_others_keep_the_tiers():
    cfg = REPO_PARAMS.for_tier("study").sample
    narrow = PolicySampling(selections=[GUMBEL], draws=[PEERS])  # the oracle's on the scale axis: one candidate
    tier = cfg.tuning.with_(selections=[TOPK, GUMBEL], draws=[CONSTANT, PEERS])
    cfg = cfg.with_(tuning=tier)
    plan = RowPlan.of("oracle_loo", narrow, cfg, "oracle_loo", Path("m"), narrow.tuning(tier, "oracle_loo"))
    tuning = plan.search
    assert (tuning.temperature_range, tuning.second_level) == (cfg.tuning.temperature_range, cfg.tuning.second_level)
    tuned = tune_policy(candidates(plan.ranks, tuning, plan.draws), lambda t, c: (2.0 + 2.0 * t, 3.0 + t), 4.6,
                        tuning, then=rounds(tuning, plan.draws, plan.pools))
    assert [o.candidate for o in tuned.searched] == [Candidate(GUMBEL, PEERS)]
    plain = PolicySampling().tuning(tier, "confidence")
    assert plain == cfg.tuning
    plain_plan = RowPlan.of("confidence", PolicySampling(), cfg, "confidence", Path("m"), plain)
    assert [c.selection for c in candidates(plain_plan.ranks, plain_plan.search, plain_plan.draws)] == cfg.tuning.selections
    with pytest.raises(ConfigError, match=r"policies\.oracle_loo\.selections: gumbel 0\.5 is not among the tier's"):
        PolicySampling(selections=[SelectionRule(rule="gumbel", temperature=0.5)]).tuning(tier, "oracle_loo")


def test_a_row_may_search_its_own_temperature_range():
    cfg = REPO_PARAMS.for_tier("study").sample
    tier = cfg.tuning.with_(selections=[GUMBEL], draws=[CONSTANT], temperature_range=[0.7, 2.0])
    cfg = cfg.with_(tuning=tier)
    hotter = PolicySampling(temperature_range=[0.7, 3.0])  # a ceiling whose picks need hotter fills
    assert hotter.tuning(tier, "oracle_loo").temperature_range == [0.7, 3.0]
    entropy_at = lambda t, c: (2.0 + t, 3.0 + t)  # noqa: E731 - the target 4.5 needs T = 2.5
    for spec, reached in ((PolicySampling(), False), (hotter, True)):
        plan = RowPlan.of("oracle_loo", spec, cfg, "oracle_loo", Path("m"), spec.tuning(tier, "oracle_loo"))
        tuning = plan.search
        tuned = tune_policy(candidates(plan.ranks, tuning, plan.draws), entropy_at, 4.5, tuning)
        assert tuned.reached is reached and tuned.temperature <= tuning.temperature_range[1]
    assert tuned.temperature == pytest.approx(2.5, rel=0.01)
    record = training_record(sample_temperature=0.7, sample_temperature_spread=1.3)  # a critic trained at 0.7-2.0
    assert untrained_inputs("critic", record, tuple(hotter.tuning(tier, "critic").temperature_range))


def test_a_critic_is_never_searched_with_draw_knobs_below_its_training_temperatures():
    record = training_record(sample_temperature=0.7, sample_temperature_spread=1.3)
    greedy_end = DrawKnobs(anneal="linear", floor=0.0, top_k_share=0.3, top_p=1.0)
    cfg = REPO_PARAMS.sample.tuning.with_(draws=[CONSTANT, PEERS, greedy_end])
    said = []
    assert trained_search("critic_fused", record, cfg, said.append).draws == [CONSTANT, PEERS]
    assert "left out of the search" in said[0] and "critic fills at temperatures 0-2" in said[0]
    assert trained_search("confidence", record, cfg, said.append).draws == [CONSTANT, PEERS, greedy_end]
    with pytest.raises(ConfigError, match="no candidate"):
        trained_search("critic", record, cfg.with_(draws=[greedy_end]), said.append)


def test_a_candidate_round_trips_through_its_record():
    for candidate in (Candidate(GUMBEL, PEERS), Candidate(TOPK, None), Candidate(GUMBEL, CONSTANT, 0.02)):
        assert Candidate.from_fields(candidate.fields()) == candidate


def test_report_temperatures_stay_in_the_range():
    cfg = REPO_PARAMS.sample.tuning.with_(report_spread=0.05)
    assert report_temperatures(1.0, cfg) == [0.95, 1.05]
    assert report_temperatures(2.0, cfg) == [1.9, 2.0]


# --- the frontier -------------------------------------------------------------------------


def test_interpolation_on_a_synthetic_frontier():
    lo = {"char_entropy": 4.0, "judge_nll": 3.0, "word_validity": 0.8, "rep_4": 0.10}
    hi = {"char_entropy": 5.0, "judge_nll": 4.0, "word_validity": 0.6, "rep_4": 0.02}
    at = interpolate(lo, hi, 4.25)
    assert at["judge_nll"] == pytest.approx(3.25) and at["word_validity"] == pytest.approx(0.75)
    assert at["rep_4"] == pytest.approx(0.08)
    assert segment([5.0, 4.0, 4.5], 4.2) == (1, 2, True)  # the two settings around the target
    assert segment([5.0, 4.0], 6.0) == (1, 0, False)  # outside: the nearest two, flagged


def _texts(rng, weights, n, length=120):
    alphabet = list("abcdefgh ")
    p = np.asarray(weights, dtype=float) / np.sum(weights)
    return ["".join(rng.choice(alphabet, size=length, p=p)) for _ in range(n)]


def _policy(rng, offset, n=96):
    """Two report settings whose judge NLL lies on the line 1 + entropy + offset (plus noise)."""
    out = []
    for sharpness in (0.35, 0.2):
        weights = np.exp(-sharpness * np.arange(9))
        texts = _texts(rng, weights, n)
        entropy = float(-(weights / weights.sum() * np.log2(weights / weights.sum())).sum())
        nll = 1.0 + entropy + offset + rng.normal(0, 0.2, n)
        out.append(setting_samples(texts, nll, {"ab", "cd"}, "abcdefgh "))
    return out


def test_a_share_stays_within_0_and_1_even_where_a_replicate_extends_the_line():
    lo = {"char_entropy": np.array([4.0, 4.0]), "judge_nll": np.array([3.0, 3.0]), "word_validity": np.array([0.1, 0.9]),
          "rep_4": np.array([0.02, 0.9])}
    hi = {"char_entropy": np.array([4.2, 4.2]), "judge_nll": np.array([4.0, 4.0]), "word_validity": np.array([0.0, 1.0]),
          "rep_4": np.array([0.0, 1.0])}
    beyond = interpolate(lo, hi, 4.6)  # three spans past the higher setting
    assert beyond["judge_nll"] == pytest.approx([6.0, 6.0])  # not a share: the line itself
    for share in ("word_validity", "rep_4"):
        assert np.all((beyond[share] >= 0) & (beyond[share] <= 1)) and beyond[share].min() == 0.0
    rng = np.random.default_rng(3)
    settings = _policy(rng, 0.0)
    entropies = [s.stats(np.arange(96))["char_entropy"] for s in settings]
    edge = min(entropies) + 0.02 * (max(entropies) - min(entropies))  # near a setting: replicates leave the bracket
    point = frontier_point(settings, edge, resamples=200)
    assert point["bracketed"] and 0 <= point["word_validity_ci"][0] <= point["word_validity_ci"][1] <= 1


def test_the_interpolated_point_lies_on_the_frontier_and_its_interval_covers_it():
    rng = np.random.default_rng(0)
    settings = _policy(rng, 0.0)
    points = [s.stats(np.arange(96)) for s in settings]
    target = float(np.mean([p["char_entropy"] for p in points]))
    point = frontier_point(settings, target, resamples=300, seed=1)
    assert point["bracketed"]
    assert point["judge_nll"] == pytest.approx(float(np.mean([p["judge_nll"] for p in points])), abs=0.05)
    low, high = point["judge_nll_ci"]
    assert low < point["judge_nll"] < high and high - low < 0.3


def test_bootstrap_of_the_difference_finds_a_known_gap_and_no_gap():
    rng = np.random.default_rng(1)
    a, b, c = _policy(rng, 0.0), _policy(rng, 0.5), _policy(rng, 0.0)
    target = float(np.mean([s.stats(np.arange(96))["char_entropy"] for s in a]))
    gap = difference(a, b, target, resamples=400, seed=2)["judge_nll"]
    low, high = gap["ci"]
    assert low < -0.5 < high and high < 0 and gap["better"] == 1  # a is better by about 0.5 bits
    assert difference(b, a, target, resamples=400, seed=2)["judge_nll"]["better"] == -1
    none = difference(a, c, target, resamples=400, seed=2)["judge_nll"]
    assert none["ci"][0] < 0 < none["ci"][1] and none["better"] == 0
    assert difference(a, b, target, resamples=400, seed=2) == difference(a, b, target, resamples=400, seed=2)


def _shared_noise_policy(noise, offset):
    """Two report settings whose texts share per-text noise ``noise`` (the same seed's stream)."""
    rng = np.random.default_rng(7)
    out = []
    for sharpness in (0.35, 0.2):
        weights = np.exp(-sharpness * np.arange(9))
        texts = _texts(rng, weights, len(noise))
        entropy = float(-(weights / weights.sum() * np.log2(weights / weights.sum())).sum())
        out.append(setting_samples(texts, 1.0 + entropy + offset + noise, {"ab"}, "abcdefgh "))
    return out


def test_the_paired_bootstrap_finds_a_known_paired_gap_that_the_unpaired_one_misses():
    noise = np.random.default_rng(3).normal(0, 1.0, 64)  # large per-text noise, common to both rows
    a, b = _shared_noise_policy(noise, 0.0), _shared_noise_policy(noise, 0.15)
    target = float(np.mean([s.stats(np.arange(64))["char_entropy"] for s in a]))
    unpaired = difference(a, b, target, resamples=400, seed=2, pair=False)["judge_nll"]
    paired_gap = difference(a, b, target, resamples=400, seed=2)["judge_nll"]  # equal sizes: paired by default
    assert unpaired["ci"][0] < 0 < unpaired["ci"][1] and unpaired["better"] == 0
    assert paired_gap["ci"][1] < 0 and paired_gap["better"] == 1
    assert paired_gap["difference"] == pytest.approx(-0.15)


def test_an_extrapolated_point_holds_no_number_and_renders_as_extrapolated():
    from remask.report import render_settings, render_verdict

    rng = np.random.default_rng(0)
    settings = _policy(rng, 0.0)
    beyond = max(s.stats(np.arange(96))["char_entropy"] for s in settings) + 0.5
    far = frontier_point(settings, beyond, resamples=50)
    assert not far["bracketed"] and far["judge_nll"] is None and far["word_validity_ci"] is None
    gap = difference(settings, settings, beyond, resamples=50)
    assert gap["judge_nll"] == {"difference": None, "ci": None, "better": 0}
    record = Comparison(32, "peer", "confidence", gap, False, "peer")
    fp = FrontierPoint("peer", "peer", "peer", 32, 32, 32, "top-k", 2.0, False, [1.8, 2.0], far)
    text = "\n".join(render_settings({("peer", 32, "text"): fp}, {"char_entropy": 9.9, **{
        f"{m}{s}": v for m in ("judge_nll", "word_validity", "rep_4") for s, v in (("", 0.5), ("_ci", [0.4, 0.6]))}},
        {"text": beyond}) + render_verdict([record], {(32, "text"): "confidence"}, {"text": beyond}))
    assert "extrapolated" in text and record.outcome == "no verdict"
    peer_line = next(line for line in text.splitlines() if "`peer`" in line and "|" in line)
    assert not any(ch.isdigit() for cell in peer_line.split("|")[9:13] for ch in cell)  # no number in the metrics


def point(runs: str, values: dict, kind: str = "learned") -> FrontierPoint:
    """A frontier point at NFE 32 with the given metric values, bracketed."""
    return FrontierPoint(runs, runs, kind, 32, 32, 32, "top-k", 1.0, True, [0.9, 1.1], {**values, "bracketed": True})


def test_outcome_follows_the_intervals_and_needs_bracketed_frontiers():
    def record(nll, valid, bracketed=True):
        diff = {"judge_nll": {"difference": 0, "ci": [0, 0], "better": nll},
                "word_validity": {"difference": 0, "ci": [0, 0], "better": valid},
                "rep_4": {"difference": 0, "ci": [0, 0], "better": 0}}
        return Comparison(32, "critic", "confidence", diff, bracketed)

    assert record(1, 0).outcome == "beats" and record(1, 1).outcome == "beats"
    assert record(1, -1).outcome == "mixed"  # better NLL, worse validity
    assert record(-1, 1).outcome == "loses" and record(0, 1).outcome == "no significant difference"
    assert record(1, 1, bracketed=False).outcome == "no verdict"
    judged = record(1, 1)
    judged.differences["ngram_jsd"] = {"difference": 0.1, "ci": [0.05, 0.15], "better": -1}
    assert judged.outcome == "disagree" and judged.judge_favoured  # the judge rewards what the 3-gram statistics do not
    closer = record(-1, -1)
    closer.differences["ngram_jsd"] = {"difference": -0.05, "ci": [-0.06, -0.04], "better": 1}
    assert closer.outcome == "disagree" and not closer.judge_favoured  # worse judge NLL, text-like statistics: no plain loss
    closer.differences["ngram_jsd"]["better"] = 0
    assert closer.outcome == "loses"
    frontiers = {("critic", 32, "text"): point("critic", {"rep_4": 0.05})}
    lines = render_goal([record(1, 0)], frontiers, {"rep_4": 0.04}, None, {"multitask": 2.0, "generator_only": 2.0})
    assert lines[4].endswith("| yes |") and "vs `confidence`: beats" in lines[4]
    lines = render_goal([record(1, 0)], {("critic", 32, "text"): point("critic", {"rep_4": 0.07})}, {"rep_4": 0.04}, None,
                        {})
    assert lines[4].endswith("| no |")  # rep-4 above 1.5x the text's


def test_where_no_learned_policy_meets_the_goal_the_closest_is_named_with_what_it_misses():
    def record(policy, upper, better, kind="learned"):
        diff = {"judge_nll": {"difference": upper - 0.1, "ci": [upper - 0.2, upper], "better": better},
                "word_validity": {"difference": 0, "ci": [0, 0], "better": 0},
                "rep_4": {"difference": 0, "ci": [0, 0], "better": 0}}
        return Comparison(32, policy, "confidence", diff, True, kind)

    records = [record("critic", 0.9, -1), record("critic_fused@generated", 0.1, 0)]
    frontiers = {("critic", 32, "text"): point("critic", {"rep_4": 0.01, "judge_nll": 4.8}),
                 ("critic_fused@generated", 32, "text"): point("critic_fused", {"rep_4": 0.09, "judge_nll": 4.0}),
                 ("oracle_loo", 32, "text"): point("oracle_loo", {"rep_4": 0.01, "judge_nll": 3.7}, kind="oracle")}
    lines = render_goal(records, frontiers, {"rep_4": 0.04}, None, {})
    text = "\n".join(lines)
    assert "Closest: `critic_fused@generated`" in text
    assert "vs `confidence` no significant difference (judge NLL +0.000 [-0.100, +0.100] (±0.100))" in text
    assert "rep-4 0.090 above the limit 0.060" in text and "the oracle ceiling's judge NLL is -0.300 from it" in text
    beaten = [record("critic", -0.1, 1)]
    assert "Closest" not in "\n".join(render_goal(beaten, {("critic", 32, "text"): point("critic", {"rep_4": 0.01})},
                                                   {"rep_4": 0.04}, None, {}))


# --- the refreshed target: leave-one-out probabilities ---------------------------------------


def test_judge_leave_one_out_sums_to_one_and_matches_brute_force():
    torch.manual_seed(0)
    tok = CharTokenizer("abc\n")
    judge = DiffusionTransformer(ModelConfig(vocab_size=tok.vocab_size, mask_id=tok.mask_id, n_layer=1, n_head=2,
                                             n_embd=16, block_size=8, causal=True)).eval()
    text = "abca"
    probs = judge_leave_one_out(judge, tok, text, batch_size=5)
    assert probs.shape == (4, len(tok.chars))
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, dtype=torch.float64))
    for i in range(len(text)):  # brute force: the joint probability of every variant, scored as a whole
        variants = [text[:i] + c + text[i + 1:] for c in tok.chars]
        log_joint = torch.tensor([-b * len(v) * math.log(2) for b, v in zip(judge_nll_bits(judge, tok, variants), variants)])
        torch.testing.assert_close(probs[i], torch.softmax(log_joint.double(), 0), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="does not fit"):
        judge_leave_one_out(judge, tok, "abcabcabc")


def test_generator_leave_one_out_masks_one_position_per_pass():
    torch.manual_seed(0)
    model = DiffusionTransformer(ModelConfig(vocab_size=7, mask_id=6, n_layer=1, n_head=2, n_embd=16, block_size=8)).eval()
    tokens = torch.randint(0, 6, (3, 8))
    scored = torch.ones(3, 8, dtype=torch.bool)
    scored[:, :2] = False
    passes = []
    with torch.no_grad():
        probs = leave_one_out_probs(lambda x, n: passes.append(n) or model(x), tokens, scored, 6, positions_per_pass=4)
        assert sum(passes) == 6 and torch.isnan(probs[:, :2]).all()
        for j in range(2, 8):
            masked = tokens.clone()
            masked[:, j] = 6
            expected = torch.softmax(model(masked)[:, j].double(), -1).gather(-1, tokens[:, j:j + 1]).squeeze(-1)
            torch.testing.assert_close(probs[:, j], expected)


# --- every policy reads what its model was trained on -----------------------------------------


def training_record(alpha=0.5, **critic):
    return {"objective": "diffusion", "alpha": alpha,
            "critic": REPO_PARAMS.critic.with_(**critic).model_dump() if alpha > 0 else None}


def test_every_policy_is_trained_for_its_inputs_under_the_default_params():
    params = params_with({})
    record = training_record(**params.critic.model_dump())
    span = tuple(params.sample.tuning.temperature_range)
    for name, policy in POLICIES.items():  # self_planning needs the self-correcting generator of the study
        assert bool(untrained_inputs(name, record, span)) == (policy.reads == "self_correction"), name
    grid = params.study.sample
    for row in grid.policies:  # the study tunes over the same range
        assert untrained_inputs(grid.policy_of(row), record, tuple(grid.tuning.temperature_range)) == [], row


def test_a_policy_is_refused_on_a_model_not_trained_for_it():
    generator_only = training_record(alpha=0.0)
    for name, policy in POLICIES.items():
        missing = untrained_inputs(name, generator_only, (1.0, 1.0))
        assert bool(missing) == (policy.reads != "generator"), name
    narrow = training_record(sample_temperature=1.0, sample_temperature_spread=0.0, input="partial")
    assert "critic fills at temperatures 0.7-2" in untrained_inputs("critic", narrow, (0.7, 2.0))[0]
    assert untrained_inputs("critic", narrow, (1.0, 1.0)) == []
    filled = training_record(input="filled")
    assert untrained_inputs("critic", filled, (0.7, 2.0)) == []
    with pytest.raises(ConfigError, match="critic.input: partial.*models/x was not trained on"):
        require_trained("critic_fused", filled, (0.7, 2.0), "models/x")
    assert untrained_inputs("critic", {"objective": "diffusion", "alpha": 0.5}, (1.0, 1.0))  # no record: refused
    assert untrained_inputs("confidence", {"objective": "autoregressive"}, (1.0, 1.0))  # the judge is no sampler


def test_refreshed_detection_has_intervals_over_samples_and_of_the_difference_from_confidence():
    from remask.detection import summarise_refreshed

    rng = np.random.default_rng(0)
    samples, length = 32, 64
    sample = np.repeat(np.arange(samples), length)
    p_judge = rng.uniform(0, 1, samples * length)
    implausible = p_judge < 0.2
    scores = {"p_judge": p_judge, "sample": sample,
              "confidence": implausible + rng.normal(0, 1.0, p_judge.size),  # weakly informative
              "critic": implausible + rng.normal(0, 0.3, p_judge.size)}    # clearly better
    table = summarise_refreshed(scores, 0.2, ("critic",), resamples=100)
    critic = table["critic"]
    assert set(table) == {"critic"}  # confidence is the reference, not a row of this table
    for metric in ("auroc", "average_precision", "spearman"):
        low, high = critic[f"{metric}_ci"]
        assert low <= critic[metric] <= high and high - low < 0.2
    low, high = critic["auroc_vs_confidence_ci"]
    assert 0 < low <= critic["auroc_vs_confidence"] <= high
    single = summarise_refreshed({**scores, "sample": np.zeros_like(sample)}, 0.2, ("critic",), resamples=20)
    assert single["critic"]["auroc_ci"][0] == single["critic"]["auroc_ci"][1]  # one sample: no spread to show


def test_a_draw_knobs_effect_is_measured_on_the_same_pool_only():
    """The pool candidates carry the winner's draw knobs: the summary's knob-effect line must not
    count a pool against the first candidate as an effect of those knobs."""
    from remask.records import BudgetTuning, LevelTuning, Searched, Tuned
    from remask.report import render_search

    linear = DrawKnobs(anneal="linear", floor=0.7, top_k_share=1.0, top_p=1.0)
    tried = [Searched(Candidate(GUMBEL, CONSTANT), 1.2, True, 4.0, 2),
             Searched(Candidate(GUMBEL, linear), 1.4, True, 3.8, 2),
             Searched(Candidate(GUMBEL, CONSTANT, 0.0), 1.2, True, 2.5, 2),
             Searched(Candidate(GUMBEL, CONSTANT, 0.1), 1.2, True, 4.5, 2)]
    tuned = Tuned(tried[2].candidate, 1.2, True, 2.5, tried, [])
    log = TuningLog("critic_fused", {"runs": "critic_fused", "committed_budget": None}, "m", 4.8, 1, 0,
                    {32: BudgetTuning(32, 32, {"text": LevelTuning(4.8, tuned, [1.1, 1.3])})})
    text = "\n".join(render_search({"critic_fused": log}))
    assert "`T linear to 0.7` -0.200 bits on average, better in 1 of 1" in text
    assert "`T constant`" not in text.split("What each draw knob did", 1)[1].split(":", 1)[1]  # no pool as an effect
    assert "| 32 | text | `critic_fused` | **gumbel 1; T constant; just filled** |" in text


def test_the_ablation_table_names_the_pool_each_open_row_chose():
    from remask.report import render_ablation

    point = {"judge_nll": 3.9, "judge_nll_ci": [3.8, 4.0], "bracketed": True}
    diff = {"judge_nll": {"difference": 0.1, "ci": [0.05, 0.15], "better": -1},
            "word_validity": {"difference": 0.0, "ci": [0.0, 0.0], "better": 0}}
    arm = {"arm": "label_scope_all", "overrides": {"critic": {"label_scope": "all"}}, "nfe": 32, "val": {"gen_loss": 2.5},
           "rollout_auroc": {"critic": 0.7, "confidence": 0.8}, "frontier": {"confidence": point, "critic_fused": point},
           "differences": {"critic_fused": diff}, "tuned": {"critic_fused": {"committed_budget": 0.02}},
           "not_trained_for": {}}
    row = render_ablation([arm])[-1]
    assert "| label_scope_all | critic.label_scope=all |" in row and "+0.100 [+0.050, +0.150]" in row
    assert row.endswith("loses (+2% committed) |")


def test_the_answer_names_the_tuning_draws_best_learned_row_and_its_share_of_the_oracles_headroom():
    from remask.records import BudgetTuning, LevelTuning, Pilot, Searched, Tuned
    from remask.report import answers, render_answer

    def log(row, runs, tuned_nll, budget=None, variant=None):
        chosen = Candidate(SelectionRule(rule="topk"), None)
        tuned = Tuned(chosen, 1.2, True, tuned_nll, [Searched(chosen, 1.2, True, tuned_nll, 1)],
                      [Pilot(chosen, 1.2, 4.8, tuned_nll)])
        return TuningLog(row, {"runs": runs, "committed_budget": budget}, "m", 4.8, 1, 0,
                         {32: BudgetTuning(32, 32, {"text": LevelTuning(4.8, tuned, [1.1, 1.3])})}, variant=variant)

    tuning = {"confidence": log("confidence", "confidence", 3.0), "oracle_loo": log("oracle_loo", "oracle_loo", 2.0),
              "remdm_conf_budget": log("remdm_conf_budget", "remdm_conf", 3.1, budget=0.02),
              "critic_fused": log("critic_fused", "critic_fused", 3.2),  # the tuning draw's best learned row
              "critic_fused@v": log("critic_fused@v", "critic_fused", 3.5, variant="v"),
              "confidence@v": log("confidence@v", "confidence", 3.4, variant="v")}
    frontiers = {(row, 32, "text"): point(row, {"rep_4": 0.05}, kind=kind_of(tuning[row])) for row in tuning}

    def record(policy, baseline, gap, low, high, better, kind="learned"):
        diff = {"judge_nll": {"difference": gap, "ci": [low, high], "better": better},
                "word_validity": {"difference": 0, "ci": [0, 0], "better": 0}}
        return Comparison(32, policy, baseline, diff, True, kind)

    def answer(gap, low, high, better, oracle=(-0.4, -0.6, -0.2, 1), rep_4=0.05):
        records = [record("critic_fused", "confidence", gap, low, high, better),
                   record("critic_fused", "remdm_conf_budget", gap, low, high, better),
                   record("critic_fused@v", "confidence", 0.5, 0.4, 0.6, -1),
                   record("critic_fused@v", "confidence@v", -0.2, -0.3, -0.1, 1),
                   record("oracle_loo", "confidence", *oracle, kind="oracle")]
        frontiers[("critic_fused", 32, "text")] = point("critic_fused", {"rep_4": rep_4})
        found = answers(records, frontiers, tuning, {"rep_4": 0.04})
        assert [(a.row, [r.baseline for r in a.against]) for a in found] == [
            ("critic_fused", ["confidence", "remdm_conf_budget"])]  # never the other model's row, never vs its own
        return found[0], "\n".join(render_answer(found, {"text": 4.8}))

    won, text = answer(-0.2, -0.3, -0.1, 1)
    assert won.beats and "`critic_fused` **beats**" in text
    assert not answer(-0.2, -0.3, -0.1, 1, rep_4=0.07)[0].beats  # rep-4 above 1.5x the text's 0.04
    behind, text = answer(0.1, 0.05, 0.15, -1)
    assert not behind.beats and behind.headroom_share == 0.0 and "0% of its headroom reached" in text
    assert answer(-0.1, -0.2, 0.0, 0)[0].headroom_share == pytest.approx(0.25)
    assert answer(-0.6, -0.7, -0.5, 1, oracle=(-0.4, -0.6, -0.2, 1), rep_4=0.07)[0].headroom_share == 1.0  # clipped
    level, text = answer(0.0, -0.1, 0.1, 0, oracle=(-0.1, -0.3, 0.1, 0))  # the oracle's interval crosses 0
    assert level.headroom_share is None and "no headroom measured above 0" in text


def test_a_row_whose_search_ended_at_the_edge_of_the_range_is_chosen_after_the_measurable_ones():
    from remask.records import BudgetTuning, LevelTuning, Tuned
    from remask.report import best_of_kind

    def log(row, temperature, report, nll):
        chosen = Candidate(SelectionRule(rule="topk"), None)
        tuned = Tuned(chosen, temperature, True, nll, [], [])
        return TuningLog(row, {"runs": "critic_fused", "committed_budget": None}, "m", 4.8, 1, 0,
                         {32: BudgetTuning(32, 32, {"text": LevelTuning(4.8, tuned, report)})})

    edge = log("edge", 2.0, [1.8, 2.0], 3.0)  # reached within the tolerance at the top of the range: cannot bracket
    inside = log("inside", 1.886, [1.697, 2.0], 3.3)  # its spread cut at 2.0, but the tuned 1.886 lies inside
    assert edge.budgets[32].levels["text"].pinned and not inside.budgets[32].levels["text"].pinned
    assert best_of_kind({"edge": edge, "inside": inside}, 32, "learned") == "inside"
    assert best_of_kind({"edge": edge}, 32, "learned") == "edge"  # no other: still named, and its verdict says why


def test_the_judges_leave_one_out_on_a_subset_of_positions_is_the_full_ones_there():
    torch.manual_seed(0)
    tok = CharTokenizer("abc\n")
    judge = DiffusionTransformer(ModelConfig(vocab_size=tok.vocab_size, mask_id=tok.mask_id, n_layer=1, n_head=2,
                                             n_embd=16, block_size=12, causal=True)).eval()
    full = judge_leave_one_out(judge, tok, "abcabcabc", batch_size=5)
    some = judge_leave_one_out(judge, tok, "abcabcabc", batch_size=5, positions=[1, 4, 7])
    assert torch.allclose(some[[1, 4, 7]], full[[1, 4, 7]]) and torch.isnan(some[[0, 2, 3, 5, 6, 8]]).all()


def test_refreshed_detection_leaves_unlabelled_tokens_out():
    from remask.detection import StateDraw, summarise_refreshed

    rng = np.random.default_rng(0)
    draw = StateDraw(num_samples=2, length=10, state_steps=(1,), seed=0, positions=4)
    chosen = draw.labelled(rng)
    assert len(chosen) == 4 == len(set(chosen.tolist())) and list(chosen) == sorted(chosen)
    assert StateDraw(2, 10, (1,), 0).labelled(rng) is None
    with pytest.raises(ValueError, match="positions must lie in"):
        StateDraw(2, 10, (1,), 0, positions=11)
    p_judge = rng.uniform(0, 1, 400)
    scores = {"p_judge": p_judge, "sample": np.repeat(np.arange(40), 10), "confidence": rng.normal(0, 1, 400),
              "critic": (p_judge < 0.2) + rng.normal(0, 0.3, 400)}
    hidden = dict(scores, p_judge=np.where(np.arange(400) % 2 == 0, p_judge, np.nan))
    kept = {k: v[::2] for k, v in scores.items()}
    assert summarise_refreshed(hidden, 0.2, ("critic",), resamples=20) == summarise_refreshed(kept, 0.2, ("critic",),
                                                                                              resamples=20)
    from remask.report import render_refreshed

    table = {"policy": "confidence", "steps": 32, "samples": 32, "implausible_below": 0.05, "states": {}, "pooled": {}}
    assert "every token of the fill halfway through" in render_refreshed(table)[2]
    assert "32 random tokens of each sample's fill" in render_refreshed(dict(table, positions=32))[2]
