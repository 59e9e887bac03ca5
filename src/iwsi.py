"""IWSI (arXiv 2408.09849): label-free data selection by self-consistency and a distribution-shift (DS) weight.

    python generate_train_data.py --cur_sampled_data_path output/.../iter_0/inference_data \
        --next_iter_data_path output/.../iter_data/synthetic_iter_1.json --correctness vote \
        --ds_filter --ds_valid output/.../valid.json --ds_model output/tiny/base_model --keep_fraction 0.8
    python -m src.iwsi --train_file data/synthetic/train/cot/synthetic.json \
        --exclude data/synthetic/inference/cot/synthetic.json --out output/.../valid.json   # the valid set

1. Vote (LMSI): per question the majority answer under the project grader's equivalence (ties go to the answer
   seen first; no parsable answer keeps nothing); every sample reaching it counts as correct. The official code
   truncates answers to integers (losing minus signs); we compare with :func:`src.grading.answers_equal`.
2. w'_i = mean_j L(valid_j) / L(sample_i), L the mean token cross-entropy under the frozen pre-trained model;
   DS_i = max(w'_i, 1 / w'_i) (paper Eq. 4). ``reference_clip`` reproduces the official code: w' clipped to
   [0, 2] and 1/w' capped at 5 before taking the larger.
3. Keep exactly floor(k * n) samples with the lowest DS, stable on ties. (The official code keeps those strictly
   below the DS at rank floor(k * n): fewer on ties, and none at all when every weight is equal.)

IWSI-w (no filter; each sample's loss times min(w', C)) is ``train.py --sample_weight_field w_prime
--sample_weight_clip C``: :func:`weighted_lm_loss`. The official code writes ``max(w', 2)`` where min was meant.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from src.cli import UsageError
from src.records import RecordError, load_records, write_json

SPANS = ("full", "rationale")
REFERENCE_W_MAX = 2.0  # official code: w' clipped to [0, 2]
REFERENCE_INV_MAX = 5.0  # official code: 1/w' capped at 5
MAX_VALID_FRACTION = 0.05  # the paper's valid set: at most 5% of the labelled training data


# ---------------------------------------------------------------------------------------------------------------
# Self-consistency vote.
def majority_index(values: list[str], dataset: str) -> int | None:
    """Index of the first sample of the majority answer class (ties: the class seen first), None if none parses.

    Classes are built greedily: each answer joins the first earlier class whose representative it equals.
    """
    from src.grading import answers_equal

    reps: list[int] = []
    sizes: list[int] = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            continue
        for c, rep in enumerate(reps):
            if answers_equal(value, values[rep], dataset):
                sizes[c] += 1
                break
        else:
            reps.append(i)
            sizes.append(1)
    if not reps:
        return None
    best = max(range(len(reps)), key=lambda c: (sizes[c], -c))  # the largest class; the first on ties
    return reps[best]


def vote_item(item: dict, dataset: str, strategy: str | None, sample_num: int | None) -> tuple[dict, str | None]:
    """The item with ``correct_pred`` replaced by the samples reaching the voted answer, and that answer."""
    from src.grading import answers_equal

    values = item["pred_value"]
    rep = majority_index(values, dataset)
    voted = None if rep is None else values[rep]
    picked = [] if voted is None else [i for i, v in enumerate(values)
                                       if isinstance(v, str) and v.strip() and answers_equal(v, voted, dataset)]
    # the first sample_num entries of pred are the initial samples, the rest came from the resampling strategy
    n_init = len(values) if sample_num is None or strategy is None else sample_num
    out = dict(item)
    out["correct_pred"] = [item["pred"][i] for i in picked]
    out["correct_strategy"] = ["initial" if i < n_init else strategy for i in picked]
    return out, voted


def vote_sampled(sampled: list, summary: dict) -> list:
    """Every SampledSet with its items re-labelled by vote; ``summary`` gains per-dataset vote statistics."""
    from src.grading import answers_equal

    out = []
    for sset in sampled:
        if any(len(it["pred"]) != len(it["pred_value"]) for it in sset.items):
            raise RecordError(f"{sset.source}: pred and pred_value differ in length (cannot vote)")
        items, stats = [], {"questions": len(sset.items), "voted": 0, "vote_equals_gold": 0}
        for item in sset.items:
            voted_item, voted = vote_item(item, sset.dataset, sset.strategy, sset.sample_num)
            items.append(voted_item)
            if voted is not None:
                stats["voted"] += 1
                stats["vote_equals_gold"] += int(answers_equal(voted, item["answer_value"], sset.dataset))
        summary.setdefault("vote", {})[sset.dataset] = stats
        out.append(replace(sset, items=items))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Weights and selection (pure functions).
def w_prime(valid_losses: list[float], sample_losses: list[float], item_ids: list[str] | None = None) -> list[float]:
    """w'_i = mean(valid_losses) / sample_losses[i]; a loss of 0, a negative one or NaN is an error."""
    for i, loss in enumerate(sample_losses):
        if not (math.isfinite(loss) and loss > 0):
            who = item_ids[i] if item_ids else f"sample {i}"
            raise RecordError(f"item_id={who}: loss under the DS model is {loss} (must be positive and finite: "
                              "an empty or fully truncated span, or a broken model)")
    if not valid_losses:
        raise RecordError("the valid set has no losses")
    valid_mean = math.fsum(valid_losses) / len(valid_losses)
    if not (math.isfinite(valid_mean) and valid_mean > 0):
        raise RecordError(f"mean loss of the valid set is {valid_mean} (must be positive and finite)")
    return [valid_mean / loss for loss in sample_losses]


