"""Re-grade saved predictions and print one JSON line of totals.

    python -m src.grading output/eval/gsm8k_res.json --dataset gsm8k --mode cot --field pred --out regraded.json
    python -m src.grading data/inference/pot/gsm8k.json --dataset gsm8k --mode pot   # gold programs

FILE is a JSON (or JSONL) list of items with ``answer_value`` and the graded field (``--field``, default
``answer_cot``). Choice answers use the item's ``options``, else the options written into its ``question``.
The field may hold one string or a list of strings (e.g. an eval file's ``pred``): every string is graded, and
an item counts as correct when its FIRST string is (the greedy evaluation stores exactly one). Printed:
``{"n", "correct", "accuracy", "errors", "timeouts", "seconds"}`` where errors / timeouts count responses whose
status was "error" / "timeout". ``--out`` writes the items back with ``pred_value`` and ``correct`` added
(lists of both, ``correct_list``, for list fields).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

from src.cli import check_input_file, check_output, check_range, one_line_errors, output_lock, run_cli
from src.grading import GRADERS, PotExecutor, grade_batch, options_from_question
from src.records import RecordError, read_json_or_jsonl, write_json
from src.registry import DATASETS

PROG = "python -m src.grading"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("file", help="JSON/JSONL list of items to grade")
    ap.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="decides the answer format")
    ap.add_argument("--mode", default="cot", choices=["cot", "pot"], help="CoT text or PoT program")
    ap.add_argument("--field", default="answer_cot", help="item field holding the response(s)")
    ap.add_argument("--out", default=None, help="write the items with pred_value and correct added")
    ap.add_argument("--workers", type=int, default=2, help="PoT sandbox processes")
    ap.add_argument("--grader", default="project", choices=GRADERS,
                    help="project: this project's rules; reference: the original code's decisions")
    args = one_line_errors(ap, PROG).parse_args(argv)
    check_range("workers", args.workers, 1)
    check_input_file("file", args.file)
    if args.out:
        check_output("out", args.out, "file", inputs=[args.file])
    return args


def load_items(path: str, field: str) -> tuple[list[dict], list[tuple[int, str, str, object]]]:
    """The items and one (item index, response, gold, options) per response; RecordError naming item and field."""
    items = read_json_or_jsonl(path)
    if not isinstance(items, list):
        raise RecordError(f"{path}: expected a JSON list of items")
    flat: list[tuple[int, str, str, object]] = []
    for i, item in enumerate(items):
        for key in (field, "answer_value"):
            if not isinstance(item, dict) or key not in item:
                raise RecordError(f"{path}: item {i}: missing field {key!r}")
        value = item[field]
        responses = value if isinstance(value, list) else [value]
        if not all(isinstance(r, str) for r in responses):
            raise RecordError(f"{path}: item {i}: {field!r} must be a string or a list of strings")
        # options: the item's own, else those written into its question ("Answer Choices: (A) ...")
        options = item.get("options") or options_from_question(str(item.get("question", ""))) or None
        flat += [(i, r, str(item["answer_value"]), options) for r in responses]
    return items, flat


def graded_items(items: list[dict], per_item: list[list], field: str) -> list[dict]:
    out = []
    for item, item_grades in zip(items, per_item):
        row = dict(item)
        if isinstance(item[field], list):
            row["pred_value"] = [g.pred_value for g in item_grades]
            row["correct_list"] = [g.correct for g in item_grades]
            row["correct"] = bool(item_grades) and item_grades[0].correct
        else:
            row["pred_value"] = item_grades[0].pred_value
            row["correct"] = item_grades[0].correct
        out.append(row)
    return out


def run(argv: list[str] | None) -> None:
    args = parse(argv)
    items, flat = load_items(args.file, args.field)
    with output_lock(args.out) if args.out else contextlib.nullcontext():
        summary = grade_and_write(args, items, flat)
    print(json.dumps(summary))


def grade_and_write(args: argparse.Namespace, items: list[dict], flat: list[tuple[int, str, str, object]]) -> dict:
    start = time.monotonic()
    executor = PotExecutor(workers=args.workers) if args.mode == "pot" else None
    try:
        grades = grade_batch([f[1] for f in flat], [f[2] for f in flat], args.dataset, args.mode,
                             executor=executor, options=[f[3] for f in flat], grader=args.grader)
    finally:
        if executor is not None:
            executor.close()
    seconds = time.monotonic() - start

    per_item: list[list] = [[] for _ in items]
    for (i, *_), grade in zip(flat, grades):
        per_item[i].append(grade)
    correct = sum(1 for g in per_item if g and g[0].correct)
    summary = {"n": len(items), "correct": correct, "accuracy": correct / len(items) if items else 0.0,
               "errors": sum(g.status == "error" for g in grades),
               "timeouts": sum(g.status == "timeout" for g in grades), "seconds": round(seconds, 3)}
    if args.out:
        write_json(args.out, graded_items(items, per_item, args.field))
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
