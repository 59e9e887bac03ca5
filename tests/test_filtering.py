"""The process check (--check_result) on hand-written rationales, and generate_train_data.py's data and counts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generate_train_data import main as generate_main
from src.grading.process import check_annotations, safe_arithmetic
from src.synthetic import WorldConfig, check_synthetic_rationale, generate_world

REPO = Path(__file__).resolve().parents[1]
QUESTION = ("Mia has 7 apples. Then she buys 3 more apples. Then she doubles her apples. "
            "Then she gets 5 more apples. How many apples does Mia have now?")
LIAM = "Liam loses 1 coins, so he has <<4-1=3>>3 coins.\nThe answer is 3"
GOLD = ("Mia buys 3 more apples, so she has <<7+3=10>>10 apples.\n"
        "Mia doubles her apples, so she has <<10*2=20>>20 apples.\n"
        "Mia gets 5 more apples, so she has <<20+5=25>>25 apples.\nThe answer is 25")


def test_gold_rationales_of_the_synthetic_world_pass():
    world = generate_world(WorldConfig(n_train=300, n_pool=10, n_test_held_in=6, n_test_held_out=6))
    for rec in world["train_cot"]:
        assert check_annotations(rec["answer_cot"], rec["question"]) is None, rec
        assert check_synthetic_rationale(rec["question"], rec["answer_cot"], rec["answer_cot"]) is None


def test_right_answer_with_a_wrong_step_fails():
    sample = GOLD.replace("<<7+3=10>>10", "<<7+4=10>>10")
    why = check_annotations(sample, QUESTION)
    assert why is not None and "annotation 1" in why and "7+4 = 11" in why


def test_skipped_step_fails():
    # the doubling is skipped: 20 comes from nowhere, yet the final answer is right
    sample = ("Mia buys 3 more apples, so she has <<7+3=10>>10 apples.\n"
              "Mia gets 5 more apples, so she has <<20+5=25>>25 apples.\nThe answer is 25")
    why = check_annotations(sample, QUESTION)
    assert why is not None and "operand 20" in why
    assert check_synthetic_rationale(QUESTION, GOLD, sample) is not None  # the synthetic check agrees


def test_final_answer_must_be_the_last_annotated_result():
    sample = GOLD.replace("The answer is 25", "The answer is 26")
    assert "final answer 26" in check_annotations(sample, QUESTION)


@pytest.mark.parametrize("annotation", ["<<7/0=1>>", "<<seven+3=10>>", "<<7+3=ten>>", "<<7+=10>>", "<<7 x 3=21>>"])
def test_annotation_that_does_not_compute_fails(annotation):
    assert check_annotations(f"So {annotation} apples.\nThe answer is 10") is not None


HOSTILE = [
    "2**99999", "9**9**9", "10**10**10", "(-7)**-99999", "2**0.5**99999", "99999999999999999999*99999999999",
    "1e308*1e308", "__import__('os').system('touch {marker}')", "open('{marker}', 'w').write('x')",
    "().__class__.__bases__[0].__subclasses__()", "(lambda: 1)()", "[1]*10**9", "'a'*10**9", "x", "True+1",
    "(" * 120 + "1" + ")" * 120, "1" * 300, "2**64**2", "{1: 2}",
]


@pytest.mark.parametrize("expr", HOSTILE)
def test_hostile_expressions_are_refused_fast_and_never_run(expr, tmp_path):
    marker = tmp_path / "executed"
    expr = expr.replace("{marker}", str(marker))
    start = time.perf_counter()
    why = check_annotations(f"It has <<{expr}=1>>1 parts.\nThe answer is 1")
    elapsed = time.perf_counter() - start
    assert why is not None and "annotation 1" in why
    # evaluated, several of these would run for hours or exhaust memory; refused, they take microseconds. The bound
    # is loose on purpose (a shared CI machine stalls for whole seconds): it only tells the two apart
    assert elapsed < 2.0, f"{expr!r} took {elapsed:.3f} s"
    assert not marker.exists(), "a hostile annotation was executed"


def test_commas_and_decimals():
    assert safe_arithmetic("1,500 / 6") == 250
    assert check_annotations("Each costs <<1,500/6=250>>250 dollars.\nThe answer is 250") is None
    assert check_annotations("He pays <<2.5*4=10>>$10 and <<12,000*0.05=600>>$600.\nThe answer is $600") is None
    assert check_annotations("Total <<1,250.50+0.25=1,250.75>>1,250.75.\nThe answer is 1,250.75") is None
    # a non-terminating result may be rounded or truncated at the precision written, but not off by more
    assert check_annotations("<<10/3=3.33>> and <<2/3=0.67>> and <<10/3=3>>") is None
    assert check_annotations("<<10/3=3.35>>") is not None
    assert check_annotations("<<3*3=9.5>>") is not None  # exact results must be exact


def test_rationale_without_annotations_passes():
    assert check_annotations("x = 3 + 4\nThe answer is 7") is None


# ---------------------------------------------------------------------------------------------------------------
def _results_file(tmp_path: Path) -> Path:
    """A hand-written sampling result: one query with right, wrong, broken-chain, duplicate and extra samples."""
    bad_step = GOLD.replace("<<7+3=10>>10", "<<7+4=10>>10")
    alt = GOLD.replace("Mia doubles her apples", "Twice 10 is 20")
    items = [
        {"item_id": "synthetic_pool_0", "question": QUESTION, "answer_cot": GOLD, "answer_value": "25", "level": 3,
         # initial: GOLD, wrong, bad_step, GOLD (dup); resampled (state_reset): alt, wrong, alt (dup)
         "pred": [GOLD, "The answer is 3", bad_step, GOLD, alt, "The answer is 9", alt],
         "pred_value": ["25", "3", "25", "25", "25", "9", "25"],
         "correct_pred": [GOLD, bad_step, GOLD, alt, alt],
         "correct_strategy": ["initial", "initial", "initial", "state_reset", "state_reset"]},
        {"item_id": "synthetic_pool_1", "question": "Liam has 4 coins. Then he loses 1 coins. How many coins "
         "does Liam have now?", "answer_cot": LIAM,
         "answer_value": "3", "level": 1,
         "pred": [LIAM] * 4, "pred_value": ["3"] * 4, "correct_pred": [LIAM] * 4,
         "correct_strategy": ["initial"] * 4},
    ]
    out = tmp_path / "inference_data"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(items))
    (out / "sampling_stats.json").write_text(json.dumps({"dataset": "synthetic", "strategy": "state_reset",
                                                         "sample_num": 4, "engine_start_seconds": 1.0}))
    return out


def test_counts_agree_with_the_data_written(tmp_path):
    sampled = _results_file(tmp_path)
    original = tmp_path / "orig.json"
    original.write_text(json.dumps([{"item_id": "o1", "question": "q", "answer_cot": "a", "answer_value": "1"}]))
    out = tmp_path / "iter_data" / "synthetic_iter_1.json"
    generate_main(["--cur_sampled_data_path", str(sampled), "--next_iter_data_path", str(out), "--check_result",
                   "--original_data_path", str(original), "--include_original_data", "true",
                   "--max_per_question", "1", "--check_mode", "strict", "--dedupe", "--merged_first",
                   "--record_strategy"])
    data = json.loads(out.read_text())
    counts = json.loads((tmp_path / "iter_data" / "synthetic_iter_1.counts.json").read_text())
    new = data[1:]
    assert data[0]["item_id"] == "o1" and counts["included"] == {"original": 1, "pre_iter": 0}
    assert counts["total"]["kept"] == len(new) == 2 and counts["records_written"] == len(data)
    assert counts["total"] == {"kept": 2, "wrong_answer": 2, "failed_check": 1, "duplicate": 5, "capped": 1}
    assert counts["by_dataset"]["synthetic"] == counts["total"]
    for bucket in counts["total"]:
        assert sum(s[bucket] for s in counts["by_strategy"].values()) == counts["total"][bucket]
    assert counts["by_strategy"]["state_reset"] == {"kept": 0, "wrong_answer": 1, "failed_check": 0,
                                                    "duplicate": 1, "capped": 1}
    kept_by_strategy = {}
    for rec in new:
        kept_by_strategy[rec["strategy"]] = kept_by_strategy.get(rec["strategy"], 0) + 1
    assert kept_by_strategy == {k: v["kept"] for k, v in counts["by_strategy"].items() if v["kept"]}
    assert [r["answer_cot"] for r in new] == [GOLD, LIAM]
    assert all(r["question"] in (QUESTION, data[2]["question"]) for r in new)  # the plain pool question


def test_by_default_every_correct_sample_is_kept_in_order_duplicates_included(tmp_path):
    sampled = _results_file(tmp_path)
    items = json.loads((sampled / "results.json").read_text())
    out = tmp_path / "d.json"
    assert generate_main(["--cur_sampled_data_path", str(sampled / "results.json"), "--next_iter_data_path",
                          str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["answer_cot"] for r in data] == [s for item in items for s in item["correct_pred"]]
    assert all(set(r) == {"item_id", "question", "answer_cot", "answer_value", "level"} for r in data)
    assert out.read_text().startswith("[\n    {") and not out.read_text().endswith("\n")  # the original's dump


def test_dedupe_keeps_every_distinct_correct_sample(tmp_path):
    sampled = _results_file(tmp_path)
    out = tmp_path / "d.json"
    assert generate_main(["--cur_sampled_data_path", str(sampled), "--next_iter_data_path", str(out),
                          "--dedupe", "--record_strategy"]) == 0
    data = json.loads(out.read_text())
    assert len(data) == 4  # GOLD, bad_step, alt of query 0 and the one distinct sample of query 1
    assert sum(r["strategy"] == "state_reset" for r in data) == 1


def test_include_original_takes_precedence_and_comes_after_the_samples(tmp_path):
    sampled = _results_file(tmp_path)
    extra = {}
    for name in ("orig", "pre"):
        extra[name] = tmp_path / f"{name}.json"
        extra[name].write_text(json.dumps([{"item_id": name, "question": "q", "answer_cot": "a",
                                            "answer_value": "1"}]))
    common = ["--cur_sampled_data_path", str(sampled), "--original_data_path", str(extra["orig"]),
              "--pre_iter_data_path", str(extra["pre"]), "--include_original_data", "--include_pre_iter_data"]
    out = tmp_path / "d.json"
    assert generate_main([*common, "--next_iter_data_path", str(out)]) == 0
    ids = [r["item_id"] for r in json.loads(out.read_text())]
    assert ids[-1] == "orig" and "pre" not in ids and len(ids) == 10  # the original's elif, appended
    both = tmp_path / "both.json"
    assert generate_main([*common, "--next_iter_data_path", str(both), "--include_both", "--merged_first"]) == 0
    assert [r["item_id"] for r in json.loads(both.read_text())][:2] == ["orig", "pre"]


def test_a_results_file_of_no_known_dataset_runs_and_strict_mode_asks_for_the_name(tmp_path, capsys):
    sampled = _results_file(tmp_path)
    (sampled / "sampling_stats.json").unlink()
    renamed = tmp_path / "some_run.json"
    (sampled / "results.json").rename(renamed)
    out = tmp_path / "d.json"
    assert generate_main(["--cur_sampled_data_path", str(renamed), "--next_iter_data_path", str(out),
                          "--check_result"]) == 0
    strict = ["--cur_sampled_data_path", str(renamed), "--next_iter_data_path", str(tmp_path / "s.json"),
              "--check_result", "--check_mode", "strict"]
    assert generate_main(strict) == 2
    assert "--dataset_name" in capsys.readouterr().err and not (tmp_path / "s.json").exists()
    assert generate_main([*strict, "--dataset_name", "synthetic"]) == 0


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    good = _results_file(tmp_path)
    items = json.loads((good / "results.json").read_text())
    no_correct = tmp_path / "no_correct.json"
    no_correct.write_text(json.dumps([{k: v for k, v in items[0].items() if k != "correct_pred"}]))
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"item_id": ')
    not_list = tmp_path / "not_list.json"
    not_list.write_text('{"item_id": "x"}')
    return {"missing": tmp_path / "nowhere.json", "no_correct": no_correct, "empty": empty, "broken": broken,
            "not_list": not_list}


@pytest.mark.parametrize("case", ["missing", "no_correct", "empty", "broken", "not_list"])
def test_bad_input_fails_naming_the_file_and_writes_nothing(case, tmp_path, capsys):
    bad = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out" / "next.json"
    assert generate_main(["--cur_sampled_data_path", str(tmp_path / "inference_data"), str(bad),
                          "--next_iter_data_path", str(out)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out" / "next.counts.json").exists()


def test_bad_input_on_the_command_line_exits_2_with_one_line(tmp_path):
    bad = _bad_inputs(tmp_path)["no_correct"]
    out = tmp_path / "next.json"
    proc = subprocess.run([sys.executable, "generate_train_data.py", "--cur_sampled_data_path", str(bad),
                           "--next_iter_data_path", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and str(bad) in proc.stderr and "correct_pred" in proc.stderr
    assert proc.stderr.startswith("generate_train_data.py: error: ") and proc.stderr.count("\n") == 1
    assert not out.exists()


def test_grader_flag_regrades_every_sample(tmp_path):
    """--grader re-grades pred instead of trusting correct_pred: the project grader reads the right side of
    "107 - 7 = 100", the original's does not (tests/fixtures/reference_grader holds that decision)."""
    sampled = tmp_path / "inference_data"
    sampled.mkdir()
    preds = ["We compute.\nThe answer is 107 - 7 = 100.", "We compute.\nThe answer is 100.", "The answer is 7."]
    (sampled / "results.json").write_text(json.dumps([{
        "item_id": "gsm8k_1", "question": "q?", "answer_cot": "a", "answer_value": "100", "pred": preds,
        "pred_value": ["", "", ""], "correct_pred": [], "correct_strategy": []}]))
    (sampled / "sampling_stats.json").write_text(json.dumps({"dataset": "gsm8k", "strategy": "state_reset",
                                                             "sample_num": 1, "mode": "cot"}))
    kept = {}
    for grader in ("project", "reference"):
        out = tmp_path / grader / "train.json"
        assert generate_main(["--cur_sampled_data_path", str(sampled), "--next_iter_data_path", str(out),
                              "--grader", grader, "--record_strategy"]) in (0, None)
        kept[grader] = [(r["answer_cot"], r["strategy"]) for r in json.loads(out.read_text())]
    assert kept["project"] == [(preds[0], "initial"), (preds[1], "state_reset")]
    assert kept["reference"] == [(preds[1], "state_reset")]
