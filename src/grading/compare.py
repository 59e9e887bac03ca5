"""Normalisation and equivalence of final answers (the tolerance policy is in ``src/grading/__init__.py``).

Cheap checks run in the caller: normalised string equality, then plain numbers. Only when those cannot decide
does a symbolic comparison (sympy) run, and always in a helper process with a deadline (``SympyChecker``):
sympy can spend unbounded time on inputs like ``10^{10^{10}}``, and a C-level big-integer operation cannot be
interrupted by a signal, so the only reliable bound is a process we can kill. Guards in the helper also reject
huge powers and factorials before anything is evaluated.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import threading
from fractions import Fraction
from functools import lru_cache

from src.grading._procs import HelperDied, LineWorker

REL_TOL_EXACT = 1e-9  # number / math answers: absorbs float printing noise only (18.000000000001 == 18)
REL_TOL_THEOREMQA = 1e-2  # TheoremQA floats: 1% of the gold value (answers are rounded to 2-4 digits)
ABS_TOL_ZERO = 1e-9  # a gold value of exactly 0 needs |pred| below this
SYMPY_TIMEOUT_S = 5.0  # wall-clock bound of one symbolic comparison (parse + simplify)
MAX_SYMBOLIC_CHARS = 400  # longer answers are compared as strings and numbers only (real answers are short)

# ---------------------------------------------------------------------------------------------------------------
# Numbers

_NUM_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_FRAC_RE = re.compile(r"^([+-]?\d+)\s*/\s*([+-]?\d+)$")
_LATEX_FRAC_RE = re.compile(r"^([+-]?)\\[dt]?frac\{([+-]?\d+)\}\{([+-]?\d+)\}$")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")


def clean_number_text(text: str) -> str:
    """Strip what decorates a number without changing it: $, \\$, %, \\%, thousands commas, spaces, ``\\!``."""
    s = text.strip().replace("\\!", "").replace("\\,", "").replace("{,}", ",")
    s = re.sub(r"\\text\{\s*\}", "", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = s.replace("−", "-").strip().rstrip(".").strip()
    if _THOUSANDS_RE.match(s.replace(" ", "")):
        s = s.replace(",", "")
    return s.replace(" ", "")


def parse_number(text: str) -> Fraction | float | None:
    """A plain number (int, decimal, a/b, \\frac{a}{b}, scientific) as an exact Fraction, or None."""
    s = clean_number_text(text)
    if not s or len(s) > 60:  # longer strings are not plain numbers (and Fraction('1e999999') is slow)
        return None
    if _NUM_RE.match(s):
        mant, _, exp = s.lower().partition("e")
        if exp and abs(int(exp)) > 300:
            return None
        try:
            return Fraction(s)
        except (ValueError, ZeroDivisionError):
            return None
    m = _FRAC_RE.match(s) or None
    if m:
        num, den = int(m.group(1)), int(m.group(2))
        return Fraction(num, den) if den else None
    m = _LATEX_FRAC_RE.match(s)
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        if not den:
            return None
        val = Fraction(num, den)
        return -val if m.group(1) == "-" else val
    return None


def numbers_equal(a: Fraction | float, b: Fraction | float, rel_tol: float = REL_TOL_EXACT) -> bool:
    """``a`` (prediction) equals ``b`` (gold): two integers exactly, else within ``rel_tol`` of |b| (a zero gold
    needs |a| <= ABS_TOL_ZERO)."""
    if a == b:
        return True
    if isinstance(a, Fraction) and isinstance(b, Fraction) and a.denominator == b.denominator == 1:
        return False  # 123456789 != 123456790, however small the relative difference
    fa, fb = float(a), float(b)
    if not (math.isfinite(fa) and math.isfinite(fb)):
        return False
    if fb == 0:
        return abs(fa) <= ABS_TOL_ZERO
    return abs(fa - fb) <= rel_tol * abs(fb)


# ---------------------------------------------------------------------------------------------------------------
# LaTeX normalisation (the MATH convention of Hendrycks et al., extended)

_UNIT_WORDS = (r"(?:units?|square\s+units?|sq\.?\s*units?|cm|centimeters?|meters?|m|km|inches|inch|in|feet|foot|"
               r"ft|miles?|hours?|minutes?|seconds?|days?|weeks?|years?|dollars?|cents?|degrees?|mph|pounds?|"
               r"square\s+\w+|cubic\s+\w+)")


def _group_end(s: str) -> int:
    """Index of the brace closing the group that opens at ``s[0]`` (the last index when unbalanced)."""
    depth = 0
    for i, ch in enumerate(s):
        depth += ch == "{"
        depth -= ch == "}"
        if depth == 0:
            return i
    return len(s) - 1


def _fix_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{2}`` -> ``\\frac{1}{2}``, ``\\frac{a}2`` -> ``\\frac{a}{2}``."""
    out = []
    parts = s.split("\\frac")
    out.append(parts[0])
    for part in parts[1:]:
        out.append("\\frac")
        if part.startswith("{"):
            # numerator already braced: brace a bare single-character denominator
            end = _group_end(part)
            rest = part[end + 1:]
            if rest and rest[0] not in "{" and rest[0] != "\\":
                rest = "{" + rest[0] + "}" + rest[1:]
            out.append(part[: end + 1] + rest)
        elif len(part) >= 2 and part[0] != "\\":
            a = part[0]
            if part[1] == "{":
                out.append("{" + a + "}" + part[1:])
            else:
                out.append("{" + a + "}{" + part[1] + "}" + part[2:])
        else:
            out.append(part)
    return "".join(out)


