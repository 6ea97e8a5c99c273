"""DVC stages ``notebook_0N`` (and the study's ``study_notebook_04``): execute a notebook template with
papermill, export it to HTML.

``notebooks/<name>.ipynb`` is executed on the ``python3`` kernel in the repository root with
parameters from the ``notebooks`` section of ``params.yaml`` (passed as Python values through
papermill's API, so booleans and numbers keep their types). It writes
``reports/<name>.ipynb``, ``reports/<name>.html`` and the figures ``reports/figures/<name>/*.png``.

The same results give the same report, byte for byte: what differs from run to run (papermill's
clock times and temporary output path, the kernel's execution timestamps, the injected
parameters cell's random id) is taken out of the executed notebook before it is written.

A failing cell fails the stage: the error names the cell, the partly executed notebook is kept
as ``reports/<name>.failed.ipynb`` for inspection, and no figure of the failed run is left in
``reports/figures/<name>``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nbformat
import papermill
from nbconvert import HTMLExporter

from pipeline._common import run_stage, samples_dir, tier_results
from remask.atomic import atomic_path, write_text
from remask.config import TIERS, ConfigError, Params

TEMPLATES = Path("notebooks")
REPORTS = Path("reports")
KERNEL = "python3"


CLOCK = ("start_time", "end_time", "duration")  # papermill's per-run times, in the notebook's and each cell's metadata
STUDY_NOTEBOOK = "04_policy_comparison"  # the one notebook the study tier executes again, on its own results


def reports_dir(tier: str) -> Path:
    return REPORTS if tier == "quick" else REPORTS / "study"


def notebook_parameters(name: str, params: Params, tier: str = "quick") -> dict:
    """The papermill parameters of notebook ``name`` (each notebook declares its own defaults)."""
    nb = params.notebooks
    per_notebook = {
        "01_masked_diffusion_and_the_heuristic": {"num_examples": nb.num_examples, "steps": nb.steps,
                                                  "length": params.sample.length,
                                                  "sampler": params.sample.sampler_options()},
        "02_training_the_critic": {},
        "03_critic_as_error_detector": {"passage_length": nb.passage_length},
        "04_policy_comparison": {"num_examples": nb.num_examples, "nfe": nb.nfe, "length": params.sample.length,
                                 "sampler": params.sample.sampler_options()},
        "05_scale_axis": {"scale_dir": "results/scale"},  # the scale axis (scale/dvc.yaml's scale_notebook)
    }
    if name not in per_notebook:
        raise ConfigError(f"--name {name!r}: valid notebooks are {', '.join(per_notebook)}")
    tier_paths = {}
    if tier == "study":
        if name != STUDY_NOTEBOOK:
            raise ConfigError(f"--tier study: only {STUDY_NOTEBOOK} has a study version, not {name}")
        results = tier_results(tier)
        tier_paths = {"eval_dir": str(results / "evaluate_samples"), "samples_dir": str(samples_dir(tier)),
                      "summary_path": str(results / "summary.md")}
    figures = reports_dir(tier) / "figures" / name
    return {"project_dir": ".", "figures_dir": str(figures), "seed": nb.seed, **per_notebook[name], **tier_paths}


def without_run_details(executed: nbformat.NotebookNode, output_path: Path) -> nbformat.NotebookNode:
    """``executed`` without what changes from one run of the same notebook on the same results to
    the next: clock times, the temporary file papermill wrote to (named ``output_path`` instead) and
    the injected parameters cell's random id."""
    run = executed.metadata.get("papermill", {})
    for key in CLOCK:
        run.pop(key, None)
    if "output_path" in run:
        run["output_path"] = str(output_path)
    for cell in executed.cells:
        cell.metadata.pop("execution", None)
        for key in CLOCK:
            cell.metadata.get("papermill", {}).pop(key, None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"
    return executed


def execute(name: str, parameters: dict, timeout: int, reports: Path = REPORTS) -> None:
    """Run the template with papermill into ``reports/<name>.ipynb`` and export it to HTML."""
    template = TEMPLATES / f"{name}.ipynb"
    if not template.is_file():
        raise ConfigError(f"{template}: notebook template not found")
    figures = Path(parameters["figures_dir"])
    failed = reports / f"{name}.failed.ipynb"
    shutil.rmtree(figures, ignore_errors=True)
    failed.unlink(missing_ok=True)
    with atomic_path(reports / f"{name}.ipynb") as executed:
        try:
            papermill.execute_notebook(
                str(template), str(executed), parameters=parameters, kernel_name=KERNEL, cwd=".",
                execution_timeout=timeout, progress_bar=sys.stderr.isatty(), log_output=False,
            )
        except papermill.PapermillExecutionError as exc:
            shutil.copyfile(executed, failed)
            shutil.rmtree(figures, ignore_errors=True)
            print(f"notebook {name}: cell {exc.cell_index} failed with {exc.ename}: {exc.evalue}\n"
                  f"the partly executed notebook is {failed}", file=sys.stderr)
            raise SystemExit(1) from None
        except BaseException:
            shutil.rmtree(figures, ignore_errors=True)
            raise
        report = without_run_details(nbformat.read(executed, as_version=4), reports / f"{name}.ipynb")
        nbformat.write(report, executed)
        body, _ = HTMLExporter().from_notebook_node(report)
        write_text(reports / f"{name}.html", body)
    print(f"notebook {name}: wrote {reports / name}.ipynb, {reports / name}.html and "
          f"{len(list(figures.glob('*.png')))} figures in {figures}")


def main(params: Params, args: argparse.Namespace) -> None:
    execute(args.name, notebook_parameters(args.name, params, args.tier), params.notebooks.cell_timeout,
            reports_dir(args.tier))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.notebook")
    parser.add_argument("--name", required=True, help="a notebook of notebooks/, without .ipynb")
    parser.add_argument("--tier", choices=TIERS, default="quick",
                        help=f"study: {STUDY_NOTEBOOK} on the study's results, into reports/study/")
    run_stage("notebook", main, parser)
