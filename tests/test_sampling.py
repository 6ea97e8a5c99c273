import copy

import numpy as np

import pytest
import torch

from remask.model import DiffusionTransformer, ModelConfig
from remask.policies import POLICIES, get_policy
from remask.drawing import tempered_probs
from remask.sampling import SamplerOptions, diffusion_generate, nfe_for, prefix_prompt, steps_for_nfe
from remask.schedules import masked_counts

MASK = 10


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DiffusionTransformer(ModelConfig(vocab_size=11, mask_id=MASK, n_layer=1, n_head=2, n_embd=16, block_size=24)).eval()


class CountingModel(torch.nn.Module):
    """Wraps a model and counts the sequences it processes, independently of the sampler's own count
    (a pass of the leave-one-out oracle stacks several copies of the batch in one call)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.sequences, self.config = inner, 0, inner.config

    def forward(self, idx, head="lm"):
        self.sequences += idx.shape[0]
        return self.inner(idx, head=head)


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_protection_no_mask_and_exact_nfe(model, policy, schedule):
    counting = CountingModel(model)
    known = prefix_prompt([1, 2, 3, 4], num_samples=5, length=20, mask_id=MASK)
    steps = 6
    result = diffusion_generate(counting, 5, 20, SamplerOptions(steps=steps, policy=policy, schedule=schedule, batch_size=2),
                                seed=1, record_trajectory=True, known=known)
    # protected positions never change and the output holds no mask
    assert torch.equal(result.tokens[:, :4], known.tokens[:, :4])
    assert not (result.tokens == MASK).any()
    # NFE: exact per policy, and what the model really saw: every sample passed nfe times
    chosen = get_policy(policy)
    extra = chosen.extra_passes * (16 if chosen.per_position else 1)
    assert result.nfe == nfe_for(policy, steps, positions=16) == steps + extra * (steps - 1)
    assert counting.sequences == 5 * result.nfe
    # masked positions after each step follow the schedule over the 16 free positions
    expected = masked_counts(16, steps, schedule)
    for i, step in enumerate(result.trajectory):
        after = step.remasked.sum(1)
        assert after.tolist() == [expected[i]] * 5
        assert not step.remasked[:, :4].any() and not step.masked[:, :4].any()
        if get_policy(policy).candidates == "filled":
            assert not (step.remasked & ~step.masked).any()  # only tokens filled in this step
    assert result.trajectory[0].masked[:, 4:].all()
    assert torch.equal(result.trajectory[-1].tokens, result.tokens)


def test_all_candidates_can_revisit_committed_tokens(model):
    result = diffusion_generate(model, 8, 24, SamplerOptions(steps=8, policy="critic"), seed=0, record_trajectory=True)
    revisited = sum(int((s.remasked & ~s.masked).sum()) for s in result.trajectory)
    assert revisited > 0


def test_same_seed_same_output_other_seed_differs(model):
    a = diffusion_generate(model, 4, 16, SamplerOptions(steps=4, policy="critic", randomness_strength=0.3), seed=7)
    b = diffusion_generate(model, 4, 16, SamplerOptions(steps=4, policy="critic", randomness_strength=0.3), seed=7)
    c = diffusion_generate(model, 4, 16, SamplerOptions(steps=4, policy="critic", randomness_strength=0.3), seed=8)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_steps_for_nfe_matches_nfe_for():
    assert steps_for_nfe("confidence", 32) == 32
    assert steps_for_nfe("critic", 32) == 16 and nfe_for("critic", 16) == 31
    assert steps_for_nfe("critic_confidence", 64) == 32
    for policy in (p for p in POLICIES if not get_policy(p).per_position):
        for budget in (1, 2, 16, 17, 64):
            steps = steps_for_nfe(policy, budget)
            assert nfe_for(policy, steps) <= budget < nfe_for(policy, steps + 1)
    # the leave-one-out oracle is a ceiling at equal steps: its NFE counts one pass per scored position
    assert steps_for_nfe("oracle_loo", 32) == 32 and nfe_for("oracle_loo", 32, positions=128) == 32 + 31 * 128
    with pytest.raises(ValueError, match="number of positions"):
        nfe_for("oracle_loo", 32)


def test_top_p_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    probs = tempered_probs(logits, 1.0, 0.7)
    torch.testing.assert_close(probs, torch.tensor([[0.625, 0.375, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(tempered_probs(logits, 1.0, 1.0).sum(-1), torch.ones(1, dtype=torch.float64))


def test_bad_arguments_are_refused(model):
    with pytest.raises(ValueError, match="unknown policy 'best'; valid policies: random, confidence"):
        diffusion_generate(model, 1, 8, SamplerOptions(steps=2, policy="best"))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        diffusion_generate(model, 1, 8, SamplerOptions(steps=0))
    with pytest.raises(ValueError, match="block_size 24"):
        diffusion_generate(model, 1, 25, SamplerOptions(steps=2))
    with pytest.raises(ValueError, match="longer than --length 3"):
        prefix_prompt([1, 2, 3, 4], 1, 3, MASK)


def test_critic_fused_scores_committed_tokens_in_the_fill_pass(model):
    """critic_fused costs one pass per step: committed tokens are scored by the critic head on the
    fill pass's input (with its masks), just-filled tokens by 1 - p."""
    counting = CountingModel(model)
    result = diffusion_generate(counting, 3, 16, SamplerOptions(steps=5, policy="critic_fused"),
                                seed=2, record_trajectory=True)
    assert result.nfe == 5 and counting.sequences == 3 * 5
    before, step = result.trajectory[0], result.trajectory[1]
    fill_input = before.tokens.masked_fill(before.remasked, MASK)
    assert torch.equal(fill_input == MASK, step.masked)
    expected = torch.where(step.masked, 1.0 - step.p_at_fill, torch.sigmoid(model(fill_input, head="critic")))
    torch.testing.assert_close(step.scores, expected, atol=1e-5, rtol=0)
    # a critic that calls every committed token an error makes the policy revisit them
    alarmed = copy.deepcopy(model)
    torch.nn.init.constant_(alarmed.critic_head.bias, 6.0)
    revisit = diffusion_generate(alarmed, 3, 16, SamplerOptions(steps=5, policy="critic_fused"),
                                 seed=2, record_trajectory=True)
    assert sum(int((s.remasked & ~s.masked).sum()) for s in revisit.trajectory) > 0


