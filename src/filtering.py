"""Next-iteration training data from sampling results, and the process check behind ``--check_result``.

Usage (what ``generate_train_data.py`` wraps)::

    from src.filtering import FilterConfig, build_next_iteration, load_sampled
    sampled = load_sampled(["output/.../inference_data"])           # {dataset: results.json items}
    records, counts = build_next_iteration(sampled, FilterConfig(check_result=True, max_per_question=4))

By default the decisions are the original code's (docs/FIDELITY.md): every correct sample is kept, identical
texts included; ``--check_result`` drops a sample when one of its ``<<lhs=rhs>>`` annotations fails the original's
test (:func:`check_annotations_original`: ``str`` of lhs's value equals rhs, computed without ``eval``); the added
data (original, else previous iteration's) comes after the samples; records hold four fields.

Named options change that: ``dedupe``; ``check_mode="strict"``, this project's process check
(:func:`check_annotations`: every annotation computes exactly with a small safe evaluator, its operands come from
the question or earlier steps, the final answer is the last result; for the synthetic world
:func:`src.synthetic.check_synthetic_rationale` compares the chain with the gold one step by step; on the tiny
model most "correct" 4-step samples reach the answer through a broken chain); ``merged_first``; ``record_strategy``.

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
from typing import Any

from src.datasets import get_dataset
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


def first_failing_step(rationale: str, question: str | None = None) -> tuple[int, str] | None:
    """(1-based number of the first line at which :func:`check_annotations` fails, why), or None.

    The check runs on growing prefixes of the non-empty lines, so the step is where the chain first breaks
    (TriPosT's process verifier, src/tripost)."""
    lines = [line for line in rationale.splitlines() if line.strip()]
    for k in range(1, len(lines) + 1):
        why = check_annotations("\n".join(lines[:k]), question)
        if why is not None:
            return k, why
    return None


def _numbers(text: str) -> set[Fraction]:
    return {Fraction(n) for n in _NUMBER.findall(text.replace("-", " "))}


def _show(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.6g}"


# ---------------------------------------------------------------------------------------------------------------
# The original code's --check_result decision, computed without eval.
# The original keeps a sample when, for every "<<...>>" in it, str(eval(left of the first "=")) equals the text right
# of the last "=" (its string comparison: case-insensitive, "\text{" removed, "(a)".."(f)" by containment), and
# judges an annotation without "=" or whose left side raises as wrong. Here the left side is computed by walking
# its syntax tree with Python's own int/float operators, so str() of the value is what eval would have printed
# (10/2 -> "5.0", so <<10/2=5>> fails as it did), and anything that is not plain arithmetic is judged wrong unrun.
ORIGINAL_ANNOTATION = re.compile(r"<<([^>]*)>>")
ORIGINAL_MAX_CHARS = 2000  # longer spans between "<<" and ">>" are prose, not a calculator step
ORIGINAL_MAX_NODES = 400
ORIGINAL_MAX_INT_DIGITS = 4300  # Python's own cap on str(int): beyond it the original's str(eval(..)) raised
_CHOICE_TAGS = ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)")
_PY_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.BitXor: operator.xor, ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_, ast.RShift: operator.rshift,
}


