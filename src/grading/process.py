"""The process check: calculator annotations ``<<lhs=rhs>>`` in a rationale, computed without ``eval``.

Two decisions live here, both used by ``generate_train_data.py --check_result`` (src/filtering.py) and by
TriPosT's process verifier (src/tripost/verify.py):
- :func:`check_annotations` (``--check_mode strict``): every annotation computes exactly with a small safe
  evaluator over numbers and + - * / // % ** (:func:`safe_arithmetic`), its operands come from the question or
  earlier steps, the final answer is the last result; :func:`first_failing_step` names the first step that fails;
- :func:`check_annotations_original` (the default): the original code's test, ``str`` of the left side's value
  equals the right side, reproduced with :func:`python_arithmetic` (Python's own semantics, no ``eval``).

    check_annotations("2 + 3 = <<2+3=5>>5\nThe answer is 5", "What is 2 + 3?")   # None: the chain holds
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from src.grading.reference import reference_compare

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


def _parse_bounded(text: str, max_nodes: int) -> ast.Expression:
    """The syntax tree of ``text`` (parsed, never run), refused when it is not an expression or too large."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise UnsafeExpression(f"not an arithmetic expression ({type(err).__name__})") from None
    if sum(1 for _ in ast.walk(tree)) > max_nodes:
        raise UnsafeExpression(f"more than {max_nodes} syntax nodes")
    return tree


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
    return _eval_node(_parse_bounded(text, MAX_NODES))


def exact_number(text: str) -> Fraction | None:
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
        written = exact_number(result_text)
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
        stated = exact_number(answer)
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
    return _py_node(_parse_bounded(text, ORIGINAL_MAX_NODES))


def original_annotation_holds(annotation: str) -> bool:
    """The original's decision on the text between ``<<`` and ``>>``."""
    if "=" not in annotation:
        return False
    parts = annotation.split("=")
    try:
        value = str(python_arithmetic(parts[0]))
    except (UnsafeExpression, ArithmeticError, TypeError, ValueError, RecursionError, MemoryError):
        return False
    return reference_compare(value, parts[-1])


def check_annotations_original(rationale: str) -> str | None:
    """Why the original's ``--check_result`` drops ``rationale`` (the first failing annotation), or None."""
    for i, annotation in enumerate(ORIGINAL_ANNOTATION.findall(rationale), start=1):
        if not original_annotation_holds(annotation):
            return f"annotation {i} <<{annotation}>> does not hold (the original's check)"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Building the next iteration's data.