def test_remdm_conf_ranks_by_the_confidence_recorded_at_fill(model):
    result = diffusion_generate(model, 3, 16, SamplerOptions(steps=4, policy="remdm_conf"),
                                seed=3, record_trajectory=True)
    for step in result.trajectory[:-1]:
        torch.testing.assert_close(step.scores, 1.0 - step.p_at_fill, atol=1e-6, rtol=0)


def test_gumbel_selection_at_zero_temperature_is_top_k(model):
    """tau = 0 leaves the keys a monotone function of the scores, so the choice is plain top-k."""
    top_k = diffusion_generate(model, 4, 16, SamplerOptions(steps=5, policy="confidence"), seed=4)
    gumbel = diffusion_generate(model, 4, 16, SamplerOptions(steps=5, policy="confidence", selection="gumbel", selection_temperature=0.0),
                                seed=4)
    assert torch.equal(top_k.tokens, gumbel.tokens)


def test_gumbel_keys_draw_in_proportion_to_the_scores():
    """At tau = 1 the top key of a row is a draw with probability proportional to the scores."""
    from remask.sampling import _gumbel_keys

    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64).expand(40_000, 4)
    winners = _gumbel_keys(scores, 1.0, torch.Generator().manual_seed(0)).argmax(1)
    share = torch.bincount(winners, minlength=4).double() / len(winners)
    torch.testing.assert_close(share, scores[0], atol=0.01, rtol=0)


def test_gumbel_selection_is_seeded_and_refuses_bad_settings(model):
    a = diffusion_generate(model, 4, 16, SamplerOptions(steps=4, policy="critic_fused", selection="gumbel"), seed=7)
    b = diffusion_generate(model, 4, 16, SamplerOptions(steps=4, policy="critic_fused", selection="gumbel"), seed=7)
    c = diffusion_generate(model, 4, 16, SamplerOptions(steps=4, policy="critic_fused", selection="gumbel"), seed=8)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    with pytest.raises(ValueError, match="selection must be one of topk, gumbel"):
        diffusion_generate(model, 1, 8, SamplerOptions(steps=2, selection="nucleus"))
    with pytest.raises(ValueError, match="selection_temperature >= 0"):
        diffusion_generate(model, 1, 8, SamplerOptions(steps=2, selection="gumbel", selection_temperature=-1.0))


def test_first_pass_score_is_the_confidence_given_the_protected_text_only(model):
    """On the first state every free token was filled in the pass that saw only the protected text,
    so first_pass equals the stale confidence there; later it keeps judging against that pass."""
    from remask.detection import rollout_scores

    windows = torch.randint(0, MASK, (6, 24), generator=torch.Generator().manual_seed(0))
    options = SamplerOptions(steps=4, policy="confidence", selection="gumbel", batch_size=4)
    scores = rollout_scores(model, windows, 0.5, options, seed=0)
    assert {"label", "critic", "confidence", "critic_fused", "first_pass", "step"} <= set(scores)
    first = scores["step"] == 0
    np.testing.assert_allclose(scores["first_pass"][first], scores["confidence"][first], atol=1e-6)
    later = scores["step"] > 0
    assert later.any() and not np.allclose(scores["first_pass"][later], scores["confidence"][later])
    assert ((scores["first_pass"] >= 0) & (scores["first_pass"] <= 1)).all()


# --- the draw knobs: annealing and the vocabulary filter (remask.tempering) --------------------


