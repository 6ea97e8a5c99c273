"""The shape of the code, checked: where each concept lives, so that a change reruns and touches
only what it should (docs/architecture.md says why)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from test_dvc_stages import imports_of

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "src" / "remask").glob("*.py"), *(REPO / "pipeline").glob("*.py")])
MAX_PARAMETERS = 8


def stage_definitions() -> list[tuple[str, dict]]:
    out = []
    for pipeline in (REPO / "dvc.yaml", REPO / "study" / "dvc.yaml"):
        for name, stage in yaml.safe_load(pipeline.read_text())["stages"].items():
            out.append((name, stage.get("do", stage)))
    return out


TRAINING = [(name, stage) for name, stage in stage_definitions()
            if any(entry in stage["cmd"] for entry in ("pipeline.train", "pipeline.peer_train", "pipeline.ablate_train"))]


def test_the_training_stages_are_found():
    assert {name for name, _ in TRAINING} >= {"train_multitask", "train_generator_only", "train_judge", "study_train",
                                              "study_peer_train", "ablate_train"}


@pytest.mark.parametrize("name,stage", TRAINING, ids=[name for name, _ in TRAINING])
def test_editing_a_policy_or_the_sampler_reruns_no_training_stage(name, stage):
    """Training draws through remask.drawing, the leaf: a re-masking rule is a sampling matter."""
    deps = {Path(d).name for d in stage["deps"]}
    assert "drawing.py" in deps or name == "study_peer_train"
    assert not deps & {"policies.py", "sampling.py", "tuning.py", "records.py"}, name


def test_the_drawing_leaf_imports_nothing_of_this_project():
    names = imports_of((REPO / "src" / "remask" / "drawing.py").read_text())
    assert not [n for n in names if n.startswith(("remask", "pipeline"))]


def test_no_stage_imports_another_stage():
    """Stages share code through pipeline/_common.py, _rows.py, _sampling.py, _scoring.py and the library, never
    through each other."""
    for path in (REPO / "pipeline").glob("*.py"):
        stages = {n for n in imports_of(path.read_text()) if n.startswith("pipeline.")}
        assert {n.split(".")[1] for n in stages} <= {"_common", "_rows", "_sampling", "_scoring"}, f"{path.name} imports {sorted(stages)}"


def parameter_counts() -> list[tuple[str, int]]:
    counts = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
                count = len(names) - (names[:1] in (["self"], ["cls"]))
                counts.append((f"{path.relative_to(REPO)}:{node.lineno} {node.name}", count))
    return counts


def test_no_function_takes_more_than_eight_parameters():
    """Options travel as typed dataclasses (SamplerOptions, RowPlan, Search, SummaryInputs...)."""
    counts = parameter_counts()
    assert len(counts) > 200  # the walk saw the code
    assert [(f, n) for f, n in counts if n > MAX_PARAMETERS] == []
