"""Sampling throughput of 2 shards (two engines side by side, then the merge) vs 1 engine, on the same pool.

    .venv/bin/python benchmarks/shards.py                               # tiny model + synthetic pool in a tmp dir
    .venv/bin/python benchmarks/shards.py --model_name_or_path M --n_queries 512 --shards 8   # a GPU node

Both sides run the real command lines as subprocesses: ``inference.py`` once, and
``scripts/cluster/sample_shards.sh`` with ``SHARDS_PER_NODE=--shards`` (one GPU per shard on a GPU node; on CPU
each shard pinned to its own core with ``VLLM_CPU_OMP_THREADS_BIND``, ``--cpu_binds``), which merges. Prints the
figures, then last one JSON line: ``{"tokens_per_s_1": .., "tokens_per_s_n": .., "speedup": ..}`` with tokens per
wall second including engine start-up (what a stage costs), and the same without it (``*_generate``: the
summed generated tokens over the slowest engine's round time). On 2 CPU cores shared with other jobs the ratio
shows the overhead of a second engine, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere


def sampling_flags(args: argparse.Namespace, model: str, pool: Path, out: Path) -> list[str]:
    return ["--model_name_or_path", model, "--inference_data_file", str(pool), "--dataset_name", "synthetic",
            "--results_path", str(out), "--sample_num", str(args.sample_num), "--min_correct_num", "1",
            "--max_resample_num", "0", "--temperature", "0.7", "--max_length", str(args.max_new_tokens),
            "--max_model_len", "1024", "--cpu_kvcache_gib", "1", "--no_progress"]


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}); see {log}")
    return time.perf_counter() - start


def figures(stats: dict, wall: float) -> dict[str, float]:
    tokens = stats["rounds"][-1]["cumulative_generated_tokens"]
    generate = sum(r["wall_seconds"] for r in stats["rounds"])
    return {"tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 2),
            "tokens_per_s_generate": round(tokens / generate, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model_name_or_path", default="", help="model folder; empty: build the tiny model")
    ap.add_argument("--n_queries", type=int, default=64, help="sampling-pool queries")
    ap.add_argument("--sample_num", type=int, default=8)
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--shards", type=int, default=2, help="engines side by side")
    ap.add_argument("--cpu_binds", default="0|1", help="CPU only: VLLM_CPU_OMP_THREADS_BIND per shard, '|'-separated")
    args = ap.parse_args()

    from src.records import load_records
    from src.synthetic import WorldConfig, write_world
    from src.tiny import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_shards_"))
    paths = write_world(WorldConfig(seed=0, n_train=600, n_pool=args.n_queries, n_test_held_in=6,
                                    n_test_held_out=6), tmp / "data")
    model = args.model_name_or_path or str(build_tiny_model(tmp / "model", load_records(paths["train_cot"])))
    pool = Path(paths["pool_cot"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    python = sys.executable

    one_wall = timed([python, "inference.py", *sampling_flags(args, model, pool, tmp / "one")], env,
                     tmp / "one.log")
    one = figures(json.loads((tmp / "one" / "sampling_stats.json").read_text()), one_wall)
    print(f"1 engine: {one}", flush=True)

    shard_env = {**env, "SHARDS_PER_NODE": str(args.shards), "NUM_SHARDS": str(args.shards), "PYTHON": python,
                 "CPU_BINDS": args.cpu_binds}
    n_wall = timed(["bash", "scripts/cluster/sample_shards.sh", "inference.py",
                    *sampling_flags(args, model, pool, tmp / "sharded")], shard_env, tmp / "sharded.log")
    merged = json.loads((tmp / "sharded" / "sampling_stats.json").read_text())
    sharded = figures(merged, n_wall)
    print(f"{args.shards} shards (with merge): {sharded}; engine start-up per shard "
          f"{merged['shards']['engine_start_seconds']} s vs {one['wall_s']} s total for 1 engine", flush=True)
    results = json.loads((tmp / "sharded" / "results.json").read_text())
    assert [r["item_id"] for r in results] == [r["item_id"] for r in load_records(pool)][: len(results)]
    print(json.dumps({"shards": args.shards, "tokens_per_s_1": one["tokens_per_s"],
                      "tokens_per_s_n": sharded["tokens_per_s"],
                      "speedup": round(sharded["tokens_per_s"] / one["tokens_per_s"], 3),
                      "tokens_per_s_generate_1": one["tokens_per_s_generate"],
                      "tokens_per_s_generate_n": sharded["tokens_per_s_generate"]}))


if __name__ == "__main__":
    main()
