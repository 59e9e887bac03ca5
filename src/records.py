"""Data files: the JSON schema of SPEC.md, loading with validation, and atomic writes.

Every loader names the file, the record index and the field when something is wrong, before any work starts.
Every writer goes through :func:`write_json` (temporary file + ``os.replace``), so a crash never leaves a
half-written file and a rerun replaces results instead of appending to them (the original code appended).

Files written follow the umask (``0666 & ~umask``, as ``open()`` would create them). A temporary file is named
``.<name>.<host>.<pid>.<random>.tmp``; a writer of ``<name>`` removes the temporaries of earlier writers of the
same name that cannot still be writing: those of this host whose process is gone, and any older than
:data:`STALE_TMP_SECONDS` (another host's, or one without host and pid). So a ``kill -9`` leaves at most one
temporary behind, and the next run of the same output removes it; a live writer's temporary is never touched.

A data file and its summary (e.g. ``<stem>.counts.json``) are kept consistent by :func:`write_json_with_summary`:
the summary carries the data file's sha256 and is written last, and :func:`read_summary` refuses a summary whose
digest is not the data file's (a kill between the two writes leaves new data beside an old summary).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets


class RecordError(ValueError):
    """A data file is missing, unreadable or does not follow the schema."""


@dataclass(frozen=True)
class Schema:
    name: str
    required: dict[str, tuple[type, ...]]
    optional: dict[str, tuple[type, ...]]
    unique_ids: bool = False  # one record per item_id (pools, test sets, sampling results; not training data)


_STR = (str,)
_LIST = (list,)
_OPTIONAL_COMMON: dict[str, tuple[type, ...]] = {
    "level": (int,),  # synthetic world: number of steps; MATH: difficulty level
    "options": (list, str),  # AQuA: list of "A)..." strings; MathQA: one "a ) .. , b ) .." string
}

SCHEMAS: dict[str, Schema] = {
    # training data: iter_data/<name>_iter_<i>.json (several rationales of one item share its item_id)
    "train": Schema("train", {"item_id": _STR, "question": _STR, "answer_cot": _STR, "answer_value": _STR},
                    _OPTIONAL_COMMON),
    # sampling pools: data/inference/{cot,pot}/<name>.json (a repeated query would be sampled and kept twice)
    "pool": Schema("pool", {"item_id": _STR, "question": _STR, "answer_cot": _STR, "answer_value": _STR},
                   _OPTIONAL_COMMON, unique_ids=True),
    # test sets: data/test/<name>.json
    "test": Schema("test", {"item_id": _STR, "question": _STR, "answer_value": _STR},
                   {**_OPTIONAL_COMMON, "answer_cot": _STR}, unique_ids=True),
    # sampling results: results.json / results_before_resample.json of a sampling run
    "sampling_result": Schema(
        "sampling_result",
        {"item_id": _STR, "question": _STR, "answer_cot": _STR, "answer_value": _STR,
         "pred": _LIST, "pred_value": _LIST, "correct_pred": _LIST},
        {**_OPTIONAL_COMMON, "correct_strategy": _LIST, "history": _LIST}, unique_ids=True,
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
    if sch.unique_ids:
        _check_unique_ids(records, sch.name, source)
    return records


def _check_unique_ids(records: list[dict], schema: str, source: str | Path) -> None:
    first: dict[str, int] = {}
    for i, rec in enumerate(records):
        j = first.setdefault(rec["item_id"], i)
        if j != i:
            raise RecordError(f"{source}: records {j} and {i} share item_id={rec['item_id']} "
                              f"(item_ids must be unique in a {schema!r} file)")


def read_json_or_jsonl(path: str | Path) -> Any:
    """Parse a .json file (one value) or a .jsonl file (one object per line), with precise error locations."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: {'a folder, not a file' if path.is_dir() else 'file not found'}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise RecordError(f"{path}: cannot read ({err.strerror})") from None
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
    import datasets  # here, not at the top: every command line imports this module, few need datasets (1.3 s)

    return datasets.Dataset.from_list(load_records(path, schema))


STALE_TMP_SECONDS = 24 * 3600  # no single JSON write takes a day: an older temporary is an orphan
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def training_record(item: dict[str, Any], rationale: str, strategy: str | None = None) -> dict[str, Any]:
    """One training record: ``rationale`` under the item's plain question (the train schema, field order fixed so
    reruns are byte-identical), plus the item's ``level`` when it has one and the ``strategy`` when given."""
    rec = {"item_id": item["item_id"], "question": item["question"], "answer_cot": rationale,
           "answer_value": item["answer_value"]}
    if item.get("level") is not None:
        rec["level"] = item["level"]
    if strategy is not None:
        rec["strategy"] = strategy
    return rec


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only set)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the leftover temporaries of earlier writers of ``path`` that cannot still be writing (module doc)."""
    path = Path(path)
    own = re.compile(rf"^\.{re.escape(path.name)}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        m = own.match(tmp.name)
        try:
            dead = m is not None and m["host"] == _HOST and not _pid_alive(int(m["pid"]))
            if dead or time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # removed meanwhile by another writer
            continue
    return removed


def _write_atomically(path: str | Path, write: Callable[[IO[str]], None]) -> Path:
    """Run ``write`` on a temporary file in the target folder, flush it to disk, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would create it: readable by the PoT sandbox and colleagues
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any, indent: int | None = 2, final_newline: bool = True) -> Path:
    """Write JSON atomically: a crash never leaves a half-written file, and a rerun replaces, never appends.

    ``indent=4, final_newline=False`` writes the bytes the original code's ``json.dump`` wrote.
    """

    def write(fh: IO[str]) -> None:
        json.dump(obj, fh, ensure_ascii=False, indent=indent)
        if final_newline:
            fh.write("\n")

    return _write_atomically(path, write)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically as it is (a verified file copied byte for byte)."""
    return _write_atomically(path, lambda fh: fh.write(text))


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write JSON lines atomically (whole file replaced, never appended)."""
    return _write_atomically(path, lambda fh: fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


SUMMARY_DIGEST = "data_sha256"


def sha256_file(path: str | Path) -> str:
    """The file's sha256, read in 1 MiB blocks (a multi-GB file never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_with_summary(path: str | Path, data: Any, summary_path: str | Path, summary: dict,
                            indent: int | None = 2, final_newline: bool = True) -> Path:
    """Write ``data`` to ``path``, then ``summary`` plus the data file's sha256 to ``summary_path`` (module doc)."""
    write_json(path, data, indent=indent, final_newline=final_newline)
    write_json(summary_path, {**summary, SUMMARY_DIGEST: sha256_file(path)})
    return Path(path)


def read_summary(summary_path: str | Path, path: str | Path) -> dict:
    """Read a summary written by :func:`write_json_with_summary`; raise RecordError unless it describes ``path``."""
    summary = read_json_or_jsonl(summary_path)
    if not isinstance(summary, dict) or SUMMARY_DIGEST not in summary:
        raise RecordError(f"{summary_path}: no {SUMMARY_DIGEST} field (not written with its data file)")
    if not Path(path).is_file() or summary[SUMMARY_DIGEST] != sha256_file(path):
        raise RecordError(f"{summary_path}: does not describe {path} (sha256 differs: an interrupted run "
                          "replaced one without the other; rerun the step)")
    return summary
