"""The README's first screen quotes the committed run: its numbers and its one-sentence answer must be
what `results/evaluate_samples/metrics.json` holds, so that they cannot drift from the summaries."""

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"([+-]\d+\.\d{3})"


def first_screen() -> str:
    return (REPO / "README.md").read_text().split("## Two commands", 1)[0]


def comparisons(tier: str = "") -> dict[tuple[str, int], dict]:
    """Each row's comparison with `confidence` at the test text's entropy, from a tier's metrics."""
    metrics = json.loads((REPO / "results" / tier / "evaluate_samples" / "metrics.json").read_text())
    return {(c["policy"], c["budget"]): c for c in metrics["comparisons"]
            if c["baseline"] == "confidence" and c.get("level", "text") == "text"}


def test_the_first_screens_table_is_the_committed_comparison():
    lines = [line for line in first_screen().splitlines() if line.startswith("|")]
    header = lines[0]
    policies = re.findall(r"`(\w+)`", header)
    rows = [line for line in lines[2:] if re.match(r"\| \d+ \|", line)]
    assert policies and len(rows) >= 2
    assert any(re.search(NUMBER, row) for row in rows)  # at least one budget measured
    measured = comparisons()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        budget = int(cells[0])
        for policy, cell in zip(policies, cells[1:]):
            d = measured[(policy, budget)]["differences"]["judge_nll"]
            if cell == "*extrapolated*":  # never a number where a frontier does not bracket the level
                assert d["difference"] is None and d["ci"] is None, (policy, budget)
                continue
            difference, low, high = map(float, re.fullmatch(rf"{NUMBER} \[{NUMBER}, {NUMBER}\]", cell).groups())
            assert (difference, low, high) == tuple(round(v, 3) for v in (d["difference"], *d["ci"])), (policy, budget)


def test_the_first_screens_answer_is_the_committed_outcome():
    learned = [c for c in comparisons().values() if c["kind"] == "learned"]
    assert learned
    answer = " ".join(first_screen().split())  # as a reader sees it, whatever the line breaks
    if all(c["outcome"] == "loses" for c in learned):
        assert "Every learned score loses to confidence" in answer
    else:
        assert "Every learned score loses" not in answer, [(c["policy"], c["budget"], c["outcome"]) for c in learned]


def test_the_study_tables_numbers_are_the_committed_study():
    """Every cell of the README's study table that quotes a row's judge-NLL difference (a backticked row,
    then `+d [low, high]` under a column naming its baseline, `confidence` or its own model's, and its
    entropy level) is what the study's metrics hold, at NFE 32."""
    table = (REPO / "README.md").read_text().split("### What the study answered", 1)[1].split("\n\n- ", 1)[0]
    metrics = json.loads((REPO / "results" / "study" / "evaluate_samples" / "metrics.json").read_text())
    measured = {(c["policy"], c["baseline"], c["level"]): c for c in metrics["comparisons"] if c["budget"] == 32}
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    columns = {i: ("own" if "own model" in cell else "confidence", "second" if "second" in cell else "text")
               for i, cell in enumerate(header) if cell.startswith("vs ")}
    assert len(columns) == 4, header
    checked = 0
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = re.fullmatch(r"`([\w@]+)`", cells[1])
        for i, (against, level) in columns.items():
            quoted = re.match(rf"{NUMBER} \[{NUMBER}, {NUMBER}\]", cells[i])
            if row and quoted:
                baseline = "confidence" if against == "confidence" else "confidence@" + row.group(1).split("@")[1]
                d = measured[(row.group(1), baseline, level)]["differences"]["judge_nll"]
                assert tuple(map(float, quoted.groups())) == tuple(round(v, 3) for v in (d["difference"], *d["ci"])), (
                    row.group(1), baseline, level)
                checked += 1
    assert checked >= 10


def test_the_first_screens_scale_numbers_are_the_committed_axis():
    """Every signed difference the README's "Over compute" paragraph quotes (alone or with its interval) is
    one of the scale axis's committed comparisons of a learned row with its own model's baselines,
    rounded as printed: the trend cannot drift from `results/scale/metrics.json`."""
    paragraph = " ".join(first_screen().split("**Over compute**", 1)[1].split("![", 1)[0].split())
    metrics = json.loads((REPO / "results" / "scale" / "metrics.json").read_text())
    own = [c for c in metrics["comparisons"]  # each learned row against its own model's baselines
           if c["kind"] == "learned" and c["policy"].split("@")[1] == c["baseline"].split("@")[1]]
    measured = [c["differences"][metric] for c in own for metric in ("judge_nll", "ngram_jsd") if c["differences"][metric]["ci"]]
    intervals = {tuple(round(v, 3) for v in (d["difference"], *d["ci"])) for d in measured}
    values = {round(d["difference"], 3) for d in measured}
    quoted = re.findall(rf"{NUMBER} \[{NUMBER}, {NUMBER}\]", paragraph)
    assert quoted and all(tuple(map(float, q)) in intervals for q in quoted), quoted
    alone = [float(n) for n in re.findall(rf"(?<![\d.]){NUMBER}(?![\d\]])", re.sub(r"\[[^\]]*\]", "", paragraph))]
    assert len(alone) >= 10 and all(n in values for n in alone), [n for n in alone if n not in values]
