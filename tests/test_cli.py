import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from remask import checkpoint
from conftest import REPO_PARAMS, make_documents, tiny_params
from remask.cli import main

from remask.data import CharTokenizer
from remask.model import DiffusionTransformer, ModelConfig

CHARS = "abcdefghijklmnopqrstuvwxyz ,.\n:ROMEO"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    tok = CharTokenizer(CHARS)
    for name, causal, alpha in (("multitask", False, 0.5), ("generator_only", False, 0.0), ("judge", True, 0.0)):
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=tok.vocab_size, mask_id=tok.mask_id, n_layer=1, n_head=2, n_embd=16,
                          block_size=32, causal=causal)
        record = {"variant": name, "objective": "autoregressive" if causal else "diffusion", "alpha": alpha,
                  "critic": REPO_PARAMS.critic.model_dump() if alpha > 0 else None,  # as train.py writes it
                  "mask_schedule": None if causal else "linear"}
        checkpoint.save_model(root / name, DiffusionTransformer(cfg), tok, record)
    return root


def run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_refuses_a_schedule_the_checkpoint_was_not_trained_on(ckpt, capsys):
    base = ["sample", "--checkpoint", str(ckpt / "multitask"), "--steps", "4", "--num-samples", "1", "--length", "12"]
    code, _, err = run(base + ["--schedule", "cosine"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--schedule cosine" in err and "trained on the linear masking schedule" in err
    code, out, err = run(base, capsys)  # the default: the checkpoint's own
    assert code == 0 and json.loads(out)["schedule"] == "linear", err


def test_sample_writes_json_lines(ckpt, capsys):
    code, out, err = run(["sample", "--checkpoint", str(ckpt / "multitask"), "--policy", "critic", "--steps", "4",
                          "--num-samples", "3", "--length", "20", "--prompt", "ROMEO:", "--seed", "3"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert row["text"].startswith("ROMEO:") and len(row["text"]) == 20
        assert row["policy"] == "critic" and row["steps"] == 4 and row["nfe"] == 7
        assert row["seed"] == 3 and row["length"] == 20
        assert row["selection"] == "gumbel" and row["selection_temperature"] == 1.0  # params.yaml's defaults


def test_sample_out_file_same_seed_same_text(ckpt, tmp_path, capsys):
    args = ["sample", "--checkpoint", str(ckpt / "multitask"), "--steps", "3", "--length", "16", "--seed", "5"]
    assert run(args + ["--out", str(tmp_path / "a.jsonl")], capsys)[0] == 0
    assert run(args + ["--out", str(tmp_path / "b.jsonl")], capsys)[0] == 0
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--policy", "best"], "unknown policy 'best'; valid policies: random, confidence"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--length", "4", "--prompt", "ROMEO:"], "the prompt has 6 characters, longer than --length 4"),
        (["--prompt", "JULIET"], "characters outside the vocabulary: 'I', 'J', 'L', 'T', 'U'"),
        (["--length", "64"], "--length 64 exceeds the model's block_size 32"),
        (["--device", "foo"], "--device: unknown device 'foo'; valid: auto, cpu, cuda, mps"),
        (["--temperature", "0"], "--temperature must be > 0, got 0"),
        (["--temperature", "warm"], "--temperature must be a number, got 'warm'"),
        (["--top-p", "1.5"], "--top-p must be > 0 and <= 1, got 1.5"),
        (["--committed-budget", "-0.1"], "--committed-budget must be >= 0 and <= 1, got -0.1"),
        (["--schedule", "square"], "argument --schedule: invalid choice: 'square'"),
        (["--nfe", "8", "--steps", "4"], "argument --steps: not allowed with argument --nfe"),
        (["--tuned", "--steps", "4"], "--tuned reads the settings tuned at an NFE budget: give --nfe, not --steps"),
    ],
)
def test_sample_bad_input_one_line_exit_2(ckpt, capsys, extra, message):
    code, out, err = run(["sample", "--checkpoint", str(ckpt / "multitask")] + extra, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    assert out == ""


def test_missing_checkpoint_names_the_command_that_builds_it(tmp_path, capsys):
    code, _, err = run(["sample", "--checkpoint", str(tmp_path / "multitask")], capsys)
    assert code == 2 and "no trained model there; `dvc repro train_multitask` (or `make repro`) builds one" in err
    code, _, err = run(["score", "--checkpoint", str(tmp_path / "mine"), "--text", "a"], capsys)
    assert code == 2 and "`make repro` (models/multitask) builds one" in err


def test_sample_spends_the_nfe_it_is_given(ckpt, capsys):
    """--nfe is the pipeline's budget: the critic's extra pass per step halves its steps."""
    for policy, steps, nfe in (("confidence", 8, 8), ("critic", 4, 7)):
        code, out, err = run(["sample", "--checkpoint", str(ckpt / "multitask"), "--policy", policy, "--nfe", "8",
                              "--length", "12", "--num-samples", "1"], capsys)
        assert code == 0, err
        row = json.loads(out)
        assert (row["steps"], row["nfe"]) == (steps, nfe)


def test_sample_tuned_reads_the_pipelines_choice_for_this_checkpoint(ckpt, tmp_path, capsys):
    results = tmp_path / "results"
    (results / "tuning").mkdir(parents=True)
    tuned = {"selection": "topk", "selection_temperature": 0.0, "temperature": 1.3, "anneal": "linear", "floor": 0.7,
             "top_k_share": 0.3, "top_p": 1.0}
    log = {"policy": "confidence", "model": str(ckpt / "multitask"), "budgets": {"8": {
        "steps": 8, "nfe": 8, "levels": {"text": tuned, "second": {**tuned, "temperature": 1.1, "anneal": "constant",
                                                                    "floor": 0.0}}}}}
    (results / "tuning" / "confidence.json").write_text(json.dumps(log))
    base = ["sample", "--checkpoint", str(ckpt / "multitask"), "--tuned", "--results-dir", str(results),
            "--length", "12", "--num-samples", "1"]
    code, out, err = run(base + ["--nfe", "8"], capsys)
    assert code == 0, err
    row = json.loads(out)
    assert (row["temperature"], row["selection"], row["selection_temperature"], row["steps"]) == (1.3, "topk", 0.0, 8)
    assert (row["anneal"], row["temperature_floor"], row["top_k_share"], row["top_p"]) == ("linear", 0.7, 0.3, 1.0)
    code, out, err = run(base + ["--nfe", "8", "--level", "second"], capsys)
    assert code == 0, err
    assert (json.loads(out)["temperature"], json.loads(out)["anneal"]) == (1.1, "constant")
    code, _, err = run(base[:3] + base[4:] + ["--nfe", "8", "--level", "second"], capsys)
    assert code == 2 and "--level chooses which of the pipeline's tuned settings --tuned reads" in err
    code, _, err = run(base + ["--nfe", "16"], capsys)
    assert code == 2 and "has no NFE 16; tuned budgets: 8" in err
    code, _, err = run(base + ["--nfe", "8", "--policy", "remdm_conf"], capsys)
    assert code == 2 and "remdm_conf.json not found; `dvc repro sample@remdm_conf` tunes" in err
    log["model"] = "models/multitask"
    (results / "tuning" / "confidence.json").write_text(json.dumps(log))
    code, _, err = run(base + ["--nfe", "8"], capsys)
    assert code == 2 and "was tuned on models/multitask, not on" in err


def test_critic_policies_refuse_untrained_critic_and_judge(ckpt, capsys):
    code, _, err = run(["sample", "--checkpoint", str(ckpt / "generator_only"), "--policy", "critic"], capsys)
    assert code == 2 and "needs a trained critic head (alpha > 0)" in err
    code, _, err = run(["sample", "--checkpoint", str(ckpt / "multitask"), "--policy", "critic_fused",
                        "--temperature", "2.5"], capsys)
    assert code == 2 and "critic fills at temperatures 2.5-2.5 (trained on 0.7-2:" in err
    code, _, err = run(["sample", "--checkpoint", str(ckpt / "multitask"), "--policy", "critic_fused",
                        "--temperature", "1.5", "--anneal", "linear", "--temperature-floor", "0.2"], capsys)
    assert code == 2 and "critic fills at temperatures 0.2-1.5" in err  # annealed below what it was trained on
    code, _, err = run(["score", "--checkpoint", str(ckpt / "generator_only"), "--text", "romeo", "--score", "critic"],
                       capsys)
    assert code == 2 and "critic head is untrained; use --score loo" in err
    code, _, err = run(["score", "--checkpoint", str(ckpt / "generator_only"), "--text", "romeo"], capsys)
    assert code == 0 and "score loo" in err  # the default needs no critic
    code, _, err = run(["sample", "--checkpoint", str(ckpt / "judge")], capsys)
    assert code == 2 and "causal (judge) model" in err
    code, _, err = run(["sample", "--checkpoint", str(ckpt / "multitask"), "--policy", "self_planning"], capsys)
    assert code == 2 and "needs a self-correcting generator (train.self_correct > 0" in err
    code, _, err = run(["sample", "--checkpoint", str(ckpt / "multitask"), "--committed-budget", "0.1"], capsys)
    assert code == 2 and "needs a policy whose candidates are all tokens" in err


def test_score_json_and_plain(ckpt, tmp_path, capsys):
    code, out, err = run(["score", "--checkpoint", str(ckpt / "multitask"), "--text", "romeo, romeo", "--json"], capsys)
    assert code == 0, err
    assert "score loo (one forward pass per character): no detection measured for" in err
    data = json.loads(out)
    assert data["score"] == "loo" and len(data["error_prob"]) == len("romeo, romeo")
    assert all(0 <= p <= 1 for p in data["error_prob"]) and len(data["top"]) <= 5
    long_text = "abc " * 30  # longer than the block size: scored in overlapping windows
    (tmp_path / "t.txt").write_text(long_text)
    for score in ("loo", "critic"):
        code, out, _ = run(["score", "--checkpoint", str(ckpt / "multitask"), "--file", str(tmp_path / "t.txt"),
                            "--json", "--score", score], capsys)
        assert code == 0 and len(json.loads(out)["error_prob"]) == len(long_text)
    code, out, _ = run(["score", "--checkpoint", str(ckpt / "multitask"), "--text", "abc", "--top", "2"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0] == "abc" and 1 <= len(lines) - 1 <= 2  # the text, then the suspects' spans


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", ""], "the text to score is empty"),
        (["--text", "Zebra"], "characters outside the vocabulary: 'Z' (--map-unknown ' ' maps them)"),
        (["--text", "a", "--map-unknown", "Z"], "--map-unknown 'Z' is itself outside the vocabulary"),
        (["--file", "/nonexistent/file.txt"], "no such file"),
    ],
)
def test_score_bad_input(ckpt, capsys, args, message):
    code, _, err = run(["score", "--checkpoint", str(ckpt / "multitask")] + args, capsys)
    assert code == 2 and message in err


