"""Preference pairs for the DPO stage of Self-Refine Instruction-Tuning (``generate_train_data.py --format dpo``).

Usage (what ``generate_train_data.py --format dpo`` wraps)::

    from src.filtering import load_sampled
    from src.pairs import build_pairs
    pairs, counts = build_pairs(load_sampled(["output/.../inference_data"]), pair_mode="mixed", max_pairs=2)

Each sampling result item (results.json) gives the student's samples of one question, graded by the sampler
(a sample is correct when it is among the item's ``correct_pred``). Only samples drawn from the plain student
prompt are paired: all of ``pred`` for the vanilla strategy, the first ``sample_num`` otherwise (guided
resamples were generated under another prompt). The pair's prompt is that sampling prompt
(:func:`src.prompts.student_prompt`), so DPO scores exactly the completions the student produced.

Pair modes (the project's reading of the paper, see README "Self-Refine Instruction-Tuning (DPO)"):

- ``self``: a correct student sample is chosen, a wrong one rejected; each sample is used at most once;
- ``teacher``: the gold demonstration (``answer_cot``) is chosen against each wrong sample;
- ``mixed``: ``self`` when the student has at least one correct sample, else ``teacher``.

Identical texts are never paired (duplicates are dropped first), empty samples are skipped, and a question
without a wrong sample gives no pair. At most ``max_pairs`` pairs per question.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from src.prompts import student_prompt
from src.records import RecordError, Schema, load_records

PAIR_MODES = ("self", "teacher", "mixed")
STUDENT, DEMONSTRATION = "student", "demonstration"  # values of chosen_source / rejected_source
PAIR_FIELDS = ("item_id", "prompt", "chosen", "rejected", "chosen_source", "rejected_source")
PAIR_SCHEMA = Schema("dpo_pair", {"item_id": (str,), "prompt": (str,), "chosen": (str,), "rejected": (str,)},
                     {"chosen_source": (str,), "rejected_source": (str,)})


@dataclass(frozen=True)
class Pair:
    chosen: str
    rejected: str
    chosen_source: str
    rejected_source: str = STUDENT


def _unique_nonempty(texts: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for t in texts:
        if t.strip():
            seen.setdefault(t, None)
    return list(seen)


def pair_question(samples: list[tuple[str, bool]], demonstration: str | None, pair_mode: str,
                  max_pairs: int) -> list[Pair]:
    """The pairs of one question from its ``(text, correct)`` samples, in sample order.

    >>> [(p.chosen, p.rejected) for p in pair_question([("a", True), ("b", False)], "g", "self", 2)]
    [('a', 'b')]
    """
    if pair_mode not in PAIR_MODES:
        raise ValueError(f"pair_mode must be one of {', '.join(PAIR_MODES)}, got {pair_mode!r}")
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    correct = _unique_nonempty(t for t, ok in samples if ok)
    wrong = [t for t in _unique_nonempty(t for t, ok in samples if not ok) if t not in correct]
    if pair_mode == "mixed":
        pair_mode = "self" if correct else "teacher"
    if pair_mode == "self":
        return [Pair(c, w, STUDENT) for c, w in zip(correct, wrong)][:max_pairs]
    if demonstration is None or not demonstration.strip():
        return []
    return [Pair(demonstration, w, DEMONSTRATION) for w in wrong if w != demonstration][:max_pairs]


def plain_prompt_samples(item: dict, strategy: str | None, sample_num: int | None) -> list[tuple[str, bool]]:
    """``(text, correct)`` for the item's samples drawn from the plain prompt (see the module docstring)."""
    pred = item["pred"]
    if strategy not in (None, "vanilla") and sample_num is not None:
        pred = pred[:sample_num]
    correct = set(item["correct_pred"])
    return [(t, t in correct) for t in pred if isinstance(t, str)]


