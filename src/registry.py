"""Registry of data sets: one place that says how each one is named, graded and cut for state reset.

Other modules look a data set up here (``get_dataset("aqua")``) instead of branching on its name, in the
spirit of lm-evaluation-harness's task registry: adding a data set touches this file only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

AnswerFormat = Literal["number", "math", "choice_upper", "choice_lower", "theoremqa"]
"""How a final answer is written and compared (see ``src.grading``):
number: a plain number (GSM8K, SVAMP, synthetic); math: LaTeX expression (MATH); choice_upper / choice_lower:
an option letter (AQuA upper-case, MathQA lower-case); theoremqa: number, list or True/False."""

ResetCut = Literal["lines", "token_fraction"]
"""How state reset cuts a gold rationale into prefixes (SPEC.md): by lines (GSM8K-style, one step per line) or
by a fraction of the student's tokens (everything else)."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # name used on the command line and in output file names
    file_stem: str  # file name (without .json) under data/test and data/inference/{cot,pot}
    answer_format: AnswerFormat
    reset_cut: ResetCut
    held_out: bool  # True for the held-out evaluation sets (never sampled from in the paper)
    description: str = ""
    # The process check also compares a rationale with its gold chain step by step (src.synthetic): only a world
    # whose gold rationales are complete calculator chains can afford that.
    checks_gold_chain: bool = False

    def test_file(self, data_dir: str | Path = "data") -> Path:
        return Path(data_dir) / "test" / f"{self.file_stem}.json"

    def pool_file(self, mode: str = "cot", data_dir: str | Path = "data") -> Path:
        return Path(data_dir) / "inference" / mode / f"{self.file_stem}.json"


_SPECS = [
    DatasetSpec("gsm8k", "gsm8k", "number", "lines", False, "grade-school word problems"),
    DatasetSpec("math", "math", "math", "token_fraction", False, "competition math, LaTeX answers"),
    DatasetSpec("aqua", "aqua_rat", "choice_upper", "token_fraction", False, "AQuA-RAT, options A-E"),
    DatasetSpec("mathqa", "mathqa", "choice_lower", "token_fraction", True, "MathQA, options a-e"),
    DatasetSpec("svamp", "svamp", "number", "lines", True, "SVAMP word problems"),
    DatasetSpec("theoremqa", "theoremqa", "theoremqa", "token_fraction", True, "TheoremQA"),
    DatasetSpec("synthetic", "synthetic", "number", "lines", False, "embedded synthetic world, held-in",
                checks_gold_chain=True),
    DatasetSpec("synthetic_heldout", "synthetic_heldout", "number", "lines", True,
                "embedded synthetic world, held-out templates", checks_gold_chain=True),
]

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}
# Accept the file stem too (``aqua_rat``), since files and item ids carry it.
_ALIASES: dict[str, str] = {spec.file_stem: spec.name for spec in _SPECS if spec.file_stem != spec.name}


def get_dataset(name: str) -> DatasetSpec:
    """Look a data set up by its command-line name (or file stem); fail with the list of known names."""
    key = _ALIASES.get(name, name)
    if key not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise ValueError(f"unknown dataset {name!r}; known datasets: {known}")
    return DATASETS[key]

