"""Greedy evaluation: one response per test question, graded by ``src.grading`` (never ``eval``).

    python eval.py --model_name_or_path output/tiny/model --results_path output/tiny/eval \\
        --dataset_name synthetic synthetic_heldout \\
        --eval_data_file data/synthetic/test/synthetic.json data/synthetic/test/synthetic_heldout.json

In-process (the demo and the tests)::

    items, metrics = evaluate_dataset(llm, load_records("data/test/gsm8k.json", "test"), "gsm8k")

Several data sets share one engine load; every input file is validated before the engine starts and nothing is
written unless every data set was evaluated, so bad input fails in seconds and leaves no partial results.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src import prompts
from src.grading.reference import GRADERS
from src.records import RecordError, load_records, write_json
from src.registry import get_dataset

RES_SUFFIX = "_res.json"
METRICS_FILE = "metrics.json"
DISAGREEMENTS_FILE = "grader_disagreements.json"


@dataclass
class EvalConfig:
    """The original ``eval.py`` arguments (plus ``--seed`` and ``--max_model_len``)."""

    model_name_or_path: str = field(metadata={"help": "model folder (Hugging Face format) to evaluate"})
    results_path: str = field(metadata={"help": "folder for <dataset>_res.json and metrics.json"})
    dataset_name: list[str] = field(metadata={"help": "data set names (gsm8k math aqua mathqa svamp theoremqa "
                                                      "synthetic synthetic_heldout), paired with --eval_data_file"})
    eval_data_file: list[str] = field(metadata={"help": "test files, one per --dataset_name, same order"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (the paper's evaluation)"})
    device_num: int = field(default=1, metadata={"help": "tensor-parallel size (GPUs)"})
    max_length: int = field(default=1024, metadata={"help": "new tokens per response"})
    mode: str = field(default="cot", metadata={"help": "cot, or pot (asks for a program, grades its output)",
                                               "choices": ["cot", "pot"]})
    seed: int = field(default=42, metadata={"help": "engine seed (matters only when --temperature > 0)"})
    max_model_len: int | None = field(default=None, metadata={
        "help": "prompt + response tokens per sequence; default: min(model positions, max_length + 1024)"})
    pot_workers: int = field(default=2, metadata={"help": "PoT: sandbox processes running the programs"})
    grader: str = field(default="project", metadata={
        "help": "which grader decides correct and accuracy: project (this project's rules) or reference (the "
                "original code's decisions); metrics.json always holds both accuracies", "choices": list(GRADERS)})
    self_improve_rounds: int = field(default=0, metadata={
        "help": "TriPosT: up to N rounds of own feedback and updated attempt after the first answer; the last "
                "answer is scored, metrics add first-attempt accuracy and fixed/broken counts (0 = off)"})


def _level_key(item: dict) -> str | None:
    level = item.get("level")
    return None if level is None else str(level)


def grade_both(responses: list[str], records: list[dict], dataset: str, mode: str, executor: Any) -> dict:
    """Grades of every response by each grader: ``{"project": [GradeResult], "reference": [GradeResult]}``."""
    from src.grading import grade_batch

    golds, options = [r["answer_value"] for r in records], [r.get("options") for r in records]
    return {g: grade_batch(responses, golds, dataset, mode=mode, executor=executor, options=options, grader=g)
            for g in GRADERS}


def evaluate_dataset(llm, records: list[dict], dataset: str, mode: str = "cot", max_tokens: int = 1024,
                     temperature: float = 0.0, executor: Any = None,
                     grader: str = "project", respond: Any = None) -> tuple[list[dict], dict]:
    """Generate one response per record (greedy by default), grade it, return (``_res.json`` items, metrics).

    ``records`` follow the test schema; ``options`` (AQuA, MathQA) are passed to the grader. ``grader``
    decides ``correct`` and ``accuracy``; both graders' answers are kept in ``by_grader`` (items and metrics).
    ``respond(llm, prompts, params) -> Generation`` replaces the one greedy generation (TriPosT's self-improvement
    rounds, src/tripost/infer.py).
    """
    from src.engine import generate, sampling_params

    spec = get_dataset(dataset)
    start = time.perf_counter()
    question_prompts = [prompts.student_prompt(prompts.eval_question(r["question"], mode)) for r in records]
    gen = (respond or generate)(llm, question_prompts, sampling_params(1, temperature, 1.0, max_tokens))
    responses = [texts[0] for texts in gen.texts]
    all_grades = grade_both(responses, records, spec.name, mode, executor)
    items: list[dict] = []
    for i, (rec, response, grade) in enumerate(zip(records, responses, all_grades[grader])):
        item = {"item_id": rec["item_id"], "question": rec["question"], "answer_value": rec["answer_value"]}
        if rec.get("level") is not None:
            item["level"] = rec["level"]
        item.update(pred=[response], pred_value=[grade.pred_value], correct_pred=[response] if grade.correct else [],
                    correct=grade.correct, status=grade.status,
                    by_grader={g: {"pred_value": gs[i].pred_value, "correct": gs[i].correct}
                               for g, gs in all_grades.items()})
        items.append(item)
    summary = item_metrics(items, grader)
    metrics = {**{k: summary[k] for k in ("n", "correct", "accuracy", "grader", "accuracy_by_grader")},
               "generated_tokens": gen.generated_tokens, "seconds": round(time.perf_counter() - start, 3),
               "generate_seconds": round(gen.seconds, 3), "by_level": summary["by_level"]}
    return items, metrics


def item_metrics(items: list[dict], grader: str) -> dict:
    """The counts of graded ``_res.json`` items (n, correct, accuracy, accuracy_by_grader, by_level): computed
    here for one run and for the merge of a sharded one (src/shards.py), so the two cannot differ."""
    by_level: dict[str, dict[str, Any]] = {}
    for item in items:
        key = _level_key(item)
        if key is not None:
            bucket = by_level.setdefault(key, {"n": 0, "correct": 0})
            bucket["n"] += 1
            bucket["correct"] += int(item["correct"])
    for bucket in by_level.values():
        bucket["accuracy"] = bucket["correct"] / bucket["n"]
    n_correct = sum(item["correct"] for item in items)
    return {"n": len(items), "correct": n_correct, "accuracy": n_correct / len(items) if items else 0.0,
            "grader": grader, "accuracy_by_grader": {
                g: sum(item["by_grader"][g]["correct"] for item in items) / len(items) if items else 0.0
                for g in GRADERS},
            "by_level": dict(sorted(by_level.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0))}


def load_eval_sets(names: list[str], files: list[str]) -> list[tuple[str, list[dict]]]:
    """Validate the paired data set names and test files up front; raise RecordError naming the bad one."""
    if len(names) != len(files):
        raise RecordError(f"--dataset_name has {len(names)} entries but --eval_data_file has {len(files)}; "
                          "give one test file per data set, in the same order")
    sets = []
    for name, file in zip(names, files):
        try:
            spec = get_dataset(name)
        except ValueError as err:
            raise RecordError(f"{file}: {err}") from None
        sets.append((spec.name, load_records(file, "test")))
    seen = [n for n, _ in sets]
    if len(set(seen)) != len(seen):
        raise RecordError(f"--dataset_name repeats a data set ({' '.join(names)}): outputs would overwrite")
    return sets


def model_positions(model_dir: str | Path) -> int | None:
    """``max_position_embeddings`` of a local checkpoint (None when unknown)."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")


