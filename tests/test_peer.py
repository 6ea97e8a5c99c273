"""The public peer (x-transformers' self-critic): built at our size, its passes counted exactly, its
training resumable and its checkpoint safe, and its row in the report. The tests that run its code
are skipped, with the reason, where the optional dependency is not installed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from conftest import REPO_PARAMS
from remask.config import SelectionRule
from remask.data import CharTokenizer, load_meta
from remask.errors import CheckpointError, ConfigError
from remask.metrics import setting_samples
from remask.policies import untrained_inputs
from remask.records import (BudgetTuning, Candidate, FrontierPoint, LevelTuning, MasksLeft, Pilot, Searched, Setting,
                            Tuned, TuningLog)
from remask.report import compare_policies, finalist_rows, kind_of, render_goal, render_peer

needs_peer = pytest.mark.skipif(
    importlib.util.find_spec("x_transformers") is None,
    reason="the peer needs the optional dependency x-transformers==2.31.10: pip install -e '.[peer]'")

TINY = REPO_PARAMS.model.with_(n_layer=1, n_head=2, n_embd=16, block_size=16)


def tiny_peer(tokenizer: CharTokenizer, block_size: int = 16):
    from remask.peer import PeerConfig, build_peer

    torch.manual_seed(0)
    return build_peer(PeerConfig.of(TINY.model_copy(update={"block_size": block_size}), REPO_PARAMS.study.peer, tokenizer))


def test_a_missing_or_other_version_of_x_transformers_is_a_clear_error(monkeypatch):
    from remask import peer

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(peer.importlib.metadata, "version", missing)
    with pytest.raises(ConfigError, match=r"x-transformers==2\.31\.10: pip install -e '\.\[peer\]'"):
        peer.require_x_transformers()
    monkeypatch.setattr(peer.importlib.metadata, "version", lambda name: "2.0.0")
    with pytest.raises(ConfigError, match="x-transformers 2.0.0 is installed; the peer is pinned at 2.31.10"):
        peer.require_x_transformers()


@needs_peer
def test_the_peer_has_our_parameter_count_at_the_default_size():
    from remask.peer import PeerConfig, build_peer, ours_parameter_count, parameter_count

    tok = CharTokenizer([chr(c) for c in range(32, 32 + 82)])  # 83 ids with [MASK], as the default corpus
    ours = ours_parameter_count(REPO_PARAMS.model, tok)
    theirs = parameter_count(build_peer(PeerConfig.of(REPO_PARAMS.model, REPO_PARAMS.study.peer, tok)))
    assert abs(theirs / ours - 1) < 0.005, (theirs, ours)


@needs_peer
def test_the_peers_forward_passes_are_counted_exactly_and_its_seed_is_its_own():
    from remask.peer import peer_generate, peer_nfe, peer_steps_for_nfe

    tok = CharTokenizer("abcdefgh ")
    wrapper = tiny_peer(tok).eval()
    assert peer_steps_for_nfe(32) == 16 and peer_nfe(16) == 32 and peer_steps_for_nfe(33) == 16
    with pytest.raises(ValueError, match="allows no step"):
        peer_steps_for_nfe(1)
    before = torch.get_rng_state()
    tokens, nfe = peer_generate(wrapper, 5, steps=3, temperature=1.0, noise=1.0, filter_thres=0.7, seed=4, batch_size=2)
    assert nfe == 6 and tokens.shape == (5, 16)  # fill + critic at each of 3 steps, per batch of 2
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    again, _ = peer_generate(wrapper, 5, steps=3, temperature=1.0, noise=1.0, filter_thres=0.7, seed=4, batch_size=2)
    other, _ = peer_generate(wrapper, 5, steps=3, temperature=1.0, noise=1.0, filter_thres=0.7, seed=5, batch_size=2)
    assert torch.equal(tokens, again) and not torch.equal(tokens, other)
    # an independent count: every call of its trunk, the fill's and the critic's
    calls = []
    hook = wrapper.net.register_forward_hook(lambda *_: calls.append(1))
    wrapper.steps = 4
    with torch.no_grad():
        wrapper.generate(batch_size=3)
    hook.remove()
    assert len(calls) == peer_nfe(4)


@needs_peer
def test_the_peer_draw_decodes_its_samples_and_counts_the_masks_it_leaves(monkeypatch):
    from remask import peer

    tok = CharTokenizer("abcdefgh ")
    wrapper = tiny_peer(tok).eval()
    with pytest.raises(ConfigError, match="sample.length 12: the peer generates its block size, 16"):
        peer.peer_draw_at(wrapper, tok, REPO_PARAMS.sample.with_(length=12), 0.7, " ", MasksLeft())
    with pytest.raises(ConfigError, match="data.unknown_char '#' is not in the vocabulary"):
        peer.peer_draw_at(wrapper, tok, REPO_PARAMS.sample.with_(length=16), 0.7, "#", MasksLeft())
    masks = MasksLeft()
    draw, steps = peer.peer_draw_at(wrapper, tok, REPO_PARAMS.sample.with_(length=16, batch_size=4), 0.7, " ", masks)(4)
    assert steps == 2
    texts, nfe = draw(1.0, Candidate(SelectionRule(rule="gumbel", temperature=0.5), None), 0, 3)
    assert nfe == 4 and len(texts) == 3 and all(len(t) == 16 and set(t) <= set("abcdefgh ") for t in texts)
    # (an untrained peer leaves many masks, shown as the stand-in) a [MASK] its sampler leaves is shown to the judge as the stand-in and counted
    left = torch.tensor([[0, tok.mask_id, 1] + [2] * 13, [tok.mask_id] * 2 + [3] * 14])
    monkeypatch.setattr(peer, "peer_generate", lambda *a, **k: (left, 4))
    texts, _ = draw(1.5, Candidate(SelectionRule(rule="topk"), None), 7, 2)
    assert texts == ["  a" + "b" * 13, "  " + "c" * 14]  # ids 0, 1, 2, 3: " ", "a", "b", "c"
    counts = masks.to_dict()["4"]
    assert set(counts) == {"0/1/gumbel 0.5", "7/1.5/top-k"} and masks.at(4, 7, 1.5, SelectionRule(rule="topk")) == 3
    with pytest.raises(KeyError, match="no \\[MASK\\] count recorded for NFE 4, draw 7/2/top-k"):
        masks.at(4, 7, 2.0, SelectionRule(rule="topk"))  # a draw never recorded is an error, not zero


@needs_peer
def test_peer_training_resumes_to_the_same_weights_and_saves_a_safe_checkpoint(tiny_data, tmp_path):
    from remask.peer import load_peer, save_peer
    from remask.peer_training import train_peer

    train = REPO_PARAMS.train.with_(batch_size=4, max_steps=6, warmup_steps=2, checkpoint_every=2, eval_batches=1, device="cpu")
    args = (TINY, REPO_PARAMS.study.peer, train, REPO_PARAMS.critic.with_())
    whole = train_peer(*args, tiny_data, tmp_path / "whole", progress=False)
    train_peer(*args, tiny_data, tmp_path / "cut", progress=False, stop_after=3)
    resumed = train_peer(*args, tiny_data, tmp_path / "cut", progress=False)
    # the same weights, so the same validation (the running losses cover the steps each process ran)
    assert whole["val"] == resumed["val"] and resumed["step"] == 6 and np.isfinite(whole["val"]["gen_loss"])
    a, tok, info = load_peer(tmp_path / "whole")
    b, _, _ = load_peer(tmp_path / "cut")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert tok.chars == CharTokenizer.from_dict(load_meta(tiny_data)["tokenizer"]).chars
    assert info["package"] == "x-transformers==2.31.10" and info["wrapper"]["use_simple_mdlm_loss_weight"] is False
    assert info["step"] == 6 and info["parameters"] > 0 and info["parameters_ours"] > 0
    # weights of another size under this configuration are refused, naming a tensor and its shapes
    save_peer(tmp_path / "bad", _wider(tok), info)
    with pytest.raises(CheckpointError, match=r"tensor 'net\..*' has shape \(.*32.*\), the model expects"):
        load_peer(tmp_path / "bad")


def _wider(tokenizer: CharTokenizer):
    from remask.peer import PeerConfig, build_peer

    return build_peer(PeerConfig.of(TINY.model_copy(update={"n_embd": 32}), REPO_PARAMS.study.peer, tokenizer))


# --- the peer's row in the report -------------------------------------------------------------


def _settings(rng, offset, n=96):
    """Two report settings whose judge NLL lies on the line 1 + entropy + offset (plus noise)."""
    out = []
    for sharpness in (0.35, 0.2):
        weights = np.exp(-sharpness * np.arange(9))
        p = weights / weights.sum()
        texts = ["".join(rng.choice(list("abcdefgh "), size=120, p=p)) for _ in range(n)]
        nll = 1.0 + float(-(p * np.log2(p)).sum()) + offset + rng.normal(0, 0.2, n)
        out.append(setting_samples(texts, nll, {"ab", "cd"}, "abcdefgh "))
    return out


def test_our_best_learned_and_training_free_rows_chosen_on_the_tuning_draw_are_compared_with_the_peer():
    rng = np.random.default_rng(0)
    offsets = {"confidence": 0.3, "remdm_conf": 0.6, "critic": 0.4, "critic_fused": 0.0, "peer_x_transformers": 0.5}
    tuning_nll = {"confidence": 4.3, "remdm_conf": 4.6, "critic": 4.4, "critic_fused": 4.0, "peer_x_transformers": 3.9}
    samples = {(row, 32, "text"): _settings(rng, offset) for row, offset in offsets.items()}
    gumbel = SelectionRule(rule="gumbel", temperature=0.5)

    def log(row: str, nll: float, fields: dict) -> TuningLog:
        topk, chosen = Candidate(SelectionRule(rule="topk"), None), Candidate(gumbel, None)
        tuned = Tuned(chosen, 2.0, True, nll, [Searched(chosen, 2.0, True, nll, 1)],
                      [Pilot(topk, 2.0, 4.18, 3.0), Pilot(chosen, 2.0, 4.21, 3.0)])
        return TuningLog(row, fields, "models/x", 4.8, 1, 0,
                         {32: BudgetTuning(16, 32, {"text": LevelTuning(4.8, tuned, [1.8, 2.0])})})

    tuning = {row: log(row, nll, {"runs": row, "committed_budget": None}) for row, nll in tuning_nll.items()}
    tuning["peer_x_transformers"].fields = {"runs": "x-transformers==2.31.10 generate()", "kind": "peer",
                                            "committed_budget": None}
    target = float(np.mean([s.stats(np.arange(96))["char_entropy"] for s in samples[("confidence", 32, "text")]]))
    frontiers = {(row, 32, "text"): FrontierPoint(row, tuning[row].runs, kind_of(tuning[row]), 32, 16, 32, "gumbel 0.5",
                                                  2.0, True, [1.8, 2.0], {"bracketed": True, "rep_4": 0.01})
                 for row in offsets}
    records = compare_policies(samples, frontiers, tuning, {"text": target}, 300, 0.95, 0)
    against_peer = [r for r in records if r.baseline_kind == "peer"]
    # the peer's low tuning NLL does not make it "our best": only our learned and training-free rows are candidates
    assert [(r.policy, r.baseline, r.outcome) for r in against_peer] == [
        ("critic_fused", "peer_x_transformers", "beats"), ("confidence", "peer_x_transformers", "beats")]
    assert {(r.baseline, r.kind) for r in records if r.policy == "peer_x_transformers"} == {
        ("confidence", "peer"), ("remdm_conf", "peer")}
    # the goal is about our training-free baselines; the peer is reported apart
    goal = "\n".join(render_goal(records, frontiers, {"rep_4": 0.04}, None, {}))
    assert "peer_x_transformers" not in goal
    peer_log = tuning["peer_x_transformers"]
    peer_log.extra = {"mask_stand_in": " "}
    peer_log.masks_left = MasksLeft.from_dict({"32": {"0/1.8/gumbel 0.5": 2, "0/2/gumbel 0.5": 1, "1/2/top-k": 9,
                                                      "0/1.6/gumbel 0.5": 0}})
    text_level = peer_log.budgets[32].levels["text"]
    second = LevelTuning(4.2, replace(text_level.tuned, pilots=[]), [1.6, 1.8])  # reached, from the text's pilots
    peer_log.budgets[32] = replace(peer_log.budgets[32], levels={
        "text": replace(text_level, tuned=replace(text_level.tuned, reached=False)), "second": second})
    assert TuningLog.from_dict(json.loads(json.dumps(peer_log.to_dict()))).to_dict() == peer_log.to_dict()
    settings = [Setting("peer_x_transformers", 32, 16, 32, t, "gumbel 0.5", {"char_entropy": e, "judge_nll": 3.1},
                        level) for t, e, level in ((1.8, 4.17, "text"), (2.0, 4.2, "text"), (1.6, 4.1, "second"),
                                                   (1.8, 4.17, "second"))]
    peer = {"training": {"parameters": 798337, "parameters_ours": 799489, "val": {"gen_loss": 2.61}},
            "tuning": peer_log}
    text = "\n".join(render_peer(records, frontiers, settings, peer, {"multitask": 2.58, "generator_only": 2.57}))
    assert "`peer_x_transformers` is lucidrains' `x-transformers==2.31.10 generate()`" in text
    assert "798,337 parameters; ours 799,489" in text and "2.6100 (ours: `multitask` 2.5800" in text
    assert ("NFE 32 (16 steps): its sampler does not reach the test text's entropy (4.800 bits) anywhere in the "
            "search: at most 4.210 bits on the tuning draw (T=2.00, gumbel 0.5)") in text
    assert "T=1.80: entropy 4.170, judge NLL 3.100; T=2.00: entropy 4.200" in text
    assert "3 `[MASK]` tokens left in its texts" in text  # the report draw's, not the tuning draw's
    assert "NFE 32 (16 steps): its sampler reaches the second level (4.200 bits). Report draw (gumbel 0.5): T=1.60" in text
    assert "at NFE 32, the test text's entropy, `critic_fused` beats it; at NFE 32, the test text's entropy, " \
           "`confidence` beats it." in text
    assert json.dumps([r.to_dict() for r in against_peer])  # serialisable into metrics.json


@needs_peer
def test_our_sampler_draws_from_the_peers_generator_and_never_writes_mask(tmp_path):
    """``<row>@peer``: the peer's trained generator behind our interface, sampled by our sampler;
    its [MASK] logit is suppressed there as in our models, and no critic policy runs on it."""
    from remask.peer import PeerConfig, load_peer_model, save_peer
    from remask.sampling import SamplerOptions, diffusion_generate

    tok = CharTokenizer("abcdefgh ")
    torch.manual_seed(0)
    wrapper = tiny_peer(tok)
    cfg = PeerConfig.of(TINY, REPO_PARAMS.study.peer, tok)
    save_peer(tmp_path, wrapper, {"peer": asdict(cfg), "tokenizer": tok.to_dict()})
    model, loaded_tok, record = load_peer_model(tmp_path)
    assert loaded_tok.chars == tok.chars and not model.config.causal
    result = diffusion_generate(model, 3, 12, SamplerOptions(steps=4, policy="confidence", temperature=2.0), seed=0)
    assert result.nfe == 4 and not (result.tokens == tok.mask_id).any()
    assert untrained_inputs("confidence", record, (0.7, 2.0)) == []
    assert untrained_inputs("critic_fused", record, (0.7, 2.0)) == ["a trained critic head (alpha > 0)"]


@needs_peer
def test_the_peers_default_loss_weight_is_negative_which_is_why_it_is_off():
    """At 2.31.10 ``use_simple_mdlm_loss_weight=True`` (its default) weights the generator's
    cross-entropy by grad / (1 - value) of its masking schedule: -1 / t for ``linear``, so the loss
    to minimise is a negative cross-entropy. The peer is built with it off, and records that."""
    from x_transformers import Encoder, TransformerWrapper
    from x_transformers.nonautoregressive_wrapper import NonAutoregressiveWrapper

    net = TransformerWrapper(num_tokens=9, max_seq_len=16, attn_layers=Encoder(dim=16, depth=1, heads=2))
    default = NonAutoregressiveWrapper(net, mask_id=8, self_token_critic=True)
    t = torch.tensor([0.1, 0.5, 0.9])
    assert torch.allclose(default.loss_weight_fn(t), -1 / t)
    torch.manual_seed(0)
    assert default(torch.randint(0, 8, (4, 16))).generator_loss < 0
    assert tiny_peer(CharTokenizer("abcdefgh ")).loss_weight_fn is None


def test_every_variant_row_is_compared_with_both_of_its_own_models_baselines():
    rng = np.random.default_rng(1)
    rows = {"confidence": ("confidence", None, None), "remdm_conf": ("remdm_conf", None, None),
            "confidence@loo": ("confidence", None, "loo"), "remdm_conf_budget@loo": ("remdm_conf", 0.02, "loo"),
            "critic_fused@loo": ("critic_fused", None, "loo"), "critic_fused_budget@loo": ("critic_fused", 0.02, "loo"),
            "confidence@generated": ("confidence", None, "generated")}
    chosen = Candidate(SelectionRule(rule="topk"), None)
    tuned = Tuned(chosen, 1.2, True, 4.0, [Searched(chosen, 1.2, True, 4.0, 1)], [Pilot(chosen, 1.2, 4.8, 4.0)])
    tuning = {row: TuningLog(row, {"runs": runs, "committed_budget": budget}, "m", 4.8, 1, 0,
                             {32: BudgetTuning(32, 32, {"text": LevelTuning(4.8, tuned, [1.1, 1.3])})}, variant=variant)
              for row, (runs, budget, variant) in rows.items()}
    samples = {(row, 32, "text"): _settings(rng, 0.0) for row in rows}
    target = float(np.mean([s.stats(np.arange(96))["char_entropy"] for s in samples[("confidence", 32, "text")]]))
    frontiers = {(row, 32, "text"): FrontierPoint(row, tuning[row].runs, kind_of(tuning[row]), 32, 32, 32, "top-k", 1.2,
                                                  True, [1.1, 1.3], {"bracketed": True}) for row in rows}
    records = compare_policies(samples, frontiers, tuning, {"text": target}, 100, 0.95, 0)
    # the finalists: every model's baselines and each model's best learned row (tuning draw; here a tie, by name)
    assert finalist_rows(tuning, 32, "text") == ["confidence", "confidence@generated", "confidence@loo",
                                                "critic_fused@loo", "remdm_conf_budget@loo"]
    assert finalist_rows(tuning, 32, "second") == [] and finalist_rows(tuning, 64, "text") == []
    for row in ("critic_fused@loo", "critic_fused_budget@loo"):
        assert {"confidence@loo", "remdm_conf_budget@loo"} <= {r.baseline for r in records if r.policy == row}
        assert "confidence@generated" not in {r.baseline for r in records if r.policy == row}  # another model
