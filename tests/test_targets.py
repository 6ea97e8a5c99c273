"""Critic targets, the self-correcting generator, `self_planning` and the committed-budget sampler option."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO_PARAMS, params_with, tiny_params
from remask.train import study_run_spec
from remask.checkpoint import load_model
from remask.config import ConfigError, CriticSection
from remask.critic_targets import TARGETS
from remask.data import load_meta
from remask.model import DiffusionTransformer, ModelConfig
from remask.noise import DiffusionNoise, draw_noise
from remask.objectives import DiffusionObjective
from remask.policies import get_policy, require_trained, untrained_inputs
from remask.drawing import sample_from_logits
from remask.sampling import Known, SamplerOptions, diffusion_generate, nfe_for

MASK = 10


SAME_MODEL = {"confidence": {}, "remdm_conf_budget": {"policy": "remdm_conf", "committed_budget": 0.02}}

def tiny_model(seed: int = 0, length: int = 8) -> DiffusionTransformer:
    torch.manual_seed(seed)
    return DiffusionTransformer(ModelConfig(vocab_size=11, mask_id=MASK, n_layer=1, n_head=2, n_embd=16,
                                            block_size=length))


def hand_made(fill_keep=None):
    """A window of 6 tokens, positions 1, 2, 4 and 5 masked; logits that put all mass on one token per
    masked position (7 at 1: a wrong fill; 3 at 2: the clean token; 9 at 4; 6 at 5: clean)."""
    clean = torch.tensor([[1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[False, True, True, False, True, True]])
    fill_logits = torch.full((4, 11), -1e9)
    for row, token in enumerate((7, 3, 9, 6)):
        fill_logits[row, token] = 0.0
    noise = DiffusionNoise(torch.tensor([0.5]), mask, torch.full((1, 6), 0.5, dtype=torch.float64),
                           fill_keep=fill_keep)
    return clean, noise, fill_logits


def critic_section(**overrides) -> CriticSection:
    return REPO_PARAMS.critic.with_(**{"sample_temperature": 1.0, "sample_temperature_spread": 0.0, "input": "filled", **overrides})


def test_differs_labels_fills_that_differ_from_the_clean_token():
    clean, noise, logits = hand_made()
    shown, labels = TARGETS["differs"](tiny_model(), clean, noise, logits, critic_section())
    assert shown.tolist() == [[1, 7, 3, 4, 9, 6]]
    assert labels.tolist() == [[0, 1, 0, 0, 1, 0]]
    assert noise.critic_scope("filled").tolist() == [[False, True, True, False, True, True]]


def test_loo_fills_a_share_and_leaves_the_rest_masked_in_a_clean_context():
    clean, noise, logits = hand_made(fill_keep=torch.tensor([[True, True, False, True, True, False]]))
    shown, labels = TARGETS["loo"](tiny_model(), clean, noise, logits, critic_section(target="loo", fill_share=0.25))
    assert shown.tolist() == [[1, 7, MASK, 4, 9, MASK]]  # fills at 1 and 4 only; 2 and 5 stay masked
    scope = noise.critic_scope("filled")
    assert scope.tolist() == [[False, True, False, False, True, False]]  # labels on the fills only
    assert labels[scope].tolist() == [1, 1]


def test_generated_labels_every_fill_even_one_equal_to_the_clean_token():
    clean, noise, logits = hand_made()
    shown, labels = TARGETS["generated"](tiny_model(), clean, noise, logits,
                                         critic_section(target="generated", label_scope="all"))
    assert shown.tolist() == [[1, 7, 3, 4, 9, 6]]
    # positions 2 and 5 hold the clean token but were written by the generator: labelled 1
    assert labels.tolist() == [[0, 1, 1, 0, 1, 1]]
    assert noise.critic_scope("all").all()  # every shown position is judged


def test_target_levers_are_validated():
    with pytest.raises(ConfigError, match="fill_share must be < 1 for target loo"):
        tiny_params(critic={"target": "loo"})
    with pytest.raises(ConfigError, match="fill_share must be < 1 for target loo"):
        tiny_params(critic={"fill_share": 0.5})
    with pytest.raises(ConfigError, match="label_scope must be all"):
        tiny_params(critic={"target": "generated"})
    with pytest.raises(ValueError, match="rollout_share is a lever of targets differs and generated, not loo"):
        critic_section(target="loo", fill_share=0.5, rollout_share=0.5)
    assert critic_section(target="generated", label_scope="all", rollout_share=0.5).rollout_share == 0.5
    # an ablation arm whose lever does not apply to the chosen target is refused, naming the arm
    with pytest.raises(ConfigError, match="ablation.arms.replace_visible: critic: replace_visible is a lever of"):
        tiny_params(critic={"target": "loo", "fill_share": 0.1},
                    ablation={"arms": {"replace_visible": {"critic": {"replace_visible": 0.05}}}})
    with pytest.raises(ConfigError, match="study.variants.bad.overrides: critic.target must be one of"):
        params_with({"study": {"variants": {"bad": {"frozen_generator": None, "overrides": {"critic": {"target": "nope"}},
                                                     "policies": {"critic_fused": {}, **SAME_MODEL}}}}})
    with pytest.raises(ConfigError, match="study.variants.alone: policies: a variant samples its own model's baselines"):
        params_with({"study": {"variants": {"alone": {"frozen_generator": None, "overrides": {},
                                                       "policies": {"critic_fused": {}}}}}})
    with pytest.raises(ConfigError, match="overrides.model.n_layer: a variant with frozen_generator generator_only"):
        params_with({"study": {"variants": {"wider": {"frozen_generator": "generator_only",
                                                       "overrides": {"model": {"n_layer": 8}},
                                                       "policies": {"critic_fused": {}, **SAME_MODEL}}}}})
    with pytest.raises(ConfigError, match="not a registered policy"):
        params_with({"sample": {"policies": {"confidence": {}, "mine": {}}}})


def test_default_stream_is_unchanged_by_the_new_options():
    """The options draw after the defaults: a run without them sees the same masks and uniforms."""
    base = draw_noise(4, 8, "linear", 1e-3, torch.Generator().manual_seed(0), critic_section())
    more = draw_noise(4, 8, "linear", 1e-3, torch.Generator().manual_seed(0), critic_section(target="loo", fill_share=0.1),
                      n_chars=10, train=tiny_params(train={"self_correct": 0.2}).train)
    assert torch.equal(base.mask, more.mask) and torch.equal(base.uniform, more.uniform)
    assert more.fill_keep is not None and more.corrupt is not None
    assert not (more.corrupt & more.mask).any()  # only visible tokens are replaced


def test_self_correcting_generator_learns_the_clean_token_at_replaced_positions():
    params = tiny_params(train={"alpha": 0.0, "self_correct": 0.3})
    model = tiny_model()
    objective = DiffusionObjective(model, params.train, params.critic)
    clean = torch.randint(0, 10, (4, 8), generator=torch.Generator().manual_seed(1))
    noise = draw_noise(4, 8, "linear", 1e-3, torch.Generator().manual_seed(2), None, 10, params.train)
    assert noise.corrupt.any()
    shown = objective.generator_input(clean, noise)
    # replaced positions hold samples of a no-grad pass that had them masked; the rest is the masked window
    with torch.no_grad():
        hidden_input = clean.masked_fill(noise.mask | noise.corrupt, MASK)
        logits = model.lm_logits(model.body(hidden_input)[noise.corrupt])
    expected = sample_from_logits(logits.float(), noise.corrupt_uniform[noise.corrupt], 1.0)
    assert torch.equal(shown[noise.corrupt], expected)
    assert torch.equal(shown[~noise.corrupt], clean.masked_fill(noise.mask, MASK)[~noise.corrupt])
    scored = noise.mask | noise.corrupt
    out = objective(clean, noise, torch.tensor(0.0), {"masked": torch.tensor(float(scored.sum())),
                                                       "tokens": torch.tensor(32.0)})
    with torch.no_grad():
        reference = F.cross_entropy(model(shown, head="lm")[scored].float(), clean[scored])
    torch.testing.assert_close(out["loss_gen"], reference)


def test_self_planning_reads_committed_tokens_only_of_a_self_correcting_generator():
    trained = {"objective": "diffusion", "alpha": 0.0, "self_correct": 0.1}
    assert untrained_inputs("self_planning", trained, (0.7, 2.0)) == []
    with pytest.raises(ConfigError, match=r"self-correcting generator \(train.self_correct > 0"):
        require_trained("self_planning", {"objective": "diffusion", "alpha": 0.5}, (0.7, 2.0), "models/multitask")
    # its score is 1 - p(current token) of the fill pass, at committed tokens too; protected ones are never scored
    model = tiny_model(length=12)
    fixed = torch.full((3, 12), MASK)
    fixed[:, :3] = torch.tensor([1, 2, 3])
    protected = torch.zeros(3, 12, dtype=torch.bool)
    protected[:, :3] = True
    run = diffusion_generate(model, 3, 12, SamplerOptions(steps=4, policy="self_planning"),
                             seed=0, record_trajectory=True, known=Known(fixed, protected))
    for step in run.trajectory[:-1]:
        assert torch.isnan(step.scores[protected]).all()
        assert not torch.isnan(step.scores[~protected]).any()
        with torch.no_grad():
            logits = model(step.tokens.masked_fill(step.masked, MASK), head="lm").float()
        p = torch.softmax(logits.double(), -1).gather(-1, step.tokens.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(step.scores[~protected].double(), (1 - p)[~protected].float().double(),
                                   atol=1e-6, rtol=0)
    assert torch.equal(run.tokens[:, :3], fixed[:, :3])
    assert run.nfe == nfe_for("self_planning", 4) == 4


@pytest.mark.parametrize("policy", ["remdm_conf", "critic", "critic_fused", "self_planning"])
def test_committed_budget_keeps_the_fill_and_revisits_a_budget_of_committed_tokens(policy):
    model = tiny_model(length=16)
    fixed = torch.full((4, 16), MASK)
    fixed[:, 5] = 4
    protected = torch.zeros(4, 16, dtype=torch.bool)
    protected[:, 5] = True
    budget = 0.25
    run = diffusion_generate(model, 4, 16, SamplerOptions(steps=6, policy=policy, committed_budget=budget),
                             seed=1, record_trajectory=True, known=Known(fixed, protected))
    plain = diffusion_generate(model, 4, 16, SamplerOptions(steps=6, policy="confidence"),
                               seed=1, record_trajectory=True, known=Known(fixed, protected))
    assert run.nfe == nfe_for(policy, 6)  # exact, and no extra pass for the option
    assert torch.equal(run.tokens[:, 5], fixed[:, 5]) and not (run.tokens == MASK).any()
    for step, reference in zip(run.trajectory[:-1], plain.trajectory[:-1]):
        committed = ~protected & ~step.masked
        from_fill = (step.remasked & step.masked).sum(1)
        revisited = (step.remasked & committed).sum(1)
        # MaskGIT's count among the tokens just filled, as the plain schedule re-masks ...
        assert from_fill.tolist() == reference.remasked.sum(1).tolist()
        # ... plus round(eta * committed) committed tokens, never a protected one
        assert revisited.tolist() == [round(budget * int(n)) for n in committed.sum(1)]
        assert not (step.remasked & protected).any()
    with pytest.raises(ValueError, match="needs a policy whose candidates are all tokens"):
        diffusion_generate(model, 2, 16, SamplerOptions(steps=4, policy="confidence", committed_budget=0.1))


def test_committed_budget_zero_is_the_pool_of_the_tokens_just_filled():
    """eta = 0: only tokens just filled are re-masked (x-transformers' pool), in MaskGIT's numbers."""
    model = tiny_model(length=16)
    run = diffusion_generate(model, 4, 16, SamplerOptions(steps=5, policy="remdm_conf", committed_budget=0.0),
                             seed=2, record_trajectory=True)
    reference = diffusion_generate(model, 4, 16, SamplerOptions(steps=5, policy="confidence"),
                                   seed=2, record_trajectory=True)
    for step in run.trajectory[:-1]:
        assert not (step.remasked & ~step.masked).any()
    assert torch.equal(run.tokens, reference.tokens)  # 1 - p at fill = 1 - p now for the tokens just filled


# the targets the study's params left out for its 120 minutes (docs/architecture.md), as a user adds them back
LEFT_OUT_VARIANTS = {
    "loo": {"frozen_generator": None,
            "overrides": {"critic": {"target": "loo", "fill_share": 0.1, "rollout_share": 0.0, "replace_visible": 0.0}},
            "policies": {"critic_fused": {}, **SAME_MODEL}},
    "generated": {"frozen_generator": None,
                  "overrides": {"critic": {"target": "generated", "label_scope": "all", "rollout_share": 0.0,
                                           "replace_visible": 0.0}},
                  "policies": {"critic_fused": {}, **SAME_MODEL}},
}


@pytest.mark.parametrize("variant", ["loo", "generated", "self_correct"])
def test_a_study_variant_trains_from_scratch_and_records_what_it_was_trained_for(variant, tiny_data, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_params(train={"max_steps": 3, "eval_every": 3, "checkpoint_every": 3},
                         study={"variants": {**REPO_PARAMS.model_dump()["study"]["variants"], **LEFT_OUT_VARIANTS}})
    spec = study_run_spec(params, variant, load_meta(tiny_data))
    assert spec.out_dir.as_posix() == f"models/study/{variant}" and spec.init_from is None
    assert spec.optim.max_steps == params.train.max_steps  # the multitask run's steps, never a continuation
    from remask.train import train

    result = train(spec, tiny_data, progress=False)
    assert math.isfinite(result.metrics["gen_loss"])
    _, _, training = load_model(spec.out_dir, torch.device("cpu"))
    wanted = params.study.variants[variant]
    for row, rows_spec in wanted.policies.items():
        assert untrained_inputs(rows_spec.runs(row), training, (0.7, 2.0)) == [], (variant, row)
    if variant == "self_correct":
        assert training["self_correct"] == 0.1 and not get_policy("critic_fused").reads == "self_correction"
        assert untrained_inputs("critic_fused", training, (0.7, 2.0))  # no critic trained: refused
    else:
        assert training["critic"]["target"] == variant
        assert untrained_inputs("self_planning", training, (0.7, 2.0))  # no self-correction: refused


def test_generated_with_rollout_refills_the_least_confident_half_of_the_fills_and_labels_every_fill():
    """generated + rollout_share: the rows rolled out differ from the first fill only at filled
    positions, at most half of them; labels stay "written by the generator", and the rest is clean."""
    torch.manual_seed(0)
    model, clean = tiny_model(length=12), torch.randint(0, 10, (6, 12))
    cfg = critic_section(target="generated", label_scope="all", rollout_share=1.0)
    noise = draw_noise(6, 12, "linear", 1e-3, torch.Generator().manual_seed(3), cfg)
    fill_logits = model(clean.masked_fill(noise.mask, MASK))[noise.mask].float()
    rolled, labels = TARGETS["generated"](model, clean, noise, fill_logits, cfg)
    noise.rollout = None
    first, first_labels = TARGETS["generated"](model, clean, noise, fill_logits, cfg)
    assert torch.equal(labels, first_labels) and torch.equal(labels, noise.filled.float())
    changed = rolled != first
    assert not (changed & ~noise.filled).any() and changed.any()
    assert (changed.sum(1) <= torch.round(0.5 * noise.filled.sum(1))).all()
    assert torch.equal(rolled[~noise.mask], clean[~noise.mask])


def test_critic_blocks_are_registered_last_so_a_model_without_them_draws_the_same_weights():
    torch.manual_seed(0)
    plain = DiffusionTransformer(ModelConfig(vocab_size=11, mask_id=MASK, n_layer=1, n_head=2, n_embd=16, block_size=8))
    torch.manual_seed(0)
    deeper = DiffusionTransformer(ModelConfig(vocab_size=11, mask_id=MASK, n_layer=1, n_head=2, n_embd=16, block_size=8,
                                              critic_layers=1))
    extra = set(deeper.state_dict()) - set(plain.state_dict())
    assert extra and all(name.startswith("critic_blocks.") for name in extra)
    assert all(torch.equal(tensor, deeper.state_dict()[name]) for name, tensor in plain.state_dict().items())
    # the blocks sit between the body and the critic head only: the generator's logits are the same
    tokens = torch.randint(0, 10, (2, 8))
    assert torch.equal(plain(tokens, head="lm"), deeper(tokens, head="lm"))


@pytest.mark.parametrize("variant", ["posthoc_head", "posthoc_block"])
def test_a_post_hoc_critic_leaves_its_frozen_generator_unchanged(variant, tiny_data, tmp_path, monkeypatch):
    """The post-hoc family costs the generator nothing: every tensor but the critic's is the frozen
    generator's, byte for byte, so is the validation loss; the critic trained and is allowed to
    steer critic_fused."""
    from remask.checkpoint import read_weights
    from remask.train import run_spec, train

    monkeypatch.chdir(tmp_path)
    params = tiny_params()
    meta = load_meta(tiny_data)
    generator = train(run_spec(params, "generator_only", meta), tiny_data, progress=False)
    spec = study_run_spec(params, variant, meta)
    assert spec.frozen_generator and spec.init_from.as_posix() == "models/generator_only"
    posthoc = train(spec, tiny_data, progress=False)
    assert posthoc.metrics["gen_loss"] == generator.metrics["gen_loss"]
    before, after = read_weights(Path("models/generator_only/model.safetensors")), read_weights(spec.out_dir / "model.safetensors")
    critic = [name for name in after if name.startswith(("critic_head.", "critic_blocks."))]
    assert all(torch.equal(after[name], before[name]) for name in after if name not in critic)
    assert any(name not in before or not torch.equal(after[name], before[name]) for name in critic)
    assert any(name.startswith("critic_blocks.") for name in critic) == (variant == "posthoc_block")
    _, _, training = load_model(spec.out_dir, torch.device("cpu"))
    assert training["frozen_generator"] == "models/generator_only"
    assert untrained_inputs("critic_fused", training, (0.7, 2.0)) == []
