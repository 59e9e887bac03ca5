"""Next-iteration training data from sampling results, and the process check behind ``--check_result``.

Usage (what ``generate_train_data.py`` wraps)::

    from src.filtering import FilterConfig, build_next_iteration, load_sampled
    sampled = load_sampled(["output/.../inference_data"])           # {dataset: results.json items}
    records, counts = build_next_iteration(sampled, FilterConfig(check_result=True, max_per_question=4))

A sample whose final answer is right is not necessarily a right solution: on the tiny model of the synthetic
world most "correct" 4-step samples reach the answer through a broken chain. :func:`check_annotations` checks
the process: every ``<<expr=c>>`` calculator annotation must compute (with a small safe evaluator, never
``eval``: the original code ran ``eval`` on model text), and the final answer must be the last annotated result.
For the synthetic world :func:`src.synthetic.check_synthetic_rationale` additionally compares the chain with the
gold one step by step.

Every sample lands in exactly one bucket of the counts: ``wrong_answer`` (not among the correct samples),
``failed_check``, ``duplicate`` (the same rationale text already kept for that question), ``capped`` (over
``max_per_question``) or ``kept``; so ``kept`` always equals the number of sampled records written.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from src.datasets import DATASETS, get_dataset
from src.records import RecordError, load_records, read_json_or_jsonl

# ---------------------------------------------------------------------------------------------------------------
# Safe arithmetic: numbers, + - * / // % **, unary +/- and parentheses; everything else is refused unevaluated.
MAX_EXPR_CHARS = 200  # longer "calculator" expressions are not arithmetic steps of a solution
MAX_NODES = 64  # bounds the work per annotation whatever the text
MAX_ABS = Fraction(10) ** 18  # refuse literals and intermediate results beyond this magnitude
MAX_DIGITS = 40  # refuse fractions whose numerator or denominator would exceed this many digits

ANNOTATION = re.compile(r"<<([^<>]*?)=([^<>]*?)>>")
ANSWER_TRIGGER = "The answer is"
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # thousands separators: 1,500 -> 1500
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Unit and percentage constants a solution may use without the question stating them (12 months, 60 minutes).
COMMON_CONSTANTS = {Fraction(n) for n in (*range(11), 12, 24, 60, 100, 1000)}


class UnsafeExpression(ValueError):
    """The expression is not plain arithmetic, or is too large to compute cheaply; it was not evaluated."""


_BINOPS: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}


def _digits(x: Fraction) -> int:
    return max(len(str(abs(x.numerator))), len(str(x.denominator)))


def _bounded(x: Fraction) -> Fraction:
    if abs(x) > MAX_ABS or _digits(x) > MAX_DIGITS:
        raise UnsafeExpression("intermediate value too large")
    return x


def _power(base: Fraction, exp: Fraction) -> Fraction:
    # Estimate the result's size from the operands BEFORE computing: 2**99999 is refused, never evaluated.
    if exp.denominator != 1:
        raise UnsafeExpression("non-integer exponent")
    e = abs(exp.numerator)
    biggest = max(abs(base.numerator), base.denominator)
    if e > 64 or (biggest > 1 and e * math.log10(biggest) > MAX_DIGITS):
        raise UnsafeExpression(f"exponent {exp} too large")
    if base == 0 and exp < 0:
        raise ZeroDivisionError("0 to a negative power")
    return _bounded(base ** exp.numerator)


def _eval_node(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # str() of the literal keeps decimals exact (0.1 -> 1/10); bool is excluded by the exact type test.
        return _bounded(Fraction(str(node.value)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _eval_node(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise UnsafeExpression(f"operator {type(node.op).__name__} not allowed")
        return _bounded(Fraction(op(left, right)))
    raise UnsafeExpression(f"{type(node).__name__} not allowed")


def safe_arithmetic(expr: str) -> Fraction:
    """Value of a plain arithmetic expression, computed exactly; refuse anything else without running it.

    >>> safe_arithmetic("1,500 / 6 + 0.5")
    Fraction(501, 2)

    Raises :class:`UnsafeExpression` (not arithmetic, or too big: checked before computing),
    ``ZeroDivisionError``, or ``SyntaxError``.
    """
    text = _DIGIT_COMMA.sub("", expr.strip())
    if not text:
        raise UnsafeExpression("empty expression")
    if len(text) > MAX_EXPR_CHARS:
        raise UnsafeExpression(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise UnsafeExpression(f"not an arithmetic expression ({type(err).__name__})") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise UnsafeExpression(f"more than {MAX_NODES} syntax nodes")
    return _eval_node(tree)


def parse_number(text: str) -> Fraction | None:
    """A written number ("1,500", "$12.50", "-3", "7.") as an exact fraction, or None if it is not one."""
    cleaned = _DIGIT_COMMA.sub("", text.strip()).lstrip("$").rstrip(".").strip()
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)", cleaned):
        return None
    return Fraction(cleaned)


def _matches(value: Fraction, written: Fraction, written_text: str) -> bool:
    """Does the annotated result ``written`` state ``value`` at the precision it is written with?

    Exact results must be exact; a non-terminating value may be rounded or truncated to the written number of
    decimals (GSM8K writes ``<<10/3=3.33>>``), so ``written`` must be the floor or the ceiling at that precision.
    """
    if value == written:
        return True
    decimals = len(written_text.split(".", 1)[1]) if "." in written_text else 0
    scale = 10 ** decimals
    lo = Fraction(math.floor(value * scale), scale)
    return written in (lo, lo + Fraction(1, scale)) and value * scale != math.floor(value * scale)


def final_answer(rationale: str) -> str | None:
    """The text after the last "The answer is" trigger (first line only), or None."""
    pos = rationale.rfind(ANSWER_TRIGGER)
    if pos < 0:
        return None
    tail = rationale[pos + len(ANSWER_TRIGGER):].strip().lstrip(":").strip()
    return tail.splitlines()[0].strip() if tail else None


def check_annotations(rationale: str, question: str | None = None) -> str | None:
    """Why the calculator chain of ``rationale`` fails, or None when it holds together.

    - every ``<<expr=c>>`` must be plain arithmetic whose value is ``c`` (hostile or huge expressions are refused
      before anything is computed);
    - when the rationale states a numeric final answer, it must equal the last annotated result;
    - with ``question`` given, every number an annotation uses must appear in the question, earlier in the
      rationale, or among :data:`COMMON_CONSTANTS` (a skipped step shows up as an operand from nowhere).

    A rationale without annotations (MATH, AQuA, programs) passes: there is no process to check.
    """
    text = _DIGIT_COMMA.sub("", rationale)
    matches = list(ANNOTATION.finditer(text))
    if not matches:
        return None
    grounded = _numbers(_DIGIT_COMMA.sub("", question)) | COMMON_CONSTANTS if question is not None else set()
    last = None
    for i, m in enumerate(matches, start=1):
        expr, result_text = m.group(1), m.group(2).strip()
        shown = f"<<{expr}={result_text}>>"
        written = parse_number(result_text)
        if written is None:
            return f"annotation {i} {shown}: result is not a number"
        try:
            value = safe_arithmetic(expr)
        except UnsafeExpression as err:
            return f"annotation {i} {shown}: refused ({err})"
        except (ZeroDivisionError, ArithmeticError) as err:
            return f"annotation {i} {shown}: does not compute ({err})"
        if not _matches(value, written, result_text.lstrip("$").rstrip(".")):
            return f"annotation {i} {shown}: {expr.strip()} = {_show(value)}, not {result_text}"
        if question is not None:
            known = grounded | _numbers(text[:m.start()])
            for operand in _NUMBER.findall(expr.replace("-", " ")):
                if Fraction(operand) not in known:
                    return f"annotation {i} {shown}: operand {operand} appears neither in the question nor before"
        last = written
    answer = final_answer(text)
    if answer is not None and last is not None:
        stated = parse_number(answer)
        if stated is not None and stated != last:
            return f"final answer {answer} is not the last annotated result {_show(last)}"
    return None


def _numbers(text: str) -> set[Fraction]:
    return {Fraction(n) for n in _NUMBER.findall(text.replace("-", " "))}


def _show(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.6g}"


# ---------------------------------------------------------------------------------------------------------------
# Building the next iteration's data.
BUCKETS = ("kept", "wrong_answer", "failed_check", "duplicate", "capped")


@dataclass
class FilterConfig:
    check_result: bool = field(default=False, metadata={"help": "check the calculator chain (process check)"})
    max_per_question: int | None = field(default=None, metadata={"help": "keep at most this many per question"})


def _zero() -> dict[str, int]:
    return dict.fromkeys(BUCKETS, 0)


@dataclass
class Counts:
    """Samples per bucket, in total, per data set and per strategy (the ``<stem>.counts.json`` file)."""

    total: dict[str, int] = field(default_factory=_zero)
    by_dataset: dict[str, dict[str, int]] = field(default_factory=dict)
    by_strategy: dict[str, dict[str, int]] = field(default_factory=dict)
    included: dict[str, int] = field(default_factory=lambda: {"original": 0, "pre_iter": 0})
    records_written: int = 0

    def add(self, bucket: str, dataset: str, strategy: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.total[bucket] += n
        self.by_dataset.setdefault(dataset, _zero())[bucket] += n
        self.by_strategy.setdefault(strategy, _zero())[bucket] += n

    def to_json(self) -> dict:
        return {"total": self.total, "by_dataset": self.by_dataset, "by_strategy": self.by_strategy,
                "included": self.included, "records_written": self.records_written}


@dataclass
class SampledSet:
    """One data set's sampling results (results.json items) and how its samples were generated."""

    dataset: str
    items: list[dict]
    source: str  # the results.json path, for messages
    strategy: str | None = None  # from sampling_stats.json: which strategy produced the non-initial samples
    sample_num: int | None = None  # initial samples per query (the first sample_num entries of ``pred``)