def run_eval(cfg: EvalConfig, select: Any = None) -> dict:
    """Evaluate every data set with one engine; write ``<dataset>_res.json`` + ``metrics.json``; return metrics.

    ``select(records) -> records``: evaluate only those (one shard's items, src/shards.py)."""
    from src.engine import EngineConfig, build_llm

    sets = load_eval_sets(cfg.dataset_name, cfg.eval_data_file)  # before the engine: fail in seconds
    if select is not None:
        sets = [(name, select(records)) for name, records in sets]
    if cfg.self_improve_rounds < 0 or (cfg.self_improve_rounds > 0 and cfg.mode != "cot"):
        raise RecordError(f"--self_improve_rounds must be >= 0 and needs --mode cot, got {cfg.self_improve_rounds} "
                          f"with --mode {cfg.mode}")
    if not (Path(cfg.model_name_or_path) / "config.json").is_file():
        raise RecordError(f"{cfg.model_name_or_path}: not a model folder (no config.json)")
    total_start = time.perf_counter()
    positions = model_positions(cfg.model_name_or_path)
    max_model_len = cfg.max_model_len or min(positions or 10**9, cfg.max_length + 1024)
    engine_start = time.perf_counter()
    llm = build_llm(EngineConfig(cfg.model_name_or_path, device_num=cfg.device_num, seed=cfg.seed,
                                 max_model_len=max_model_len))
    engine_seconds = time.perf_counter() - engine_start
    # Responses may use what the prompt leaves of the context; vLLM refuses a request that cannot fit.
    max_tokens = cfg.max_length
    results: dict[str, tuple[list[dict], dict]] = {}
    executor_cm = contextlib.nullcontext()
    if cfg.mode == "pot":
        from src.grading import PotExecutor

        executor_cm = PotExecutor(workers=cfg.pot_workers)
    with executor_cm as executor:
        for name, records in sets:
            if cfg.self_improve_rounds > 0:  # TriPosT (src/tripost/infer.py)
                from src.tripost.infer import evaluate_self_improve

                results[name] = evaluate_self_improve(llm, records, name, cfg.mode, max_tokens, cfg.temperature,
                                                      executor, cfg.grader, cfg.self_improve_rounds)
            else:
                results[name] = evaluate_dataset(llm, records, name, cfg.mode, max_tokens, cfg.temperature,
                                                 executor, cfg.grader)
            print(f"{name}: accuracy {results[name][1]['accuracy']:.4f} "
                  f"({results[name][1]['correct']}/{results[name][1]['n']})", flush=True)
    out = Path(cfg.results_path)
    for name, (items, _) in results.items():
        write_json(out / f"{name}{RES_SUFFIX}", items)
    write_json(out / DISAGREEMENTS_FILE, grader_disagreements(results))
    metrics = {"model": cfg.model_name_or_path, "mode": cfg.mode, "grader": cfg.grader,
               "temperature": cfg.temperature,
               "max_length": cfg.max_length, "engine_start_seconds": round(engine_seconds, 3),
               "seconds": round(time.perf_counter() - total_start, 3),
               "datasets": {name: m for name, (_, m) in results.items()}}
    write_json(out / METRICS_FILE, metrics)
    return metrics


def grader_disagreements(results: dict[str, tuple[list[dict], dict]]) -> list[dict]:
    """Every item the project and reference graders decide differently, with both extracted answers."""
    rows = []
    for dataset, (items, _) in results.items():
        for item in items:
            project, reference = item["by_grader"]["project"], item["by_grader"]["reference"]
            if project["correct"] != reference["correct"]:
                rows.append({"dataset": dataset, "item_id": item["item_id"], "answer_value": item["answer_value"],
                             "pred_value_project": project["pred_value"], "correct_project": project["correct"],
                             "pred_value_reference": reference["pred_value"],
                             "correct_reference": reference["correct"], "response": item["pred"][0]})
    return rows
