"""generate_train_data.py makes the original code's decisions by default: byte-for-byte the file the original
script wrote on the same sampling result (tests/fixtures/fidelity/filter, obtained by running the original
generate_train_data.py once, outside the project: see build_filter_input.py there).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generate_train_data import main as generate_main
from src.grading.process import check_annotations_original, original_annotation_holds

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "fidelity" / "filter"
RUNS = {
    "plain": [],
    "check": ["--check_result"],
    "orig": ["--include_original_data"],
    "preiter": ["--include_pre_iter_data"],
    "both_check": ["--include_original_data", "--include_pre_iter_data", "--check_result"],
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_output_is_byte_for_byte_the_originals(run, tmp_path):
    out = tmp_path / "next.json"
    # the original's own command line, unchanged (store_true flags without a value)
    argv = ["--original_data_path", str(FIXTURE / "original.json"), "--pre_iter_data_path",
            str(FIXTURE / "pre_iter.json"), "--cur_sampled_data_path", str(FIXTURE / "results.json"),
            "--next_iter_data_path", str(out), *RUNS[run]]
    assert generate_main(argv) == 0
    assert out.read_bytes() == (FIXTURE / f"expected_{run}.json").read_bytes()


def test_fixture_exercises_duplicates_and_the_check():
    plain = json.loads((FIXTURE / "expected_plain.json").read_text())
    checked = json.loads((FIXTURE / "expected_check.json").read_text())
    texts = [r["answer_cot"] for r in plain]
    assert len(texts) - len(set(texts)) >= 40  # identical samples kept
    assert 0 < len(checked) < len(plain)


@pytest.mark.parametrize(("annotation", "holds"), [
    ("3*4=12", True), ("10/2=5", False), ("10/2=5.0", True),  # str(eval("10/2")) is "5.0"
    ("3*4= 12", False), ("12", False), ("2*3=6=6", True), ("2*3==6", True), ("x*2=4", False),
    ("1,000*2=2000", False), ("1/0=0", False), ("7^2=49", False), ("7^2=5", True), ("0.1+0.2=0.3", False),
    ("9**9**9=1", False), ("__import__('os').getcwd()=/", False), ("6=(a)", False), (" 2+2=4", True),
])
def test_original_annotation_decisions(annotation, holds):
    assert original_annotation_holds(annotation) is holds


def test_the_first_failing_annotation_is_named():
    why = check_annotations_original("<<2+2=4>> then <<10/2=5>> then <<1/0=1>>")
    assert why is not None and "annotation 2" in why
    assert check_annotations_original("no calculator steps here") is None
