"""Sampling efficiency: coverage (queries with at least one correct sample) against samples and tokens spent.

    from src.analysis.efficiency import curve, tokens_to_reach
    c = curve(stats)              # stats = one sampling_stats.json
    tokens_to_reach(c, 0.9)       # generated tokens spent when coverage first reached 90%

Read from the ``rounds`` of ``sampling_stats.json``: round 0 is the initial ``sample_num`` samples per query, each
later round one guided sample per query still below ``min_correct_num``. Curves start at (0, 0): nothing spent,
nothing covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.analysis.experiment import Arm
from src.analysis.figures import pyplot, save_figure
from src.analysis.tables import Table, arm_order

EPS = 1e-9  # coverage is a ratio of integers; compare with a tolerance


@dataclass
class Curve:
    samples: list[int]
    tokens: list[int]
    coverage: list[float]
    coverage_by_level: dict[str, list[float]] = field(default_factory=dict)

    @property
    def final(self) -> float:
        return self.coverage[-1]


def curve(stats: dict) -> Curve:
    rounds = sorted(stats.get("rounds") or [], key=lambda r: r.get("round", 0))
    c = Curve([0], [0], [0.0])
    levels = sorted({lv for r in rounds for lv in (r.get("coverage_by_level") or {})},
                    key=lambda s: (int(s) if s.lstrip("-").isdigit() else math.inf, s))
    c.coverage_by_level = {lv: [0.0] for lv in levels}
    for r in rounds:
        c.samples.append(int(r.get("cumulative_samples", 0)))
        c.tokens.append(int(r.get("cumulative_generated_tokens", 0)))
        c.coverage.append(float(r.get("coverage", 0.0)))
        for lv in levels:
            c.coverage_by_level[lv].append(float((r.get("coverage_by_level") or {}).get(lv, math.nan)))
    return c


def tokens_to_reach(c: Curve, target: float) -> int | None:
    """Generated tokens spent when coverage first reached ``target``; None when it never did."""
    for tokens, cov in zip(c.tokens[1:], c.coverage[1:]):
        if cov >= target - EPS:
            return tokens
    return None


def runs_by_key(arms: list[Arm]) -> dict[tuple[int, str], list[tuple[Arm, dict]]]:
    """(iteration, data set) -> [(arm, sampling_stats)] in report order."""
    out: dict[tuple[int, str], list[tuple[Arm, dict]]] = {}
    for arm in arm_order(arms):
        for it, stats_list in sorted(arm.sampling_stats.items()):
            for stats in stats_list:
                out.setdefault((it, str(stats.get("dataset", "?"))), []).append((arm, stats))
    return out


def efficiency_table(arms: list[Arm]) -> Table:
    """Per strategy, iteration and data set: what was spent, the coverage reached (overall and per level), and
    the tokens needed to reach brute force's final coverage (and that as a share of brute force's)."""
    groups = runs_by_key(arms)
    levels = sorted({lv for runs in groups.values() for _, s in runs for lv in curve(s).coverage_by_level},
                    key=lambda s: (int(s) if s.lstrip("-").isdigit() else math.inf, s))
    headers = ["strategy", "iteration", "dataset", "rounds", "samples", "generated tokens", "coverage (%)",
               *[f"coverage level {lv} (%)" for lv in levels],
               "brute-force coverage (%)", "tokens to reach it", "tokens vs brute force (%)"]
    rows = []
    for (it, dataset), runs in groups.items():
        bf = next((curve(s) for a, s in runs if a.is_brute_force), None)
        bf_tokens = tokens_to_reach(bf, bf.final) if bf is not None else None
        for arm, stats in runs:
            c = curve(stats)
            row: list[Any] = [arm.label, it, dataset, len(c.samples) - 1, c.samples[-1], c.tokens[-1],
                              round(100 * c.final, 2)]
            row += [round(100 * c.coverage_by_level[lv][-1], 2) if lv in c.coverage_by_level else None
                    for lv in levels]
            if bf is None:
                row += [None, None, None]
            else:
                need = tokens_to_reach(c, bf.final)
                share = round(100 * need / bf_tokens, 1) if need is not None and bf_tokens else None
                row += [round(100 * bf.final, 2), need if need is not None else "not reached", share]
            rows.append(row)
    caption = ("Coverage = share of queries with at least one correct sample. 'tokens to reach it': generated "
               "tokens spent when the strategy's coverage first reached brute force's final coverage "
               "(same iteration and data set).")
    return Table("sampling_efficiency", headers, rows, caption)




def line_style(arm: Arm) -> dict[str, Any]:
    """Brute force dashed, the control dotted with large markers (its one round would hide under the others)."""
    return {"linestyle": "--" if arm.is_brute_force else ":" if arm.is_control else "-", "marker": "o",
            "markersize": 7 if arm.is_control else 3, "label": arm.label}


def after_initial(values: list[int]) -> list[int]:
    """Cumulative counts from the end of the initial round: the x axis where strategies differ (the initial
    round is shared, and drawn from 0 it takes most of the width)."""
    return [v - values[0] for v in values]


RESAMPLING_AXIS = "generated in the resampling rounds (cumulative; 0 = after the initial round)"


def plot_coverage(runs: list[tuple[Arm, dict]], title: str, path: str | Path) -> Path:
    """Coverage against samples and against tokens spent after the initial round, one line per strategy."""
    plt = pyplot()
    fig, (ax_s, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm, stats in runs:
        c = curve(stats)
        ax_s.plot(after_initial(c.samples), [100 * v for v in c.coverage], **line_style(arm))
        ax_t.plot(after_initial(c.tokens), [100 * v for v in c.coverage], **line_style(arm))
    ax_s.set_xlabel("samples " + RESAMPLING_AXIS)
    ax_t.set_xlabel("tokens " + RESAMPLING_AXIS)
    for ax in (ax_s, ax_t):
        ax.set_ylabel("coverage (% of queries with a correct sample)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path, title)


def plot_coverage_by_level(runs: list[tuple[Arm, dict]], title: str, path: str | Path) -> Path | None:
    """One panel per level: coverage against generated tokens, one line per strategy; None without levels."""
    curves = [(arm, curve(stats)) for arm, stats in runs]
    levels = sorted({lv for _, c in curves for lv in c.coverage_by_level},
                    key=lambda s: (int(s) if s.lstrip("-").isdigit() else math.inf, s))
    if not levels:
        return None
    plt = pyplot()
    cols = min(3, len(levels))
    rows = math.ceil(len(levels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, lv in zip(axes.flat, levels):
        for arm, c in curves:
            if lv in c.coverage_by_level:
                ax.plot(after_initial(c.tokens), [100 * v for v in c.coverage_by_level[lv]], **line_style(arm))
        ax.set_title(f"level {lv}")
        ax.set_xlabel("tokens after the initial round")
        ax.set_ylabel("coverage (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(levels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    return save_figure(fig, path, title)
