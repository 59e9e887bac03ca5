"""TriPosT improvers: keep the steps before the first error and write the rest of the solution.

- ``scripted``: the gold rationale's steps from the error on (deterministic; tests and the CPU experiment). The
  kept prefix is aligned with the gold by its number of ``<<...>>`` annotations (one per step in the synthetic
  world and in GSM8K), so the continuation picks up at the gold step after the last kept computation.
- ``teacher``: the OpenAI-compatible teacher continues from the kept steps, given the feedback (temperature 0.7,
  the official improver's).
"""

from __future__ import annotations

import re
from dataclasses import replace

from src.grading.process import ANNOTATION
from src.tripost.feedback import split_steps
from src.tripost.verify import Verdict, numbered


def kept_steps(attempt: str, verdict: Verdict) -> list[str]:
    """The steps before the first wrong one."""
    return split_steps(attempt)[:max((verdict.step or 1) - 1, 0)]


def scripted_update(item: dict, attempt: str, verdict: Verdict) -> str:
    """Kept steps + the gold steps after the last computation the kept steps share with the gold."""
    kept = kept_steps(attempt, verdict)
    gold = split_steps(item["answer_cot"])
    done = sum(len(ANNOTATION.findall(s)) for s in kept)
    start, seen = 0, 0
    while start < len(gold) and seen < done:
        seen += len(ANNOTATION.findall(gold[start]))
        start += 1
    if done == 0:
        start = min(len(kept), len(gold)) if not any(ANNOTATION.search(s) for s in gold) else 0
    return "\n".join(kept + gold[start:])


class ScriptedImprover:
    name = "scripted"

    def improve_many(self, triples: list[tuple[dict, str, Verdict]]) -> list[str]:
        return [scripted_update(item, attempt, verdict) for item, attempt, verdict in triples]


IMPROVE_SYSTEM = (
    "You are a patient math teacher. A student's solution has an error. Keep the student's correct steps and "
    "write the remaining steps of a correct solution, one step per line, in the student's style, ending with a "
    "line \"The answer is <number>\". Write only the remaining steps."
)


def improve_messages(item: dict, attempt: str, verdict: Verdict) -> list[dict[str, str]]:
    kept = "\n".join(kept_steps(attempt, verdict)) or "(none)"
    user = (f"### Question:\n{item['question']}\n\n### Student's solution (numbered steps):\n{numbered(attempt)}\n\n"
            f"### Feedback:\n{verdict.feedback}\n\n### Correct steps kept:\n{kept}\n\n"
            f"### The remaining steps:\n")
    return [{"role": "system", "content": IMPROVE_SYSTEM}, {"role": "user", "content": user}]


class TeacherImprover:
    name = "teacher"

    def __init__(self, teacher_cfg, temperature: float = 0.7, client=None):
        from src.sampling.teacher import TeacherClient

        self.client = client or TeacherClient(replace(teacher_cfg, teacher_temperature=temperature))

    def improve_many(self, triples: list[tuple[dict, str, Verdict]]) -> list[str]:
        replies = self.client.critique_many([improve_messages(*t) for t in triples])
        out = []
        for (_, attempt, verdict), reply in zip(triples, replies):
            rest = [re.sub(r"^\(\d+\)\s*", "", s) for s in split_steps(reply)]  # drop numbering it may copy
            out.append("\n".join(kept_steps(attempt, verdict) + rest))
        return out
