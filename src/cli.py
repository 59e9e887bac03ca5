"""The one argument and error contract of every command line (train, eval, inference*, generate_train_data, ...).

    def main(argv=None) -> int:
        return run_cli("eval.py", lambda: run_eval(*parse_args([EvalConfig], argv, "eval.py")))

Bad input is raised as :class:`UsageError` (or :class:`src.records.RecordError`, a file/record/field problem)
and becomes one line on stderr, ``<prog>: error: <message>``, and exit status 2, with no traceback. Checks run
before any model or engine loads, so a bad flag costs milliseconds and nothing is written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from src.records import RecordError

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad command-line input: an invalid flag value, a conflicting pair of flags, an unusable path."""


BAD_INPUT = (UsageError, RecordError)


def parse_args(types: Sequence[type], argv: list[str] | None, prog: str, description: str | None = None,
               defaults: dict[str, Any] | None = None) -> tuple:
    """Parse ``argv`` into one instance of each dataclass in ``types`` (``--help`` lists every field's help).

    A ``ValueError`` raised by a dataclass's ``__post_init__`` (its own validation) is re-raised as a
    :class:`UsageError`, so it ends as one line and exit 2 like argparse's own errors.
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(list(types), prog=prog, description=description)
    if defaults:
        parser.set_defaults(**defaults)

    def one_line_error(message: str):  # argparse's own errors (unknown flag, bad choice) follow the contract too
        raise UsageError(f"{message} (see {prog} --help)")

    parser.error = one_line_error
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
    """Run a command's body; bad input (usage, records, undecodable or unreadable input) exits 2 with one line."""
    try:
        body()
    except BAD_INPUT as err:
        return fail(prog, str(err))
    except UnicodeDecodeError as err:  # a reader that did not name its file: still one line, never a traceback
        return fail(prog, f"input is not UTF-8 text ({err.reason} at byte {err.start})")
    return 0
