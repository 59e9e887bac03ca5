"""Answer grading for every data set (CoT and PoT), looked up through the dataset registry's ``answer_format``.

    from src.grading import grade_response, grade_batch, PotExecutor
    grade_response("... The answer is 1,000.", "1000", "gsm8k").correct          # True
    with PotExecutor(workers=2) as ex:
        grade_batch(["print(6 * 7)"], ["42"], "gsm8k", mode="pot", executor=ex)  # [GradeResult("42", True, "ok")]

Re-grade a saved file: ``python -m src.grading results.json --dataset gsm8k --mode cot``.

Tolerance policy (the one place it is written; the README repeats it):
- ``number`` (GSM8K, SVAMP, synthetic): the prediction and gold are parsed as exact numbers after removing
  thousands commas, currency signs, percent signs and trailing zeros; two integers must be equal exactly,
  otherwise they must agree within a relative 1e-9 of the gold (float printing noise such as 18.000000000001,
  never a rounding: 12 != 12.5, 12 != 120, 1000000.5 != 1000000, 123456789 != 123456790). A hedge ("12 or 13",
  "between 12 and 13", "12-13", "12, 13, 14 or 15") is wrong, whichever number comes first.
- ``math`` (MATH): normalised LaTeX strings equal, else exact numbers equal (as above), else sympy equivalence:
  rational values exactly (10^{-20} != 0, 1+10^{-12} != 1), other exact closed forms to 40 significant digits,
  forms written with a decimal to 9 (at three random points when there are variables; no float overflow:
  1e400 != 1e401, 1e309 != \\infty);
  tuples and intervals element by element with the same brackets; unordered comma lists as multisets;
  matrices entry by entry. A predicted ``x = 5`` is compared by its right side when the gold has no ``=`` and the
  left side is one variable (``x + y + z = 0`` is not ``0``).
  A float never matches an exact value it only approximates (0.333 != 1/3, 1.41 != sqrt(2)).
- ``choice_upper`` / ``choice_lower`` (AQuA, MathQA): exactly one option letter, case-insensitive, written
  ``C``, ``(C)``, ``C)``, ``c )`` or ``option C``; or an answer equal to exactly one option's text, or to
  exactly one option's number within a relative 0.1% ("2.3333" names "7/3"). Several letters are wrong.
- ``theoremqa``: True/False (yes/no accepted; "True or False" is wrong); lists element by element; numbers
  within a relative 1% of the gold (TheoremQA golds are rounded to 2-4 digits); when both prediction and gold
  are written as integers they must be equal exactly; a zero gold needs |pred| <= 1e-9; option letters like
  ``(a)`` as letters.
- Empty predictions are never correct (also against an empty gold). A comparison that exceeds its time bound
  (5 s, symbolic work in a killable helper process) is graded wrong with status ``"timeout"``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from src.grading.compare import (
    MAX_SYMBOLIC_CHARS,
    REL_TOL_EXACT,
    REL_TOL_THEOREMQA,
    get_checker,
    is_bool_hedge,
    normalize_math,
    numbers_equal,
    parse_number,
    strip_variable_lhs,
    symbolic_compare,
)
from src.grading.extract import (
    drop_runaway,
    extract_choice,
    extract_math,
    extract_number,
    extract_theoremqa,
    first_number,
    normalize_program_output,
    options_from_question,
)
from src.grading.reference import GRADERS, reference_grade_batch
from src.grading.sandbox import PotExecutor, ProgramResult
from src.registry import get_dataset

__all__ = ["GRADERS", "GradeResult", "grade_response", "grade_batch", "PotExecutor", "ProgramResult", "extract_answer",
           "answers_equal", "grade_program_output",
           "options_from_question"]


@dataclass
class GradeResult:
    pred_value: str  # the extracted answer ("" when none was found)
    correct: bool
    status: str  # "ok" | "no_answer" | "timeout" | "error"


def extract_answer(response: str, dataset: str, mode: str = "cot", options=None) -> str:
    """The final answer in a CoT response (``mode="cot"``) or in a program's printed output (``mode="pot"``)."""
    from_program = mode == "pot"
    if not from_program:
        response = drop_runaway(response)  # README "Grading": an answer, then a new question, reads the first
    return _format(dataset).extract(response, options, from_program)


# ---------------------------------------------------------------------------------------------------------------
# Comparison per format; each returns (correct, status)


