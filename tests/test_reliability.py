"""Faults and bad input: each must give a clear error or a correct result, never lose work."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO_PARAMS, TINY_MODEL, TINY_OPTIM, params_with, tiny_params, write_params
from remask.train import run_spec
from remask import checkpoint
from remask.config import ConfigError, Params
from remask.data import load_meta
from remask.objectives import DiffusionObjective
from remask.train import TrainingError, train

REPO = Path(__file__).resolve().parents[1]


def _project(root: Path, tiny_data: Path, max_steps: int) -> Path:
    shutil.copytree(tiny_data, root / "data" / "prepared")
    params = {"model": TINY_MODEL, "train": dict(TINY_OPTIM, max_steps=max_steps, checkpoint_every=10, eval_every=50)}
    write_params(root / "params.yaml", params)
    return root


def _train_cmd(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipeline.train", "--model", "multitask"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # two training processes, one killed: make test-slow
def test_sigkill_then_rerun_resumes_to_identical_weights(tiny_data, tmp_path):
    steps = 400
    whole = _project(tmp_path / "whole", tiny_data, steps)
    killed = _project(tmp_path / "killed", tiny_data, steps)
    assert _train_cmd(whole).wait(timeout=600) == 0
    proc = _train_cmd(killed)
    state = killed / "models" / "multitask" / "train_state.pt"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.7)  # somewhere after the first checkpoint
    assert proc.poll() is None, "training ended before it could be killed; raise max_steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = checkpoint.load_train_state(state)["step"]  # the file is whole, never half-written
    assert 0 < interrupted_at < steps
    rerun = _train_cmd(killed)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert f"resuming from models/multitask/train_state.pt at step {interrupted_at}" in out
    a = checkpoint.load_train_state(whole / "models/multitask/train_state.pt")["model"]
    b = checkpoint.load_train_state(state)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert not list((killed / "models/multitask").glob(".*.tmp"))


def test_non_finite_loss_stops_with_step_and_keeps_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    spec = run_spec(tiny_params(), "multitask", load_meta(tiny_data), tmp_path / "models", tmp_path / "results")
    original = DiffusionObjective.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 7:  # the 7th step (index 6) goes non-finite
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(DiffusionObjective, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"loss is nan at step 6; stopping\. The last good checkpoint"):
        train(spec, tiny_data, progress=False)
    state = checkpoint.load_train_state(spec.out_dir / "train_state.pt")
    assert state["step"] == 4  # checkpoint_every = 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())


# ---------------------------------------------------------------------------------------------
# params.yaml, property-based

# (lowest, is the lowest allowed, highest, is the highest allowed); None: unbounded
BOUNDED = {
    ("train", "alpha"): (0.0, True, None, False),
    ("train", "lr"): (0.0, False, 1.0, True),
    ("train", "mask_eps"): (0.0, False, 1.0, False),
    ("critic", "sample_temperature"): (0.0, False, None, False),
    ("data", "val_fraction"): (0.0, False, 0.5, False),
    ("evaluate_samples", "confidence_level"): (0.5, False, 1.0, False),
}


def _inside(value, low, low_ok, high, high_ok):
    above = value > low or (low_ok and value == low)
    below = high is None or value < high or (high_ok and value == high)
    return above and below


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(BOUNDED)),
       value=st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, 0.5, 1.0, -0.0, 1e-300])))
def test_float_keys_accept_in_range_and_name_key_otherwise(key, value):
    section, name = key
    extra = {"min_lr": 0.0} if key == ("train", "lr") else {}
    raw = {section: {name: value, **extra}}
    if _inside(value, *BOUNDED[key]):
        assert getattr(getattr(params_with(raw), section), name) == value
    else:
        with pytest.raises(ConfigError, match=rf"{section}\.{name} must be"):
            params_with(raw)


INT_KEYS = [("train", "batch_size", 1), ("train", "max_steps", 1), ("model", "n_layer", 1),
            ("sample", "num_samples", 2), ("evaluate_critic", "rollout_steps", 2)]


@settings(max_examples=60, deadline=None)
@given(which=st.sampled_from(INT_KEYS), value=st.integers(min_value=-10**6, max_value=10**6))
def test_integer_keys(which, value):
    section, name, low = which
    raw = {section: {name: value}}
    if value >= low and not (name == "n_layer" and value > 64):
        assert getattr(getattr(params_with(raw), section), name) == value
    else:
        with pytest.raises(ConfigError, match=rf"{section}\.{name} must be"):
            params_with(raw)


@settings(max_examples=60, deadline=None)
@given(section=st.sampled_from(sorted(Params.model_fields)),
       value=st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=2), st.booleans(), st.none()))
def test_wrong_types_and_unknown_keys_name_the_key(section, value):
    first = next(iter(type(getattr(REPO_PARAMS, section)).model_fields))
    default = getattr(getattr(REPO_PARAMS, section), first)
    if type(value) is type(default) or (isinstance(default, float) and type(value) is int):
        return  # a value of the right type; covered by the tests above
    with pytest.raises(ConfigError, match=rf"{section}\.{first}"):
        params_with({section: {first: value}})
    with pytest.raises(ConfigError, match=rf"{section}\.not_a_key is not a known key"):
        params_with({section: {"not_a_key": 1}})


def test_reliability_table_names_real_tests():
    """docs/reliability.md names the test behind each row; every one must exist in the suite."""
    table = (REPO / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", table))
    assert len(named) >= 25
    for module, test in sorted(named):
        source = (REPO / "tests" / module).read_text()
        assert re.search(rf"^def {test}\(", source, re.MULTILINE), f"{module}::{test} named in docs/reliability.md"
