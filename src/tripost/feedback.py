"""TriPosT's text formats: steps of an attempt, the verifier's feedback sentence, and the trajectory text.

An attempt's steps are its non-empty lines, numbered (1)..(N); the last line is normally "The answer is N"
(the final response). The feedback sentences are the official code's (jasonyux/TriPosT, its scripted verifier)::

    Step (1) to step (2) are correct. In step (3) the part "<<10*2=21>>" is incorrect. This is because ...
    Step (1) to step (4) are correct. The final response is also correct.

The official scripted verifier also writes "Step (1) to (4) are correct." (without the second "step"): both
all-correct spellings parse. A trajectory's text (the training completion) is::

    <attempt>
    Feedback: <feedback>
    Updated Answer:
    <updated attempt>
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FEEDBACK_MARKER = "Feedback:"
UPDATE_MARKER = "Updated Answer:"
ALL_CORRECT_TAIL = "The final response is also correct."

_ALL_CORRECT = re.compile(r"^Step \(1\) (?:to (?:step )?\((\d+)\) are|is) correct\.\s*The final response is also "
                          r"correct", re.IGNORECASE)  # whatever follows (an EOS string) does not matter
_ERROR = re.compile(r"In step \((\d+)\) the part\s*\"\s?(.*?)\s?\"\s*is incorrect\.?(?:\s*This is because (.*))?",
                    re.IGNORECASE | re.DOTALL)


class FeedbackParseError(ValueError):
    """A feedback text that is neither the all-correct nor the error sentence."""


@dataclass(frozen=True)
class ParsedFeedback:
    correct: bool
    step: int | None  # first wrong step (1-based); None when correct
    segment: str = ""
    reason: str = ""


def split_steps(attempt: str) -> list[str]:
    """The steps of an attempt: its non-empty lines, stripped."""
    return [line.strip() for line in attempt.splitlines() if line.strip()]


def word_count(text: str) -> int:
    return len(text.split())


def format_feedback(n_steps: int, step: int | None = None, segment: str = "", reason: str = "") -> str:
    """The official feedback sentence: all correct (``step`` None) or the first wrong step with why."""
    if step is None:
        return f"Step (1) to step ({n_steps}) are correct. {ALL_CORRECT_TAIL}"
    before = "" if step <= 1 else "Step (1) is correct. " if step == 2 else \
        f"Step (1) to step ({step - 1}) are correct. "
    segment = " ".join(segment.replace('"', "'").split())
    reason = " ".join(reason.split()).rstrip(".")
    return f'{before}In step ({step}) the part "{segment}" is incorrect. This is because {reason}.'


def parse_feedback(text: str) -> ParsedFeedback:
    """Parse one feedback sentence (the first line of ``text``); raise :class:`FeedbackParseError`."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if _ALL_CORRECT.match(line):
        return ParsedFeedback(True, None)
    m = _ERROR.search(line)
    if m is None:
        raise FeedbackParseError(f"not a TriPosT feedback sentence: {line[:200]!r}")
    return ParsedFeedback(False, int(m.group(1)), m.group(2).strip(), (m.group(3) or "").strip().rstrip("."))


def first_attempt(text: str) -> str:
    """The attempt part of a model response: everything before its first "Feedback:" line."""
    pos = text.find("\n" + FEEDBACK_MARKER)
    return (text if pos < 0 else text[:pos]).strip()


def example_text(attempt: str, feedback: str, update: str | None = None) -> str:
    """One training completion: attempt, feedback, and (improvement examples) the updated attempt."""
    text = f"{attempt.strip()}\n{FEEDBACK_MARKER} {feedback.strip()}"
    return text if update is None else f"{text}\n{UPDATE_MARKER}\n{update.strip()}"


def has_error_feedback(text: str) -> bool:
    """Does the first feedback of a trajectory text report an error? (raises FeedbackParseError if unparsable)"""
    pos = text.find(FEEDBACK_MARKER)
    if pos < 0:
        raise FeedbackParseError(f"no {FEEDBACK_MARKER!r} marker")
    return not parse_feedback(text[pos + len(FEEDBACK_MARKER):]).correct