def ds_weight(w: float, reference_clip: bool = False) -> float:
    """max(w', 1/w'); with ``reference_clip`` w' is clipped to [0, 2] and 1/w' capped at 5 first."""
    if reference_clip:
        w = min(max(w, 0.0), REFERENCE_W_MAX)
        return max(w, min(1.0 / w, REFERENCE_INV_MAX)) if w > 0 else REFERENCE_INV_MAX
    return max(w, 1.0 / w)


def n_keep(k: float, n: int) -> int:
    """floor(k * n), robust to binary fractions (0.29 * 100 is 28.999...)."""
    return min(n, math.floor(k * n + 1e-9))


def select_lowest(weights: list[float], k: float) -> list[int]:
    """Indices (ascending) of the floor(k * n) lowest weights; among equal weights the earlier ones win."""
    check_keep_fraction(k)
    order = sorted(range(len(weights)), key=lambda i: weights[i])  # sorted() is stable
    return sorted(order[:n_keep(k, len(weights))])


def check_keep_fraction(k: float) -> None:
    if not (isinstance(k, (int, float)) and 0 < k <= 1):
        raise UsageError(f"--keep_fraction must be in (0, 1], got {k}")


# ---------------------------------------------------------------------------------------------------------------
# Per-sample losses under a frozen model.
def full_text(question: str, rationale: str) -> str:
    """The official code's scored text (it also puts an EOS string after "A: ", a quirk we leave out)."""
    return f"Q: {question}\nA: {rationale}"


def span_examples(records: list[dict], tokenizer, span: str, max_len: int) -> list[dict[str, list[int]]]:
    """input_ids/labels per record: ``full`` scores every token of :func:`full_text` (but the first, which
    nothing predicts); ``rationale`` scores rationale + EOS under the student prompt, exactly as training
    labels them (:func:`src.training.tokenize_examples`)."""
    if span == "rationale":
        from src.training import tokenize_examples

        return tokenize_examples(records, tokenizer, max_len)
    if span != "full":
        raise UsageError(f"--ds_span must be one of {SPANS}, got {span!r}")
    ids = tokenizer([full_text(r["question"], r["answer_cot"]) for r in records], truncation=True,
                    max_length=max_len)["input_ids"]
    return [{"input_ids": x, "labels": [-100, *x[1:]]} for x in ids]  # nothing predicts the first token


def pad_batch(examples: list[dict[str, list[int]]], pad_id: int, side: str = "right") -> dict[str, Any]:
    """Pad on either side; position ids count real tokens only, so a left-padded row computes what it would
    alone (transformers numbers positions 0..T-1 from the left edge when none are given)."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        cols = slice(0, n) if side == "right" else slice(width - n, width)
        ids[row, cols] = torch.tensor(e["input_ids"])
        labels[row, cols] = torch.tensor(e["labels"])
        labels[row, cols.start] = -100  # a row's first token is predicted by nothing (left: by padding)
        mask[row, cols] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels}


def token_losses(logits, labels):
    """(cross-entropy per predicted position [B, T-1] in float32, mask of scored positions): position t
    predicts token t + 1; labels of -100 (prompt, padding) are not scored."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                         ignore_index=-100, reduction="none").view(shift_labels.shape)
    return ce, (shift_labels != -100).to(ce.dtype)


