import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_params
from remask.train import run_spec
from remask import checkpoint
from remask.data import load_meta
from remask.model import DiffusionTransformer, ModelConfig
from remask.critic_targets import critic_batch, rollout_refill
from remask.noise import DiffusionNoise, draw_noise, evenly_spaced_rows
from remask.objectives import DiffusionObjective
from remask.drawing import sample_from_logits
from remask.train import learning_rate, train

REPO = Path(__file__).resolve().parents[1]

# The seed's critic without levers (the defaults draw per-sequence temperatures and re-mask part of the
# critic's input): the hand computations below check the plain target, then one lever at a time.
NO_LEVERS = {"sample_temperature": 1.0, "sample_temperature_spread": 0.0, "input": "filled"}


def spec_for(params, variant, tiny_data, tmp_path):
    return run_spec(params, variant, load_meta(tiny_data), tmp_path / "models", tmp_path / "results")


def test_critic_target_on_hand_made_example():
    clean = torch.tensor([[1, 2, 3, 4, 5]])
    masked = torch.tensor([[False, True, True, False, True]])
    sample = torch.tensor([[9, 2, 7, 9, 5]])  # differs from clean at visible positions 0 and 3
    critic_input, target = critic_batch(clean, masked, sample)
    assert critic_input.tolist() == [[1, 2, 7, 4, 5]]
    # visible positions keep their clean token and are never errors (the -100 label trap)
    assert target.tolist() == [[0.0, 0.0, 1.0, 0.0, 0.0]]


def test_float64_sampler_follows_the_distribution():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1])).expand(20000, 3)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    counts = torch.bincount(sample_from_logits(logits, u, 1.0), minlength=3).double() / 20000
    torch.testing.assert_close(counts, torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), atol=0.015, rtol=0)


@pytest.mark.parametrize("scope", ["filled", "all"])
def test_label_scope_is_honoured(scope):
    params = tiny_params(critic={**NO_LEVERS, "label_scope": scope})
    torch.manual_seed(0)
    model = DiffusionTransformer(ModelConfig(vocab_size=11, mask_id=10, n_layer=1, n_head=2, n_embd=16, block_size=8))
    objective = DiffusionObjective(model, params.train, params.critic)
    clean = torch.randint(0, 10, (4, 8))
    noise = DiffusionNoise(torch.full((4,), 0.5), torch.rand(4, 8) < 0.5, torch.rand(4, 8, dtype=torch.float64))
    norm = {"masked": float(noise.mask.sum()), "tokens": float(noise.mask.numel()),
            "critic": float(noise.critic_scope(scope).sum())}
    out = objective(clean, noise, alpha=1.0, norm=norm)
    with torch.no_grad():
        logits = model(clean.masked_fill(noise.mask, 10))
        critic_input, target = critic_batch(clean, noise.mask, sample_from_logits(logits, noise.uniform, 1.0))
        bce = F.binary_cross_entropy_with_logits(model(critic_input, head="critic"), target, reduction="none")
    expected = bce[noise.mask].mean() if scope == "filled" else bce.mean()
    torch.testing.assert_close(out["loss_critic"], expected)
    torch.testing.assert_close(out["loss"], out["loss_gen"] + out["loss_critic"])


