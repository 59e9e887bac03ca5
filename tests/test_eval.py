"""Greedy evaluation (src.evaluation, eval.py): graded with src.grading, metrics that add up, bad input refused.

The CLI's full run (one engine, several data sets, metrics.json) is exercised by the iteration tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval import main as eval_main
from src.evaluation import evaluate_dataset
from src.grading import grade_response
from src.records import load_records

REPO = Path(__file__).resolve().parents[1]


def test_evaluate_dataset_grades_every_item_and_metrics_add_up(llm, synthetic_dir):
    records = load_records(synthetic_dir / "test" / "synthetic.json", "test")[:24]
    items, metrics = evaluate_dataset(llm, records, "synthetic", max_tokens=160)
    assert [i["item_id"] for i in items] == [r["item_id"] for r in records]
    for item in items:
        assert len(item["pred"]) == 1 and len(item["pred_value"]) == 1
        regraded = grade_response(item["pred"][0], item["answer_value"], "synthetic")
        assert item["correct"] == regraded.correct and item["pred_value"][0] == regraded.pred_value
        assert item["correct_pred"] == (item["pred"] if item["correct"] else [])
    assert metrics["n"] == 24 and metrics["correct"] == sum(i["correct"] for i in items)
    assert metrics["accuracy"] == metrics["correct"] / 24
    assert metrics["generated_tokens"] > 0 and metrics["seconds"] > 0
    assert sum(b["n"] for b in metrics["by_level"].values()) == 24
    assert sum(b["correct"] for b in metrics["by_level"].values()) == metrics["correct"]


def test_greedy_evaluation_is_deterministic(llm, synthetic_dir):
    records = load_records(synthetic_dir / "test" / "synthetic_heldout.json", "test")[:8]
    first, _ = evaluate_dataset(llm, records, "synthetic_heldout", max_tokens=96)
    second, _ = evaluate_dataset(llm, records, "synthetic_heldout", max_tokens=96)
    assert [i["pred"] for i in first] == [i["pred"] for i in second]


def test_pot_mode_runs_programs_through_the_sandbox(llm, synthetic_dir):
    records = load_records(synthetic_dir / "test" / "synthetic.json", "test")[:6]
    items, metrics = evaluate_dataset(llm, records, "synthetic", mode="pot", max_tokens=96)
    assert metrics["n"] == 6
    assert all(i["status"] in ("ok", "no_answer", "timeout", "error") for i in items)


def _bad_eval_inputs(tmp_path: Path, synthetic_dir: Path) -> dict[str, list[str]]:
    test = str(synthetic_dir / "test" / "synthetic.json")
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    no_answer = tmp_path / "no_answer.json"
    no_answer.write_text(json.dumps([{"item_id": "a", "question": "q"}]))
    return {
        "missing": ["--dataset_name", "synthetic", "--eval_data_file", str(tmp_path / "nowhere.json")],
        "empty": ["--dataset_name", "synthetic", "--eval_data_file", str(empty)],
        "wrong_schema": ["--dataset_name", "synthetic", "--eval_data_file", str(no_answer)],
        "unknown_dataset": ["--dataset_name", "gsm9k", "--eval_data_file", test],
        "unpaired": ["--dataset_name", "synthetic", "synthetic_heldout", "--eval_data_file", test],
    }


@pytest.mark.parametrize("case", ["missing", "empty", "wrong_schema", "unknown_dataset", "unpaired"])
def test_bad_input_fails_before_the_engine_and_writes_nothing(case, tmp_path, synthetic_dir, tiny_model_dir,
                                                              monkeypatch, capsys):
    import src.engine

    def no_engine(*args, **kwargs):
        raise AssertionError("the engine was started although the input was bad")

    monkeypatch.setattr(src.engine, "build_llm", no_engine)
    args = _bad_eval_inputs(tmp_path, synthetic_dir)[case]
    out = tmp_path / "eval_out"
    assert eval_main(["--model_name_or_path", str(tiny_model_dir), "--results_path", str(out), *args]) == 2
    message = capsys.readouterr().err
    assert message.startswith("eval.py: error: ") and message.count("\n") == 1 and "Traceback" not in message
    if case in ("missing", "empty", "wrong_schema"):
        assert args[-1] in message
    assert not out.exists()


def test_eval_cli_bad_model_folder_exits_nonzero_naming_it(tmp_path, synthetic_dir):
    out = tmp_path / "eval_out"
    proc = subprocess.run([sys.executable, "eval.py", "--model_name_or_path", str(tmp_path / "no_model"),
                           "--results_path", str(out), "--dataset_name", "synthetic",
                           "--eval_data_file", str(synthetic_dir / "test" / "synthetic.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and str(tmp_path / "no_model") in proc.stderr
    assert not out.exists()