def _int_digits_ok(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > ORIGINAL_MAX_INT_DIGITS * 3.33:
        raise UnsafeExpression("integer too large")
    return value


def _py_node(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _py_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _int_digits_ok(node.value)
    if isinstance(node, ast.Tuple):  # "1,500*2" is the tuple (1, 1000) to eval: its str() never equals a number
        return tuple(_py_node(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub, ast.Invert)):
        value = _py_node(node.operand)
        ops = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Invert: operator.invert}
        return ops[type(node.op)](value)
    if isinstance(node, ast.BinOp):
        left, right = _py_node(node.left), _py_node(node.right)
        if isinstance(node.op, (ast.Pow, ast.LShift)) and isinstance(left, int) and isinstance(right, int):
            # size the integer result before computing it: 9**9**9 is refused, never evaluated
            size = right if isinstance(node.op, ast.LShift) else right * math.log2(max(abs(left), 1))
            if size > ORIGINAL_MAX_INT_DIGITS * 3.33:
                raise UnsafeExpression("integer result too large")
        op = operator.pow if isinstance(node.op, ast.Pow) else operator.lshift \
            if isinstance(node.op, ast.LShift) else _PY_BINOPS.get(type(node.op))
        if op is None:
            raise UnsafeExpression(f"operator {type(node.op).__name__} not allowed")
        return _int_digits_ok(op(left, right))
    raise UnsafeExpression(f"{type(node).__name__} not allowed")


def python_arithmetic(expr: str) -> Any:
    """The value Python's ``eval`` gives a plain arithmetic expression (ints, floats, tuples), without ``eval``.

    >>> str(python_arithmetic("10/2")), str(python_arithmetic("1,500*2"))
    ('5.0', '(1, 1000)')

    Raises :class:`UnsafeExpression` for anything else (names, calls, strings, oversized numbers) and whatever
    the arithmetic itself raises (``ZeroDivisionError``, ``OverflowError``, ``TypeError``).
    """
    text = expr.lstrip(" \t")  # eval() strips leading blanks of a string too
    if len(text) > ORIGINAL_MAX_CHARS:
        raise UnsafeExpression(f"expression longer than {ORIGINAL_MAX_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise UnsafeExpression(f"not an arithmetic expression ({type(err).__name__})") from None
    if sum(1 for _ in ast.walk(tree)) > ORIGINAL_MAX_NODES:
        raise UnsafeExpression(f"more than {ORIGINAL_MAX_NODES} syntax nodes")
    return _py_node(tree)


def _original_string_match(answer: str, gold: str) -> bool:
    """The original comparison of two strings when the gold has no numeric form (its ``--check_result`` case)."""
    if "\\text{" in answer:
        answer = answer.replace("\\text{", "").rstrip("}")
    if "\\text{" in gold:
        gold = gold.replace("\\text{", "").rstrip("}")
    if gold.lower() in _CHOICE_TAGS:
        return gold.lower() in answer.lower()
    return answer.lower() == gold.lower()


def original_annotation_holds(annotation: str) -> bool:
    """The original's decision on the text between ``<<`` and ``>>``."""
    if "=" not in annotation:
        return False
    parts = annotation.split("=")
    try:
        value = str(python_arithmetic(parts[0]))
    except (UnsafeExpression, ArithmeticError, TypeError, ValueError, RecursionError, MemoryError):
        return False
    return _original_string_match(value, parts[-1])


def check_annotations_original(rationale: str) -> str | None:
    """Why the original's ``--check_result`` drops ``rationale`` (the first failing annotation), or None."""
    for i, annotation in enumerate(ORIGINAL_ANNOTATION.findall(rationale), start=1):
        if not original_annotation_holds(annotation):
            return f"annotation {i} <<{annotation}>> does not hold (the original's check)"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Building the next iteration's data.
BUCKETS = ("kept", "wrong_answer", "failed_check", "duplicate", "capped")


@dataclass
class FilterConfig:
    """Defaults are the original code's decisions (docs/FIDELITY.md); each difference is a named option."""

    check_result: bool = field(default=False, metadata={"help": "check the calculator annotations"})
    max_per_question: int | None = field(default=None, metadata={"help": "keep at most this many per question"})
    check_mode: str = field(default="original", metadata={
        "help": "original: the original's check of each <<lhs=rhs>>; strict: this project's process check"})
    dedupe: bool = field(default=False, metadata={
        "help": "drop a sample whose text was already kept for the question (the original keeps duplicates)"})
    merged_first: bool = field(default=False, metadata={
        "help": "put the merged (original / previous) data before the samples (the original appends it after)"})
    record_strategy: bool = field(default=False, metadata={
        "help": "add each kept sample's strategy to its record (the original writes four fields)"})


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

    dataset: str | None  # from sampling_stats.json or --dataset_name; None: not known (never guessed)
    items: list[dict]
    source: str  # the results.json path, for messages
    strategy: str | None = None  # from sampling_stats.json: which strategy produced the non-initial samples
    sample_num: int | None = None  # initial samples per query (the first sample_num entries of ``pred``)

    @property
    def label(self) -> str:
        """The name the counts use: the data set, or the results file when the data set is not known."""
        return self.dataset or self.source


def _wrong_by_strategy(item: dict, sset: SampledSet, strategies: list[str]) -> dict[str, int]:
    """Wrong samples of one query per strategy: initial = first sample_num of ``pred``, the rest resampled."""
    n_pred, n_correct = len(item["pred"]), len(item["correct_pred"])
    if sset.sample_num is None or sset.strategy is None:
        return {"unattributed": max(n_pred - n_correct, 0)}
    n_init = min(n_pred, sset.sample_num)
    init_correct = sum(1 for s in strategies if s == "initial")
    return {"initial": max(n_init - init_correct, 0),
            sset.strategy: max(n_pred - n_init - (n_correct - init_correct), 0)}


def _rejection(sample: str, item: dict, sset: SampledSet, cfg: FilterConfig) -> str | None:
    """Why ``--check_result`` drops ``sample`` (None: kept), in the configured mode."""
    from src.synthetic import check_synthetic_rationale

    if cfg.check_mode == "original":
        return check_annotations_original(sample)
    why = check_annotations(sample, item["question"])
    if why is None and sset.dataset is not None and get_dataset(sset.dataset).checks_gold_chain:
        why = check_synthetic_rationale(item["question"], item["answer_cot"], sample)
    return why


def build_next_iteration(sampled: Iterable[SampledSet], cfg: FilterConfig | None = None,
                         original: list[dict] | None = None,
                         pre_iter: list[dict] | None = None) -> tuple[list[dict], Counts]:
    """Train records from the correct samples (under the plain question) plus the merged earlier data.

    Order (fixed, so reruns are byte-identical): the kept samples in the order of ``sampled``, its items and
    samples, then ``original`` and ``pre_iter`` (before the samples with ``cfg.merged_first``). Each record holds
    item_id, question, answer_cot, answer_value (+ the item's ``level`` when it has one, + ``strategy`` with
    ``cfg.record_strategy``).
    """
    cfg = cfg or FilterConfig()
    if cfg.check_mode not in ("original", "strict"):
        raise ValueError(f"unknown check_mode {cfg.check_mode!r} (original | strict)")
    counts = Counts()
    merged: list[dict] = []
    for name, data in (("original", original), ("pre_iter", pre_iter)):
        if data:
            merged.extend(data)
            counts.included[name] = len(data)
    out: list[dict] = list(merged) if cfg.merged_first else []
    for sset in sampled:
        label = sset.label
        for item in sset.items:
            correct = item["correct_pred"]
            strategies = item.get("correct_strategy") or ["initial"] * len(correct)
            for name, n in _wrong_by_strategy(item, sset, strategies).items():
                counts.add("wrong_answer", label, name, n)
            seen: set[str] = set()
            kept = 0
            for sample, strategy in zip(correct, strategies):
                if cfg.check_result and _rejection(sample, item, sset, cfg) is not None:
                    counts.add("failed_check", label, strategy)
                    continue
                if cfg.dedupe and sample in seen:
                    counts.add("duplicate", label, strategy)
                    continue
                seen.add(sample)
                if cfg.max_per_question is not None and kept >= cfg.max_per_question:
                    counts.add("capped", label, strategy)
                    continue
                kept += 1
                counts.add("kept", label, strategy)
                rec = {"item_id": item["item_id"], "question": item["question"], "answer_cot": sample,
                       "answer_value": item["answer_value"]}
                if item.get("level") is not None:
                    rec["level"] = item["level"]
                if cfg.record_strategy:
                    rec["strategy"] = strategy
                out.append(rec)
    if not cfg.merged_first:
        out.extend(merged)
    counts.records_written = len(out)
    return out, counts


# ---------------------------------------------------------------------------------------------------------------
# Loading sampling results.
def _dataset_of(results_file: Path, stats: dict | None, given: str | None) -> str | None:
    """The data set of one results file: its sampling_stats.json's, else ``--dataset_name``'s, else None."""
    named = get_dataset(given).name if given else None
    if stats and isinstance(stats.get("dataset"), str):
        recorded = get_dataset(stats["dataset"]).name
        if named is not None and named != recorded:
            raise RecordError(f"{results_file}: --dataset_name {given} but its sampling_stats.json says "
                              f"{stats['dataset']}")
        return recorded
    return named


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


def load_sampled(paths: Iterable[str | Path], dataset_names: list[str] | None = None) -> list[SampledSet]:
    """Load and validate every sampling result named by ``paths`` (each a results.json or a folder of them).

    ``dataset_names``: one name for every path, or one per path, used where no sampling_stats.json names the
    data set (a results file of the original code); a data set is never guessed from folder or item ids.
    """
    paths = list(paths)
    names = list(dataset_names or [])
    if len(names) not in (0, 1, len(paths)):
        raise RecordError(f"{len(names)} --dataset_name for {len(paths)} --cur_sampled_data_path: give one name, "
                          f"or one per path")
    try:
        for name in names:
            get_dataset(name)
    except ValueError as err:
        raise RecordError(f"--dataset_name: {err}") from None
    sets = []
    for k, path in enumerate(paths):
        given = names[k] if len(names) == len(paths) and len(names) > 1 else (names[0] if names else None)
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
                dataset=_dataset_of(file, stats, given), items=items, source=str(file),
                strategy=(stats or {}).get("strategy"), sample_num=(stats or {}).get("sample_num")))
    if not sets:
        raise RecordError("no sampling results given")
    return sets


