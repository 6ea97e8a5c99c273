"""What the notebooks draw, kept in the library so that it is tested and reusable.

The notebooks only load pipeline artifacts, call these helpers and lay out the figures.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # type hints only: the notebooks that draw no trajectory do not run the sampler
    from remask.sampling import Generation

# One colour per score, in every figure of every notebook (seaborn's colour-blind palette): a row that
# runs a registered policy on another model or pool (``critic_fused_budget``, ``confidence@self_correct``)
# takes its policy's colour and is told apart by marker or line style; anything else gets a grey
SCORE_COLOURS = {
    "confidence": "#0173b2", "critic": "#de8f05", "critic_fused": "#029e73", "first_pass": "#d55e00",
    "remdm_conf": "#cc78bc", "random": "#949494", "oracle_loo": "#000000", "self_planning": "#ca9161",
    "critic_confidence": "#fbafe4", "entropy": "#56b4e9", "margin": "#ece133", "peer_x_transformers": "#8c564b",
    "critic_committed": "#bcbd22",
    "confidence + critic (fitted)": "#17becf",
}
OTHER_COLOUR = "#7f7f7f"


def score_colour(name: str, runs: str | None = None) -> str:
    """The colour of score or row ``name`` (or of the registered policy it ``runs``)."""
    base = name.split("@", 1)[0]
    return SCORE_COLOURS.get(name) or SCORE_COLOURS.get(runs or "") or SCORE_COLOURS.get(base, OTHER_COLOUR)


def score_palette(names) -> dict[str, str]:
    """``{name: colour}`` for seaborn's ``palette=``, the same colour for a score in every figure."""
    return {name: score_colour(name) for name in names}


# Cell states of a trajectory heatmap (position x step), in the order of TRAJECTORY_LABELS.
TRAJECTORY_LABELS = (
    "committed earlier, kept",
    "filled now, kept",
    "filled now, re-masked",
    "committed earlier, re-masked",
    "protected (prompt)",
)


def trajectory_matrix(generation: Generation, row: int, protected: torch.Tensor | None = None) -> np.ndarray:
    """``(steps, length)`` integer codes into :data:`TRAJECTORY_LABELS` for one sample of a run.

    A step's fill turns every masked position into a token; its re-masking then masks some of
    them again. Tokens committed in earlier steps can only be re-masked by ``all``-candidate
    policies (``remdm_conf``, ``critic``, ...).
    """
    if generation.trajectory is None:
        raise ValueError("the generation has no trajectory; call diffusion_generate(..., record_trajectory=True)")
    codes = []
    for step in generation.trajectory:
        masked, remasked = step.masked[row].numpy(), step.remasked[row].numpy()
        code = np.where(masked, np.where(remasked, 2, 1), np.where(remasked, 3, 0))
        if protected is not None:
            code = np.where(protected[row].numpy(), 4, code)
        codes.append(code)
    return np.stack(codes)


def revisits(generation: Generation) -> int:
    """How many times a token committed in an earlier step was re-masked, over all samples and steps."""
    if generation.trajectory is None:
        raise ValueError("the generation has no trajectory")
    return int(sum((~s.masked & s.remasked).sum() for s in generation.trajectory))


def highlight_html(text: str, error_probs: np.ndarray, truth_errors: np.ndarray | None = None) -> str:
    """``text`` as HTML, each character's background red in proportion to its error probability.

    Characters that really are errors (``truth_errors``) are underlined, so a reader can see the
    critic's hits and misses. Newlines are shown as the pilcrow sign.
    """
    if len(error_probs) != len(text):
        raise ValueError(f"{len(text)} characters but {len(error_probs)} probabilities")
    spans = []
    for i, char in enumerate(text):
        alpha = float(np.clip(error_probs[i], 0.0, 1.0))
        style = f"background: rgba(220, 40, 40, {alpha:.2f});"
        if truth_errors is not None and truth_errors[i]:
            style += " text-decoration: underline; text-decoration-thickness: 2px;"
        shown = "\u00b6" if char == "\n" else html.escape(char)
        spans.append(f'<span title="{alpha:.2f}" style="{style}">{shown}</span>')
    return '<div style="font-family: monospace; line-height: 1.8; white-space: pre-wrap;">' + "".join(spans) + "</div>"


def read_csv(path: str | Path) -> list[dict]:
    """Plot data written by the pipeline (numbers parsed as floats)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def read_dvclive_series(live_dir: str | Path, name: str) -> list[dict]:
    """One DVCLive metric series (``train/loss`` or ``val/critic_auroc``) as rows of step and value."""
    path = Path(live_dir) / "plots" / "metrics" / f"{name}.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no DVCLive series {name!r}; did the training stage run?")
    with open(path, newline="", encoding="utf-8") as handle:
        leaf = name.rsplit("/", 1)[-1]
        return [{"step": int(row["step"]), "value": float(row[leaf])} for row in csv.DictReader(handle, delimiter="\t")]


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def save_figure(fig, figures_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` (the DVC plots of the notebook stages)."""
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
