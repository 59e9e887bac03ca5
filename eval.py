"""Greedy evaluation of a model on one or more test sets with one vLLM engine load.

    python eval.py --model_name_or_path output/tiny/model --results_path output/tiny/eval_data --mode cot \
        --dataset_name synthetic synthetic_heldout \
        --eval_data_file data/synthetic/test/synthetic.json data/synthetic/test/synthetic_heldout.json

Writes ``<dataset>_res.json`` per data set and ``metrics.json`` (accuracy per data set and per level, counts,
generated tokens, seconds, engine start-up seconds). ``--help`` lists every flag; the logic is in
src/evaluation.py. Bad input is one line on stderr and exit status 2 before the engine starts (src/cli.py); the
run holds ``<results_path>.lock``, so a second run on the same --results_path is refused.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path

from src.cli import UsageError, check_input_file, check_output, check_range, output_lock, parse_args, run_cli
from src.evaluation import EvalConfig, load_eval_sets, run_eval
from src.shards import EVAL, ShardArguments, write_manifest


def check_eval_args(cfg: EvalConfig) -> list[tuple[str, list[dict]]]:
    """Every check that needs no engine: numbers, the test files and their records, the model, the output.

    Returns the validated test sets as (data set name, records)."""
    check_range("max_length", cfg.max_length, 1)
    check_range("max_model_len", cfg.max_model_len, 1)
    check_range("device_num", cfg.device_num, 1)
    check_range("pot_workers", cfg.pot_workers, 1)
    check_range("temperature", cfg.temperature, 0)
    files = [check_input_file("eval_data_file", f) for f in cfg.eval_data_file]
    sets = load_eval_sets(cfg.dataset_name, cfg.eval_data_file)
    if not (Path(cfg.model_name_or_path) / "config.json").is_file():
        raise UsageError(f"--model_name_or_path {cfg.model_name_or_path}: not a model folder (no config.json)")
    check_output("results_path", cfg.results_path, "folder", inputs=files)
    return sets


def run(argv: list[str] | None) -> None:
    cfg, shard = parse_args([EvalConfig, ShardArguments], argv, "eval.py")
    sets = check_eval_args(cfg)
    if shard.sharded:  # src/shards.py: this run evaluates items i % N == k into <results_path>/shard_k_of_N/
        if cfg.self_improve_rounds > 0:
            raise UsageError("--self_improve_rounds cannot be sharded yet (its metrics are not merged); "
                             "run it with --num_shards 1")
        shard.check_pools({name: len(records) for name, records in sets})
    out = shard.folder(cfg.results_path)
    with output_lock(out):
        shard.start(out)
        run_eval(replace(cfg, results_path=str(out)), select=shard.select if shard.sharded else None)
        write_manifest(out, EVAL, shard, cfg.seed, eval_settings(cfg),
                       [(name, file, records) for (name, records), file in zip(sets, cfg.eval_data_file)],
                       {name: "" for name, _ in sets})


def eval_settings(cfg: EvalConfig) -> dict:
    """What decides the responses and grades (a shard with other values is foreign to the merge)."""
    return {k: v for k, v in asdict(cfg).items() if k not in ("results_path", "eval_data_file", "pot_workers")}


def main(argv: list[str] | None = None) -> int:
    return run_cli("eval.py", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