def _wrong_by_strategy(item: dict, sset: SampledSet, strategies: list[str]) -> dict[str, int]:
    """Wrong samples of one query per strategy: initial = first sample_num of ``pred``, the rest resampled."""
    n_pred, n_correct = len(item["pred"]), len(item["correct_pred"])
    if sset.sample_num is None or sset.strategy is None:
        return {"unattributed": max(n_pred - n_correct, 0)}
    n_init = min(n_pred, sset.sample_num)
    init_correct = sum(1 for s in strategies if s == "initial")
    return {"initial": max(n_init - init_correct, 0),
            sset.strategy: max(n_pred - n_init - (n_correct - init_correct), 0)}


def build_next_iteration(sampled: Iterable[SampledSet], cfg: FilterConfig | None = None,
                         original: list[dict] | None = None,
                         pre_iter: list[dict] | None = None) -> tuple[list[dict], Counts]:
    """Train records from the correct samples (under the plain question) plus optional earlier data.

    Order (fixed, so reruns are byte-identical): original data, previous iteration's data, then the kept samples
    in the order of ``sampled`` and of its items and samples.
    """
    from src.synthetic import check_synthetic_rationale

    cfg = cfg or FilterConfig()
    counts = Counts()
    out: list[dict] = []
    if original:
        out.extend(original)
        counts.included["original"] = len(original)
    if pre_iter:
        out.extend(pre_iter)
        counts.included["pre_iter"] = len(pre_iter)
    for sset in sampled:
        synthetic = sset.dataset.startswith("synthetic")
        for item in sset.items:
            correct = item["correct_pred"]
            strategies = item.get("correct_strategy") or ["initial"] * len(correct)
            for name, n in _wrong_by_strategy(item, sset, strategies).items():
                counts.add("wrong_answer", sset.dataset, name, n)
            seen: set[str] = set()
            kept = 0
            for sample, strategy in zip(correct, strategies):
                if cfg.check_result:
                    why = check_annotations(sample, item["question"])
                    if why is None and synthetic:
                        why = check_synthetic_rationale(item["question"], item["answer_cot"], sample)
                    if why is not None:
                        counts.add("failed_check", sset.dataset, strategy)
                        continue
                if sample in seen:
                    counts.add("duplicate", sset.dataset, strategy)
                    continue
                seen.add(sample)
                if cfg.max_per_question is not None and kept >= cfg.max_per_question:
                    counts.add("capped", sset.dataset, strategy)
                    continue
                kept += 1
                counts.add("kept", sset.dataset, strategy)
                rec = {"item_id": item["item_id"], "question": item["question"], "answer_cot": sample,
                       "answer_value": item["answer_value"]}
                if item.get("level") is not None:
                    rec["level"] = item["level"]
                rec["strategy"] = strategy
                out.append(rec)
    counts.records_written = len(out)
    return out, counts


