import json
import subprocess
import sys

import pytest
import torch

from remask import checkpoint
from conftest import REPO_PARAMS
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
                  "critic": REPO_PARAMS.critic.model_dump() if alpha > 0 else None}  # as train.py writes it
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
    ],
)
def test_sample_bad_input_one_line_exit_2(ckpt, capsys, extra, message):
    code, out, err = run(["sample", "--checkpoint", str(ckpt / "multitask")] + extra, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert out == ""


def test_missing_checkpoint(tmp_path, capsys):
    code, _, err = run(["sample", "--checkpoint", str(tmp_path / "nope")], capsys)
    assert code == 2 and "checkpoint folder not found" in err


def test_critic_policies_refuse_untrained_critic_and_judge(ckpt, capsys):
    code, _, err = run(["sample", "--checkpoint", str(ckpt / "generator_only"), "--policy", "critic"], capsys)
    assert code == 2 and "needs a trained critic head (alpha > 0)" in err
    code, _, err = run(["sample", "--checkpoint", str(ckpt / "multitask"), "--policy", "critic_fused",
                        "--temperature", "2.5"], capsys)
    assert code == 2 and "critic fills at temperatures 2.5-2.5 (trained on 0.7-2:" in err
    code, _, err = run(["score", "--checkpoint", str(ckpt / "generator_only"), "--text", "romeo"], capsys)
    assert code == 2 and "critic head is untrained" in err
    code, _, err = run(["sample", "--checkpoint", str(ckpt / "judge")], capsys)
    assert code == 2 and "causal (judge) model" in err
    code, _, err = run(["sample", "--checkpoint", str(ckpt / "multitask"), "--policy", "self_planning"], capsys)
    assert code == 2 and "needs a self-correcting generator (train.self_correct > 0" in err
    code, _, err = run(["sample", "--checkpoint", str(ckpt / "multitask"), "--committed-budget", "0.1"], capsys)
    assert code == 2 and "needs a policy whose candidates are all tokens" in err


def test_score_json_and_plain(ckpt, tmp_path, capsys):
    code, out, err = run(["score", "--checkpoint", str(ckpt / "multitask"), "--text", "romeo, romeo", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert len(data["error_prob"]) == len("romeo, romeo")
    assert all(0 <= p <= 1 for p in data["error_prob"])
    long_text = "abc " * 30  # longer than the block size: scored in windows
    (tmp_path / "t.txt").write_text(long_text)
    code, out, _ = run(["score", "--checkpoint", str(ckpt / "multitask"), "--file", str(tmp_path / "t.txt"),
                        "--json"], capsys)
    assert code == 0 and len(json.loads(out)["error_prob"]) == len(long_text)
    code, out, _ = run(["score", "--checkpoint", str(ckpt / "multitask"), "--text", "abc", "--threshold", "0"],
                       capsys)
    assert code == 0 and out.splitlines()[0] == "abc" and len(out.splitlines()) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", ""], "the text to score is empty"),
        (["--text", "Zebra"], "characters outside the vocabulary: 'Z'"),
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
    code, out, err = run(["score", "--checkpoint", str(ckpt / "multitask"), "--text", long_text, "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)["error_prob"]) == len(long_text)