def test_critic_levers_build_the_input_and_labels_they_promise():
    """replace_visible swaps visible tokens (labelled errors when they differ), input=partial masks
    some of the filled sequence again (no label there), pos_weight weights the error class."""
    params = tiny_params(critic={"replace_visible": 0.3, "input": "partial", "pos_weight": 3.0,
                                 "sample_temperature_spread": 1.0, "row_share": 1.0})
    noise = draw_noise(6, 8, "linear", 1e-3, torch.Generator().manual_seed(0), params.critic, n_chars=10)
    assert noise.replace is not None and not (noise.replace & noise.mask).any()  # only visible tokens
    assert ((noise.temperature >= 1.0) & (noise.temperature <= 2.0)).all()
    scope = noise.critic_scope("filled")
    assert torch.equal(scope, (noise.mask | noise.replace) & ~noise.remask)
    torch.manual_seed(0)
    model = DiffusionTransformer(ModelConfig(vocab_size=11, mask_id=10, n_layer=1, n_head=2, n_embd=16, block_size=8))
    clean = torch.randint(0, 10, (6, 8))
    objective = DiffusionObjective(model, params.train, params.critic)
    norm = {"masked": float(noise.mask.sum()), "tokens": 48.0, "critic": float(scope.sum())}
    out = objective(clean, noise, alpha=1.0, norm=norm)
    with torch.no_grad():
        logits = model(clean.masked_fill(noise.mask, 10))
        sample = sample_from_logits(logits, noise.uniform, noise.temperature[:, None, None])
        shown, _ = critic_batch(clean, noise.mask, sample)
        shown = torch.where(noise.replace, noise.replacement, shown)
        target = (shown != clean).float()
        critic_logits = model(shown.masked_fill(noise.remask, 10), head="critic")
        bce = F.binary_cross_entropy_with_logits(critic_logits, target, reduction="none", pos_weight=torch.tensor(3.0))
    torch.testing.assert_close(out["loss_critic"], bce[scope].mean())
    assert target[noise.replace & (noise.replacement != clean)].eq(1).all()


def test_rollout_lever_shows_the_critic_a_two_step_confidence_state():
    """rollout_share: for the chosen sequences, the least confident half of the first fill is masked
    again and refilled in a second pass that sees the kept tokens; labels follow the final tokens."""
    params = tiny_params(critic={**NO_LEVERS, "rollout_share": 1.0, "row_share": 1.0})
    noise = draw_noise(6, 8, "linear", 1e-3, torch.Generator().manual_seed(1), params.critic, n_chars=10)
    assert noise.rollout.all() and noise.uniform_refill.shape == (6, 8)
    torch.manual_seed(0)
    model = DiffusionTransformer(ModelConfig(vocab_size=11, mask_id=10, n_layer=1, n_head=2, n_embd=16, block_size=8))
    clean = torch.randint(0, 10, (6, 8))
    with torch.no_grad():
        logits = model(clean.masked_fill(noise.mask, 10))
        sample = sample_from_logits(logits, noise.uniform, 1.0)
        first, _ = critic_batch(clean, noise.mask, sample)
        p = torch.softmax(logits.double(), -1).gather(-1, sample.unsqueeze(-1)).squeeze(-1)
        shown = rollout_refill(model, first, noise.mask, p, noise.uniform_refill, 1.0)
    changed = shown != first
    assert not (changed & ~noise.mask).any()  # visible tokens are never touched
    for row in range(6):  # only the least confident half of the filled tokens may change
        filled = noise.mask[row].nonzero().squeeze(1)
        kept = filled[(1 - p[row, filled]).argsort(descending=True, stable=True)[round(0.5 * len(filled)):]]
        assert not changed[row, kept].any()
    scope = noise.critic_scope("filled")
    objective = DiffusionObjective(model, params.train, params.critic)
    norm = {"masked": float(noise.mask.sum()), "tokens": 48.0, "critic": float(scope.sum())}
    out = objective(clean, noise, alpha=1.0, norm=norm)
    with torch.no_grad():
        bce = F.binary_cross_entropy_with_logits(model(shown, head="critic"), (shown != clean).float(), reduction="none")
    torch.testing.assert_close(out["loss_critic"], bce[scope].mean())


