"""Apply a preset to ``params.yaml``: ``python -m pipeline.preset presets/gpu.yaml``.

A preset is a YAML file of params changes laid over ``params.yaml`` the way
:func:`remask.config.overlay` (and ``dvc exp run -S``) lays them: a section is merged key by key,
any other value (a grid's rows, the scale axis's points) is replaced whole. The result is validated
before anything is written (an error names the key), then written in place, atomically, with
ruamel.yaml's round trip, so that every comment and key the preset does not touch stays as it was:
``git diff params.yaml`` shows exactly what the preset changed, and ``git checkout params.yaml``
undoes it. DVC then reruns what the changed params touch (``dvc repro scale/dvc.yaml``).
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from remask.atomic import write_text
from remask.config import ConfigError, overlay, parse_params


def read_preset(path: Path) -> dict[str, Any]:
    """The preset's changes: a mapping of params sections."""
    if not path.is_file():
        raise ConfigError(f"{path}: preset file not found")
    changes = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(changes, dict):
        raise ConfigError(f"{path}: a preset is a mapping of params sections, got {type(changes).__name__}")
    return changes


def sync(document: Any, wanted: Any) -> Any:
    """``document`` (a ruamel round-trip node) changed in place into ``wanted``: mappings key by
    key (keeping the comments of what stays), any other value replaced; returns the node to store."""
    if isinstance(document, Mapping) and isinstance(wanted, Mapping):
        for key in [k for k in document if k not in wanted]:
            del document[key]
        for key, value in wanted.items():
            document[key] = sync(document[key], value) if key in document else value
        return document
    return document if document == wanted else wanted


def _float(representer: Any, value: float) -> Any:
    """A float as YAML 1.1 readers (PyYAML, every stage) read a float: ``8e-05`` is a string there,
    ``8.0e-05`` a number."""
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def sections_of(text: str) -> list[tuple[str, str]]:
    """``text`` cut at its top-level keys: ``(key, the text from it to the next one)``, the text before
    the first key under ``""``."""
    blocks, name, lines = [], "", []
    for line in text.splitlines(keepends=True):
        key = re.match(r"([A-Za-z_]\w*):", line)
        if key:
            blocks.append((name, "".join(lines)))
            name, lines = key.group(1), []
        lines.append(line)
    return blocks + [(name, "".join(lines))]


def apply_preset(params_path: Path, preset_path: Path) -> list[str]:
    """Lay the preset at ``preset_path`` over ``params_path`` and write it back; the changed top-level
    sections, in the preset's order."""
    changes = read_preset(preset_path)
    text = params_path.read_text(encoding="utf-8")
    merged = overlay(yaml.safe_load(text), changes)
    parse_params(merged, f"{params_path} with {preset_path}")  # refused, naming the key, before any write
    rt = YAML()  # the layout of params.yaml: sequences indented under their key, null spelt out, quotes kept
    rt.width, rt.preserve_quotes = 120, True
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.representer.add_representer(float, _float)
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    document = rt.load(text)
    sync(document, merged)
    out = io.StringIO()
    rt.dump(document, out)
    # the sections the preset leaves stay byte for byte (the emitter would re-wrap their long flow mappings)
    rewritten = dict(sections_of(out.getvalue()))
    result = "".join(rewritten[name] if name in changes else block for name, block in sections_of(text))
    if yaml.safe_load(result) != merged:  # what the stages will read is what was validated
        raise ConfigError(f"{params_path}: the preset's values did not survive writing; nothing was written")
    write_text(params_path, result)
    return list(changes)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.preset", description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", type=Path, help="the preset's YAML file, e.g. presets/gpu.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    args = parser.parse_args()
    try:
        sections = apply_preset(args.params, args.preset)
    except ConfigError as exc:
        print(f"preset: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{args.params}: {args.preset} applied to {', '.join(sections)} (git diff {args.params} shows the change)")


if __name__ == "__main__":
    main()