def _equal_number(pred: str, gold: str) -> tuple[bool, str]:
    p, g = parse_number(pred), parse_number(gold)
    if p is None or g is None:
        return (bool(pred.strip()) and pred.strip() == gold.strip()), "ok"
    return numbers_equal(p, g, REL_TOL_EXACT), "ok"


def _equal_math(pred: str, gold: str) -> tuple[bool, str]:
    p, g = normalize_math(pred), normalize_math(gold)
    if "=" in p and "=" not in g:
        p = normalize_math(strip_variable_lhs(p))
    if not p or not g:
        return False, "ok"
    if p == g:
        return True, "ok"
    letter = re.fullmatch(r"\(?([A-Ea-e])\)?", p), re.fullmatch(r"\(?([A-Ea-e])\)?", g)
    if letter[0] and letter[1]:
        return letter[0].group(1) == letter[1].group(1), "ok"
    pn, gn = parse_number(p), parse_number(g)
    if pn is not None and gn is not None:
        return numbers_equal(pn, gn, REL_TOL_EXACT), "ok"
    return symbolic_compare(p, g)


def _equal_choice(pred: str, gold: str) -> tuple[bool, str]:
    g = gold.strip().strip("()").strip().upper()
    p = pred.strip().upper()
    return bool(p) and len(p) == 1 and p == g, "ok"


_BOOLS = {"true": True, "yes": True, "correct": True, "false": False, "no": False, "incorrect": False}


def _as_list(text: str) -> list | None:
    s = normalize_program_output(text).strip().strip("$")
    s = s.replace("\\left", "").replace("\\right", "")
    if not (len(s) >= 2 and s[0] in "[(" and s[-1] in "])"):
        return None
    try:
        value = ast.literal_eval("[" + s[1:-1] + "]")
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value) else None


def _theoremqa_numbers(pred: str, gold: str) -> bool:
    p, g = parse_number(pred), parse_number(gold)
    if p is None or g is None:
        return False
    integers = re.fullmatch(r"-?\d+", pred.strip().replace(",", "")) and re.fullmatch(r"-?\d+", gold.strip())
    return p == g if integers else numbers_equal(p, g, REL_TOL_THEOREMQA)


def _equal_theoremqa(pred: str, gold: str) -> tuple[bool, str]:
    p, g = pred.strip().rstrip(".").strip(), gold.strip()
    if not p or not g:
        return False, "ok"
    if g.lower() in ("true", "false"):
        plain = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", p).lower()
        if is_bool_hedge(plain):  # "True or False": both answers at once
            return False, "ok"
        word = re.match(r"[a-z]*", re.sub(r"^[^a-z]+", "", plain)).group(0)  # "Yes, because ..." -> yes
        return _BOOLS.get(word) is (g.lower() == "true"), "ok"
    if re.fullmatch(r"\([a-e]\)", g):
        m = re.fullmatch(r"\(?([a-eA-E])\)?", p)
        return bool(m) and m.group(1).lower() == g[1], "ok"
    gl = _as_list(g)
    if gl is not None:
        pl = _as_list(p)
        return (pl is not None and len(pl) == len(gl)
                and all(_theoremqa_numbers(str(a), str(b)) for a, b in zip(pl, gl))), "ok"
    if parse_number(g) is not None:
        if parse_number(p) is not None:
            return _theoremqa_numbers(p, g), "ok"
        pm = normalize_math(strip_variable_lhs(p))
        if parse_number(pm) is not None:
            return _theoremqa_numbers(pm, g), "ok"
        num = first_number(pm)
        if num is not None and len(pm) <= 60 and re.fullmatch(r"-?[\d.,]+\s*(?:\\text\{.*\}|[a-zA-Z/ ]*)", pm):
            return _theoremqa_numbers(num, g), "ok"  # "5.2 m/s"
        value = _symbolic_value(pm)
        if value is None:
            return False, "ok"
        return numbers_equal(value, float(parse_number(g)), REL_TOL_THEOREMQA), "ok"
    return _equal_math(p, g)


def _symbolic_value(expr: str) -> float | None:
    """Numeric value of a closed-form LaTeX answer (e.g. ``\\frac{\\pi}{4}``), via the symbolic checker."""
    return get_checker().value(expr) if len(expr) <= MAX_SYMBOLIC_CHARS else None


@dataclass(frozen=True)
class AnswerFormat:
    """How one ``answer_format`` of the dataset registry is read and compared: the one dispatch table."""

    extract: Callable[[str, Any, bool], str]  # (response, options, from_program) -> answer ("" when none)
    compare: Callable[[str, str], tuple[bool, str]]  # (pred, gold) -> (correct, status)


