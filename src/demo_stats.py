"""Statistics of the demo: item-level 95% intervals, seed spread and paired comparisons between arms.

Two sources of noise are reported side by side, never merged into one number:
- item noise (which test questions were drawn): a Wilson score interval per accuracy, and a paired bootstrap
  over test items for a difference between two arms (the same items are scored by every arm);
- training noise (data order): every trained arm runs with several seeds; the spread (min, max) over seeds is
  shown beside the intervals.

Example: ``wilson(45, 60)`` -> ``(0.628, 0.842)`` (scipy.stats.binomtest; the bootstrap is scipy.stats.bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def wilson(correct: int, n: int) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (well-behaved at 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


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
    d = np.asarray(a, dtype=float).mean(axis=0) - np.asarray(b, dtype=float).mean(axis=0)
    diff = float(d.mean())
    if np.all(d == d[0]):  # no spread: scipy's bootstrap refuses degenerate data, and the interval is the point
        lo = hi = diff
    else:
        res = stats.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=0.95, method="percentile",
                              rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"diff": diff, "ci95": [round(lo, 4), round(hi, 4)], "n_items": n, "n_boot": n_boot}


def verdict(diff: dict, spread_a: dict, spread_b: dict) -> str:
    """'beats' only when the item interval excludes 0 and every seed of ``a`` beats every seed of ``b``."""
    if diff["ci95"][0] > 0 and spread_a["min"] > spread_b["max"]:
        return "beats"
    if diff["ci95"][1] < 0 and spread_a["max"] < spread_b["min"]:
        return "is worse than"
    return "is not distinguishable from"
