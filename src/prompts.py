"""Every prompt of the project, in one place (SPEC.md "Prompts").

Training and sampling build the student prompt with the same function (:func:`student_prompt`), so what the
model is trained on and what it is asked at sampling time cannot drift apart.
"""

from __future__ import annotations

STUDENT_TEMPLATE = (
    "Below is a math problem, please give a step-by-step answer.\n\n"
    "### Question:\n{question}\n\n### Your step-by-step answer:\n"
)

# Exact texts of the original code (SPEC.md "Prompts"), including the space after "{question}" below: the
# paper's samples were drawn with these bytes, so a rewording changes what the guided rounds produce.
RATIONALE_DRIVEN_TEMPLATE = (
    "Below is a math problem with a reference answer. Using the reference answer as a guide, write your own "
    "answer.\n\n"
    "### Question:\n{question} \n\n### Reference Answer:\n{reference}\n\n"
    "### Your detailed, complete and step-by-step answer:\n"
)

TEACHER_SYSTEM_PROMPT = (
    "You're a patient teacher who corrects mistakes and guides students, helping them find the correct answers "
    "on their own. For the following math problem, the original solution is incorrect. Please identify the "
    "incorrect step, explain why it is incorrect.\n"
)

# The "Correct final answer" slot holds the whole gold rationale, as in the original.
TEACHER_USER_TEMPLATE = (
    "### Question:\n{question}\n\n### Student's original wrong answer:\n{wrong_answer}\n\n"
    "### Correct final answer:\n{gold}\n\n### Your correction:\n"
)

STUDENT_REVISION_TEMPLATE = (
    "Below is a correction to your previous solution. Review this carefully and use it to revise your solution. "
    "Ensure that it includes all necessary steps clearly and thoroughly.\n\n"
    "### Question:\n{question}\n\n### Your original wrong answer:\n{wrong_answer}\n\n"
    "### Correction and guidance:\n{feedback}\n\n### Your revised, complete step-by-step solution:\n"
)

POT_EVAL_SUFFIX = " Let's write a program."


def student_prompt(question: str) -> str:
    """The plain prompt: initial sampling, evaluation and training all use it."""
    return STUDENT_TEMPLATE.format(question=question)


def answer_driven_prompt(question: str, answer_value: str) -> str:
    """Answer-driven guidance: the gold answer appended to the question after one space."""
    return student_prompt(f"{question} {answer_value}")


def rationale_driven_prompt(question: str, reference: str) -> str:
    """Rationale-driven guidance: the gold rationale shown as a reference."""
    return RATIONALE_DRIVEN_TEMPLATE.format(question=question, reference=reference)


def state_reset_prompt(question: str, gold_prefix: str) -> str:
    """State reset: the plain prompt followed directly by a prefix of the gold rationale; the model continues."""
    return student_prompt(question) + gold_prefix


def teacher_messages(question: str, wrong_answer: str, gold: str) -> list[dict[str, str]]:
    """Chat messages asking the teacher to critique one wrong attempt (a fresh single-turn exchange)."""
    return [
        {"role": "system", "content": TEACHER_SYSTEM_PROMPT},
        {"role": "user", "content": TEACHER_USER_TEMPLATE.format(question=question, wrong_answer=wrong_answer,
                                                                 gold=gold)},
    ]


def student_revision_prompt(question: str, wrong_answer: str, feedback: str) -> str:
    """The student's prompt after the teacher's critique: write a revised complete solution."""
    return STUDENT_REVISION_TEMPLATE.format(question=question, wrong_answer=wrong_answer, feedback=feedback)


def eval_question(question: str, mode: str) -> str:
    """Question text used at evaluation: PoT mode asks for a program (SPEC.md)."""
    return question + POT_EVAL_SUFFIX if mode == "pot" else question


def training_pair(question: str, rationale: str, eos_token: str) -> tuple[str, str]:
    """(prompt, completion) of one training example; the loss covers the completion (rationale + EOS) only."""
    return student_prompt(question), rationale + eos_token
