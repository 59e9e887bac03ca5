"""TriPosT verifiers: the first wrong step of an attempt and the feedback sentence that says so.

- ``process``: this project's process check (src.grading.process.first_failing_step on GSM8K-style annotations,
  src.synthetic.first_wrong_synthetic_step in the synthetic world) plus the grader on the final answer. When every
  prefix passes but the whole attempt does not (it stops early, or the chain is consistent but the answer wrong),
  the last step, the final response, is the wrong one.
- ``teacher``: an OpenAI-compatible instruction model at temperature 0, asked for the official sentence; a reply
  that does not parse is counted and logged by the caller (``Verdict`` None), never a crash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from src.grading.process import ANNOTATION
from src.tripost.feedback import FeedbackParseError, format_feedback, parse_feedback, split_steps


@dataclass(frozen=True)
class Verdict:
    correct: bool
    step: int | None  # first wrong step (1-based), None when correct
    feedback: str


def _segment(step_text: str) -> str:
    found = ANNOTATION.search(step_text)
    return found.group(0) if found else step_text[:80]


def _reason(why: str) -> str:
    """The checker's message as the "This is because ..." clause."""
    why = re.sub(r"^annotation \d+ <<[^<>]*>>: ", "", why)
    m = re.match(r"^step \d+: <<(.*)>> != <<(.*)>>$", why)
    if m:
        return f"the step should be <<{m.group(2)}>>"
    m = re.match(r"^step count (\d+) (?:!=|>) (\d+)$", why)
    if m:
        return f"the solution has {m.group(1)} computation steps instead of {m.group(2)}"
    return why if not why.startswith("mentions ") else f"it {why}"


def _is_synthetic(dataset: str) -> bool:
    from src.registry import get_dataset

    return get_dataset(dataset).checks_gold_chain


def _final_grade(item: dict, attempt: str, dataset: str):
    from src.grading import grade_response

    return grade_response(attempt, item["answer_value"], dataset, options=item.get("options"))


def process_verdict(item: dict, attempt: str, dataset: str) -> Verdict:
    """The process verifier's verdict on one attempt at ``item`` (question, answer_cot, answer_value)."""
    from src.grading.process import check_annotations, first_failing_step
    from src.synthetic import check_synthetic_rationale, first_wrong_synthetic_step

    steps = split_steps(attempt)
    text = "\n".join(steps)
    if _is_synthetic(dataset):
        first = first_wrong_synthetic_step(item["question"], item["answer_cot"], text)
        whole = check_synthetic_rationale(item["question"], item["answer_cot"], text)
    else:
        first = first_failing_step(text, item["question"])
        whole = check_annotations(text, item["question"])
    grade = _final_grade(item, text, dataset)
    if first is None and whole is None and grade.correct and steps:
        return Verdict(True, None, format_feedback(len(steps)))
    if first is None:  # every prefix holds: the final response is where it goes wrong
        why = whole or (f"the final answer {grade.pred_value} is not correct" if grade.pred_value
                        else "the final answer is missing")
        first = (max(len(steps), 1), why)
    step, why = first
    segment = _segment(steps[step - 1]) if steps else ""
    return Verdict(False, step, format_feedback(len(steps), step, segment, _reason(why)))


class ProcessVerifier:
    name = "process"

    def __init__(self, dataset: str):
        self.dataset = dataset

    def verify_many(self, pairs: list[tuple[dict, str]]) -> list[Verdict | None]:
        return [process_verdict(item, attempt, self.dataset) for item, attempt in pairs]


VERIFY_SYSTEM = (
    "You check a student's step-by-step solution of a math problem against a reference solution. Find the first "
    "incorrect step. Answer with exactly one line, in one of these two forms:\n"
    "Step (1) to step (k) are correct. In step (k+1) the part \"<the wrong part>\" is incorrect. This is because "
    "<why>.\n"
    "Step (1) to step (N) are correct. The final response is also correct.\n"
    "(If step (1) is wrong, start with \"In step (1) ...\".)"
)


def numbered(attempt: str) -> str:
    return "\n".join(f"({i}) {s}" for i, s in enumerate(split_steps(attempt), start=1))


def verify_messages(item: dict, attempt: str) -> list[dict[str, str]]:
    user = (f"### Question:\n{item['question']}\n\n### Reference solution:\n{item['answer_cot']}\n\n"
            f"### Student's solution (numbered steps):\n{numbered(attempt)}\n\n### Your feedback (one line):\n")
    return [{"role": "system", "content": VERIFY_SYSTEM}, {"role": "user", "content": user}]


class TeacherVerifier:
    """The teacher model's feedback at temperature 0; correct only when it says so and the answer grades correct.

    ``unparsable`` lists (item_id, reply) of replies that are not a feedback sentence."""

    name = "teacher"

    def __init__(self, dataset: str, teacher_cfg, client=None):
        from src.sampling.teacher import TeacherClient

        self.dataset = dataset
        self.client = client or TeacherClient(replace(teacher_cfg, teacher_temperature=0.0, teacher_top_p=1.0))
        self.unparsable: list[tuple[str, str]] = []

    def verify_many(self, pairs: list[tuple[dict, str]]) -> list[Verdict | None]:
        replies = self.client.critique_many([verify_messages(item, attempt) for item, attempt in pairs])
        out: list[Verdict | None] = []
        for (item, attempt), reply in zip(pairs, replies):
            try:
                parsed = parse_feedback(reply)
            except FeedbackParseError:
                self.unparsable.append((item["item_id"], reply))
                out.append(None)
                continue
            n = len(split_steps(attempt))
            if not parsed.correct and not 1 <= (parsed.step or 0) <= max(n, 1):  # points at no step it saw
                self.unparsable.append((item["item_id"], reply))
                out.append(None)
                continue
            if parsed.correct and not _final_grade(item, attempt, self.dataset).correct:  # blame the final response
                last = split_steps(attempt)[-1] if n else ""
                out.append(Verdict(False, max(n, 1), format_feedback(n, max(n, 1), _segment(last),
                                                                     "the final answer is not correct")))
                continue
            text = format_feedback(n) if parsed.correct else format_feedback(n, parsed.step, parsed.segment,
                                                                             parsed.reason or "it is wrong")
            out.append(Verdict(parsed.correct, parsed.step, text))
        return out
