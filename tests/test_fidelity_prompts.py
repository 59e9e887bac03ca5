"""Every strategy's prompt, built through the real strategy classes, equals the original code's text byte for byte.

The expected strings are written out here in full (SPEC.md "Prompts"), not rebuilt from src/prompts.py, so a
rewording of a template fails these tests.
"""

from __future__ import annotations

from src.sampling.query import QueryState
from src.sampling.strategies import STRATEGIES, StrategyContext

RECORD = {"item_id": "gsm8k_7", "question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
          "answer_cot": "Tom starts with 3 apples.\nHe buys 4 more: 3 + 4 = <<3+4=7>>7.\nThe answer is 7",
          "answer_value": "7"}
Q = RECORD["question"]
GOLD = RECORD["answer_cot"]

INITIAL = ("Below is a math problem, please give a step-by-step answer.\n\n### Question:\n" + Q
           + "\n\n### Your step-by-step answer:\n")
ANSWER_DRIVEN = ("Below is a math problem, please give a step-by-step answer.\n\n### Question:\n" + Q + " 7"
                 + "\n\n### Your step-by-step answer:\n")
RATIONALE_DRIVEN = ("Below is a math problem with a reference answer. Using the reference answer as a guide, "
                    "write your own answer.\n\n### Question:\n" + Q + " \n\n### Reference Answer:\n" + GOLD
                    + "\n\n### Your detailed, complete and step-by-step answer:\n")
TEACHER_SYSTEM = ("You're a patient teacher who corrects mistakes and guides students, helping them find the "
                  "correct answers on their own. For the following math problem, the original solution is "
                  "incorrect. Please identify the incorrect step, explain why it is incorrect.\n")
WRONG = "Tom has 3 + 3 = 6 apples.\nThe answer is 6"
FEEDBACK = "He buys 4 apples, not 3."
TEACHER_USER = ("### Question:\n" + Q + "\n\n### Student's original wrong answer:\n" + WRONG
                + "\n\n### Correct final answer:\n" + GOLD + "\n\n### Your correction:\n")
REVISION = ("Below is a correction to your previous solution. Review this carefully and use it to revise your "
            "solution. Ensure that it includes all necessary steps clearly and thoroughly.\n\n### Question:\n" + Q
            + "\n\n### Your original wrong answer:\n" + WRONG + "\n\n### Correction and guidance:\n" + FEEDBACK
            + "\n\n### Your revised, complete step-by-step solution:\n")


def _prompts(strategy: str, ctx: StrategyContext | None = None, query: QueryState | None = None) -> list:
    query = query or QueryState(dict(RECORD))
    return STRATEGIES[strategy].requests([query], ctx or StrategyContext())


def test_plain_answer_and_rationale_driven_prompts_are_the_originals():
    assert [r.prompt for r in _prompts("vanilla")] == [INITIAL]
    assert [r.prompt for r in _prompts("answer_driven")] == [ANSWER_DRIVEN]
    assert [r.prompt for r in _prompts("rationale_driven")] == [RATIONALE_DRIVEN]


def test_state_reset_prompts_are_the_plain_prompt_plus_gold_prefix():
    query = QueryState(dict(RECORD))
    lines = GOLD.split("\n")
    got = [_prompts("state_reset", StrategyContext(reset_cut="lines"), query)[0] for _ in range(4)]
    # 3 lines: prefixes of 1, 2, then 2 again (the original's cap), then back to 1
    expected_prefixes = [lines[0] + "\n", "\n".join(lines[:2]) + "\n", "\n".join(lines[:2]) + "\n", lines[0] + "\n"]
    assert [r.prompt for r in got] == [INITIAL + p for p in expected_prefixes]
    assert [r.prefix for r in got] == expected_prefixes


class _RecordingTeacher:
    def __init__(self):
        self.conversations: list = []

    def critique_many(self, conversations):
        self.conversations.extend(conversations)
        return [FEEDBACK for _ in conversations]


def test_interactive_prompts_are_the_originals():
    query = QueryState(dict(RECORD))
    query.add(WRONG, "6", False, "initial", 0)
    teacher = _RecordingTeacher()
    (req,) = _prompts("teacher_help", StrategyContext(teacher=teacher), query)
    assert teacher.conversations == [[{"role": "system", "content": TEACHER_SYSTEM},
                                      {"role": "user", "content": TEACHER_USER}]]
    assert req.prompt == REVISION
