"""The reference grader makes the original code's decision on every fixture response.

tests/fixtures/reference_grader/cases.json holds responses built from the six real test sets, each graded once
by the ORIGINAL src/eval_utils.py (see build_fixture.py there). Known exceptions would be listed in
docs/FIDELITY.md ("Reference grader exceptions") and in EXCEPTIONS below; today there are none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from src.grading import GRADERS, PotExecutor, grade_batch, grade_response
from src.grading.reference import _value_of_latex, reference_program

FIXTURE = Path(__file__).parent / "fixtures" / "reference_grader" / "cases.json"
EXCEPTIONS: dict[int, str] = {}  # case id -> reason (mirrored in docs/FIDELITY.md)
REPO = Path(__file__).resolve().parents[1]


def _cases(mode: str) -> dict[str, list[dict]]:
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for case in json.loads(FIXTURE.read_text())["cases"]:
        if case["mode"] == mode:
            by_dataset[case["dataset"]].append(case)
    return by_dataset


def _mismatches(mode: str, executor=None) -> list[tuple]:
    bad = []
    for dataset, cases in _cases(mode).items():
        results = grade_batch([c["response"] for c in cases], [c["gold"] for c in cases], dataset, mode,
                              executor=executor, grader="reference")
        for case, res in zip(cases, results):
            if case["id"] in EXCEPTIONS:
                continue
            if (res.pred_value, res.correct) != (case["orig_pred_value"], case["orig_correct"]):
                bad.append((case["id"], dataset, case["kind"], case["orig_pred_value"], res.pred_value))
    return bad


def test_fixture_covers_six_test_sets_and_pot_edge_cases():
    data = json.loads(FIXTURE.read_text())["cases"]
    assert len(data) >= 2000
    assert {c["dataset"] for c in data if c["mode"] == "cot"} == {"gsm8k", "svamp", "aqua", "mathqa", "math",
                                                                     "theoremqa"}
    pot_kinds = {c["kind"] for c in data if c["mode"] == "pot"}
    assert {"several_numbers_gold_first", "print_then_raise", "main_guard"} <= pot_kinds


def test_cot_matches_every_original_decision_and_answer():
    assert _mismatches("cot") == []


def test_pot_matches_every_original_decision_and_answer():
    with PotExecutor(workers=2) as ex:
        assert _mismatches("pot", ex) == []


def test_runaway_reads_first_paragraph_and_strings_compare_exactly():
    runaway = "So 18 eggs.\nThe answer is 18.\n\nQuestion: How many cats?\nThe answer is 7."
    assert grade_response(runaway, "18", "gsm8k", grader="reference").pred_value == "18"
    assert grade_response(runaway, "18", "gsm8k").pred_value == "18"  # the project grader: up to the new question
    assert not grade_response("The answer is 1.4201", "1.42", "theoremqa", grader="reference").correct
    assert grade_response("The answer is 1.4201", "1.42", "theoremqa").correct
    # "not" contains "no": the original maps the whole answer to False
    assert grade_response("The answer is 5, not 6", "False", "theoremqa", grader="reference").correct


def test_project_grader_reads_up_to_a_new_question_but_keeps_self_corrections():
    corrected = "The answer is 3.\nNo, recount: 2 + 2 = 4.\nThe answer is 4."
    assert grade_response(corrected + "\n\n### Question: next?\nThe answer is 9.", "4", "gsm8k").correct
    # no trigger before the run-on: still the first problem's last number
    assert grade_response("So 4 eggs remain.\nQuestion: next?\nThe answer is 9", "4", "gsm8k").correct
    assert grade_response("Question: restated first.\nThe answer is 4", "4", "gsm8k").correct


def test_pot_program_sees_the_original_module_name_and_raising_gives_nothing():
    with PotExecutor(workers=1) as ex:
        guarded = "def f():\n    return 3\nif __name__ == '__main__':\n    print(f())"
        results = grade_batch([guarded, "print(3)\nraise ValueError()", "print(3, 4)"], ["3"] * 3, "gsm8k",
                              "pot", executor=ex, grader="reference")
    assert [(r.pred_value, r.correct) for r in results] == [("", False), ("", False), ("3", True)]
    assert results[1].status == "error"


def test_theoremqa_latex_value_is_computed_without_eval():
    assert _value_of_latex("\\frac{1}{3}") == "0.3333333333333333"
    assert _value_of_latex("1.6 \\times 10^{-19}") == "1.6000000000000002e-19"  # the original's float order
    assert _value_of_latex("[\\frac{1}{2}, 1]") == "[0.5, 1]"
    assert _value_of_latex("__import__('os').system('true')") is None
    assert _value_of_latex("5 m/s") is None  # a variable: the original's eval raises NameError


def test_wrapped_program_is_indented_into_a_function():
    wrapped = reference_program("x = 1\nprint(x)")
    assert "def run_it():\n  x = 1\n  print(x)\nrun_it()" in wrapped
    assert wrapped.startswith("__name__ = 'src.code_utils'")


def test_unknown_grader_is_refused():
    assert GRADERS == ("project", "reference")
    with pytest.raises(ValueError, match="grader must be one of project, reference"):
        grade_batch(["The answer is 1"], ["1"], "gsm8k", grader="original")


def test_cli_regrades_with_the_reference_grader(tmp_path):
    items = [{"item_id": "gsm8k_0", "answer_value": "18",
              "pred": ["The answer is 18.\n\nQuestion: next?\nThe answer is 7."]}]
    src = tmp_path / "res.json"
    src.write_text(json.dumps(items))
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, "-m", "src.grading", str(src), "--dataset", "gsm8k", "--mode", "cot",
                          "--field", "pred", "--grader", "reference", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    graded = json.loads(out.read_text())[0]
    assert graded["pred_value"] == ["18"] and graded["correct"] is True
    bad = subprocess.run([sys.executable, "-m", "src.grading", str(src), "--dataset", "gsm8k",
                          "--grader", "original"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_grade_both_and_disagreements_list_both_answers():
    from src.evaluation import grade_both, grader_disagreements

    records = [{"item_id": "g0", "question": "q", "answer_value": "18"},
               {"item_id": "g1", "question": "q", "answer_value": "5"}]
    responses = ["The answer is 18.\nQuestion: next?\nThe answer is 7.", "The answer is 5."]
    grades = grade_both(responses, records, "gsm8k", "cot", None)
    items = [{"item_id": r["item_id"], "answer_value": r["answer_value"], "pred": [resp],
              "by_grader": {g: {"pred_value": gs[i].pred_value, "correct": gs[i].correct} for g, gs in grades.items()}}
             for i, (r, resp) in enumerate(zip(records, responses))]
    rows = grader_disagreements({"gsm8k": (items, {})})
    # one newline before the run-on: the original's "first paragraph" is the whole text, so it reads the 7
    assert [(r["item_id"], r["pred_value_project"], r["pred_value_reference"]) for r in rows] == [("g0", "18", "7")]
    assert rows[0]["correct_reference"] is False and rows[0]["correct_project"] is True


def test_eval_writes_both_accuracies_and_the_disagreement_file(tmp_path, tiny_model_dir, shared_data):
    test = tmp_path / "gsm8k.json"
    test.write_text(json.dumps(json.loads((shared_data / "test" / "gsm8k.json").read_text())[:6]))
    out = tmp_path / "eval"
    run = subprocess.run([sys.executable, "eval.py", "--model_name_or_path", str(tiny_model_dir), "--results_path",
                          str(out), "--dataset_name", "gsm8k", "--eval_data_file", str(test), "--max_length", "16",
                          "--grader", "reference"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    gsm = metrics["datasets"]["gsm8k"]
    assert metrics["grader"] == "reference" and set(gsm["accuracy_by_grader"]) == {"project", "reference"}
    assert gsm["accuracy"] == gsm["accuracy_by_grader"]["reference"]
    items = json.loads((out / "gsm8k_res.json").read_text())
    differ = [i["item_id"] for i in items
              if i["by_grader"]["project"]["correct"] != i["by_grader"]["reference"]["correct"]]
    assert [r["item_id"] for r in json.loads((out / "grader_disagreements.json").read_text())] == differ


def test_eval_refuses_an_unknown_grader(tmp_path, shared_data):
    run = subprocess.run([sys.executable, "eval.py", "--model_name_or_path", str(tmp_path), "--results_path",
                          str(tmp_path / "out"), "--dataset_name", "gsm8k", "--eval_data_file",
                          str(shared_data / "test" / "gsm8k.json"), "--grader", "original"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--grader" in run.stderr
    assert not (tmp_path / "out").exists()


def test_sampling_grades_with_the_configured_grader():
    from src.sampling.loop import SamplingConfig, _grade
    from src.sampling.query import QueryState

    queries = [QueryState({"item_id": "g0", "question": "q", "answer_cot": "", "answer_value": "18"})]
    runaway = ["The answer is 18.\nQuestion: next?\nThe answer is 7."]
    cfg = SamplingConfig(grader="reference")
    assert _grade(runaway, queries, "gsm8k", "cot", None, cfg.grader)[0].pred_value == "7"
    assert _grade(runaway, queries, "gsm8k", "cot", None, SamplingConfig().grader)[0].pred_value == "18"
