"""Grading speed: PoT programs per second through the sandbox pool vs one fresh process per program, and CoT items/s.

    .venv/bin/python benchmarks/grading.py                      # ~1 minute on 2 CPU cores
    .venv/bin/python benchmarks/grading.py --n_pool 1000 --n_process 100

Programs: the synthetic world's gold PoT programs plus numpy / sympy / scipy programs (a third of the mix, as
real PoT programs import them). Both PoT paths use 2 programs at a time (the machine's cores) and include
answer extraction and comparison. The per-process baseline starts ``python -c PROGRAM`` for each program with the
same 5 s timeout (how the original code isolated programs, minus the limits); the pool is measured warm, its
start-up reported separately. The last line printed is the JSON summary
``{"pot_pool_per_s", "pot_per_process_per_s", "ratio", "cot_per_s"}`` (plus detail fields).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from src.grading import PotExecutor, grade_batch, grade_program_output  # noqa: E402
from src.grading.sandbox import DEFAULT_TIMEOUT_S, ProgramResult  # noqa: E402
from src.records import load_records  # noqa: E402
from src.synthetic import WorldConfig, generate_world  # noqa: E402

LIBRARY_PROGRAMS = [  # (program template, gold): {k} is filled with a per-item integer
    ("import numpy as np\nprint(np.sum(np.arange({k} + 1)))", lambda k: k * (k + 1) // 2),
    ("import numpy as np\na = np.array([{k}, 2.0])\nprint(a.mean() * 2 - 2)", lambda k: k),
    ("import sympy\nx = sympy.Symbol('x')\nprint(max(sympy.solve(x**2 - {k}**2, x)))", lambda k: k),
    ("from fractions import Fraction\nprint(Fraction({k}, 3) * 3)", lambda k: k),
    ("import scipy.special\nprint(int(scipy.special.comb({k}, 1)))", lambda k: k),
    ("import math, itertools\nprint(sum(1 for _ in itertools.combinations(range({k}), 1)))", lambda k: k),
]


def make_programs(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (program, gold) pairs: two thirds synthetic gold programs, one third library programs."""
    world = generate_world(WorldConfig(seed=seed, n_train=0, n_pool=n, n_test_held_in=0, n_test_held_out=0))
    rng = random.Random(seed)
    out = []
    for i, rec in enumerate(world["pool_pot"][:n]):
        if i % 3 == 2:
            template, gold = LIBRARY_PROGRAMS[(i // 3) % len(LIBRARY_PROGRAMS)]
            k = rng.randint(3, 60)
            out.append((template.format(k=k), str(gold(k))))
        else:
            out.append((rec["answer_cot"], rec["answer_value"]))
    return out


def run_per_process(code: str) -> ProgramResult:
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=DEFAULT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return ProgramResult("timeout", "", "", time.monotonic() - start)
    return ProgramResult("ok" if proc.returncode == 0 else "error", proc.stdout, proc.stderr,
                         time.monotonic() - start)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n_pool", type=int, default=600, help="programs graded by the pool")
    ap.add_argument("--n_process", type=int, default=60, help="programs graded one fresh process each")
    ap.add_argument("--n_cot", type=int, default=3000, help="CoT rationales graded")
    ap.add_argument("--math_file", default=str(REPO.parent / "shared/data/inference/cot/math.json"),
                    help="MATH rationales for the CoT figure (skipped when absent)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    programs = make_programs(max(args.n_pool, args.n_process), args.seed)

    start = time.monotonic()
    with PotExecutor(workers=args.workers) as ex:
        # start every helper (each imports numpy, sympy, ... once; the scipy helper also scipy's submodules)
        ex.run(["print(1)"] * args.workers + ["import scipy"])
        pool_start_s = time.monotonic() - start
        pool_items = programs[: args.n_pool]
        start = time.monotonic()
        pool_grades = grade_batch([p for p, _ in pool_items], [g for _, g in pool_items], "gsm8k", "pot", ex)
        pool_s = time.monotonic() - start
    pool_correct = sum(g.correct for g in pool_grades)
    print(f"pool: {len(pool_items)} programs in {pool_s:.2f} s ({pool_correct} correct), start-up {pool_start_s:.1f} s")

    proc_items = programs[: args.n_process]
    start = time.monotonic()
    with ThreadPoolExecutor(args.workers) as threads:
        runs = list(threads.map(run_per_process, [p for p, _ in proc_items]))
    proc_grades = [grade_program_output(r, g, "gsm8k") for r, (_, g) in zip(runs, proc_items)]
    proc_s = time.monotonic() - start
    proc_correct = sum(g.correct for g in proc_grades)
    print(f"one process per program: {len(proc_items)} programs in {proc_s:.2f} s ({proc_correct} correct)")

    # CoT: synthetic rationales, plus (when the shared data is there) MATH rationales graded against their own
    # gold and against another item's gold, so that wrong answers take the symbolic path too.
    world = generate_world(WorldConfig(seed=args.seed, n_train=0, n_pool=args.n_cot, n_test_held_in=0,
                                       n_test_held_out=0))
    cot_sets = [("synthetic", "synthetic", [r["answer_cot"] for r in world["pool_cot"][: args.n_cot]],
                 [r["answer_value"] for r in world["pool_cot"][: args.n_cot]])]
    math_file = Path(args.math_file)
    if math_file.is_file():
        math = load_records(math_file)
        golds = [r["answer_value"] for r in math]
        shifted = golds[1:] + golds[:1]
        cot_sets += [("math_own_gold", "math", [r["answer_cot"] for r in math], golds),
                     ("math_other_gold", "math", [r["answer_cot"] for r in math], shifted)]
    cot_n, cot_s, cot_detail = 0, 0.0, {}
    for label, dataset, responses, golds in cot_sets:
        start = time.monotonic()
        grades = grade_batch(responses, golds, dataset)
        seconds = time.monotonic() - start
        cot_n, cot_s = cot_n + len(responses), cot_s + seconds
        cot_detail[f"cot_{label}_per_s"] = round(len(responses) / seconds, 1)
        print(f"cot {label}: {len(responses)} rationales in {seconds:.2f} s ({sum(g.correct for g in grades)} "
              f"correct)")

    pool_rate = len(pool_items) / pool_s
    proc_rate = len(proc_items) / proc_s
    summary = {"pot_pool_per_s": round(pool_rate, 1), "pot_per_process_per_s": round(proc_rate, 2),
               "ratio": round(pool_rate / proc_rate, 1), "cot_per_s": round(cot_n / cot_s, 1),
               "pool_start_s": round(pool_start_s, 2), "pool_correct": f"{pool_correct}/{len(pool_items)}",
               "per_process_correct": f"{proc_correct}/{len(proc_items)}", "workers": args.workers, **cot_detail}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