ANSWER_FORMATS: dict[str, AnswerFormat] = {
    "number": AnswerFormat(lambda r, _o, prog: extract_number(r, prog), _equal_number),
    "math": AnswerFormat(lambda r, _o, prog: extract_math(r, prog), _equal_math),
    "choice_upper": AnswerFormat(extract_choice, _equal_choice),
    "choice_lower": AnswerFormat(extract_choice, _equal_choice),
    "theoremqa": AnswerFormat(lambda r, _o, prog: extract_theoremqa(r, prog), _equal_theoremqa),
}


def _format(dataset: str) -> AnswerFormat:
    return ANSWER_FORMATS[get_dataset(dataset).answer_format]


def compare_answers(pred: str, gold: str, dataset: str) -> tuple[bool, str]:
    """``(correct, status)`` of an extracted prediction against the gold ``answer_value``."""
    if not pred or not pred.strip() or not str(gold).strip():
        return False, "no_answer" if not pred or not pred.strip() else "ok"
    return _format(dataset).compare(pred, str(gold))


def answers_equal(pred: str, gold: str, dataset: str) -> bool:
    """Whether an extracted prediction equals the gold answer under the dataset's tolerance policy."""
    return compare_answers(pred, gold, dataset)[0]


def grade_response(response: str, gold: str, dataset: str, mode: str = "cot", options=None,
                   grader: str = "project") -> GradeResult:
    """Grade one CoT response, or one PoT program (run in a one-off sandbox pool).

    ``grader="reference"``: the original code's decisions (src/grading/reference.py); ``options`` unused.
    """
    if grader != "project":
        return grade_batch([response], [gold], dataset, mode, options=[options], grader=grader)[0]
    if not isinstance(response, str):  # a missing response (None) is no answer, not a crash
        return GradeResult("", False, "no_answer")
    if mode == "pot":
        return grade_batch([response], [gold], dataset, mode, options=[options])[0]
    pred = extract_answer(response, dataset, "cot", options)
    if not pred:
        return GradeResult("", False, "no_answer")
    correct, status = compare_answers(pred, gold, dataset)
    return GradeResult(pred, correct, status)


def grade_program_output(result: ProgramResult, gold: str, dataset: str, options=None) -> GradeResult:
    """Grade what a sandboxed program printed (status "timeout"/"error" when it did not finish cleanly)."""
    if result.status == "timeout":
        return GradeResult("", False, "timeout")
    pred = extract_answer(result.stdout, dataset, "pot", options)
    if result.status != "ok" and not pred:
        return GradeResult("", False, "error")
    if not pred:
        return GradeResult("", False, "no_answer")
    correct, status = compare_answers(pred, gold, dataset)
    return GradeResult(pred, correct, status if result.status == "ok" else "error")


def grade_batch(responses: list[str], golds: list[str], dataset: str, mode: str = "cot",
                executor: PotExecutor | None = None, options: list | None = None,
                grader: str = "project") -> list[GradeResult]:
    """Grade many responses; PoT programs run through ``executor`` (a pool is created and closed if None).

    ``options`` is per item (``options[i]`` belongs to ``responses[i]``), as stored in the test files.
    """
    if len(responses) != len(golds):
        raise ValueError(f"{len(responses)} responses but {len(golds)} gold answers")
    opts = list(options) if options is not None else [None] * len(responses)
    if len(opts) != len(responses):
        raise ValueError(f"{len(responses)} responses but {len(opts)} option lists")
    if grader not in GRADERS:
        raise ValueError(f"grader must be one of {', '.join(GRADERS)}, got {grader!r}")
    if mode not in ("cot", "pot"):
        raise ValueError(f"mode must be 'cot' or 'pot', got {mode!r}")
    if mode == "cot" and grader == "project":
        return [grade_response(r, g, dataset, "cot", o) for r, g, o in zip(responses, golds, opts)]
    own = executor is None and mode == "pot"
    ex = PotExecutor(workers=2) if own else executor
    try:
        if grader == "reference":
            texts = [r if isinstance(r, str) else "" for r in responses]
            return reference_grade_batch(texts, [str(g) for g in golds], dataset, mode, ex)
        runs = ex.run([r if isinstance(r, str) else "" for r in responses])  # None: no program
    finally:
        if own:
            ex.close()
    return [grade_program_output(r, g, dataset, o) for r, g, o in zip(runs, golds, opts)]
