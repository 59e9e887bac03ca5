"""Statistics of the demo: item-level 95% intervals, seed spread and paired comparisons between arms.

Two sources of noise are reported side by side, never merged into one number:
- item noise (which test questions were drawn): a Wilson score interval per accuracy, and a paired bootstrap
  over test items for a difference between two arms (the same items are scored by every arm);
- training noise (data order): every trained arm runs with several seeds; the spread (min, max) over seeds is
  shown beside the intervals.

Example: ``wilson(45, 60)`` -> ``(0.627, 0.849)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (well-behaved at 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_block(flags: Sequence[bool]) -> dict:
    """{n, correct, accuracy, ci95} of a list of per-item correctness flags."""
    n, c = len(flags), int(sum(bool(f) for f in flags))
    lo, hi = wilson(c, n)
    return {"n": n, "correct": c, "accuracy": c / n if n else 0.0, "ci95": [round(lo, 4), round(hi, 4)]}


def seed_spread(values: Sequence[float]) -> dict:
    """Mean, min, max and (sample) standard deviation over seeds."""
    vals = list(values)
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "min": min(vals), "max": max(vals), "sd": sd, "n_seeds": len(vals)}


def paired_bootstrap_diff(a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]], n_boot: int = 2000,
                          seed: int = 0) -> dict:
    """Difference of seed-averaged accuracies, arm ``a`` minus arm ``b``, with a paired item bootstrap.

    ``a`` and ``b`` hold one list of per-item flags per seed, all over the same test items in the same order.
    Each item's score is its mean over the arm's seeds, so the interval reflects item sampling given these
    seeds; the seed spread is reported separately (see the module docstring).
    """
    n = len(a[0])
    if any(len(s) != n for s in list(a) + list(b)):
        raise ValueError("paired bootstrap needs the same test items for every seed of both arms")
    sa = [sum(s[i] for s in a) / len(a) for i in range(n)]
    sb = [sum(s[i] for s in b) / len(b) for i in range(n)]
    d = [x - y for x, y in zip(sa, sb)]
    diff = sum(d) / n
    rng = random.Random(seed)
    boots = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    lo, hi = boots[int(0.025 * n_boot)], boots[int(0.975 * n_boot) - 1]
    return {"diff": diff, "ci95": [round(lo, 4), round(hi, 4)], "n_items": n, "n_boot": n_boot}


def verdict(diff: dict, spread_a: dict, spread_b: dict) -> str:
    """'beats' only when the item interval excludes 0 and every seed of ``a`` beats every seed of ``b``."""
    if diff["ci95"][0] > 0 and spread_a["min"] > spread_b["max"]:
        return "beats"
    if diff["ci95"][1] < 0 and spread_a["max"] < spread_b["min"]:
        return "is worse than"
    return "is not distinguishable from"