def test_linear_annealing_starts_at_the_temperature_and_reaches_the_floor_at_the_last_step():
    from remask.tempering import temperature_at, temperature_span

    schedule = [temperature_at("linear", 1.6, 0.4, i, 5) for i in range(5)]
    assert schedule == pytest.approx([1.6, 1.3, 1.0, 0.7, 0.4])
    assert [temperature_at("constant", 1.6, 0.0, i, 5) for i in range(5)] == [1.6] * 5
    assert temperature_at("linear", 1.6, 0.4, 0, 1) == 0.4  # one step: it is the last
    assert temperature_span("linear", 1.6, 0.4) == (0.4, 1.6) and temperature_span("constant", 1.2, 0.0) == (1.2, 1.2)
    with pytest.raises(ValueError, match="unknown annealing"):
        temperature_at("cubic", 1.0, 0.0, 0, 2)


def test_the_vocabulary_filter_keeps_exactly_the_chosen_share_on_a_toy_distribution():
    from remask.tempering import step_probs

    logits = torch.log(torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.15, 0.0001, 0.0099, 0.02, 0.03, 0.03]]))
    probs = step_probs(logits, 1.0, 0.3, 1.0)  # ceil(0.3 * 10) = 3 tokens: 0.4, 0.3, 0.15
    assert (probs > 0).sum() == 3
    torch.testing.assert_close(probs[0, [1, 3, 4]], torch.tensor([0.4, 0.3, 0.15], dtype=torch.float64) / 0.85)
    nucleus = step_probs(logits, 1.0, 0.3, 0.75)  # then top-p within them: 0.47 + 0.35 reaches 0.75
    assert (nucleus > 0).sum() == 2
    torch.testing.assert_close(step_probs(logits, 1.0, 1.0, 1.0), tempered_probs(logits, 1.0, 1.0))
    greedy = step_probs(logits, 0.0, 1.0, 1.0)
    assert greedy[0, 1] == 1.0 and greedy.sum() == 1.0


@pytest.mark.parametrize("policy", ["confidence", "critic", "oracle_loo"])
def test_annealing_and_filtering_leave_the_nfe_exact(model, policy):
    counting = CountingModel(model)
    plain = SamplerOptions(steps=5, policy=policy, batch_size=3)
    knobs = SamplerOptions(steps=5, policy=policy, batch_size=3, temperature=1.5, anneal="linear",
                           temperature_floor=0.0, top_k_share=0.3)
    a = diffusion_generate(counting, 3, 12, plain, seed=2)
    seen = counting.sequences
    b = diffusion_generate(counting, 3, 12, knobs, seed=2)
    assert a.nfe == b.nfe == nfe_for(policy, 5, positions=12) and counting.sequences - seen == seen
    assert not torch.equal(a.tokens, b.tokens)
    assert set(b.tokens.unique().tolist()) <= set(range(10))  # the filter never lets [MASK] be drawn either
    with pytest.raises(ValueError, match="read only by anneal='linear'"):
        diffusion_generate(model, 1, 8, SamplerOptions(steps=2, temperature_floor=0.5))
    with pytest.raises(ValueError, match="top_k_share"):
        diffusion_generate(model, 1, 8, SamplerOptions(steps=2, top_k_share=0.0))


def test_per_batch_streams_make_a_batch_independent_of_the_batches_before_it(model):
    """streams per_batch: batch b draws from its own stream (batch_seed), so the first batch of a
    larger draw is the whole of a one-batch draw, whatever comes after it, and the later batches are
    other texts; the sequential stream (every committed sample) is another stream; a sharded world
    needs per_batch (tested under torchrun in tests/test_pipeline_scale.py)."""
    from remask.runtime import World
    from remask.sampling import batch_seed, sharded_generate

    options = SamplerOptions(steps=4, policy="confidence", temperature=1.5, batch_size=3, streams="per_batch")
    six = diffusion_generate(model, 6, 12, options, seed=5).tokens
    assert torch.equal(six[:3], diffusion_generate(model, 3, 12, options, seed=5).tokens)
    assert torch.equal(six[:3], diffusion_generate(model, 5, 12, options, seed=5).tokens[:3])
    assert not torch.equal(six[:3], six[3:])
    sequential = diffusion_generate(model, 6, 12, SamplerOptions(**{**options.__dict__, "streams": "sequential"}),
                                    seed=5).tokens
    assert not torch.equal(sequential, six)
    assert len({batch_seed(5, b) for b in range(100)} | {batch_seed(6, 0)}) == 101
    with pytest.raises(ValueError, match="streams must be one of"):
        diffusion_generate(model, 3, 12, SamplerOptions(steps=4, streams="shared"))
    with pytest.raises(ValueError, match=r"needs per_batch streams \(sample.streams: per_batch\)"):
        sharded_generate(model, 3, 12, SamplerOptions(steps=4), 0, World(rank=0, size=2))
    alone = sharded_generate(model, 6, 12, options, 5, World())  # one process: the same draw
    assert torch.equal(alone.tokens, six)