@dataclass
class PairCounts:
    """Questions per outcome and pairs per mode (the ``<stem>.counts.json`` file of ``--format dpo``)."""

    questions: int = 0
    pairs: int = 0
    by_source: dict[str, int] = field(default_factory=lambda: {STUDENT: 0, DEMONSTRATION: 0})
    no_pair: dict[str, int] = field(default_factory=lambda: {"all_correct": 0, "no_correct": 0, "no_samples": 0})
    by_dataset: dict[str, int] = field(default_factory=dict)

    @property
    def records_written(self) -> int:
        return self.pairs

    def to_json(self) -> dict:
        return {"format": "dpo", "questions": self.questions, "pairs": self.pairs, "by_chosen_source": self.by_source,
                "questions_without_pair": self.no_pair, "pairs_by_dataset": self.by_dataset}


def _no_pair_reason(samples: list[tuple[str, bool]]) -> str:
    if not any(t.strip() for t, _ in samples):
        return "no_samples"
    return "all_correct" if all(ok for _, ok in samples) else "no_correct"


def build_pairs(sampled: Iterable, pair_mode: str, max_pairs: int) -> tuple[list[dict], PairCounts]:
    """DPO records {item_id, prompt, chosen, rejected, chosen_source, rejected_source} from sampling results
    (:class:`src.filtering.SampledSet`), in the order of the sets, their items and samples."""
    counts = PairCounts()
    out: list[dict] = []
    for sset in sampled:
        for item in sset.items:
            counts.questions += 1
            samples = plain_prompt_samples(item, sset.strategy, sset.sample_num)
            pairs = pair_question(samples, item["answer_cot"], pair_mode, max_pairs)
            if not pairs:
                counts.no_pair[_no_pair_reason(samples)] += 1
                continue
            prompt = student_prompt(item["question"])
            for p in pairs:
                out.append({"item_id": item["item_id"], "prompt": prompt, "chosen": p.chosen, "rejected": p.rejected,
                            "chosen_source": p.chosen_source, "rejected_source": p.rejected_source})
                counts.by_source[p.chosen_source] += 1
            counts.pairs += len(pairs)
            name = sset.dataset or "unknown"
            counts.by_dataset[name] = counts.by_dataset.get(name, 0) + len(pairs)
    return out, counts


def generate_pairs(cfg) -> PairCounts:
    """``generate_train_data.py --format dpo``: load and validate, pair, then write pairs + counts (nothing on
    bad input or when no pair survives). ``cfg`` is a :class:`src.filtering.GenerateConfig`."""
    from src.filtering import counts_path, load_sampled
    from src.records import write_json_with_summary

    if cfg.pair_mode not in PAIR_MODES:
        raise RecordError(f"--pair_mode must be one of {', '.join(PAIR_MODES)}, got {cfg.pair_mode!r}")
    sft_only = [f"--{name}" for name in ("include_original_data", "include_pre_iter_data", "check_result")
                if getattr(cfg, name, False)]
    if sft_only:  # flags of the SFT data that have no meaning for pairs: refuse rather than ignore them
        raise RecordError(f"--format dpo does not take {', '.join(sft_only)}")
    if cfg.max_pairs_per_question < 1:
        raise RecordError(f"--max_pairs_per_question must be >= 1, got {cfg.max_pairs_per_question}")
    sampled = load_sampled(cfg.cur_sampled_data_path, cfg.dataset_name)
    records, counts = build_pairs(sampled, cfg.pair_mode, cfg.max_pairs_per_question)
    if not records:
        raise RecordError(f"{cfg.next_iter_data_path}: no preference pair survived (pair_mode {cfg.pair_mode}, "
                          f"questions without a pair: {counts.no_pair}); refusing to write an empty pairs file")
    # the counts carry the pairs file's sha256 and are written last (src.filtering.read_counts checks it)
    write_json_with_summary(cfg.next_iter_data_path, records, counts_path(cfg.next_iter_data_path), counts.to_json())
    return counts


def load_pairs(path) -> list[dict]:
    """Load a pairs file; raise :class:`RecordError` naming file, record and field (missing column, empty text,
    chosen identical to rejected)."""
    records = load_records(path, PAIR_SCHEMA)
    for i, rec in enumerate(records):
        for name in ("prompt", "chosen", "rejected"):
            if not rec[name].strip():
                raise RecordError(f"{path}: record {i} (item_id={rec['item_id']}): field {name!r} is empty")
        if rec["chosen"] == rec["rejected"]:
            raise RecordError(f"{path}: record {i} (item_id={rec['item_id']}): chosen and rejected are the same text")
    return records
