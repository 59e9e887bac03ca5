"""Per-query state of a sampling run: every sample, its extracted answer, which strategy produced it, and the
query's own strategy state (the state-reset position, the teacher exchanges).

The saved files are views of these objects (:meth:`QueryState.result`, :meth:`QueryState.training_items`), so the
counts in ``results.json``, ``results_before_resample.json`` and ``resample_results.json`` cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from src.records import training_record

INITIAL = "initial"  # correct_strategy label of the initial (unguided, n=sample_num) samples

# Fields a sampling result carries itself; every other field of the pool record (level, options, ...) passes
# through unchanged.
_RESULT_FIELDS = ("pred", "pred_value", "correct_pred", "correct_strategy", "history")


@dataclass
class Sample:
    response: str  # the full kept response (state reset: gold prefix + the model's continuation)
    pred_value: str  # extracted answer ("" when none)
    correct: bool
    strategy: str  # "initial" or the guided/unguided strategy that produced it
    round: int  # 0 for the initial samples


@dataclass
class QueryState:
    record: dict[str, Any]  # the pool record as loaded (item_id, question, answer_cot, answer_value, ...)
    samples: list[Sample] = field(default_factory=list)
    reset_position: int = 0  # state reset: how many times this query has been reset (indexes the prefix cycle)
    history: list[dict[str, Any]] = field(default_factory=list)  # interactive: one entry per teacher exchange

    @property
    def question(self) -> str:
        return self.record["question"]

    @property
    def n_correct(self) -> int:
        return sum(s.correct for s in self.samples)

    @classmethod
    def from_result(cls, item: dict[str, Any]) -> QueryState:
        """Rebuild a query's initial samples from a ``results_before_resample.json`` item."""
        q = cls({k: v for k, v in item.items() if k not in _RESULT_FIELDS})
        correct = set(item["correct_pred"])  # identical texts grade identically, so membership is exact
        for response, value in zip(item["pred"], item["pred_value"]):
            q.add(response, value, response in correct, INITIAL, 0)
        return q

    def add(self, response: str, pred_value: str, correct: bool, strategy: str, round_: int) -> Sample:
        sample = Sample(response, pred_value, correct, strategy, round_)
        self.samples.append(sample)
        return sample

    def latest_wrong(self) -> Sample | None:
        """The most recent incorrect sample (the teacher never critiques a correct one, unlike the original)."""
        return next((s for s in reversed(self.samples) if not s.correct), None)

    def result(self, with_history: bool = False) -> dict[str, Any]:
        """This query as a ``results.json`` item (fields of SPEC.md plus ``correct_strategy``)."""
        out = {k: v for k, v in self.record.items() if k not in _RESULT_FIELDS}
        correct = [s for s in self.samples if s.correct]
        out.update(
            pred=[s.response for s in self.samples],
            pred_value=[s.pred_value for s in self.samples],
            correct_pred=[s.response for s in correct],
            correct_strategy=[s.strategy for s in correct],
        )
        if with_history:
            out["history"] = list(self.history)
        return out

    def training_items(self) -> list[dict[str, Any]]:
        """Correct resampled responses as training items, always under the plain question (no hint leaks)."""
        return [training_record(self.record, s.response, s.strategy) for s in self.samples if s.correct and s.round > 0]
