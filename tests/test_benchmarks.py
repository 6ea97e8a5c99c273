"""The benchmarks run and end with the JSON line their docstrings promise (figures are not judged here)."""

import json
import os
import subprocess
import sys
from pathlib import Path


from conftest import TINY_MODEL, write_params
from remask.policies import POLICIES, get_policy

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(tmp_path: Path, script: str, *args: str) -> dict:
    params = write_params(tmp_path / "params.yaml", {"model": TINY_MODEL, "train": {"batch_size": 4, "device": "cpu"},
                                                     "sample": {"length": 16, "batch_size": 4, "device": "cpu"}})
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--params", str(params), *args],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_train_step_benchmark_reports_its_figures(tmp_path):
    figures = run_benchmark(tmp_path, "train_step.py", "--steps", "2", "--rounds", "1", "--vocab", "11", "--profile")
    breakdown = figures.pop("breakdown")
    assert set(figures) == {"gen_only_tokens_per_s", "multitask_tokens_per_s", "ratio", "achieved_gflops",
                            "matmul_peak_gflops", "peak_share"}
    assert all(value > 0 for value in figures.values())
    assert "matmul" in breakdown and abs(sum(breakdown.values()) - 1) < 1e-3
    assert breakdown["rotary (complex multiply)"] > 0  # told apart from other multiplies by the rotation table


def test_sample_benchmark_is_keyed_by_policy(tmp_path):
    figures = run_benchmark(tmp_path, "sample.py", "--synthetic", "--vocab", "11", "--nfe", "4", "--num-samples", "4",
                            "--batch-sizes", "1", "2", "--repeats", "1")
    assert set(figures) == set(POLICIES)
    for policy, row in figures.items():
        assert row["samples_per_s"] > 0 and row["equal_steps"]["steps"] == 4
        assert row["nfe"] <= 4 or get_policy(policy).per_position  # the oracle runs at equal steps
    assert figures["oracle_loo"]["nfe"] == 4 + 3 * 16  # 16 characters: one extra pass per position per step
    assert set(figures["confidence"]["batch_scaling"]) == {"1", "2"}
    assert figures["critic"]["steps"] == 2 and figures["critic"]["equal_steps"]["nfe"] == 7
