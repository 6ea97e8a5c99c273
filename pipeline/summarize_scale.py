"""DVC stage ``scale_summary``: the scale axis's verdict over its points, ``results/scale/summary.md``.

Reads what every point's ``scale_evaluate@<point>`` judged (``<--judged-dir>/<point>.json``,
``results/scale/evaluate`` in ``scale/dvc.yaml``: its cells, frontiers, comparisons and validation
numbers) and the judge's validation numbers, and writes the verdict per point, family and entropy
level (:func:`remask.scale.render_scale`) with ``results/scale/metrics.json``, every point's
numbers in one file (what notebook 05 reads). The
points must have been judged against the same held-out text and entropy levels: a point judged
before the text or the judge changed is refused, named, not mixed in.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline._common import SCALE_RESULTS, read_json, run_stage
from remask.atomic import write_json, write_text
from remask.config import ConfigError, Params
from remask.scale import CellResult, PointRecord, render_scale


def main(params: Params, args: argparse.Namespace) -> None:
    folder = Path(args.judged_dir)
    judged = {point: read_json(folder / f"{point}.json", f"scale_evaluate@{point}") for point in params.scale.points}
    first, *_ = judged
    for point, found in judged.items():
        for key in ("reference", "levels"):
            if found[key] != judged[first][key]:
                raise ConfigError(f"{folder / f'{point}.json'} and {folder / f'{first}.json'} hold "
                                  f"different {key} (the judge, the held-out text or the levels changed between "
                                  f"them): rerun scale_evaluate@{point} and scale_evaluate@{first}")
    reference, levels = judged[first]["reference"], judged[first]["levels"]
    points = [PointRecord.from_dict(found["point"]) for found in judged.values()]
    cells = [CellResult.from_dict(c) for found in judged.values() for c in found["cells"]]
    judge_val = read_json(SCALE_RESULTS / "train" / "judge" / "metrics.json", "scale_judge")["val"]
    write_json(SCALE_RESULTS / "metrics.json", {
        "reference": reference, "levels": levels, "judge": judge_val, "points": [p.to_dict() for p in points],
        **{part: {key: value for found in judged.values() for key, value in found[part].items()}
           for part in ("frontier", "settings")},
        **{part: [item for found in judged.values() for item in found[part]] for part in ("comparisons", "cells")},
    })
    summary = render_scale(cells, points, reference, levels, judge_val,
                           "`scale_evaluate` and `scale_summary` stages of `make scale`")
    write_text(SCALE_RESULTS / "summary.md", summary)
    print(summary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.summarize_scale")
    parser.add_argument("--judged-dir", required=True, help="where scale_evaluate wrote each point's <point>.json")
    run_stage("summarize_scale", main, parser)
