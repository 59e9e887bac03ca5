"""Answer extraction and comparison: gold self-consistency on real data, equal/different pairs, time bounds, CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from src.grading import GradeResult, answers_equal, extract_answer, grade_batch, grade_response
from src.grading.compare import SympyChecker
from src.grading.extract import options_from_question
from src.records import load_records
from tests.conftest import REPO

# ---------------------------------------------------------------------------------------------------------------
# Gold self-consistency: each gold rationale graded against its own answer_value

# AQuA pool items that cannot grade correct, by reason (checked item by item when this list was written).
AQUA_LABEL_NOT_AN_OPTION = [  # answer_value is a rationale fragment or a letter outside A-E (H, I, J, F)
    27, 52, 109, 176, 274, 363, 399, 462, 651, 894, 1087, 1155, 1179, 1238, 1688, 1858, 1909, 1937, 2019, 2034,
    2051, 2096, 2152, 2457, 2625, 2827, 2885]
AQUA_RATIONALE_NAMES_NO_OPTION = [  # no trigger, no option named, final number matches no option (e.g. "it
    # cannot be identified", "solve using P and Q"): the label comes from the data set, not from the rationale
    245, 265, 281, 314, 454, 466, 487, 549, 942, 997, 1001, 1112, 1171, 1208, 1233, 1278, 1463, 1497, 1562, 1579,
    1632, 1657, 1809, 1833, 1866, 1998, 2163, 2211, 2366, 2402, 2443, 2458, 2509, 2552, 2575, 2631, 2642,
    2702, 2800, 2838, 2883, 2888, 2891, 2915]
AQUA_RATIONALE_CONTRADICTS_LABEL = [  # the rationale ends on another option than its label, e.g. aqua_rat_50
    # "PE = 2/8 = 1/4 AnswerB" with label E; aqua_rat_1606 "n = 33" (option A) with label D
    50, 243, 431, 609, 858, 921, 1483, 1606, 1781, 1964, 1977, 2040, 2054, 2199, 2247, 2309, 2347, 2423, 2563,
    2595, 2635]
# MATH: the original extractor cut "2, 3, \text{ and } 4" down to "2,3," (only visible once the trigger line is gone).
MATH_DAMAGED_BOXED = {"math_333": "gold '2,3,' lost the last element of '2, 3, \\text{ and } 4'"}
# MATH golds the original extractor cut to the right side of an equation the question asks for. The project
# grader compares an equation by its right side only when the left side is one variable (issue 19), so the
# rationale's own (correct) equation no longer matches these golds.
MATH_DAMAGED_EQUATION_GOLD = {
    "math_134": "the plane 'x+y-z+1=0' (the form Ax + By + Cz + D = 0 is asked for) stored as '0'",
    "math_615": "the condition '\\tan\\theta=2\\theta' stored as '2\\theta'",
}


def _pool(shared_data, name: str) -> list[dict]:
    return load_records(shared_data / "inference" / "cot" / f"{name}.json")


@pytest.mark.parametrize("file_stem,dataset", [("gsm8k", "gsm8k"), ("math", "math")])
def test_gold_rationales_grade_correct(shared_data, file_stem, dataset):
    records = _pool(shared_data, file_stem)
    results = grade_batch([r["answer_cot"] for r in records], [r["answer_value"] for r in records], dataset)
    misses = [r["item_id"] for r, g in zip(records, results) if not g.correct]
    assert misses == (sorted(MATH_DAMAGED_EQUATION_GOLD) if dataset == "math" else [])


def test_aqua_gold_rationales_grade_correct_except_damaged_labels(shared_data):
    records = _pool(shared_data, "aqua_rat")
    options = [options_from_question(r["question"]) or None for r in records]
    results = grade_batch([r["answer_cot"] for r in records], [r["answer_value"] for r in records], "aqua",
                          options=options)
    by_id = {r["item_id"]: (r, g) for r, g in zip(records, results)}
    misses = {int(i.split("_")[-1]) for i, (_, g) in by_id.items() if not g.correct}
    listed = set(AQUA_LABEL_NOT_AN_OPTION) | set(AQUA_RATIONALE_NAMES_NO_OPTION) | set(AQUA_RATIONALE_CONTRADICTS_LABEL)
    assert misses == listed
    assert len(records) - len(misses) >= 2900  # 96.9% of the pool
    for n in AQUA_LABEL_NOT_AN_OPTION:
        assert not re.fullmatch(r"[A-E]", by_id[f"aqua_rat_{n}"][0]["answer_value"])
    for n in AQUA_RATIONALE_NAMES_NO_OPTION:
        assert by_id[f"aqua_rat_{n}"][1].status == "no_answer"
    for n in AQUA_RATIONALE_CONTRADICTS_LABEL:
        record, grade = by_id[f"aqua_rat_{n}"]
        assert grade.pred_value and grade.pred_value != record["answer_value"]


def test_math_boxed_answer_without_trigger_line(shared_data):
    """The harder check: drop the last "The answer is" line, grade the \\boxed{} answer against answer_value."""
    records = _pool(shared_data, "math")
    responses = []
    for r in records:
        cot = r["answer_cot"]
        cut = cot.rfind("The answer is")
        assert cut > 0, r["item_id"]
        responses.append(cot[:cut])
    results = grade_batch(responses, [r["answer_value"] for r in records], "math")
    misses = {r["item_id"] for r, g in zip(records, results) if not g.correct}
    agreement = 1 - len(misses) / len(records)
    assert misses <= set(MATH_DAMAGED_BOXED) | set(MATH_DAMAGED_EQUATION_GOLD)
    assert agreement >= 0.996
    print(f"boxed-only agreement on math.json: {agreement:.1%} ({len(records) - len(misses)}/{len(records)})")


# ---------------------------------------------------------------------------------------------------------------
# Pairs: (prediction text as the model writes it after "The answer is", gold, dataset, options)

AQUA_OPTIONS = ["A)35", "B)25", "C)40", "D)50", "E)60"]
MATHQA_OPTIONS = "a ) 38 , b ) 27.675 , c ) 30 , d ) data inadequate , e ) none of these"
MATHQA_LIST_TEXT = "['a ) (a + b)(a - b)', 'b ) 20 % loss', 'c ) 20 % profit', 'd ) b', 'e ) 9 years']"

MUST_BE_EQUAL = [
    ("1,000", "1000", "gsm8k", None),
    ("$1,500.", "1500", "gsm8k", None),
    ("120.0", "120", "gsm8k", None),
    ("120.00 dollars", "120", "gsm8k", None),
    ("45%", "45", "gsm8k", None),
    ("-7", "-7", "svamp", None),
    ("5 + 3 = 8", "8", "gsm8k", None),
    ("\\boxed{18}", "18", "gsm8k", None),
    ("-$5.", "-5", "gsm8k", None),
    ("1.5e3", "1500", "gsm8k", None),
    ("17.9999999999999", "18", "gsm8k", None),
    ("0.5", "\\frac{1}{2}", "math", None),
    ("\\dfrac{3}{4}", "3/4", "math", None),
    ("\\frac34", "\\frac{3}{4}", "math", None),
    ("\\tfrac{1}{3}", "\\frac13", "math", None),
    ("40,\\!320", "40,320", "math", None),
    ("40320", "40,320", "math", None),
    ("\\$42409", "42409", "math", None),
    ("120^\\circ", "120", "math", None),
    ("x = \\frac{3}{2}", "\\frac{3}{2}", "math", None),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", "math", None),
    ("2\\sqrt{3}", "\\sqrt{12}", "math", None),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", "math", None),
    ("9\\pi", "9 \\pi", "math", None),
    ("\\pi/4", "\\frac{\\pi}{4}", "math", None),
    ("2^{10}", "1024", "math", None),
    ("1-\\frac{1}{e}", "\\frac{e-1}{e}", "math", None),
    ("\\left( 2, \\frac{8 \\pi}{7} \\right)", "(2,\\frac{8\\pi}{7})", "math", None),
    ("(-\\infty, 3]", "(-\\infty,3]", "math", None),
    ("[-1, \\frac{1}{\\sqrt{2}})", "[-1,\\frac{\\sqrt{2}}{2})", "math", None),
    ("(0,\\frac{1}{3}]\\cup(1,2]", "(0, \\tfrac13] \\cup (1, 2]", "math", None),
    ("3, 1, 2", "1,2,3", "math", None),
    ("x^2+2x+1", "(x+1)^2", "math", None),
    ("-x+118", "118-x", "math", None),
    ("\\begin{pmatrix} 12/5 \\\\ 16/5 \\end{pmatrix}", "\\begin{pmatrix}12/5\\16/5\\end{pmatrix}", "math", None),
    ("\\text{(C)}", "C", "math", None),
    ("2x+2y-2z+2=0", "x + y - z + 1 = 0", "math", None),
    ("2\\frac{1}{2}", "\\frac{5}{2}", "math", None),
    ("x \\in [2, 5)", "[2,5)", "math", None),
    ("\\{1,2\\}", "\\{2, 1\\}", "math", None),
    ("1011_{2}", "1011_2", "math", None),
    ("5\\text{ cm}^2", "5", "math", None),
    ("73\\%", "73", "math", None),
    ("(C)", "C", "aqua", None),
    ("C)", "C", "aqua", None),
    ("option C", "C", "aqua", None),
    ("E.", "E", "aqua", None),
    ("60", "E", "aqua", AQUA_OPTIONS),
    ("2.3333", "A", "aqua", ["A)7/3", "B)3/4", "C)4/5", "D)7/8", "E)9/10"]),
    ("c )", "c", "mathqa", None),
    ("(a)", "a", "mathqa", None),
    ("27.675", "b", "mathqa", MATHQA_OPTIONS),
    ("(a + b)(a - b)", "a", "mathqa", MATHQA_LIST_TEXT),
    ("20 % loss", "b", "mathqa", MATHQA_LIST_TEXT),
    ("9 years.", "e", "mathqa", MATHQA_LIST_TEXT),
    ("b", "b", "mathqa", MATHQA_LIST_TEXT),
    ("True", "True", "theoremqa", None),
    ("yes", "True", "theoremqa", None),
    ("False.", "False", "theoremqa", None),
    ("Yes, the series converges", "True", "theoremqa", None),
    ("\\text{True}", "True", "theoremqa", None),
    ("[3, 5]", "[3, 5]", "theoremqa", None),
    ("[3.0, 5.001]", "[3, 5]", "theoremqa", None),
    ("1.3333", "1.33", "theoremqa", None),
    ("4.7 \\times 10^{-34}", "4.7e-34", "theoremqa", None),
    ("\\frac{\\pi}{4}", "0.785", "theoremqa", None),
    ("11760", "11760", "theoremqa", None),
    ("(a)", "(a)", "theoremqa", None),
    ("42", "42", "synthetic", None),
    # legitimate forms next to the hedges below
    ("-12", "-12", "gsm8k", None),
    ("12.", "12", "gsm8k", None),
    ("$12", "12", "svamp", None),
    ("12 apples", "12", "svamp", None),
    ("12 apples, 3 more than Tom", "12", "gsm8k", None),
    ("20 - 8 = 12", "12", "gsm8k", None),
    ("1,200 or so", "1200", "gsm8k", None),
    ("1/2 or 0.5", "0.5", "gsm8k", None),
    ("\\boxed{-12}", "-12", "gsm8k", None),
    ("(12, 13)", "(12,13)", "math", None),
    ("[12, 13]", "[12,13]", "math", None),
    ("12, 13", "13, 12", "math", None),
    ("k = 12", "12", "math", None),
    ("0.56 = 56\\%", "56", "math", None),
    ("\\frac{1}{10^{20}}", "10^{-20}", "math", None),
    ("1e400", "10^{400}", "math", None),
    ("\\sqrt{2}\\cdot\\sqrt{3}", "\\sqrt{6}", "math", None),
    ("\\sin^2 x + \\cos^2 x", "1", "math", None),
    ("\\log_2 8", "3", "math", None),
    ("\\log_{10} 100", "2", "math", None),
    ("\\sqrt[3]{8}", "2", "math", None),
    ("e^{i\\pi}", "-1", "math", None),
    ("\\binom{5}{2}", "5!/(2!3!)", "math", None),
]

MUST_BE_DIFFERENT = [
    ("12", "120", "gsm8k", None),
    ("120", "12", "gsm8k", None),
    ("12.5", "12", "gsm8k", None),
    ("-5", "5", "gsm8k", None),
    ("1,001", "1000", "gsm8k", None),
    ("18.01", "18", "gsm8k", None),
    ("123456790", "123456789", "gsm8k", None),
    ("1000000.5", "1000000", "gsm8k", None),
    ("", "", "gsm8k", None),
    ("", "", "math", None),
    ("", "", "aqua", None),
    ("", "", "theoremqa", None),
    ("1-1/e", "1+1/e", "math", None),
    ("1-\\frac{1}{e}", "1+\\frac{1}{e}", "math", None),
    ("4\\sqrt(2)", "4", "math", None),
    ("4\\sqrt{2}", "4", "math", None),
    ("0.333", "\\frac{1}{3}", "math", None),
    ("1.41", "\\sqrt{2}", "math", None),
    ("\\frac{3}{4}", "\\frac{4}{3}", "math", None),
    ("(1,2)", "[1,2]", "math", None),
    ("(1,2)", "(2,1)", "math", None),
    ("1,2", "1,2,3", "math", None),
    ("x^2+1", "(x+1)^2", "math", None),
    ("2\\pi", "\\pi", "math", None),
    ("\\sqrt{3}", "3", "math", None),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}", "math", None),
    ("10^{10^{10}}", "5", "math", None),
    ("x+y+z+1=0", "x + y - z + 1 = 0", "math", None),
    ("y=2x+4", "y=2x+3", "math", None),
    ("2\\frac{1}{2}", "1", "math", None),  # a mixed number, not 2 * 1/2
    ("5\\text{ cm}^2", "25", "math", None),  # a unit's exponent is not the value's
    ("\\{1,2\\}", "(1,2)", "math", None),
    ("B", "A", "aqua", None),
    ("A or C", "A", "aqua", None),
    ("(A) and (C)", "C", "aqua", None),
    ("A, B, C, D, E", "A", "aqua", None),
    ("25", "E", "aqua", AQUA_OPTIONS),
    ("8.77", "A", "aqua", ["A)8.75", "B)8.79", "C)8.71", "D)8.72", "E)8.70"]),  # between options: none
    ("b", "a", "mathqa", None),
    ("a ) 38 , b ) 27.675", "a", "mathqa", None),
    ("20 % profit", "b", "mathqa", MATHQA_LIST_TEXT),
    ("20", "b", "mathqa", MATHQA_LIST_TEXT),  # 20 % loss or 20 % profit: ambiguous
    ("B", "d", "mathqa", MATHQA_LIST_TEXT),  # the letter B, not option d's text "b"
    ("True", "False", "theoremqa", None),
    ("no", "True", "theoremqa", None),
    ("not true", "True", "theoremqa", None),
    ("[3, 5]", "[5, 3]", "theoremqa", None),
    ("[3, 5]", "[3, 5, 7]", "theoremqa", None),
    ("1.5", "1.33", "theoremqa", None),
    ("11761", "11760", "theoremqa", None),
    ("0.01", "0.0", "theoremqa", None),
    ("(b)", "(a)", "theoremqa", None),
    ("41", "42", "synthetic", None),
    # issue 19: hedges, float overflow, tiny differences, equations are wrong
    ("12 or 13", "12", "gsm8k", None),
    ("between 12 and 13", "12", "gsm8k", None),
    ("12-13", "12", "gsm8k", None),
    ("12 - 13", "12", "gsm8k", None),
    ("12 to 13", "12", "gsm8k", None),
    ("12, 13, 14 or 15", "12", "gsm8k", None),
    ("12, 13", "12", "gsm8k", None),
    ("\\boxed{12 or 13}", "12", "gsm8k", None),
    ("12 or 13", "12", "svamp", None),
    ("between 12 and 13", "12", "svamp", None),
    ("12-13", "12", "svamp", None),
    ("12, 13, 14 or 15", "12", "svamp", None),
    ("True or False", "True", "theoremqa", None),
    ("Yes or no", "True", "theoremqa", None),
    ("\\text{True} or \\text{False}", "True", "theoremqa", None),
    ("True/False", "False", "theoremqa", None),
    ("1e309", "\\infty", "math", None),
    ("1e400", "1e401", "math", None),
    ("1e309", "\\infty", "theoremqa", None),
    ("1e400", "1e401", "theoremqa", None),
    ("1e400", "1e401", "gsm8k", None),
    ("10^{-20}", "0", "math", None),
    ("1+10^{-12}", "1", "math", None),
    ("\\sqrt{2}+10^{-12}", "\\sqrt{2}", "math", None),
    ("x + y + z = 0", "0", "math", None),
    ("x + y = 5", "5", "math", None),
    ("12 or 13", "12", "math", None),
]


def _respond(pred: str) -> str:
    return f"Let me work it out step by step.\nThe answer is {pred}" if pred else "I do not know."


@pytest.mark.parametrize("pred,gold,dataset,options", MUST_BE_EQUAL)
def test_must_be_equal(pred, gold, dataset, options):
    result = grade_response(_respond(pred), gold, dataset, options=options)
    assert result.correct, result


@pytest.mark.parametrize("pred,gold,dataset,options", MUST_BE_DIFFERENT)
def test_must_be_different(pred, gold, dataset, options):
    result = grade_response(_respond(pred), gold, dataset, options=options)
    assert not result.correct, result


def test_pair_counts():
    assert len(MUST_BE_EQUAL) >= 40 and len(MUST_BE_DIFFERENT) >= 40


@pytest.mark.parametrize("dataset", ["gsm8k", "svamp", "math", "aqua", "mathqa", "theoremqa"])
def test_missing_response_is_no_answer(dataset):
    assert grade_response(None, "12", dataset) == GradeResult("", False, "no_answer")
    assert grade_batch([None, "The answer is 12"], ["12", "12"], dataset)[0].status == "no_answer"


def test_empty_gold_is_never_matched():
    assert not answers_equal("", "", "math")
    assert not grade_response("The answer is 5", "", "gsm8k").correct


# ---------------------------------------------------------------------------------------------------------------
# Extraction


def test_last_trigger_wins_and_line_ends_answer():
    text = "The answer is 3 apples? No.\nRecount: 2 + 2 = 4\nThe answer is 4\n\n### Question: next one, 99"
    assert extract_answer(text, "gsm8k") == "4"


def test_boxed_with_nested_braces_and_no_trigger():
    text = "Thus the value is $\\boxed{\\frac{\\sqrt{3}}{2}}$ and we are done."
    assert extract_answer(text, "math") == "\\frac{\\sqrt{3}}{2}"


def test_last_number_fallback():
    assert extract_answer("She pays 3 * 4 = 12 dollars, then 12 + 30 = 42.", "gsm8k") == "42"
    assert extract_answer("no digits at all", "gsm8k") == ""


def test_several_options_are_kept_visible_and_graded_wrong():
    result = grade_response("The answer is (B) or (D)", "B", "aqua")
    assert result.pred_value == "B,D" and not result.correct


def test_choice_fallback_without_trigger():
    assert extract_answer("so the speed is 12 km/h.\nAnswer: D.", "aqua") == "D"
    assert extract_answer("many steps later\nHence (B)", "aqua") == "B"


def test_options_from_question():
    q = "How tall?\nAnswer Choices: (A) 35 (B) 25 (C) 40 (D) 50 (E) 60"
    assert options_from_question(q) == {"A": "35", "B": "25", "C": "40", "D": "50", "E": "60"}


# ---------------------------------------------------------------------------------------------------------------
# Time bounds: nothing hangs


@pytest.mark.parametrize("pred,gold", [
    ("10^{10^{10}}", "10^{10^{10}}+1"),
    ("99999!", "1"),
    ("2^{2^{2^{2^{2^{2}}}}}", "3"),
    ("9^{9^{9^{9}}}-9^{9^{9^{9}}}", "0"),
    ("(10^{1000000})!", "2"),
    ("x^{10^{12}}", "x"),
])
def test_pathological_math_answers_finish_fast(pred, gold):
    start = time.monotonic()
    result = grade_response(f"The answer is {pred}", gold, "math")
    assert time.monotonic() - start < 12  # guard or the helper's 5 s deadline
    assert not result.correct


def test_huge_numbers_in_number_answers_are_fast():
    start = time.monotonic()
    assert not grade_response("The answer is 1e999999999", "5", "gsm8k").correct
    assert not grade_response("The answer is " + "9" * 100000, "5", "gsm8k").correct
    assert time.monotonic() - start < 5


def test_checker_deadline_kills_and_replaces_the_helper():
    checker = SympyChecker(timeout=30)
    try:
        assert checker.equal("\\frac{1}{2}", "0.5") is True
        first_pid = checker.worker.proc.pid
        checker.timeout = 0.05
        long_sum = "+".join(f"\\sqrt{{{i}}}" for i in range(2, 10000))  # parsing alone takes over a second
        assert checker.equal(long_sum, long_sum + "+1") is None
        assert checker.timeouts == 1 and checker.worker.proc is None  # killed, not left running
        checker.timeout = 30
        assert checker.equal("\\sqrt{8}", "2\\sqrt{2}") is True
        assert checker.worker.proc.pid != first_pid and checker.worker.restarts == 1
    finally:
        checker.close()


# ---------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_grades_a_file_and_writes_items(tmp_path):
    items = [
        {"item_id": "x_0", "question": "q", "answer_cot": "2 + 2 = 4\nThe answer is 4", "answer_value": "4"},
        {"item_id": "x_1", "question": "q", "answer_cot": "The answer is 5", "answer_value": "6"},
        {"item_id": "x_2", "question": "q", "answer_cot": ["I think... The answer is 7", "The answer is 8"],
         "answer_value": "7"},
        {"item_id": "x_3", "question": "q", "answer_cot": "no idea", "answer_value": "1"},
    ]
    src = tmp_path / "preds.json"
    src.write_text(json.dumps(items))
    out = tmp_path / "graded.json"
    proc = subprocess.run([sys.executable, "-m", "src.grading", str(src), "--dataset", "gsm8k", "--mode", "cot",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["n"] == 4 and summary["correct"] == 2 and summary["accuracy"] == 0.5
    assert set(summary) == {"n", "correct", "accuracy", "errors", "timeouts", "seconds"}
    graded = json.loads(out.read_text())
    assert [g["correct"] for g in graded] == [True, False, True, False]
    assert graded[2]["pred_value"] == ["7", "8"] and graded[2]["correct_list"] == [True, False]
    assert graded[1]["pred_value"] == "5"


def test_cli_rejects_a_missing_field(tmp_path):
    src = tmp_path / "bad.json"
    src.write_text(json.dumps([{"item_id": "x", "answer_value": "1"}]))
    proc = subprocess.run([sys.executable, "-m", "src.grading", str(src), "--dataset", "gsm8k"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "answer_cot" in proc.stderr


FORK_SCENARIO = r"""
import atexit, os
from src.grading import answers_equal
assert answers_equal("\\sqrt{8}", "2\\sqrt{2}", "math")  # the parent's helper is running
pid = os.fork()
if pid == 0:  # child: grade, then run the exit handlers as a normal exit would
    code = 0 if answers_equal("\\sqrt{18}", "3\\sqrt{2}", "math") else 1
    atexit._run_exitfuncs()
    os._exit(code)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, f"child exit status {status}"