# ---------------------------------------------------------------------------------------------------------------
# The generate_train_data.py command.
@dataclass
class GenerateConfig:
    """The original ``generate_train_data.py`` flags (its defaults and decisions), plus named options."""

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
    # the original's decisions are the defaults; each difference has its own name (docs/FIDELITY.md)
    check_mode: str = field(default="original", metadata={
        "help": "with --check_result: original (each <<lhs=rhs>>: str of lhs's value equals rhs, as the original "
                "decided, computed without eval) or strict (this project's process check: exact values, operands "
                "from the question, final answer = last result; the synthetic world's step check)",
        "choices": ["original", "strict"]})
    dedupe: bool = field(default=False, metadata={
        "help": "drop a sample whose text was already kept for its question (the original keeps duplicates)"})
    include_both: bool = field(default=False, metadata={
        "help": "with both include flags, add both (the original adds only the original data: its elif)"})
    merged_first: bool = field(default=False, metadata={
        "help": "put the added data before the samples (the original appends it after them)"})
    record_strategy: bool = field(default=False, metadata={
        "help": "add each kept sample's strategy to its record (the original writes four fields)"})
    dataset_name: list[str] | None = field(default=None, metadata={
        "help": "data set of results without a sampling_stats.json (one, or one per --cur_sampled_data_path); "
                "needed only by --check_mode strict; never guessed"})
    # --format dpo: preference pairs for Self-Refine Instruction-Tuning's DPO stage (src/pairs.py)
    format: str = field(default="sft", metadata={
        "help": "sft: next-iteration training data; dpo: preference pairs (src/pairs.py); tripost: one-step "
                "examples of edit_trajectories.py's trajectories (src/tripost)", "choices": ["sft", "dpo", "tripost"]})
    improve_ratio: float = field(default=1.5, metadata={
        "help": "tripost: sample ceil(n_improvement / p) non-improvement and as many gold examples (0: keep all)"})
    pair_mode: str = field(default="mixed", metadata={
        "help": "dpo: self (correct vs wrong student sample), teacher (gold demonstration vs wrong sample), "
                "mixed (self, or teacher when no student sample is correct)", "choices": ["self", "teacher", "mixed"]})
    max_pairs_per_question: int = field(default=2, metadata={"help": "dpo: at most this many pairs per question"})
    # IWSI (src/iwsi.py): vote labels and the distribution-shift filter
    correctness: str = field(default="label", metadata={
        "help": "label: a sample is correct when it reaches the gold answer; vote: when it reaches its question's "
                "majority answer (no gold labels)", "choices": ["label", "vote"]})
    grader: str | None = field(default=None, metadata={
        "help": "re-grade every sample (pred) with this grader and keep those it decides correct: project or "
                "reference (the original code's decisions); default: the results' correct_pred, as the original",
        "choices": ["project", "reference"]})
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
    if cfg.format == "tripost":
        from src.tripost.data import generate_tripost

        return generate_tripost(cfg)  # type: ignore[return-value]
    if cfg.max_per_question is not None and cfg.max_per_question < 1:
        raise RecordError(f"--max_per_question must be >= 1, got {cfg.max_per_question}")
    original = pre_iter = None
    if cfg.include_original_data:
        if not cfg.original_data_path:
            raise RecordError("--include_original_data needs --original_data_path")
        original = load_records(cfg.original_data_path, "train")
    # the original: if --include_original_data ... elif --include_pre_iter_data (one or the other)
    if cfg.include_pre_iter_data and (cfg.include_both or not cfg.include_original_data):
        if not cfg.pre_iter_data_path:
            raise RecordError("--include_pre_iter_data needs --pre_iter_data_path")
        pre_iter = load_records(cfg.pre_iter_data_path, "train")
    sampled = load_sampled(cfg.cur_sampled_data_path, cfg.dataset_name)
    if cfg.check_result and cfg.check_mode == "strict":
        unknown = [s.source for s in sampled if s.dataset is None]
        if unknown:
            raise RecordError(f"{unknown[0]}: --check_mode strict needs the data set (no sampling_stats.json "
                              f"beside it): give --dataset_name")
    iwsi = IwsiStep(cfg)  # IWSI: vote labels, DS filter and sidecar (src/iwsi.py); a no-op by default
    sampled = iwsi.prepare(sampled)
    fcfg = FilterConfig(check_result=cfg.check_result, max_per_question=cfg.max_per_question,
                        check_mode=cfg.check_mode, dedupe=cfg.dedupe, merged_first=cfg.merged_first,
                        record_strategy=cfg.record_strategy)
    records, counts = build_next_iteration(sampled, fcfg, original, pre_iter)
    records = iwsi.filter(records, counts)
    if not records:
        raise RecordError(f"{cfg.next_iter_data_path}: no training record survived "
                          f"(counts: {counts.total}); refusing to write an empty data file")
    # the counts carry the data's sha256 and are written last: a kill between the two is detected (read_counts);
    # the data file has the original's bytes (json.dump, indent 4, no final newline)
    write_json_with_summary(cfg.next_iter_data_path, records, counts_path(cfg.next_iter_data_path), counts.to_json(),
                            indent=4, final_newline=False)
    iwsi.write(cfg.next_iter_data_path)
    return counts