def test_row_share_trains_the_critic_on_evenly_spaced_rows_only():
    """critic.row_share: the critic pass sees only every other sequence (at 0.5), chosen without
    drawing randomness, and its loss is the hand computation on those rows."""
    assert evenly_spaced_rows(4, 0.5).tolist() == [False, True, False, True]
    assert evenly_spaced_rows(5, 1.0).all() and int(evenly_spaced_rows(10, 0.3).sum()) == 3
    half, full = (tiny_params(critic={**NO_LEVERS, "row_share": share}).critic for share in (0.5, 1.0))
    noise = draw_noise(6, 8, "linear", 1e-3, torch.Generator().manual_seed(2), half, n_chars=10)
    same = draw_noise(6, 8, "linear", 1e-3, torch.Generator().manual_seed(2), full, n_chars=10)
    assert torch.equal(noise.mask, same.mask) and torch.equal(noise.uniform, same.uniform) and same.critic_rows is None
    rows = noise.critic_rows
    assert rows.tolist() == [False, True, False, True, False, True]
    torch.manual_seed(0)
    model = DiffusionTransformer(ModelConfig(vocab_size=11, mask_id=10, n_layer=1, n_head=2, n_embd=16, block_size=8))
    clean = torch.randint(0, 10, (6, 8))
    scope = noise.critic_view().critic_scope("filled")
    norm = {"masked": float(noise.mask.sum()), "tokens": 48.0, "critic": float(scope.sum())}
    out = DiffusionObjective(model, tiny_params().train, half)(clean, noise, alpha=1.0, norm=norm)
    with torch.no_grad():
        logits = model(clean.masked_fill(noise.mask, 10))
        sample = sample_from_logits(logits, noise.uniform, 1.0)
        shown, target = critic_batch(clean[rows], noise.mask[rows], sample[rows])
        bce = F.binary_cross_entropy_with_logits(model(shown, head="critic"), target, reduction="none")
    torch.testing.assert_close(out["loss_critic"], bce[noise.mask[rows]].mean())


def test_a_critic_without_levers_draws_no_extra_noise():
    """A run without the levers draws exactly the randomness it always drew (same stream, same results)."""
    a = draw_noise(4, 8, "linear", 1e-3, torch.Generator().manual_seed(0), tiny_params(critic=NO_LEVERS).critic,
                   n_chars=10)
    b = draw_noise(4, 8, "linear", 1e-3, torch.Generator().manual_seed(0))
    assert a.temperature is a.replace is a.remask is a.rollout is a.uniform_refill is None
    assert torch.equal(a.mask, b.mask) and torch.equal(a.uniform, b.uniform)


def test_lr_schedule_warms_up_and_decays():
    cfg = tiny_params().train
    assert learning_rate(0, cfg) == pytest.approx(cfg.lr / cfg.warmup_steps)
    assert learning_rate(cfg.warmup_steps, cfg) == pytest.approx(cfg.lr)
    assert learning_rate(cfg.max_steps, cfg) == pytest.approx(cfg.min_lr)


def test_loss_falls_and_checkpoint_round_trips(tiny_data, tmp_path):
    params = tiny_params(train={"max_steps": 40, "eval_every": 40, "lr": 1e-2})
    spec = spec_for(params, "multitask", tiny_data, tmp_path)
    first = train(spec.__class__(**{**spec.__dict__, "optim": spec.optim.model_copy(update={"max_steps": 1})}),
                  tiny_data, progress=False)
    result = train(spec, tiny_data, progress=False)
    assert result.metrics["gen_loss"] < first.metrics["gen_loss"] - 0.3
    for name in ("model.safetensors", "config.json", "train_state.pt"):
        assert (spec.out_dir / name).is_file()
    assert (spec.live_dir / "metrics.json").is_file()
    model, tok, info = checkpoint.load_model(spec.out_dir)
    assert info["step"] == 40 and info["variant"] == "multitask"
    assert model.lm_head.weight is model.wte.weight
    state = checkpoint.load_train_state(spec.out_dir / "train_state.pt")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state["model"][name], rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["multitask", "generator_only", "judge"])
