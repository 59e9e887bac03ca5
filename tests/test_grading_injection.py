"""Model text is never executed by the grader (issue 19): injection attempts through every grading entry point.

Each payload would create a canary file (or patch the grader) if any part of grading evaluated answer text as
Python, as sympy's ``parse_expr`` did. After the attempts, clean items graded in the same process and by the
same symbolic helper keep their verdicts (the "patch the grader" attack: ``setattr(...)`` must not work).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.grading import answers_equal, grade_batch, grade_program_output, grade_response
from src.grading.compare import SympyChecker
from src.grading.process import check_annotations
from src.grading.sandbox import ProgramResult
from tests.conftest import REPO

# Clean items whose verdicts must survive the attempts: (response, gold, dataset, correct). Most reach the
# symbolic helper (not string-equal, not plain numbers), so a patched helper would change them.
CLEAN = [
    ("The answer is $\\frac{\\sqrt{2}}{2}$", "\\frac{1}{\\sqrt{2}}", "math", True),
    ("The answer is $2\\sqrt{3}$", "\\sqrt{12}", "math", True),
    ("The answer is $x^2+2x+1$", "(x+1)^2", "math", True),
    ("The answer is $\\sqrt{3}$", "3", "math", False),
    ("The answer is $2\\pi$", "\\pi", "math", False),
    ("The answer is $x^2+1$", "(x+1)^2", "math", False),
    ("The answer is \\frac{\\pi}{4}", "0.785", "theoremqa", True),
    ("The answer is \\frac{\\pi}{2}", "0.785", "theoremqa", False),
    ("The answer is [3, 5]", "[3, 5]", "theoremqa", True),
    ("The answer is 12", "12", "gsm8k", True),
    ("The answer is 13", "12", "gsm8k", False),
]


GOLD = "987654321"  # a gold no payload contains: number formats take the first number of any text


def _payloads(canary: Path) -> list[str]:
    """Expressions that create ``canary`` (or patch the grader so that everything grades correct) if evaluated."""
    c = str(canary)
    return [
        f"exec(\"open('{c}','w').write('x')\")",
        f"eval(\"open('{c}','w').write('x')\")",
        f"open('{c}','w').write('x')",
        f"__import__('os').system('touch {c}')",
        f"__import__('pathlib').Path('{c}').touch()",
        f"(lambda: open('{c}','w'))()",
        f"getattr(__builtins__, 'open')('{c}', 'w')",
        f"().__class__.__base__.__subclasses__()[0].__init__.__globals__['__builtins__']['open']('{c}','w')",
        f"[c for c in ().__class__.__mro__[1].__subclasses__() if c.__name__ == 'Popen'][0](['touch', '{c}'])",
        "setattr(__import__('src.grading.symbolic', fromlist=['x']), 'equal', lambda *a: True)",
        "setattr(__import__('src.grading.symbolic', fromlist=['x']), '_numbers_equal', lambda *a: True)",
        "__import__('sys').modules['src.grading.symbolic'].__dict__.update(equal=lambda *a: True)",
        f"Symbol('x').__class__.__init__.__globals__['__builtins__']['exec'](\"open('{c}','w')\")",
        f"exec(\"open('{c}','w')\")+1",
        f"2\\cdot exec(\"open('{c}','w')\")",
        f"\\frac{{exec(\"open('{c}','w')\")}}{{2}}",
        f"\\sqrt{{__import__('os').system('touch {c}')}}",
    ]


def _wrapped(payload: str) -> list[str]:
    """The payload where a grader looks for an answer: $...$, \\boxed{}, a TheoremQA list, after the trigger."""
    return [
        f"Step 1.\nThe answer is ${payload}$",
        f"Step 1.\nThe answer is {payload}",
        f"So the result is $\\boxed{{{payload}}}$.",
        f"The answer is \\boxed{{{payload}}}",
        f"The answer is [{payload}, 2]",
        f"The answer is x = {payload}",
        f"The answer is ({payload}, 1)",
        f"The answer is {{{payload}}}",
    ]


def _clean_verdicts() -> list[bool]:
    return [grade_response(r, g, d).correct for r, g, d, _ in CLEAN]


@pytest.fixture
def canary(tmp_path) -> Path:
    path = tmp_path / "canary"
    yield path
    assert not path.exists(), "answer text was executed"


def test_clean_items_are_graded_as_listed():
    assert _clean_verdicts() == [c for *_, c in CLEAN]


@pytest.mark.parametrize("dataset", ["math", "theoremqa", "gsm8k", "aqua"])
def test_grade_response_never_executes(canary, dataset):
    for payload in _payloads(canary):
        for response in _wrapped(payload):
            for gold in (GOLD, "True", "[987, 654]", "\\frac{987}{654}", "x"):
                assert not grade_response(response, gold, dataset).correct, (response, gold)
    assert _clean_verdicts() == [c for *_, c in CLEAN]


@pytest.mark.parametrize("dataset", ["math", "theoremqa"])
def test_answers_equal_and_the_symbolic_helper_never_execute(canary, dataset):
    checker = SympyChecker()
    try:
        for payload in _payloads(canary):
            assert not answers_equal(payload, GOLD, dataset)
            assert not answers_equal(GOLD, payload, dataset)  # a damaged gold is text too
            assert checker.equal(payload, "1") is None  # refused by the parser, not evaluated
            assert checker.equal(f"x+{payload}", "x") is None
            assert checker.value(payload) is None
        # the same helper process still grades as before
        assert checker.equal("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}") is True
        assert checker.equal("\\sqrt{3}", "3") is False
    finally:
        checker.close()
    assert _clean_verdicts() == [c for *_, c in CLEAN]


@pytest.mark.parametrize("dataset", ["math", "theoremqa", "gsm8k"])
def test_grade_batch_cot_never_executes(canary, dataset):
    responses = [w for p in _payloads(canary) for w in _wrapped(p)]
    results = grade_batch(responses + [r for r, *_ in CLEAN], [GOLD] * len(responses) + [g for _, g, *_ in CLEAN],
                          dataset)
    assert not any(r.correct for r in results[:len(responses)])
    if dataset == "math":  # the clean tail in one batch, after the attempts (its golds are MATH-style)
        math_items = [i for i, (_, _, d, _) in enumerate(CLEAN) if d == "math"]
        assert [results[len(responses) + i].correct for i in math_items] == [CLEAN[i][3] for i in math_items]
    assert _clean_verdicts() == [c for *_, c in CLEAN]


@pytest.mark.parametrize("dataset", ["math", "theoremqa", "gsm8k"])
def test_program_output_is_never_executed(canary, dataset):
    """PoT: what a program prints is graded as text (grade_program_output is grade_batch's pot path)."""
    for payload in _payloads(canary):
        for printed in (payload, f"{payload}\n", f"[{payload}, 2]\n", f"np.float64({payload})\n"):
            assert not grade_program_output(ProgramResult("ok", printed), GOLD, dataset).correct
    assert _clean_verdicts() == [c for *_, c in CLEAN]


def test_grade_batch_pot_never_executes_printed_answers(canary):
    payloads = _payloads(canary)
    programs = [f"print({p!r})" for p in payloads] + ["import math\nprint(math.sqrt(2) / 2)"]
    results = grade_batch(programs, [GOLD] * len(payloads) + ["\\frac{\\sqrt{2}}{2}"], "math", mode="pot")
    assert [r.pred_value for r in results[:len(payloads)]] == payloads  # the programs ran and printed
    assert not any(r.correct for r in results[:len(payloads)])
    assert results[-1].correct
    assert _clean_verdicts() == [c for *_, c in CLEAN]


@pytest.mark.parametrize("dataset", ["math", "theoremqa"])
def test_cli_never_executes(tmp_path, canary, dataset):
    items = [{"item_id": f"bad_{i}", "question": "q", "answer_cot": response, "answer_value": GOLD}
             for i, response in enumerate(w for p in _payloads(canary) for w in _wrapped(p))]
    clean = [(r, g, c) for r, g, d, c in CLEAN if d == dataset]
    items += [{"item_id": f"clean_{i}", "question": "q", "answer_cot": r, "answer_value": g}
              for i, (r, g, _) in enumerate(clean)]
    src, out = tmp_path / "preds.json", tmp_path / "graded.json"
    src.write_text(json.dumps(items))
    proc = subprocess.run([sys.executable, "-m", "src.grading", str(src), "--dataset", dataset, "--mode", "cot",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    graded = json.loads(out.read_text())
    assert not any(g["correct"] for g in graded[:-len(clean)])
    assert [g["correct"] for g in graded[-len(clean):]] == [c for *_, c in clean]


def test_process_check_never_executes(canary):
    """The filtering process check reads <<expr=result>> annotations and the final answer: never evaluated."""
    clean = "He has 3 * 4 = <<3*4=12>>12 apples.\nThe answer is 12"
    assert check_annotations(clean) is None
    for payload in _payloads(canary):
        assert check_annotations(f"So <<{payload}=1>>1.\nThe answer is 1") is not None  # refused
        assert check_annotations(f"So <<2+2={payload}>>4.\nThe answer is 4") is not None  # not a number
        check_annotations(f"So 2 + 2 = <<2+2=4>>4.\nThe answer is {payload}")  # the final answer is text
    assert check_annotations("He has 3 * 4 = <<3*4=13>>13 apples.\nThe answer is 13") is not None
    assert check_annotations(clean) is None


def test_parser_refuses_every_payload_and_builds_only_sympy_objects(tmp_path):
    import sympy

    from src.grading.mathparse import Unsupported, parse

    for payload in _payloads(tmp_path / "canary") + ["x.__class__", "lambda", "getattr(x, y)", "'x'", "x;y", "x@y"]:
        with pytest.raises(Unsupported):
            parse(payload)
    expr = parse("\\frac{\\sqrt{2}}{2} + \\sin^2 x + \\log_2 8 + 3! + e^{i\\pi} + exec(x)")  # exec: only a symbol
    assert isinstance(expr, sympy.Basic)
    assert {str(s) for s in expr.free_symbols} == {"x", "exec"}
    assert not (tmp_path / "canary").exists()