def weighted_lm_loss(logits, labels, weights):
    """Mean token cross-entropy of the micro-batch with every token of sample b weighted by ``weights[b]``.

    All weights 1 gives exactly the model's own loss (mean over scored tokens), so IWSI-w changes nothing
    else: accumulation and DeepSpeed scale this scalar as they scale the plain loss. (The official code also
    averages over padding positions.)"""
    ce, mask = token_losses(logits, labels)
    return (ce * mask * weights.to(ce.dtype)[:, None]).sum() / mask.sum().clamp(min=1)


def per_sample_losses(model, examples: list[dict[str, list[int]]], pad_id: int, batch_size: int = 8,
                      side: str = "right") -> list[float]:
    """Mean token cross-entropy of each example under ``model`` (no gradients), in the examples' order.

    Batches are formed by length (less padding); the result does not depend on batch size or padding side."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    out = [float("nan")] * len(examples)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = pad_batch([examples[i] for i in idx], pad_id, side)
            labels = batch.pop("labels")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            ce, mask = token_losses(logits, labels.to(device))
            means = (ce * mask).sum(dim=1) / mask.sum(dim=1)  # 0/0 = NaN: nothing scored, caught by w_prime
            for i, value in zip(idx, means.tolist()):
                out[i] = value
    return out


# ---------------------------------------------------------------------------------------------------------------
# The DS filter behind generate_train_data.py --ds_filter.
@dataclass
class DSFilter:
    """Settings of the DS filter (filled from GenerateConfig's ``ds_*`` fields)."""

    valid_file: str = field(metadata={"help": "labelled valid records (question, answer_cot)"})
    model: str = field(metadata={"help": "the frozen pre-trained model scoring the losses"})
    keep_fraction: float = field(default=0.8, metadata={"help": "k: keep floor(k * n) lowest-DS samples"})
    span: str = field(default="full", metadata={"help": "full | rationale"})
    reference_clip: bool = field(default=False, metadata={"help": "the official code's clipping"})
    policy_model: str | None = field(default=None, metadata={"help": "its tokenizer must equal the DS model's"})
    batch_size: int = field(default=8, metadata={"help": "sequences per forward pass"})
    max_length: int = field(default=1024, metadata={"help": "truncate scored sequences to this many tokens"})


def _normal(question: str) -> str:
    return " ".join(question.split())


def load_valid(path: str, sampled_questions: dict[str, str]) -> list[dict]:
    """The valid records; error when missing, empty, or sharing a question with the sampled items."""
    valid = load_records(path, "train")  # missing file / empty list: RecordError naming the file
    for i, rec in enumerate(valid):
        hit = sampled_questions.get(_normal(rec["question"]))
        if hit is not None:
            raise RecordError(f"{path}: record {i} (item_id={rec['item_id']}): question also sampled "
                              f"(item_id={hit}); the valid set must be disjoint from the sampled questions")
    return valid


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise UsageError(f"--ds_model {path}: cannot load a tokenizer ({str(err).splitlines()[0]})") from None
    if tok.pad_token_id is None:  # Llama-3 has no pad token; padding is masked, so EOS serves
        tok.pad_token = tok.eos_token
    return tok


def check_same_tokenizer(ds_tok, policy_path: str, ds_path: str) -> None:
    policy = load_tokenizer(policy_path)
    if (policy.get_vocab() != ds_tok.get_vocab() or policy.eos_token != ds_tok.eos_token
            or policy.bos_token != ds_tok.bos_token):
        raise UsageError(f"--ds_model {ds_path}: its tokenizer differs from the policy's ({policy_path}); "
                         "the DS weights must be scored with the policy's own pre-trained model")


def prepare_ds_filter(cfg: DSFilter, sampled: list) -> tuple[list[dict], Any]:
    """Every check that needs no model (valid set, k, span, tokenizers); returns (valid records, tokenizer)."""
    check_keep_fraction(cfg.keep_fraction)
    if cfg.span not in SPANS:
        raise UsageError(f"--ds_span must be one of {SPANS}, got {cfg.span!r}")
    if cfg.batch_size < 1:
        raise UsageError(f"--ds_batch_size must be >= 1, got {cfg.batch_size}")
    sampled_q = {_normal(it["question"]): it["item_id"] for s in sampled for it in s.items}
    valid = load_valid(cfg.valid_file, sampled_q)
    if not Path(cfg.model).is_dir():
        raise UsageError(f"--ds_model {cfg.model}: not a model folder")
    tok = load_tokenizer(cfg.model)
    if cfg.policy_model:
        check_same_tokenizer(tok, cfg.policy_model, cfg.model)
    return valid, tok


def score(cfg: DSFilter, tok, records: list[dict]) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype).to(device)
    examples = span_examples(records, tok, cfg.span, cfg.max_length)
    return per_sample_losses(model, examples, tok.pad_token_id, cfg.batch_size)