def test_resume_equals_uninterrupted(tiny_data, tmp_path, variant):
    params = tiny_params()
    whole = spec_for(params, variant, tiny_data, tmp_path / "whole")
    train(whole, tiny_data, progress=False)
    parts = spec_for(params, variant, tiny_data, tmp_path / "parts")
    first = train(parts, tiny_data, stop_after=5, progress=False)  # checkpoint at 4 and at 5
    assert first.step == 5
    second = train(parts, tiny_data, progress=False)
    assert second.resumed_from == 5
    a = checkpoint.load_train_state(whole.out_dir / "train_state.pt")["model"]
    b = checkpoint.load_train_state(parts.out_dir / "train_state.pt")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_changed_settings_do_not_resume(tiny_data, tmp_path):
    spec = spec_for(tiny_params(), "multitask", tiny_data, tmp_path)
    train(spec, tiny_data, stop_after=4, progress=False)
    other = spec_for(tiny_params(train={"alpha": 1.0}), "multitask", tiny_data, tmp_path)
    assert train(other, tiny_data, progress=False).resumed_from is None


def test_generator_only_has_no_critic_loss(tiny_data, tmp_path):
    spec = spec_for(tiny_params(), "generator_only", tiny_data, tmp_path)
    assert spec.alpha == 0
    train(spec, tiny_data, progress=False)
    assert not (spec.live_dir / "plots" / "metrics" / "train" / "loss_critic.tsv").exists()
    assert (spec.live_dir / "plots" / "metrics" / "train" / "loss_gen.tsv").exists()


@pytest.mark.slow  # two torchrun processes: make test-slow
def test_ddp_two_processes_match_one(tiny_data, tmp_path):
    """torchrun with 2 CPU (gloo) processes and the same global batch gives the same weights."""
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(REPO / 'tests')!r}, {str(REPO)!r}]\n"
        "from pathlib import Path\n"
        "from conftest import tiny_params\n"
        "from remask.train import run_spec\n"
        "from remask.data import load_meta\n"
        "from remask.train import train\n"
        "out = Path(sys.argv[1]); data = Path(sys.argv[2])\n"
        "spec = run_spec(tiny_params(), 'multitask', load_meta(data), out / 'models', out / 'results')\n"
        "train(spec, data, progress=False)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), str(tiny_data)],
                            cwd=REPO, env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path / "two"), str(tiny_data)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    a = checkpoint.load_train_state(tmp_path / "one" / "models" / "multitask" / "train_state.pt")["model"]
    b = checkpoint.load_train_state(tmp_path / "two" / "models" / "multitask" / "train_state.pt")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


def _compile_unavailable() -> str | None:
    """Why ``torch.compile`` cannot run here, or None when it can."""
    try:
        torch._dynamo.reset()
        torch.compile(lambda x: x * 2, backend="eager")(torch.ones(2))
    except Exception as exc:  # noqa: BLE001 - any failure means the check cannot run here
        return f"torch.compile is unavailable here: {type(exc).__name__}: {exc}"
    return None


@pytest.mark.skipif(_compile_unavailable() is not None, reason=str(_compile_unavailable()))
def test_compiled_training_compiles_a_bounded_number_of_times(tiny_data, tmp_path, monkeypatch):
    """With ``train.compile``, alpha (warming up) and the loss normalisers change every step; as
    tensors they cost no recompile, so 12 steps compile no more graphs than 4 (the count is taken
    by a backend that only counts, so the check needs no C++ toolchain and runs in seconds)."""
    compiled = {"graphs": 0}

    def counting_backend(graph_module, example_inputs):
        compiled["graphs"] += 1
        return graph_module.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module: real_compile(module, backend=counting_backend))
    counts = {}
    for steps in (4, 12):
        torch._dynamo.reset()
        compiled["graphs"] = 0
        params = tiny_params(train={"compile": True, "max_steps": steps, "alpha_warmup_steps": 12, "eval_every": 100,
                                    "checkpoint_every": 100})
        train(spec_for(params, "multitask", tiny_data, tmp_path / str(steps)), tiny_data, progress=False)
        counts[steps] = compiled["graphs"]
    assert 0 < counts[12] == counts[4] <= 32, counts  # graph breaks (boolean indexing) make several graphs
