"""Data files: the JSON schema of SPEC.md, loading with validation, and atomic writes.

Every loader names the file, the record index and the field when something is wrong, before any work starts.
Every writer goes through :func:`write_json` (temporary file + ``os.replace``), so a crash never leaves a
half-written file and a rerun replaces results instead of appending to them (the original code appended).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import datasets


class RecordError(ValueError):
    """A data file is missing, unreadable or does not follow the schema."""


@dataclass(frozen=True)
class Schema:
    name: str
    required: dict[str, tuple[type, ...]]
    optional: dict[str, tuple[type, ...]]


_STR = (str,)
_LIST = (list,)
_OPTIONAL_COMMON: dict[str, tuple[type, ...]] = {
    "level": (int,),  # synthetic world: number of steps; MATH: difficulty level
    "options": (list, str),  # AQuA: list of "A)..." strings; MathQA: one "a ) .. , b ) .." string
}

SCHEMAS: dict[str, Schema] = {
    # training data and sampling pools: data/inference/{cot,pot}/<name>.json, iter_data/<name>_iter_<i>.json
    "train": Schema("train", {"item_id": _STR, "question": _STR, "answer_cot": _STR, "answer_value": _STR},
                    _OPTIONAL_COMMON),
    # test sets: data/test/<name>.json
    "test": Schema("test", {"item_id": _STR, "question": _STR, "answer_value": _STR},
                   {**_OPTIONAL_COMMON, "answer_cot": _STR}),
    # sampling results: results.json / results_before_resample.json of a sampling run
    "sampling_result": Schema(
        "sampling_result",
        {"item_id": _STR, "question": _STR, "answer_cot": _STR, "answer_value": _STR,
         "pred": _LIST, "pred_value": _LIST, "correct_pred": _LIST},
        {**_OPTIONAL_COMMON, "correct_strategy": _LIST, "history": _LIST},
    ),
}


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def validate_records(records: Any, schema: str | Schema, source: str | Path = "<data>") -> list[dict]:
    """Check that ``records`` is a non-empty list of objects with the schema's fields and types."""
    sch = SCHEMAS[schema] if isinstance(schema, str) else schema
    if not isinstance(records, list):
        raise RecordError(f"{source}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise RecordError(f"{source}: the file holds no records (empty list)")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise RecordError(f"{source}: record {i}: expected an object, got {type(rec).__name__}")
        for field, types in sch.required.items():
            if field not in rec:
                rid = rec.get("item_id", "?")
                raise RecordError(f"{source}: record {i} (item_id={rid}): missing field {field!r} "
                                  f"(schema {sch.name!r} needs {', '.join(sch.required)})")
            if not isinstance(rec[field], types) or isinstance(rec[field], bool) and bool not in types:
                raise RecordError(f"{source}: record {i} (item_id={rec.get('item_id', '?')}): field {field!r} "
                                  f"should be {_type_names(types)}, got {type(rec[field]).__name__}")
        for field, types in sch.optional.items():
            if field in rec and rec[field] is not None and not isinstance(rec[field], types):
                raise RecordError(f"{source}: record {i} (item_id={rec.get('item_id', '?')}): field {field!r} "
                                  f"should be {_type_names(types)}, got {type(rec[field]).__name__}")
    return records


def read_json_or_jsonl(path: str | Path) -> Any:
    """Parse a .json file (one value) or a .jsonl file (one object per line), with precise error locations."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise RecordError(f"{path}: the file is empty")
    if path.suffix == ".jsonl":
        out = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise RecordError(f"{path}: line {lineno}: invalid JSON ({err.msg}, column {err.colno})") from None
        return out
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None


def load_records(path: str | Path, schema: str | Schema = "train") -> list[dict]:
    """Load and validate a JSON/JSONL file of records; raise :class:`RecordError` naming file, index, field."""
    return validate_records(read_json_or_jsonl(path), schema, source=path)


def load_dataset(path: str | Path, schema: str | Schema = "train") -> datasets.Dataset:
    """Load and validate a data file as a Hugging Face ``datasets.Dataset`` (for ``map`` / batching)."""
    return datasets.Dataset.from_list(load_records(path, schema))


def _write_atomically(path: str | Path, write: Callable[[IO[str]], None]) -> Path:
    """Run ``write`` on a temporary file in the target folder, flush it to disk, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write JSON atomically: a crash never leaves a half-written file, and a rerun replaces, never appends."""

    def write(fh: IO[str]) -> None:
        json.dump(obj, fh, ensure_ascii=False, indent=indent)
        fh.write("\n")

    return _write_atomically(path, write)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write JSON lines atomically (whole file replaced, never appended)."""
    return _write_atomically(path, lambda fh: fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