def apply_ds_filter(cfg: DSFilter, tok, valid: list[dict], samples: list[dict], summary: dict) -> list[dict]:
    """The kept samples (in order) with ``w_prime`` and ``ds_weight`` added; ``summary`` gains the sidecar."""
    losses = score(cfg, tok, valid + samples)
    valid_losses, sample_losses = losses[:len(valid)], losses[len(valid):]
    ids = [s["item_id"] for s in samples]
    w = w_prime(valid_losses, sample_losses, ids)
    ds = [ds_weight(x, cfg.reference_clip) for x in w]
    kept = select_lowest(ds, cfg.keep_fraction)
    keep = set(kept)
    out = [{**samples[i], "w_prime": w[i], "ds_weight": ds[i]} for i in kept]
    summary["ds_filter"] = {
        "valid_file": cfg.valid_file, "model": cfg.model, "span": cfg.span, "reference_clip": cfg.reference_clip,
        "n_valid": len(valid), "valid_mean_loss": math.fsum(valid_losses) / len(valid_losses),
        "keep_fraction": cfg.keep_fraction, "threshold": max((ds[i] for i in kept), default=None),
        "before": len(samples), "after": len(out),
        "dropped_item_ids": [ids[i] for i in range(len(samples)) if i not in keep],
        "valid_losses": valid_losses, "sample_losses": sample_losses, "ds_weights": ds,
    }
    return out


def sidecar_path(next_iter_data_path: str | Path) -> Path:
    """``<stem>.iwsi.json`` beside the data file: vote and DS-filter statistics, dropped item ids."""
    path = Path(next_iter_data_path)
    return path.with_name(f"{path.stem}.iwsi.json")


class IwsiStep:
    """The IWSI parts of ``generate_train_data.py`` (a no-op with the defaults): vote labels before the data is
    built, the DS filter on the sampled records after it, the sidecar beside the data at write time."""

    def __init__(self, cfg: Any) -> None:  # cfg: src.filtering.GenerateConfig
        self.cfg = cfg
        self.summary: dict[str, Any] = {"correctness": cfg.correctness}
        self.ds: DSFilter | None = None
        if cfg.correctness not in ("label", "vote"):
            raise UsageError(f"--correctness must be label or vote, got {cfg.correctness!r}")
        if not cfg.ds_filter and (cfg.ds_valid or cfg.ds_model):
            raise UsageError("--ds_valid/--ds_model are used only with --ds_filter")
        if cfg.ds_filter:
            if not cfg.ds_valid or not cfg.ds_model:
                raise UsageError("--ds_filter needs --ds_valid FILE and --ds_model DIR")
            self.ds = DSFilter(cfg.ds_valid, cfg.ds_model, cfg.keep_fraction, cfg.ds_span, cfg.ds_reference_clip,
                               cfg.ds_policy_model, cfg.ds_batch_size, cfg.ds_max_length)
            check_keep_fraction(cfg.keep_fraction)

    @property
    def active(self) -> bool:
        return self.ds is not None or self.cfg.correctness == "vote"

    def prepare(self, sampled: list) -> list:
        """Model-free checks of the DS inputs; with ``--correctness vote`` the sampled sets re-labelled."""
        if self.ds is not None:
            self.valid, self.tok = prepare_ds_filter(self.ds, sampled)
        return vote_sampled(sampled, self.summary) if self.cfg.correctness == "vote" else sampled

    def filter(self, records: list[dict], counts: Any) -> list[dict]:
        """Apply the DS filter to the sampled part of ``records`` (original / previous data pass untouched)."""
        n_merged = sum(counts.included.values())
        merged_first = getattr(self.cfg, "merged_first", True)  # the merged data precedes or follows the samples
        cut = n_merged if merged_first else len(records) - n_merged
        head, tail = records[:cut], records[cut:]
        samples = tail if merged_first else head
        self.summary["counts"] = {"samples": sum(counts.total.values()), "after_answer_filter": len(samples)}
        if self.ds is not None and samples:
            samples = apply_ds_filter(self.ds, self.tok, self.valid, samples, self.summary)
        self.summary["counts"]["after_ds_filter"] = len(samples)
        records = head + samples if merged_first else samples + tail
        counts.records_written = len(records)
        return records

    def write(self, next_iter_data_path: str | Path) -> None:
        if self.active:
            write_json(sidecar_path(next_iter_data_path), self.summary)