def test_score_non_utf8_file(ckpt, tmp_path, capsys):
    (tmp_path / "bad.txt").write_bytes(b"ab\xfe")
    code, _, err = run(["score", "--checkpoint", str(ckpt / "multitask"), "--file", str(tmp_path / "bad.txt")], capsys)
    assert code == 2 and "not valid UTF-8 at byte offset 2" in err


def test_console_script_entry_point(ckpt):
    result = subprocess.run([sys.executable, "-m", "remask", "sample", "--checkpoint", str(ckpt / "multitask"),
                             "--policy", "nope"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown policy 'nope'" in result.stderr


def test_prompt_filling_the_whole_length_is_returned_unchanged(ckpt, capsys):
    prompt = "romeo, romeo, wherefore art thou"[:20]
    code, out, err = run(["sample", "--checkpoint", str(ckpt / "multitask"), "--steps", "3", "--length", "20",
                          "--prompt", prompt, "--num-samples", "2"], capsys)
    assert code == 0, err
    assert [json.loads(line)["text"] for line in out.splitlines()] == [prompt, prompt]


def test_score_only_newlines_and_very_long_text(ckpt, capsys):
    code, out, err = run(["score", "--checkpoint", str(ckpt / "multitask"), "--text", "\n\n\n", "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)["error_prob"]) == 3
    long_text = "to be or not to be, that is the question.\n" * 2500  # 105,000 characters
    code, out, err = run(["score", "--checkpoint", str(ckpt / "multitask"), "--text", long_text, "--json",
                          "--score", "critic"], capsys)
    assert code == 0, err
    assert len(json.loads(out)["error_prob"]) == len(long_text)


def test_score_maps_unknown_characters_when_asked_and_reports_them(ckpt, capsys):
    code, out, err = run(["score", "--checkpoint", str(ckpt / "multitask"), "--text", "caf\u00e9 \u2019bout",
                          "--map-unknown", " ", "--json"], capsys)
    assert code == 0, err
    assert "mapped characters outside the vocabulary: '\u00e9'->'e', '\u2019'->' '" in err
    assert json.loads(out)["text"] == "cafe  bout"  # one for one: every position keeps its index


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A generator that has learned the tiny corpus's words (300 steps, a few seconds)."""
    from remask.data import load_meta, prepare
    from remask.train import run_spec, train

    root = tmp_path_factory.mktemp("trained")
    prepare(make_documents(), "fixture", REPO_PARAMS.data.with_(source="fixture", sha256=None, val_fraction=0.15,
                                                                test_fraction=0.15), root / "data")
    params = tiny_params(model={"n_embd": 32, "block_size": 32},
                         train={"max_steps": 300, "eval_every": 300, "checkpoint_every": 300, "batch_size": 16,
                                "alpha": 0.0, "lr": 0.01, "min_lr": 0.001, "warmup_steps": 20})
    train(run_spec(params, "generator_only", load_meta(root / "data"), root / "models", root / "results"),
          root / "data", progress=False)
    return root / "models" / "generator_only"


@pytest.mark.parametrize("text, typo", [("The king is dead long live the kimg", 33),
                                        ("All the world is a stqge and all the men", 21)])
def test_score_ranks_a_planted_typo_among_the_top_suspects(trained, capsys, text, typo):
    code, out, err = run(["score", "--checkpoint", str(trained), "--text", text, "--json", "--top", "3"], capsys)
    assert code == 0, err
    top = json.loads(out)["top"]
    assert any(span["start"] <= typo < span["end"] for span in top), (text[typo], top)


def test_the_readmes_own_policy_example_runs(ckpt, tmp_path):
    """The README's "Write your own policy" block, run as a user would, on a tiny models/multitask."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Write your own policy", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    (tmp_path / "models").mkdir()
    shutil.copytree(ckpt / "multitask", tmp_path / "models" / "multitask")
    (tmp_path / "example.py").write_text(code.replace("64, SamplerOptions", "24, SamplerOptions"))  # block 32
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    nfe, texts = result.stdout.split(" ", 1)
    assert int(nfe) == 32 and texts.count("'") >= 8  # four decoded samples


def test_every_character_is_scored_in_the_window_where_it_is_most_central():
    from remask.scoring import owners, windows

    for length, block in ((5, 8), (8, 8), (9, 8), (30, 8), (31, 7), (100, 32)):
        spans = windows(length, block)
        assert spans[0][0] == 0 and spans[-1][1] == length and all(e - s == min(block, length) for s, e in spans)
        for position, i in enumerate(owners(length, spans)):
            start, end = spans[i]
            assert start <= position < end
            best = min(abs(position - (s + e - 1) / 2) for s, e in spans if s <= position < e)
            assert abs(position - (start + end - 1) / 2) == best
