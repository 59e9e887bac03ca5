"""Preference pairs for the DPO stage (src/pairs.py, generate_train_data.py --format dpo): the pairing rule on
hand-written samples, then the command on real results.json files (records, prompt, counts, bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generate_train_data import main as generate_main
from src.filtering import read_counts
from src.pairs import DEMONSTRATION, STUDENT, PairCounts, build_pairs, pair_question, plain_prompt_samples
from src.prompts import student_prompt

GOLD = "gold rationale\nThe answer is 5"
MIXED4 = [("right A", True), ("wrong B", False), ("right C", True), ("wrong D", False)]
ALL_RIGHT = [("right A", True), ("right B", True), ("right C", True)]
ALL_WRONG = [("wrong A", False), ("wrong B", False), ("wrong C", False)]


def texts(pairs) -> list[str]:
    return [t for p in pairs for t in (p.chosen, p.rejected)]


def test_four_samples_two_correct_give_two_self_pairs_without_reuse():
    pairs = pair_question(MIXED4, GOLD, "self", max_pairs=2)
    assert [(p.chosen, p.rejected) for p in pairs] == [("right A", "wrong B"), ("right C", "wrong D")]
    assert len(set(texts(pairs))) == 4  # no sample twice
    assert all(p.chosen_source == p.rejected_source == STUDENT for p in pairs)
    assert len(pair_question(MIXED4, GOLD, "self", max_pairs=1)) == 1
    assert len(pair_question(MIXED4, GOLD, "self", max_pairs=5)) == 2  # limited by the samples, not K


@pytest.mark.parametrize("mode", ["self", "teacher", "mixed"])
def test_all_correct_question_gives_no_pair(mode):
    assert pair_question(ALL_RIGHT, GOLD, mode, max_pairs=2) == []


def test_all_wrong_question_gives_pairs_only_with_the_demonstration():
    assert pair_question(ALL_WRONG, GOLD, "self", max_pairs=2) == []
    for mode in ("teacher", "mixed"):
        pairs = pair_question(ALL_WRONG, GOLD, mode, max_pairs=2)
        assert [(p.chosen, p.rejected, p.chosen_source) for p in pairs] == [
            (GOLD, "wrong A", DEMONSTRATION), (GOLD, "wrong B", DEMONSTRATION)]


def test_mixed_pairs_students_when_one_is_correct_and_teacher_pairs_the_demonstration():
    assert pair_question(MIXED4, GOLD, "mixed", 2) == pair_question(MIXED4, GOLD, "self", 2)
    teacher = pair_question(MIXED4, GOLD, "teacher", 3)
    assert [(p.chosen, p.rejected) for p in teacher] == [(GOLD, "wrong B"), (GOLD, "wrong D")]


def test_identical_and_empty_texts_are_never_paired():
    samples = [("same", True), ("same", True), ("other", False), ("other", False), ("  ", False)]
    pairs = pair_question(samples, GOLD, "self", 4)
    assert [(p.chosen, p.rejected) for p in pairs] == [("same", "other")]
    # a wrong sample equal to the demonstration text is not paired with it
    assert pair_question([(GOLD, False), ("x", False)], GOLD, "teacher", 4)[0].rejected == "x"
    assert len(pair_question([(GOLD, False), ("x", False)], GOLD, "teacher", 4)) == 1
    assert pair_question(ALL_WRONG, "   ", "teacher", 2) == []  # no demonstration, no teacher pair


def test_only_plain_prompt_samples_are_paired():
    item = {"pred": ["a", "b", "c", "guided d"], "correct_pred": ["a", "guided d"]}
    assert plain_prompt_samples(item, "answer_driven", 3) == [("a", True), ("b", False), ("c", False)]
    assert plain_prompt_samples(item, "vanilla", 3)[-1] == ("guided d", True)  # brute force: the same prompt


# ----------------------------------------------------------------------------- the command, real files

def result_item(i: int, samples: list[tuple[str, bool]]) -> dict:
    return {"item_id": f"synthetic_pool_{i}", "question": f"Question {i}: how many?", "answer_cot": f"{GOLD} ({i})",
            "answer_value": "5", "pred": [t for t, _ in samples],
            "pred_value": ["5" if ok else "4" for _, ok in samples],
            "correct_pred": [t for t, ok in samples if ok], "correct_strategy": ["initial" for _, ok in samples if ok]}


def write_results(folder: Path, items: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(items))
    (folder / "sampling_stats.json").write_text(json.dumps(
        {"dataset": "synthetic", "strategy": "vanilla", "sample_num": 4, "mode": "cot"}))
    return folder


@pytest.mark.parametrize("mode, expected", [("self", 2), ("teacher", 2 + 2), ("mixed", 2 + 2)])
def test_generate_train_data_format_dpo_writes_pairs_and_counts(tmp_path, mode, expected):
    sampled = write_results(tmp_path / "sampled", [result_item(0, MIXED4), result_item(1, ALL_RIGHT),
                                                  result_item(2, ALL_WRONG)])
    out = tmp_path / "pairs.json"
    assert generate_main(["--cur_sampled_data_path", str(sampled), "--next_iter_data_path", str(out),
                          "--format", "dpo", "--pair_mode", mode, "--max_pairs_per_question", "2"]) == 0
    pairs = json.loads(out.read_text())
    assert len(pairs) == expected
    assert all(list(p) == ["item_id", "prompt", "chosen", "rejected", "chosen_source", "rejected_source"]
               for p in pairs)
    assert all(p["prompt"] == student_prompt(f"Question {p['item_id'][-1]}: how many?") for p in pairs)
    assert not any(p["item_id"] == "synthetic_pool_1" for p in pairs)  # all correct: no pair
    counts = read_counts(out)
    assert counts["pairs"] == expected and counts["questions"] == 3
    assert counts["questions_without_pair"]["all_correct"] == 1
    assert counts["questions_without_pair"]["no_correct"] == (1 if mode == "self" else 0)


def test_zero_pairs_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    sampled = write_results(tmp_path / "sampled", [result_item(1, ALL_RIGHT), result_item(2, ALL_WRONG)])
    out = tmp_path / "pairs.json"
    status = generate_main(["--cur_sampled_data_path", str(sampled), "--next_iter_data_path", str(out),
                            "--format", "dpo", "--pair_mode", "self"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "no preference pair survived" in err[0], err
    assert not out.exists() and not (tmp_path / "pairs.counts.json").exists()


@pytest.mark.parametrize("flags, message", [(["--pair_mode", "both"], "invalid choice"),
                                            (["--max_pairs_per_question", "0"], "must be >= 1"),
                                            (["--check_result", "true"], "does not take --check_result")])
def test_bad_pair_flags_are_one_line_exit_2(tmp_path, capsys, flags, message):
    sampled = write_results(tmp_path / "sampled", [result_item(0, MIXED4)])
    status = generate_main(["--cur_sampled_data_path", str(sampled), "--next_iter_data_path",
                            str(tmp_path / "pairs.json"), "--format", "dpo", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "pairs.json").exists()


def test_build_pairs_counts_by_source():
    from src.filtering import SampledSet

    sset = SampledSet(dataset="synthetic", items=[result_item(0, MIXED4), result_item(2, ALL_WRONG)], source="x",
                      strategy="vanilla", sample_num=4)
    records, counts = build_pairs([sset], "mixed", 2)
    assert isinstance(counts, PairCounts) and counts.records_written == len(records) == 4
    assert counts.by_source == {STUDENT: 2, DEMONSTRATION: 2}