# ---------------------------------------------------------------------------------------------------------------
# The valid set: a seeded slice of the labelled training data, disjoint from the sampling pools.
@dataclass
class ValidSplitConfig:
    train_file: str = field(metadata={"help": "labelled training records to draw the valid set from"})
    out: str = field(metadata={"help": "output: the valid records (JSON list)"})
    exclude: list[str] = field(default_factory=list, metadata={
        "help": "sampling pools (or results.json files) whose questions the valid set must not contain"})
    fraction: float = field(default=MAX_VALID_FRACTION, metadata={"help": "share of the training data (<= 0.05)"})
    seed: int = field(default=42, metadata={"help": "seed of the draw"})


def make_valid_split(cfg: ValidSplitConfig) -> list[dict]:
    if not 0 < cfg.fraction <= MAX_VALID_FRACTION:
        raise UsageError(f"--fraction must be in (0, {MAX_VALID_FRACTION}], got {cfg.fraction}")
    train = load_records(cfg.train_file, "train")
    excluded = {_normal(r["question"]) for path in cfg.exclude for r in load_records(path, "test")}
    eligible = [i for i, r in enumerate(train) if _normal(r["question"]) not in excluded]
    n = max(1, math.floor(cfg.fraction * len(train)))
    if len(eligible) < n:
        raise RecordError(f"{cfg.train_file}: only {len(eligible)} records outside the excluded pools, need {n}")
    picked = sorted(random.Random(cfg.seed).sample(eligible, n))
    valid = [{k: train[i][k] for k in ("item_id", "question", "answer_cot", "answer_value")} for i in picked]
    write_json(cfg.out, valid)
    return valid


def main(argv: list[str] | None = None) -> int:
    from src.cli import parse_args, run_cli

    def body() -> None:
        (cfg,) = parse_args([ValidSplitConfig], argv, "python -m src.iwsi")
        valid = make_valid_split(cfg)
        print(f"wrote {len(valid)} valid records to {cfg.out}")

    return run_cli("python -m src.iwsi", body)


if __name__ == "__main__":
    raise SystemExit(main())


# ---------------------------------------------------------------------------------------------------------------
# IWSI-w: per-sample loss weights for train.py --sample_weight_field / --sample_weight_clip.
def sample_weights(records: list[dict], field_name: str | None, clip: float | None, source: str) -> list[float] | None:
    """min(record[field], clip) per record (None without a field). Records lacking the field (original or
    previous-iteration data mixed in) weigh 1; a weight that is not a finite number >= 0 is an error."""
    if field_name is None:
        if clip is not None:
            raise UsageError("--sample_weight_clip needs --sample_weight_field")
        return None
    if clip is not None and not clip > 0:
        raise UsageError(f"--sample_weight_clip must be > 0, got {clip}")
    out, missing = [], 0
    for i, rec in enumerate(records):
        value = rec.get(field_name)
        if value is None:
            missing += 1
            value = 1.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
            raise RecordError(f"{source}: record {i} (item_id={rec.get('item_id', '?')}): field {field_name!r} "
                              f"should be a finite number >= 0, got {value!r}")
        out.append(float(value) if clip is None else min(float(value), clip))
    if missing:
        print(f"sample weights: {missing} of {len(records)} records have no {field_name!r} and weigh 1"
              + (" (none has it: check the field name)" if missing == len(records) else ""))
    return out
