"""Tail narrowing: difficulty, response length and perplexity of the original data vs self-generated data.

    from src.analysis.tail import tail_metrics, plot_tail
    metrics = tail_metrics({"original": original, "iter 0": generated}, tokenizer, perplexity_fn)

Difficulty is the ``level`` field when every record has one (synthetic world: number of steps; MATH: its
level), otherwise the number of reasoning steps (non-empty lines of the rationale). Lengths are counted in the
model's tokens; perplexity is :mod:`src.analysis.perplexity`'s. The *tail* of each quantity is fixed by the
original data: its hardest level (or, for step counts, lengths and perplexities, its 90th percentile), and
``tail_share`` is the fraction of a set's records at or beyond it, so a narrowing tail shows as a share below
the original's.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.analysis.figures import pyplot, save_figure
from src.analysis.perplexity import Pair, PerplexityFn

ORIGINAL = "original"
METRICS = ("difficulty", "length", "perplexity")
TAIL_QUANTILE = 0.9


def reasoning_steps(rationale: str) -> int:
    return sum(1 for line in rationale.splitlines() if line.strip())


def difficulty_kind(sets: Sequence[Sequence[dict]]) -> str:
    """``"level"`` when every record of every set has an integer level, else ``"reasoning steps"``."""
    records = [r for s in sets for r in s]
    if records and all(isinstance(r.get("level"), int) and not isinstance(r.get("level"), bool) for r in records):
        return "level"
    return "reasoning steps"


def difficulty_values(records: Sequence[dict], kind: str) -> list[float]:
    if kind == "level":
        return [float(r["level"]) for r in records]
    return [float(reasoning_steps(r.get("answer_cot", ""))) for r in records]


def token_lengths(tokenizer: Any, records: Sequence[dict]) -> list[float]:
    texts = [r.get("answer_cot", "") for r in records]
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False).input_ids
    return [float(len(x)) for x in ids]


class CachedPerplexity:
    """Scores each distinct (question, rationale) once across the whole report (the original data is shared by
    every strategy; correct samples repeat)."""

    def __init__(self, fn: PerplexityFn):
        self.fn = fn
        self.cache: dict[Pair, float] = {}

    def __call__(self, pairs: Sequence[Pair]) -> list[float]:
        todo = list(dict.fromkeys(p for p in pairs if p not in self.cache))
        if todo:
            self.cache.update(zip(todo, self.fn(todo)))
        return [self.cache[p] for p in pairs]


def subsample(records: Sequence[dict], k: int, seed: int) -> list[dict]:
    """At most ``k`` records, a seeded sample (perplexity costs a forward pass per record)."""
    if k <= 0 or len(records) <= k:
        return list(records)
    return random.Random(seed).sample(list(records), k)


@dataclass
class Summary:
    n: int
    mean: float
    q25: float
    median: float
    q75: float
    q90: float
    tail_share: float  # share at or beyond the original data's tail threshold


def summarize(values: Sequence[float], threshold: float | None) -> Summary:
    vals = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if vals.size == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, nan)
    q25, q50, q75, q90 = (float(x) for x in np.quantile(vals, [0.25, 0.5, 0.75, 0.9]))
    share = float(np.mean(vals >= threshold)) if threshold is not None else float("nan")
    return Summary(int(vals.size), float(vals.mean()), q25, q50, q75, q90, share)


def tail_threshold(metric: str, kind: str, original: Sequence[float]) -> float | None:
    vals = [v for v in original if not math.isnan(v)]
    if not vals:
        return None
    if metric == "difficulty" and kind == "level":
        return max(vals)  # the hardest level
    return float(np.quantile(vals, TAIL_QUANTILE))


def tail_metrics(sets: dict[str, Sequence[dict]], tokenizer: Any | None, perplexity: PerplexityFn | None,
                 max_ppl_records: int = 500, seed: int = 0) -> tuple[str, dict[str, dict[str, list[float]]]]:
    """(difficulty kind, {set label: {metric: values}}); a metric without its tool (tokenizer, perplexity
    scorer) is left out."""
    kind = difficulty_kind(list(sets.values()))
    out: dict[str, dict[str, list[float]]] = {}
    for label, records in sets.items():
        values: dict[str, list[float]] = {"difficulty": difficulty_values(records, kind)}
        if tokenizer is not None:
            values["length"] = token_lengths(tokenizer, records)
        if perplexity is not None:
            chosen = subsample(records, max_ppl_records, seed)
            values["perplexity"] = perplexity([(r.get("question", ""), r.get("answer_cot", "")) for r in chosen])
        out[label] = values
    return kind, out


def summary_rows(arm_label: str, kind: str, metrics: dict[str, dict[str, list[float]]]) -> list[list[Any]]:
    """Table rows: strategy, data, metric, n, mean, quantiles, tail share (%)."""
    rows = []
    original = metrics.get(ORIGINAL, {})
    for label, values in metrics.items():
        for metric in METRICS:
            if metric not in values:
                continue
            threshold = tail_threshold(metric, kind, original.get(metric, []))
            s = summarize(values[metric], threshold)
            name = f"difficulty ({kind})" if metric == "difficulty" else metric
            rows.append([arm_label, label, name, s.n, s.mean, s.q25, s.median, s.q75, s.q90,
                         100 * s.tail_share if not math.isnan(s.tail_share) else float("nan")])
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------------


def _level_shares(values: Sequence[float], levels: list[int]) -> list[float]:
    counts = Counter(int(v) for v in values)
    total = sum(counts.values()) or 1
    return [counts.get(lv, 0) / total for lv in levels]


def _grouped_bars(ax, series: dict[str, Sequence[float]], kind: str) -> None:
    levels = sorted({int(v) for vals in series.values() for v in vals})
    width = 0.8 / max(1, len(series))
    for k, (label, vals) in enumerate(series.items()):
        x = np.arange(len(levels)) + (k - (len(series) - 1) / 2) * width
        ax.bar(x, _level_shares(vals, levels), width=width, label=f"{label} (n={len(vals)})")
    ax.set_xticks(np.arange(len(levels)), [str(lv) for lv in levels])
    ax.set_xlabel(kind)
    ax.set_ylabel("share of records")


def _histograms(ax, series: dict[str, Sequence[float]], xlabel: str, log: bool = False) -> None:
    finite = [v for vals in series.values() for v in vals if not math.isnan(v) and (v > 0 or not log)]
    if not finite:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    lo, hi = min(finite), max(finite)
    if hi <= lo:
        hi = lo + 1
    log = log and hi / lo > 10  # a log axis only where the values span orders of magnitude
    bins = np.geomspace(lo, hi, 30) if log and lo > 0 else np.linspace(lo, hi, 30)
    for label, vals in series.items():
        vals = [v for v in vals if not math.isnan(v)]
        if vals:
            ax.hist(vals, bins=bins, density=True, histtype="step", linewidth=2, label=f"{label} (n={len(vals)})")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")


def plot_tail(arm_label: str, kind: str, metrics: dict[str, dict[str, list[float]]], path: str | Path) -> Path:
    """One row of panels (difficulty, length, perplexity) comparing the original data with each iteration."""
    plt = pyplot()
    present = [m for m in METRICS if any(m in v for v in metrics.values())]
    fig, axes = plt.subplots(1, len(present), figsize=(5.5 * len(present), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], present):
        series = {label: values[metric] for label, values in metrics.items() if metric in values}
        if metric == "difficulty" and kind == "level":
            _grouped_bars(ax, series, "difficulty level")
        elif metric == "difficulty":
            _histograms(ax, series, "reasoning steps (non-empty lines)")
        elif metric == "length":
            _histograms(ax, series, "response length (tokens)")
        else:
            _histograms(ax, series, "perplexity under the iteration-0 model", log=True)
        ax.set_title(metric)
        ax.legend(fontsize=8)
    return save_figure(fig, path, f"{arm_label}: original data vs self-generated data")


def plot_difficulty_by_strategy(kind: str, series: dict[str, Sequence[float]], title: str,
                                path: str | Path) -> Path:
    """Difficulty shares of the original data and of each strategy's self-generated data, side by side."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if kind == "level":
        _grouped_bars(ax, series, "difficulty level")
    else:
        _histograms(ax, series, "reasoning steps (non-empty lines)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_tail_over_iterations(iterations: dict[str, Any], path: str | Path) -> Path:
    """The demo's tail-narrowing figure from its summary's ``iterations`` block: per arm and iteration, the share
    of kept samples at the hard levels (left; O and the pool as reference lines) and the seed-mean held-in
    (solid) and held-out (dashed) accuracy (right)."""
    plt = pyplot()
    fig, (ax_tail, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    hard = ",".join(map(str, iterations["hard_levels"]))
    for ref, style in (("original", ":"), ("pool", "-.")):
        share = iterations[ref]["hard_share"]
        if share is not None:
            ax_tail.axhline(100 * share, color="grey", linestyle=style, label=f"{ref} (reference)")
    for i, (arm, rows) in enumerate(iterations["arms"].items()):
        color = f"C{i}"
        its = [r["iteration"] for r in rows]
        if any(r["kept"]["hard_share"] is not None for r in rows):
            ax_tail.plot(its, [100 * (r["kept"]["hard_share"] or 0.0) for r in rows], marker="o", color=color,
                         label=arm)
        ax_acc.plot(its, [100 * r["held_in"]["mean"] for r in rows], marker="o", color=color, label=f"{arm} held-in")
        ax_acc.plot(its, [100 * r["held_out"]["mean"] for r in rows], marker="s", linestyle="--", color=color,
                    label=f"{arm} held-out")
    ax_tail.set_ylabel(f"kept samples at levels {hard} (%)")
    ax_acc.set_ylabel("accuracy (%, seed mean)")
    for ax in (ax_tail, ax_acc):
        ax.set_xlabel("iteration")
        ax.set_xticks(range(1, int(iterations["iterations"]) + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path, "Tail over iterations: hard-level share of the kept data, and accuracy")
