"""The same params on the same machine give byte-identical results: two tiny pipelines from scratch.

In the slow tier (``make test-slow``, which CI runs after ``make test``). It
reproduces every stage with randomness of its own (data split, three trainings, error detection,
sampling); the summary's bootstrap is seeded and tested in tests/test_metrics.py.
"""

from pathlib import Path

import pytest

from test_pipeline import dvc, make_project

pytestmark = pytest.mark.slow  # two pipelines from scratch: make test-slow

STAGES = ("evaluate_critic", "train_generator_only", "train_judge", "sample@critic", "sample_judge")
COMPARED = ["data/prepared/stats.json", "results/train/multitask/metrics.json",
            "results/train/generator_only/metrics.json", "results/train/judge/metrics.json",
            "results/evaluate_critic/metrics.json", "results/samples/critic.jsonl", "results/samples/judge.jsonl"]


def test_two_pipelines_from_scratch_give_identical_results(tmp_path):
    first, again = make_project(tmp_path / "first"), make_project(tmp_path / "again")
    for project in (first, again):
        result = dvc(project, "repro", *STAGES)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for path in map(Path, COMPARED):
        assert (first / path).read_bytes() == (again / path).read_bytes(), path