# ---------------------------------------------------------------------------------------------------------------
# Loading sampling results.
def _dataset_name(results_file: Path, items: list[dict], stats: dict | None) -> str:
    if stats and isinstance(stats.get("dataset"), str):
        return get_dataset(stats["dataset"]).name
    folder = results_file.parent.name
    if folder in DATASETS:
        return folder
    # fall back on the item id prefix (gsm8k_12, aqua_rat_3, synthetic_pool_7): longest known prefix wins
    item_id = items[0]["item_id"]
    names = sorted(list(DATASETS) + [s.file_stem for s in DATASETS.values()], key=len, reverse=True)
    for name in names:
        if item_id.startswith(name + "_"):
            return get_dataset(name).name
    raise RecordError(f"{results_file}: cannot tell which dataset this is (no sampling_stats.json beside it, "
                      f"folder {folder!r} and item id {item_id!r} name no known dataset)")


def results_files(path: str | Path) -> list[Path]:
    """The results.json files a ``--cur_sampled_data_path`` names: the file itself, or one per data set."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        if (path / "results.json").is_file():
            return [path / "results.json"]
        found = sorted(path.glob("*/results.json"))
        if found:
            return found
        raise RecordError(f"{path}: folder holds no results.json (nor <dataset>/results.json)")
    raise RecordError(f"{path}: file not found")


def load_sampled(paths: Iterable[str | Path]) -> list[SampledSet]:
    """Load and validate every sampling result named by ``paths`` (each a results.json or a folder of them)."""
    sets = []
    for path in paths:
        for file in results_files(path):
            items = load_records(file, "sampling_result")
            for i, item in enumerate(items):
                strategies = item.get("correct_strategy")
                if strategies is not None and len(strategies) != len(item["correct_pred"]):
                    raise RecordError(f"{file}: record {i} (item_id={item['item_id']}): correct_strategy has "
                                      f"{len(strategies)} entries, correct_pred {len(item['correct_pred'])}")
                if not all(isinstance(s, str) for s in item["correct_pred"]):
                    raise RecordError(f"{file}: record {i} (item_id={item['item_id']}): correct_pred must hold "
                                      f"strings")
            stats_file = file.parent / "sampling_stats.json"
            stats = read_json_or_jsonl(stats_file) if stats_file.is_file() else None
            if stats is not None and not isinstance(stats, dict):
                raise RecordError(f"{stats_file}: expected a JSON object")
            sets.append(SampledSet(
                dataset=_dataset_name(file, items, stats), items=items, source=str(file),
                strategy=(stats or {}).get("strategy"), sample_num=(stats or {}).get("sample_num")))
    if not sets:
        raise RecordError("no sampling results given")
    return sets


# ---------------------------------------------------------------------------------------------------------------
# The generate_train_data.py command.
@dataclass
class GenerateConfig:
    """The original ``generate_train_data.py`` flags, plus ``--max_per_question``."""

    cur_sampled_data_path: list[str] = field(metadata={
        "help": "sampling results: results.json files, or folders holding one (or one per data set)"})
    next_iter_data_path: str = field(metadata={"help": "output: the next iteration's training data (JSON list)"})
    original_data_path: str | None = field(default=None, metadata={"help": "iteration-0 (original) data"})
    pre_iter_data_path: str | None = field(default=None, metadata={"help": "the previous iteration's data"})
    include_original_data: bool = field(default=False, metadata={"help": "add the original data"})
    include_pre_iter_data: bool = field(default=False, metadata={"help": "add the previous iteration's data"})
    check_result: bool = field(default=False, metadata={
        "help": "keep only samples whose calculator chain computes and holds together (process check)"})
    max_per_question: int | None = field(default=None, metadata={"help": "keep at most this many per question"})
    # --format dpo: preference pairs for Self-Refine Instruction-Tuning's DPO stage (src/pairs.py)
    format: str = field(default="sft", metadata={
        "help": "sft: next-iteration training data; dpo: preference pairs (src/pairs.py)", "choices": ["sft", "dpo"]})
    pair_mode: str = field(default="mixed", metadata={
        "help": "dpo: self (correct vs wrong student sample), teacher (gold demonstration vs wrong sample), "
                "mixed (self, or teacher when no student sample is correct)", "choices": ["self", "teacher", "mixed"]})
    max_pairs_per_question: int = field(default=2, metadata={"help": "dpo: at most this many pairs per question"})
    # IWSI (src/iwsi.py): vote labels and the distribution-shift filter
    correctness: str = field(default="label", metadata={
        "help": "label: a sample is correct when it reaches the gold answer; vote: when it reaches its question's "
                "majority answer (no gold labels)", "choices": ["label", "vote"]})
    ds_filter: bool = field(default=False, metadata={"help": "IWSI: drop the most distribution-shifted samples"})
    ds_valid: str | None = field(default=None, metadata={"help": "IWSI: labelled valid records (disjoint questions)"})
    ds_model: str | None = field(default=None, metadata={"help": "IWSI: the frozen pre-trained model scoring losses"})
    ds_policy_model: str | None = field(default=None, metadata={
        "help": "IWSI: the sampling model; its tokenizer must equal the DS model's"})
    keep_fraction: float = field(default=0.8, metadata={"help": "IWSI: keep floor(k*n) samples with the lowest DS"})
    ds_span: str = field(default="full", metadata={
        "help": "IWSI: full ('Q: ..\\nA: ..', the official code) or rationale (under the student prompt)",
        "choices": ["full", "rationale"]})
    ds_reference_clip: bool = field(default=False, metadata={
        "help": "IWSI: the official clipping (w' to [0, 2], 1/w' capped at 5)"})
    ds_batch_size: int = field(default=8, metadata={"help": "IWSI: sequences per forward pass"})
    ds_max_length: int = field(default=1024, metadata={"help": "IWSI: truncate scored sequences to this length"})


def counts_path(next_iter_data_path: str | Path) -> Path:
    """``<stem>.counts.json`` beside the data file."""
    path = Path(next_iter_data_path)
    return path.with_name(f"{path.stem}.counts.json")


def read_counts(next_iter_data_path: str | Path) -> dict:
    """The counts of a data file; RecordError when they belong to another version of it (an interrupted run)."""
    from src.records import read_summary

    return read_summary(counts_path(next_iter_data_path), next_iter_data_path)


def generate_next_iteration(cfg: GenerateConfig) -> Counts:
    """Load and validate every input, build the data, then write data + counts (nothing on bad input)."""
    from src.iwsi import IwsiStep
    from src.records import write_json_with_summary

    if cfg.format == "dpo":
        from src.pairs import generate_pairs

        return generate_pairs(cfg)
    if cfg.max_per_question is not None and cfg.max_per_question < 1:
        raise RecordError(f"--max_per_question must be >= 1, got {cfg.max_per_question}")
    original = pre_iter = None
    if cfg.include_original_data:
        if not cfg.original_data_path:
            raise RecordError("--include_original_data needs --original_data_path")
        original = load_records(cfg.original_data_path, "train")
    if cfg.include_pre_iter_data:
        if not cfg.pre_iter_data_path:
            raise RecordError("--include_pre_iter_data needs --pre_iter_data_path")
        pre_iter = load_records(cfg.pre_iter_data_path, "train")
    sampled = load_sampled(cfg.cur_sampled_data_path)
    iwsi = IwsiStep(cfg)  # IWSI: vote labels, DS filter and sidecar (src/iwsi.py); a no-op by default
    sampled = iwsi.prepare(sampled)
    records, counts = build_next_iteration(sampled, FilterConfig(cfg.check_result, cfg.max_per_question),
                                           original, pre_iter)
    records = iwsi.filter(records, counts)
    if not records:
        raise RecordError(f"{cfg.next_iter_data_path}: no training record survived "
                          f"(counts: {counts.total}); refusing to write an empty data file")
    # the counts carry the data's sha256 and are written last: a kill between the two is detected (read_counts)
    write_json_with_summary(cfg.next_iter_data_path, records, counts_path(cfg.next_iter_data_path), counts.to_json())
    iwsi.write(cfg.next_iter_data_path)
    return counts
