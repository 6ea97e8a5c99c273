"""The notebooks' helpers: trajectory heatmap codes, revisits, critic-coloured text, artifact readers."""

import numpy as np
import pytest
import torch

from remask.detection import fill_once
from remask.figures import TRAJECTORY_LABELS, highlight_html, read_dvclive_series, revisits, trajectory_matrix
from remask.model import DiffusionTransformer, ModelConfig
from remask.sampling import Generation, SamplerOptions, TrajectoryStep, diffusion_generate, prefix_prompt

MASK = 10


def _step(masked, remasked):
    masked, remasked = torch.tensor([masked]), torch.tensor([remasked])
    return TrajectoryStep(masked, torch.zeros_like(masked, dtype=torch.long), torch.ones(masked.shape), None, remasked)


def test_trajectory_codes_on_a_hand_made_run():
    steps = [
        _step([True, True, True, False], [True, False, True, False]),  # pos 3 is a prompt
        _step([True, False, True, False], [False, True, False, False]),  # pos 1, committed at step 0, revisited
        _step([False, True, False, False], [False, False, False, False]),
    ]
    run = Generation(torch.zeros(1, 4, dtype=torch.long), nfe=5, steps=3, policy="critic", trajectory=steps)
    codes = trajectory_matrix(run, 0, protected=torch.tensor([[False, False, False, True]]))
    assert codes.tolist() == [[2, 1, 2, 4], [1, 3, 1, 4], [0, 1, 0, 4]]
    assert TRAJECTORY_LABELS[3] == "committed earlier, re-masked"
    assert revisits(run) == 1


def test_trajectory_of_a_real_run_counts_every_position_each_step():
    torch.manual_seed(0)
    model = DiffusionTransformer(ModelConfig(vocab_size=11, mask_id=MASK, n_layer=1, n_head=2, n_embd=16, block_size=24))
    known = prefix_prompt([1, 2], num_samples=2, length=12, mask_id=MASK)
    run = diffusion_generate(model.eval(), 2, 12, SamplerOptions(steps=4, policy="confidence"),
                             record_trajectory=True, known=known)
    codes = trajectory_matrix(run, 1, known.protected)
    assert codes.shape == (4, 12)
    assert (codes[:, :2] == 4).all()
    assert (codes[0, 2:] != 0).all()  # the first step fills every free position
    assert revisits(run) == 0  # confidence only re-masks what it has just filled
    with pytest.raises(ValueError, match="record_trajectory=True"):
        trajectory_matrix(Generation(run.tokens, run.nfe, 4, "confidence"), 0)


def test_fill_once_masks_the_ratio_and_keeps_the_rest():
    torch.manual_seed(0)
    model = DiffusionTransformer(ModelConfig(vocab_size=11, mask_id=MASK, n_layer=1, n_head=2, n_embd=16, block_size=20))
    clean = torch.randint(0, MASK, (3, 20))
    masked, filled, probs = fill_once(model.eval(), clean, 0.25, 1.0, torch.Generator().manual_seed(0))
    assert masked.sum(1).tolist() == [5, 5, 5]
    assert torch.equal(filled[~masked], clean[~masked])
    assert not (filled == MASK).any() and probs.shape == (3, 20, 11)


def test_highlight_html_escapes_marks_errors_and_checks_lengths():
    page = highlight_html("a<\n", np.array([0.0, 1.0, 0.5]), np.array([False, True, False]))
    assert "&lt;" in page and "\u00b6" in page
    assert page.count("underline") == 1
    assert "rgba(220, 40, 40, 1.00)" in page and "rgba(220, 40, 40, 0.50)" in page
    with pytest.raises(ValueError, match="3 characters but 2 probabilities"):
        highlight_html("abc", np.array([0.1, 0.2]))


def test_dvclive_series_reader(tmp_path):
    folder = tmp_path / "plots" / "metrics" / "val"
    folder.mkdir(parents=True)
    (folder / "critic_auroc.tsv").write_text("timestamp\tstep\tcritic_auroc\n1\t250\t0.7\n2\t500\t0.75\n")
    assert read_dvclive_series(tmp_path, "val/critic_auroc") == [{"step": 250, "value": 0.7}, {"step": 500, "value": 0.75}]
    with pytest.raises(FileNotFoundError, match="val/gen_loss"):
        read_dvclive_series(tmp_path, "val/gen_loss")


def test_a_score_has_one_colour_in_every_figure():
    from remask.figures import OTHER_COLOUR, SCORE_COLOURS, score_colour, score_palette
    from remask.policies import POLICIES

    assert set(POLICIES) <= set(SCORE_COLOURS)  # every registered policy has its own colour
    assert len(set(SCORE_COLOURS.values())) == len(SCORE_COLOURS)  # and no two share one
    assert score_colour("confidence@self_correct") == score_colour("confidence")  # the same score on a variant
    assert score_colour("critic_fused_budget", runs="critic_fused") == score_colour("critic_fused")
    assert score_palette(["critic", "unknown_row"]) == {"critic": SCORE_COLOURS["critic"], "unknown_row": OTHER_COLOUR}
