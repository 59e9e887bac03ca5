"""Small table type written as Markdown and CSV, and the paper-style accuracy table.

    from src.analysis.tables import accuracy_table
    table = accuracy_table(arms); print(table.to_markdown()); table.to_csv("report/accuracy.csv")
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.analysis.experiment import Arm, Score
from src.registry import DATASETS, get_dataset


@dataclass
class Table:
    """Rows of plain values; ``None`` and NaN print as an em dash in Markdown and as empty cells in CSV."""

    name: str  # file stem of the CSV
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    caption: str = ""

    @staticmethod
    def _cell(value: Any, digits: int) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    def to_markdown(self, digits: int = 1) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "|".join("---" for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(self._cell(v, digits) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.headers)
            for row in self.rows:
                writer.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in row])
        return path


def is_held_out(name: str) -> bool:
    """Held-out per the registry; names the registry does not know count as held-in."""
    try:
        return get_dataset(name).held_out
    except ValueError:
        return False


def ordered_datasets(names: set[str]) -> tuple[list[str], list[str]]:
    """(held-in, held-out) data set names in registry order, unknown names last."""
    order = {name: i for i, name in enumerate(DATASETS)}

    def key(name: str) -> tuple[int, str]:
        return (order.get(name, len(order)), name)

    return (sorted((n for n in names if not is_held_out(n)), key=key),
            sorted((n for n in names if is_held_out(n)), key=key))


def arm_order(arms: list[Arm]) -> list[Arm]:
    """Control first, brute force next, then the guided strategies in the order given."""
    return sorted(arms, key=lambda a: (not a.is_control, not a.is_brute_force))


def display_label(arm: Arm) -> str:
    if arm.is_control:
        return f"{arm.label} (control)"
    return arm.label


def mean_accuracy(scores: dict[str, Score], names: list[str]) -> float:
    """Unweighted mean over the data sets present (the paper averages per-data-set accuracies)."""
    values = [scores[n].accuracy for n in names if n in scores]
    return sum(values) / len(values) if values else float("nan")


def pct(x: float) -> float:
    return round(100 * x, 2) if not math.isnan(x) else float("nan")


def accuracy_table(arms: list[Arm]) -> Table:
    """Accuracy (%) per strategy and iteration on each held-in and held-out set, their averages, and the change
    of the averages against the control at the same iteration (the mean over the control's arms, e.g. seeds)
    when a control arm is given."""
    names = {n for arm in arms for scores in arm.accuracy.values() for n in scores}
    held_in, held_out = ordered_datasets(names)
    controls = [a for a in arms if a.is_control]  # several seeds of the control: compare with their mean
    control = controls[0] if controls else None
    headers = ["strategy", "iteration", *held_in, "held-in avg", *held_out, "held-out avg"]
    if control is not None:
        headers += ["Δ held-in vs control", "Δ held-out vs control"]
    rows = []
    for arm in arm_order(arms):
        for it, scores in sorted(arm.accuracy.items()):
            avg_in, avg_out = mean_accuracy(scores, held_in), mean_accuracy(scores, held_out)
            row: list[Any] = [display_label(arm), it]
            row += [pct(scores[n].accuracy) if n in scores else None for n in held_in] + [pct(avg_in)]
            row += [pct(scores[n].accuracy) if n in scores else None for n in held_out] + [pct(avg_out)]
            if control is not None:
                refs = [c.accuracy[it] for c in controls if it in c.accuracy]
                if not refs or arm.is_control:
                    row += [None, None]
                else:
                    ref_in = sum(mean_accuracy(r, held_in) for r in refs) / len(refs)
                    ref_out = sum(mean_accuracy(r, held_out) for r in refs) / len(refs)
                    row += [round(pct(avg_in) - pct(ref_in), 2), round(pct(avg_out) - pct(ref_out), 2)]
            rows.append(row)
    caption = ("Greedy accuracy (%) on each test set; averages are unweighted means over the data sets present "
               "in the row. Held-in: " + (", ".join(held_in) or "none") + "; held-out: " +
               (", ".join(held_out) or "none") + ".")
    return Table("accuracy", headers, rows, caption)
