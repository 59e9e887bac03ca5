"""TriPosT's post-processing (``generate_train_data.py --format tripost``) and weighted SL (``--section_weight``).

Kept trajectories are split into one-step examples, as the official code does: ``improvement`` (attempt,
feedback, updated attempt) for every update, ``non_improvement`` (the final attempt with its all-correct
feedback; or, for a trajectory whose error step did not move forward, the attempt with its first feedback).
Then ceil(n_improvement / p) non-improvement examples are sampled (p = ``--improve_ratio``, 1.5 released; 0
keeps them all) and as many ``gold`` examples: a question's gold rationale with the all-correct feedback.

Weighted SL: w_t = ``section_weight`` on the completion from the first "Feedback:" on in examples whose first
feedback reports an error, 1 elsewhere; loss = sum_t CE_t m_t w_t / sum_t m_t with this project's rationale-only
mask m (the official code also trains on the question and on padding).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from src.records import RecordError, read_json_or_jsonl
from src.tripost.edit import KEPT, TRAJECTORIES_FILE
from src.tripost.feedback import (
    FEEDBACK_MARKER,
    FeedbackParseError,
    example_text,
    format_feedback,
    has_error_feedback,
    split_steps,
)

KINDS = ("improvement", "non_improvement", "gold")
SEED = 0  # the sampling of non-improvement and gold examples is fixed: a rerun writes the same bytes


def trajectory_examples(rec: dict) -> tuple[list[str], list[str]]:
    """(improvement texts, non-improvement texts) of one kept trajectory record."""
    attempts = rec.get("kept_attempts", rec["attempts"])
    feedbacks = rec.get("kept_feedbacks", rec["feedbacks"])
    improvement = [example_text(attempts[i], feedbacks[i], attempts[i + 1]) for i in range(len(attempts) - 1)]
    return improvement, [example_text(attempts[-1], feedbacks[len(attempts) - 1])]


def balance(n_improvement: int, non_improvement: list, gold_pool: list, ratio: float,
            seed: int = SEED) -> tuple[list, list]:
    """Sample ceil(n_improvement / ratio) non-improvement examples (all when ratio is 0) and as many gold ones."""
    if ratio < 0:
        raise ValueError(f"--improve_ratio must be >= 0 (0 disables balancing), got {ratio}")
    rng = random.Random(seed)
    n = len(non_improvement) if ratio == 0 else min(math.ceil(n_improvement / ratio), len(non_improvement))
    non = rng.sample(non_improvement, n)
    gold = rng.sample(gold_pool, min(n, len(gold_pool)))
    return non, gold


def _record(src: dict, text: str, kind: str) -> dict:
    rec = {"item_id": src["item_id"], "question": src["question"], "answer_cot": text,
           "answer_value": src["answer_value"], "kind": kind}
    if src.get("level") is not None:
        rec["level"] = src["level"]
    return rec


def load_trajectories(paths: list[str]) -> list[dict]:
    """Trajectory records of edit_trajectories.py (files, or folders holding trajectories.json)."""
    records: list[dict] = []
    for path in paths:
        file = Path(path) / TRAJECTORIES_FILE if Path(path).is_dir() else Path(path)
        data = read_json_or_jsonl(file)
        if not isinstance(data, list):
            raise RecordError(f"{file}: expected a JSON list of trajectory records")
        for i, rec in enumerate(data):
            need = ("item_id", "question", "answer_cot", "answer_value", "status", "attempts", "feedbacks")
            missing = [k for k in need if not isinstance(rec, dict) or k not in rec]
            if missing:
                raise RecordError(f"{file}: record {i}: missing field {missing[0]!r} (not a trajectory of "
                                  "edit_trajectories.py)")
            if rec["status"] in KEPT and len(rec["feedbacks"]) < len(rec.get("kept_attempts", rec["attempts"])):
                raise RecordError(f"{file}: record {i} (item_id={rec['item_id']}): fewer feedbacks than attempts")
        records += data
    return records


def build_tripost_data(trajectories: list[dict], ratio: float, seed: int = SEED) -> tuple[list[dict], dict]:
    """Training records (improvement, sampled non-improvement, gold) and their counts."""
    improvement, non_improvement, questions = [], [], {}
    for rec in trajectories:
        questions.setdefault(rec["item_id"], rec)
        if rec["status"] not in KEPT:
            continue
        imp, non = trajectory_examples(rec)
        improvement += [_record(rec, t, "improvement") for t in imp]
        non_improvement += [_record(rec, t, "non_improvement") for t in non]
    gold_pool = [_record(q, example_text(q["answer_cot"], format_feedback(len(split_steps(q["answer_cot"])))),
                         "gold") for q in questions.values()]
    non, gold = balance(len(improvement), non_improvement, gold_pool, ratio, seed)
    counts = {"improvement": len(improvement), "non_improvement_available": len(non_improvement),
              "non_improvement": len(non), "gold": len(gold), "improve_ratio": ratio,
              "trajectories": len(trajectories), "questions": len(questions)}
    return improvement + non + gold, counts


@dataclass
class TripostCounts:
    """What generate_train_data.py prints and saves for --format tripost."""

    counts: dict = field(default_factory=dict)
    records_written: int = 0

    def to_json(self) -> dict:
        return {"format": "tripost", **self.counts, "records_written": self.records_written}


def generate_tripost(cfg) -> TripostCounts:
    """``generate_train_data.py --format tripost``: trajectories -> balanced one-step examples (+ counts file)."""
    from src.cli import UsageError
    from src.filtering import counts_path
    from src.records import write_json_with_summary

    if cfg.improve_ratio < 0:
        raise UsageError(f"--improve_ratio must be >= 0 (0 disables balancing), got {cfg.improve_ratio}")
    records, counts = build_tripost_data(load_trajectories(cfg.cur_sampled_data_path), cfg.improve_ratio)
    if not records:
        raise RecordError(f"{cfg.next_iter_data_path}: no training example (counts: {counts}); refusing to write "
                          "an empty data file")
    result = TripostCounts(counts, len(records))
    write_json_with_summary(cfg.next_iter_data_path, records, counts_path(cfg.next_iter_data_path),
                            result.to_json())
    return result


# ---------------------------------------------------------------------------------------------------------------
# Weighted SL.
def check_section_records(records: list[dict], source: str, weight: float) -> None:
    """A weight >= 0, and every record holds a parsable "Feedback:" section (checked before any model loads)."""
    from src.cli import UsageError

    if weight < 0:
        raise UsageError(f"--section_weight must be >= 0, got {weight}")
    for i, rec in enumerate(records):
        try:
            has_error_feedback(rec["answer_cot"])
        except FeedbackParseError as err:
            raise RecordError(f"{source}: record {i} (item_id={rec['item_id']}): field 'answer_cot': {err} "
                              f"(--section_weight needs TriPosT examples: generate_train_data.py --format "
                              f"tripost)") from None


def section_weights(completion: str, n_prompt: int, n_total: int, tokenizer, weight: float) -> list[float]:
    """Per-token weights of one example (prompt tokens first): ``weight`` from the token holding the first
    "Feedback:" on when that feedback reports an error, 1 elsewhere."""
    out = [1.0] * n_total
    if weight == 1.0 or not has_error_feedback(completion):
        return out
    pos = completion.find(FEEDBACK_MARKER)
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    first = next((j for j, (_, end) in enumerate(enc["offset_mapping"]) if end > pos), len(enc["offset_mapping"]))
    for t in range(n_prompt + first, n_total):
        out[t] = weight
    return out


def add_section_weights(examples: list[dict], records: list[dict], tokenizer, weight: float,
                        strip_text: bool = False) -> None:
    """Attach ``token_weight`` (aligned with ``labels``) to every tokenized example (src.training.collate)."""
    from src.prompts import training_pair
    from src.training import IGNORE_INDEX

    for example, rec in zip(examples, records, strict=True):
        answer = rec["answer_cot"].strip() if strip_text else rec["answer_cot"]
        question = rec["question"].strip() if strip_text else rec["question"]
        _, completion = training_pair(question, answer, tokenizer.eos_token)
        n_prompt = next((t for t, y in enumerate(example["labels"]) if y != IGNORE_INDEX), len(example["labels"]))
        example["token_weight"] = section_weights(completion, n_prompt, len(example["input_ids"]), tokenizer,
                                                  weight)


def weighted_token_loss(logits, labels, token_weights):
    """sum_t CE_t m_t w_t / sum_t m_t (w aligned with labels; src.iwsi.token_losses shifts by one)."""
    from src.iwsi import token_losses

    ce, mask = token_losses(logits, labels)
    return weighted_mean(ce, mask, token_weights[:, 1:].to(ce.dtype))


def weighted_mean(ce, mask, weights):
    """sum_t CE_t m_t w_t / sum_t m_t: the weights scale tokens, the normaliser stays the scored-token count."""
    return (ce * mask * weights).sum() / mask.sum().clamp(min=1)