assert answers_equal("\\sqrt{50}", "5\\sqrt{2}", "math")
assert not answers_equal("\\sqrt{50}", "5\\sqrt{3}", "math")
"""


def test_forked_child_gets_its_own_checker_and_leaves_the_parents_alone():
    # A fresh interpreter: this test process may host the session's in-process vLLM engine, whose exit handlers
    # crash in a forked child; the claim here is about src.grading's own helper processes.
    proc = subprocess.run([sys.executable, "-c", FORK_SCENARIO], cwd=REPO, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("printed,gold,dataset,options,correct", [
    ("E\n", "E", "aqua", None, True),
    ("(c)\n", "c", "mathqa", None, True),
    ("60.0\n", "E", "aqua", AQUA_OPTIONS, True),
    ("25\n", "E", "aqua", AQUA_OPTIONS, False),
    ("[1, 2]\n", "[1, 2]", "theoremqa", None, True),
    ("sqrt(2)/2\n", "\\frac{\\sqrt{2}}{2}", "math", None, True),
    ("pi/4\n", "\\frac{\\pi}{4}", "math", None, True),
    ("x**2 + 2*x + 1\n", "(x+1)^2", "math", None, True),
    ("0.7853981633974483\n", "\\frac{\\pi}{4}", "math", None, True),
    ("0.785\n", "\\frac{\\pi}{4}", "math", None, False),
])
def test_program_output_is_graded_per_format(printed, gold, dataset, options, correct):
    from src.grading import ProgramResult, grade_program_output

    assert grade_program_output(ProgramResult("ok", printed), gold, dataset, options).correct is correct


@pytest.mark.parametrize("response", [
    "answer" + ":" * 100_000 + "x",  # nested repetitions in a fallback pattern once backtracked exponentially
    "Hence " + "the " * 50_000 + "x",
    "The answer is " + "{" * 50_000 + "}" * 50_000,
    "The answer is " + "(" * 50_000,
    "The answer is " + "1" * 100_000 + ".5",
    "The answer is " + "\\sqrt" * 30_000,
    "x" * 1_000_000,
])
@pytest.mark.parametrize("dataset", ["gsm8k", "math", "aqua", "theoremqa"])
def test_long_adversarial_responses_are_graded_fast(response, dataset):
    start = time.monotonic()
    assert not grade_response(response, "1", dataset).correct
    assert time.monotonic() - start < 5  # well under a second on an idle machine; no backtracking blow-up


def test_cli_reads_choice_options_from_the_question(tmp_path):
    items = [{"item_id": "a0", "question": "How far?\nAnswer Choices: (A) 35 (B) 60 (C) 40", "answer_value": "B",
              "answer_cot": "5 * 12 = 60\nThe answer is 60"},
             {"item_id": "a1", "question": "How far?\nAnswer Choices: (A) 35 (B) 60 (C) 40", "answer_value": "B",
              "answer_cot": "The answer is 40"}]
    src = tmp_path / "aqua.json"
    src.write_text(json.dumps(items))
    proc = subprocess.run([sys.executable, "-m", "src.grading", str(src), "--dataset", "aqua"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["correct"] == 1


@pytest.mark.parametrize("file_stem,dataset", [("gsm8k", "gsm8k"), ("svamp", "svamp"), ("theoremqa", "theoremqa"),
                                               ("aqua_rat", "aqua"), ("mathqa", "mathqa")])
def test_test_set_golds_grade_correct_when_stated(shared_data, file_stem, dataset):
    records = load_records(shared_data / "test" / f"{file_stem}.json", "test")
    results = grade_batch([f"The answer is {r['answer_value']}" for r in records], [r["answer_value"] for r in records],
                          dataset, options=[r.get("options") for r in records])
    assert [r["item_id"] for r, g in zip(records, results) if not g.correct] == []


@pytest.mark.parametrize("file_stem,dataset", [("aqua_rat", "aqua"), ("mathqa", "mathqa")])
def test_choice_answers_given_as_option_text(shared_data, file_stem, dataset):
    """Writing the correct option's text instead of its letter is graded correct, unless two options share it."""
    from src.grading.extract import parse_options

    records = load_records(shared_data / "test" / f"{file_stem}.json", "test")
    checked = 0
    for r in records:
        options = parse_options(r["options"])
        text = options[r["answer_value"].upper()]
        if list(options.values()).count(text) > 1:
            continue  # ambiguous by construction of the item
        result = grade_response(f"The answer is {text}", r["answer_value"], dataset, options=r["options"])
        assert result.correct, (r["item_id"], text, result)
        checked += 1
    assert checked >= 0.97 * len(records)  # aqua: 4 of 254 items repeat the right option text