def _fix_sqrt(s: str) -> str:
    """``\\sqrt3`` -> ``\\sqrt{3}`` (one character argument)."""
    return re.sub(r"\\sqrt(?![\[{(])\s*(\w)", r"\\sqrt{\1}", s)


def _fix_a_slash_b(s: str) -> str:
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    return f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}" if m else s


def normalize_math(text: str) -> str:
    """Canonical string form of a LaTeX answer (spacing, \\left/\\right, dfrac, degrees, units, text, $)."""
    s = text.strip().replace("\n", "").rstrip(".").strip()
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\:", "").replace("\\ ", "")
    s = s.replace("\\\\", "\\")  # row breaks: damaged golds lost one backslash, so compare both with one
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("\\bigl", "").replace("\\bigr", "").replace("\\Bigl", "").replace("\\Bigr", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("°", "").replace("\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    # a unit, with its exponent inside or after the braces ("5\text{ cm}^2" is 5, never 5^2)
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{\s*" + _UNIT_WORDS + r"(\^\d|\^\{\d\})?\s*\}(\^\d|\^\{\d\})?",
               "", s)
    # a trailing unit in words after a value ("164\pi \mbox{ square feet}"); a text-only answer is kept
    s = re.sub(r"(?<=[\w}])\s*\\(?:text|mbox|mathrm)\{[A-Za-z\s]+\}(\^\d|\^\{\d\})?$", "", s)
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm|mathbf)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:displaystyle|mathit)\b", "", s)
    s = s.replace("\\{", "{").replace("\\}", "}") if s.startswith("\\{") else s
    s = s.replace("{,}", ",")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    s = s.replace("−", "-").replace("\\infty", "\\infty ").replace("\\pi", "\\pi ")
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = re.sub(r"^[A-Za-z]\\in", "", s)  # "x \in [2, 5)": the set is the answer
    s = re.sub(r"(?<!\\log)_\{(\w+)\}", r"_\1", s)  # 1011_{2} == 1011_2 (\log_{10} keeps its braces)
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    s = _fix_a_slash_b(s)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    return s


# A name an answer may be assigned to: x, x_1, y', \theta, \theta_0, AB (a segment), \angle ABC, m\angle A, f(x)
_GREEK_RE = r"\\(?:alpha|beta|gamma|delta|theta|phi|varphi|psi|omega|lambda|mu|sigma|rho|tau|epsilon|eta|xi|zeta)"
_VARIABLE_RE = re.compile(rf"(?:[A-Za-z]|{_GREEK_RE}|[A-Z]{{2,3}}|(?:m\s*)?\\angle\s*[A-Z]{{1,3}})(?:_\{{?\w+\}}?)?'*"
                          r"(?:\([a-z]\))?")


