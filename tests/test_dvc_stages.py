"""DVC as its authors intend: every stage depends on each module it runs, and on nothing it does not read.

The modules a stage runs are found by following the imports (``ast``, no execution) from its
``python -m pipeline.<name>`` entry point, and for a notebook stage from the notebook's code cells
too, through ``pipeline/`` and ``src/remask/``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PIPELINES = [REPO / "dvc.yaml", REPO / "study" / "dvc.yaml", REPO / "scale" / "dvc.yaml"]
PACKAGES = {"pipeline": REPO / "pipeline", "remask": REPO / "src" / "remask"}


def module_file(name: str) -> Path | None:
    """``pipeline.x`` / ``remask.x`` -> its file in this repository (None for anything else)."""
    top, _, rest = name.partition(".")
    if top not in PACKAGES or not rest:
        return None
    path = PACKAGES[top] / (rest.replace(".", "/") + ".py")
    return path if path.is_file() else None


def imports_of(source: str) -> set[str]:
    """Names imported when ``source`` runs (imports under ``if TYPE_CHECKING:`` never run)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return names


def closure(sources: list[str]) -> set[Path]:
    """Every module file of this repository that running ``sources`` imports, transitively."""
    seen: set[Path] = set()
    todo = [name for source in sources for name in imports_of(source)]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += imports_of(path.read_text())
    return seen


def stages() -> list[tuple[str, dict, Path]]:
    out = []
    for pipeline in PIPELINES:
        for name, stage in yaml.safe_load(pipeline.read_text())["stages"].items():
            out.append((name, stage.get("do", stage), pipeline))
    return out


def run_modules(stage: dict) -> set[Path]:
    cmd = stage["cmd"]
    entry = re.search(r"(?:python|\$\{scale\.launcher\}) -m (pipeline\.\w+)", cmd).group(1)
    sources = [module_file(entry).read_text()]
    notebook = re.search(r"--name (\w+)", cmd)
    if entry == "pipeline.notebook" and notebook:
        nb = nbformat.read(REPO / "notebooks" / f"{notebook.group(1)}.ipynb", as_version=4)
        sources += [cell.source for cell in nb.cells if cell.cell_type == "code"]
    return {module_file(entry)} | closure(sources)


@pytest.mark.parametrize("name,stage,pipeline", stages(), ids=[s[0] for s in stages()])
def test_stage_depends_on_every_module_it_runs(name, stage, pipeline):
    wdir = (pipeline.parent / stage.get("wdir", ".")).resolve()
    deps = {(wdir / d).resolve() for d in stage["deps"]}
    code_deps = {d for d in deps if d.suffix == ".py"}
    needed = {p.resolve() for p in run_modules(stage) if p.name != "__init__.py"}
    missing = sorted(str(p.relative_to(REPO)) for p in needed - code_deps)
    unused = sorted(str(p.relative_to(REPO)) for p in code_deps - needed)
    assert not missing, f"{name}: runs {missing} but does not depend on them"
    assert not unused, f"{name}: depends on {unused} but never runs them"


def test_the_scale_matrices_name_the_points_and_models_of_params():
    """scale/dvc.yaml's matrices run over scale.points (a preset names its own) and list scale.models
    by name: every point is trained and sampled, and each model by the stage that can train it."""
    from remask.config import load_params

    axis = load_params(REPO / "params.yaml").scale
    matrices = {name: stage["matrix"] for name, stage in yaml.safe_load((REPO / "scale" / "dvc.yaml").read_text())["stages"].items()
                if "matrix" in stage}
    assert all(m["point"] == "${scale.points}" for m in matrices.values())
    frozen = [name for name, model in axis.models.items() if model.frozen_generator]
    assert matrices["scale_train"]["model"] == [name for name in axis.models if name not in frozen]
    assert matrices["scale_train_posthoc"]["model"] == frozen
    assert matrices["scale_sample"]["model"] == list(axis.models)
    ceiling = yaml.safe_load((REPO / "scale" / "dvc.yaml").read_text())["stages"]["scale_ceiling"]
    assert set(matrices["scale_ceiling"]) == {"point"} and "--ceiling" in ceiling["cmd"]  # on scale.ceiling.model:
    assert "models/scale/${item.point}/${scale.ceiling.model}" in ceiling["deps"]
    assert [next(iter(o)) if isinstance(o, dict) else o for o in ceiling["outs"] + ceiling["metrics"]] == [
        f"results/scale/samples/${{item.point}}/ceiling/{name}" for name in ("samples.jsonl", "tuning.json")]  # CEILING
