"""The one argument and error contract of every command line (train, eval, inference*, generate_train_data, ...).

    def main(argv=None) -> int:
        return run_cli("eval.py", lambda: run_eval(*parse_args([EvalConfig], argv, "eval.py")))

Bad input is raised as :class:`UsageError` (or :class:`src.records.RecordError`, a file/record/field problem)
and becomes one line on stderr, ``<prog>: error: <message>``, and exit status 2, with no traceback. Checks run
before any model or engine loads, so a bad flag costs milliseconds and nothing is written.

The shared checks live here: :func:`check_range` (numbers), :func:`check_input_file`, :func:`check_output`
(a file or folder path that can be written and is none of the inputs), :func:`check_model_source` (a local model
folder or a Hub name), and :func:`output_lock`, held by a run over its output so that a second run on the same
path is refused instead of silently overwriting the first's files.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from src.records import RecordError

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad command-line input: an invalid flag value, a conflicting pair of flags, an unusable path."""


BAD_INPUT = (UsageError, RecordError)


def one_line_errors(parser: argparse.ArgumentParser, prog: str) -> argparse.ArgumentParser:
    """Make argparse's own errors (unknown flag, bad choice, missing value) a :class:`UsageError`."""

    def error(message: str):
        raise UsageError(f"{message} (see {prog} --help)")

    parser.error = error  # type: ignore[method-assign]
    parser.allow_abbrev = False  # "--learning_rat" is a typo, not --learning_rate
    return parser


def parse_args(types: Sequence[type], argv: list[str] | None, prog: str, description: str | None = None,
               defaults: dict[str, Any] | None = None) -> tuple:
    """Parse ``argv`` into one instance of each dataclass in ``types`` (``--help`` lists every field's help).

    A ``ValueError`` raised by a dataclass's ``__post_init__`` (its own validation) is re-raised as a
    :class:`UsageError`, so it ends as one line and exit 2 like argparse's own errors.
    """
    from transformers import HfArgumentParser

    parser = one_line_errors(HfArgumentParser(list(types), prog=prog, description=description), prog)
    if defaults:
        parser.set_defaults(**defaults)
    try:
        return tuple(parser.parse_args_into_dataclasses(args=argv))
    except UsageError:
        raise
    except ValueError as err:
        raise UsageError(str(err)) from None


def fail(prog: str, message: str) -> int:
    """Print the one-line error and return the bad-input exit status."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_cli(prog: str, body: Callable[[], Any]) -> int:
    """Run a command's body; bad input (usage, records, undecodable or unreadable input) exits 2 with one line.

    A body that returns an int chooses the exit status (e.g. 1 for a run that started and then failed).
    """
    try:
        result = body()
    except BAD_INPUT as err:
        return fail(prog, str(err))
    except UnicodeDecodeError as err:  # a reader that did not name its file: still one line, never a traceback
        return fail(prog, f"input is not UTF-8 text ({err.reason} at byte {err.start})")
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def check_range(flag: str, value: float | None, minimum: float | None = None, maximum: float | None = None) -> None:
    """``--flag`` must lie in [minimum, maximum] (either bound may be None; a None value is not checked)."""
    if value is None:
        return
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = (f"between {minimum} and {maximum}" if minimum is not None and maximum is not None
                  else f">= {minimum}" if minimum is not None else f"<= {maximum}")
        raise UsageError(f"--{flag.lstrip('-')} must be {bounds}, got {value}")


def check_input_file(flag: str, path: str | Path) -> Path:
    """An existing, readable regular file (its content is checked by the loader that reads it)."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"--{flag}: {p} is a folder, not a file")
    if not p.is_file():
        raise UsageError(f"--{flag}: {p}: file not found")
    if not os.access(p, os.R_OK):
        raise UsageError(f"--{flag}: {p}: not readable (permission denied)")
    return p


def _same_path(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_output(flag: str, path: str | Path, kind: str = "file", inputs: Iterable[str | Path] = ()) -> Path:
    """A path this run can create or replace: ``kind`` "file" or "folder"; not one of ``inputs``; writable.

    Nothing is created: the nearest existing ancestor must be a writable folder (so not a file), and an existing
    path must be of the right kind and writable.
    """
    p = Path(path)
    for other in inputs:
        if _same_path(p, Path(other)):
            raise UsageError(f"--{flag} {p} is also an input file; writing it would destroy the input")
    if p.exists() or p.is_symlink():
        if kind == "file" and p.is_dir():
            raise UsageError(f"--{flag} {p} is a folder; give a file path")
        if kind == "folder" and not p.is_dir():
            raise UsageError(f"--{flag} {p} is a file; give a folder path")
        if not os.access(p, os.W_OK):
            raise UsageError(f"--{flag} {p} is read-only")
    ancestor = p.parent if kind == "file" or p.exists() else p
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise UsageError(f"--{flag} {p} lies under {ancestor}, which is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"--{flag} {p}: {ancestor} is not writable (permission denied or read-only file system)")
    return p


def check_model_source(flag: str, name: str) -> str:
    """A local model folder with config.json, or a Hugging Face Hub name that is cached or reachable."""
    p = Path(name)
    if p.exists():
        if not (p / "config.json").is_file():
            raise UsageError(f"--{flag} {name}: not a model folder (no config.json)")
        return name
    import huggingface_hub

    try:
        if isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str):  # in the local cache
            return name
        if huggingface_hub.file_exists(name, "config.json"):
            return name
        reason = "no config.json there"
    except Exception as err:  # noqa: BLE001 - any Hub failure (invalid name, offline, no network) means the same
        reason = f"{type(err).__name__}: {err}"
    raise UsageError(f"--{flag} {name}: no such local model folder, and not a model on the Hugging Face Hub "
                     f"({reason})")


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[Path]:
    """Hold ``<path>.lock`` (an exclusive ``flock``) while a run writes ``path``; refuse if another run holds it.

    The lock file records the holder's pid and is removed on exit. Removal is safe: a waiter that opened the old
    file notices, after locking, that the name now points elsewhere (or nowhere) and tries again.
    """
    lock = Path(f"{Path(path).resolve()}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise UsageError(f"{path} is being written by another run (pid {holder}, lock {lock}); wait for it "
                             "to finish or give another output path") from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)  # the holder removed the file between our open and flock: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)