def strip_variable_lhs(s: str) -> str:
    """``x=5`` -> ``5``; ``k = \\frac{1}{2}`` -> ``\\frac{1}{2}``; ``0.56 = 56`` -> ``56``: the right side of the last
    ``=`` when every side before it is one variable or a computation without letters. Anything else is an equation
    and stays whole: ``x + y + z = 0`` is not the answer ``0``."""
    if "=" not in s or any(t in s for t in ("\\le", "\\ge", "<", ">")):
        return s
    *lefts, right = s.split("=")
    if all(_VARIABLE_RE.fullmatch(left.strip()) or (left.strip() and not re.search(r"[A-Za-z]", left))
           for left in lefts):
        return right.strip()
    return s


_BOOL_WORD = r"(?:true|false|yes|no|correct|incorrect)"
_BOOL_HEDGE_RE = re.compile(rf"{_BOOL_WORD}\s*(?:\bor\b|\band\b|\bnor\b|/|\\lor)\s*{_BOOL_WORD}\b", re.IGNORECASE)


def is_bool_hedge(text: str) -> bool:
    """``True or False``, ``Yes or no``, ``True/False``: both answers at once (graded wrong)."""
    return _BOOL_HEDGE_RE.match(re.sub(r"^[^A-Za-z]+", "", text.strip())) is not None


# ---------------------------------------------------------------------------------------------------------------
# The symbolic checker: runs in a helper process


class SympyChecker:
    """One helper process running :func:`src.grading.symbolic.handle`; every call has a deadline."""

    def __init__(self, timeout: float = SYMPY_TIMEOUT_S):
        self.timeout = timeout
        # one confined child per comparison (user nobody, no network, nothing writable): see sandbox.symbolic_handle
        self.worker = LineWorker("src.grading.sandbox:symbolic_handle", setup="src.grading.sandbox:warm_up_symbolic")
        self.timeouts = 0

    def equal(self, pred: str, gold: str) -> bool | None:
        """True / False, or None when the comparison ran out of time or the helper failed."""
        return self._ask({"pred": pred, "gold": gold}, "equal")

    def value(self, expr: str) -> float | None:
        """The real numeric value of a closed-form answer, or None (not a real number, timeout, failure)."""
        return self._ask({"expr": expr}, "value")

    def _ask(self, request: dict, answer_field: str):
        """The helper's answer to one request, or None on a timeout, a dead helper or a reply without it."""
        with self.worker.lock:
            try:
                reply = self.worker.call(request, self.timeout)
            except TimeoutError:
                self.timeouts += 1
                return None
            except HelperDied:
                return None
        return reply.get(answer_field)

    def close(self) -> None:
        self.worker.close()


_checker: SympyChecker | None = None
_checker_pid = 0
_checker_lock = threading.Lock()


def get_checker() -> SympyChecker:
    """The process-wide symbolic checker (started on first use, stopped at exit)."""
    global _checker, _checker_pid
    with _checker_lock:
        # A forked child (a data loader, an engine worker) must not share its parent's helper pipes.
        if _checker is None or _checker_pid != os.getpid():
            _checker = SympyChecker()
            _checker_pid = os.getpid()
            atexit.register(_checker.close)
        return _checker


@lru_cache(maxsize=65536)
def symbolic_compare(pred: str, gold: str) -> tuple[bool, str]:
    """Symbolic equivalence of two normalised LaTeX answers as ``(equal, status)``; status "timeout" when the
    bounded helper ran out of time (graded as not equal), "ok" otherwise (undecidable also counts as not equal)."""
    if len(pred) > MAX_SYMBOLIC_CHARS or len(gold) > MAX_SYMBOLIC_CHARS:
        return False, "ok"
    checker = get_checker()
    before = checker.timeouts
    verdict = checker.equal(pred, gold)
    if verdict is None:
        return False, "timeout" if checker.timeouts > before else "ok"
    return verdict, "ok"
