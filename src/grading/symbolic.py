"""Symbolic comparison of two LaTeX answers with sympy; runs only inside the checker helper process.

``handle`` is the helper's request handler (see ``src.grading.compare.SympyChecker``). The caller bounds its
wall time by killing the helper; the guards below additionally refuse to evaluate huge powers and factorials
(``10^{10^{10}}``, ``99999!``), which keeps the helper alive for the next request in the common case.

Answers are parsed by :mod:`src.grading.mathparse`, a whitelist tokenizer and recursive-descent parser that
builds sympy objects through constructors and never evaluates the text (sympy's ``parse_expr``/``sympify`` run
``eval`` on it, so a model answer ``exec(...)`` would run as code). sympy's own ``parse_latex`` needs antlr4
(not installed) or a lark grammar that rejects common answer forms such as ``\\frac12`` and ``2\\sqrt3``.
"""

from __future__ import annotations

import math
import random
import re

import sympy

from src.grading.compare import normalize_math
from src.grading.mathparse import Unsupported, parse

MAX_EXPONENT = 10_000  # largest |exponent| (or resulting digit count) we agree to evaluate
MAX_FACTORIAL = 2_000
NUMERIC_REL_TOL = 1e-9  # an answer with a decimal number: equal when it agrees to 9 significant digits
EXACT_DIGITS = 50  # exact closed forms are evaluated to this many digits ...
EXACT_REL_TOL = 1e-40  # ... and must agree to 40 of them (rational numbers: exactly)


def warm_up() -> None:
    """Pay sympy's import and first-parse cost at helper start-up, not in the first request's deadline."""
    _equal_expr(_to_expr("\\frac{1}{2}+x"), _to_expr("0.5+x"))


def _check_size(expr: sympy.Basic) -> None:
    """Refuse expressions whose evaluation could take unbounded time or memory (huge powers, factorials)."""
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow):
            base, exp = node.args
            if exp.free_symbols or base.free_symbols:
                if exp.is_Number and abs(float(exp)) > MAX_EXPONENT:
                    raise Unsupported("exponent too large")
                continue
            _check_size(exp)
            e = abs(complex(sympy.N(exp, 15)))
            b = abs(complex(sympy.N(base, 15))) if base.is_number else 2.0
            if e > MAX_EXPONENT or (b > 1 and e * math.log10(b) > MAX_EXPONENT):
                raise Unsupported("power too large")
        elif isinstance(node, sympy.factorial) and node.args[0].is_number:
            _check_size(node.args[0])
            if abs(complex(sympy.N(node.args[0], 15))) > MAX_FACTORIAL:
                raise Unsupported("factorial too large")
        elif isinstance(node, sympy.Integer) and abs(int(node)) > 10 ** MAX_EXPONENT:
            raise Unsupported("number too large")


def _to_expr(s: str) -> sympy.Basic:
    # a whole number right before a numeric fraction is a mixed number: 2\frac{1}{2} = 5/2, not 2 * 1/2
    s = re.sub(r"(?<![\w.^{])(\d+)\\frac\{(\d+)\}\{(\d+)\}", r"(\1+\\frac{\2}{\3})", s)
    expr = parse(s)  # never evaluates the text: see src.grading.mathparse
    _check_size(expr)
    return expr


def _value(expr: sympy.Basic) -> sympy.Expr:
    """A numeric expression evaluated to EXACT_DIGITS digits (mpmath floats: 1e400 does not overflow to inf)."""
    return sympy.N(expr, EXACT_DIGITS)


def _numbers_equal(a: sympy.Basic, b: sympy.Basic) -> bool:
    """Two numeric expressions (no free symbols) are equal: exactly when both are rational numbers
    (``10^{-20} != 0``, ``1+10^{-12} != 1``); to EXACT_REL_TOL for exact irrational forms; to NUMERIC_REL_TOL of
    the gold when a decimal number was written (only printing noise is absorbed); infinities only to themselves."""
    exact = not (a.has(sympy.Float) or b.has(sympy.Float))
    if exact:
        ra, rb = a.doit(), b.doit()
        if ra.is_Rational and rb.is_Rational:
            return bool(ra == rb)
    va, vb = _value(a), _value(b)
    if va == vb:
        return True
    if not (va.is_finite and vb.is_finite):
        return False
    if exact:
        return bool(abs(va - vb) <= EXACT_REL_TOL * max(1, abs(va), abs(vb)))
    return bool(abs(va - vb) <= NUMERIC_REL_TOL * max(1, abs(vb)))


def _points(symbols: list, seed: int) -> list[dict]:
    """Three random rational points: exact symbolic simplification can take unbounded time."""
    rng = random.Random(seed)
    return [{sym: sympy.Rational(rng.randint(11, 97), rng.randint(7, 13)) for sym in symbols} for _ in range(3)]


def _equal_expr(a: sympy.Basic, b: sympy.Basic) -> bool:
    if isinstance(a, sympy.Rel) or isinstance(b, sympy.Rel):
        if type(a) is not type(b):
            return False
        return _equal_expr(a.lhs - a.rhs, b.lhs - b.rhs) or _equal_expr(a.lhs, b.lhs) and _equal_expr(a.rhs, b.rhs)
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        return _numbers_equal(a, b)
    for point in _points(symbols, 0):
        try:
            same = _numbers_equal(a.subs(point), b.subs(point))
        except (TypeError, ValueError, ZeroDivisionError):
            return sympy.simplify(a - b) == 0
        if not same:
            return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Structures: matrices, unions of intervals, tuples / intervals, unordered lists


def _split_top(s: str, sep: str) -> list[str]:
    """Split on ``sep`` outside any brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _matrix(s: str) -> list[list[str]] | None:
    m = re.fullmatch(r"\\begin\{[pbv]?matrix\}(.*)\\end\{[pbv]?matrix\}", s)
    if not m:
        return None
    # Rows are separated by one backslash after normalisation; a backslash before a letter starts a command.
    rows = re.split(r"\\(?![A-Za-z])", m.group(1))
    return [row.split("&") for row in rows if row]


def _sequence(s: str) -> tuple[str, str, list[str]] | None:
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        inner = s[1:-1]
        # the outer brackets must enclose the whole string: "(1)(2)" is not a sequence
        if all(depth >= 0 for depth in _depths(inner)) and _depths(inner)[-1:] in ([0], []):
            items = _split_top(inner, ",")
            if len(items) > 1:
                return s[0], s[-1], items
    return None


def _set_items(s: str) -> str | None:
    """``{1,2}`` -> ``1,2`` (a set written with braces), else None."""
    if len(s) >= 2 and s[0] == "{" and s[-1] == "}" and _depths(s[1:-1])[-1:] in ([0], []):
        inner = s[1:-1]
        if all(d >= 0 for d in _depths(inner)) and len(_split_top(inner, ",")) > 1:
            return inner
    return None


def _depths(s: str) -> list[int]:
    depth, out = 0, []
    for ch in s:
        depth += ch in "([{"
        depth -= ch in ")]}"
        out.append(depth)
    return out


def equal(pred: str, gold: str) -> bool:
    """Structural, then symbolic equivalence of two LaTeX answers (raises Unsupported when undecidable)."""
    p, g = normalize_math(pred), normalize_math(gold)
    if p == g:
        return bool(p)
    if not p or not g:
        return False
    set_p, set_g = _set_items(p), _set_items(g)
    if set_p is not None or set_g is not None:  # {1, 2} == {2, 1}: compared as unordered lists
        if set_p is None or set_g is None:
            return False
        p, g = set_p, set_g
    mp, mg = _matrix(p), _matrix(g)
    if mp is not None or mg is not None:
        if mp is None or mg is None or [len(r) for r in mp] != [len(r) for r in mg]:
            return False
        return all(equal(x, y) for rp, rg in zip(mp, mg) for x, y in zip(rp, rg))
    up, ug = _split_top(p, "\\cup"), _split_top(g, "\\cup")
    if len(up) > 1 or len(ug) > 1:
        return len(up) == len(ug) and all(equal(x, y) for x, y in zip(up, ug))
    sp, sg = _sequence(p), _sequence(g)
    if sp is not None or sg is not None:
        if sp is None or sg is None or sp[:2] != sg[:2] or len(sp[2]) != len(sg[2]):
            return False
        return all(equal(x, y) for x, y in zip(sp[2], sg[2]))
    lp, lg = _split_top(p, ","), _split_top(g, ",")
    if len(lp) > 1 or len(lg) > 1:  # "list all solutions": order does not matter, multiplicity does
        if len(lp) != len(lg):
            return False
        remaining = list(lg)
        for x in lp:
            match = next((k for k, y in enumerate(remaining) if equal(x, y)), None)
            if match is None:
                return False
            remaining.pop(match)
        return True
    ep, eg = _split_top(p, "="), _split_top(g, "=")
    if len(ep) == 2 and len(eg) == 2:  # equations: the same up to a non-zero factor ("x+y=1" == "2x+2y=2")
        a = _to_expr(ep[0]) - _to_expr(ep[1])
        b = _to_expr(eg[0]) - _to_expr(eg[1])
        return _proportional(a, b)
    if len(ep) > 1 or len(eg) > 1:
        return False
    return _equal_expr(_to_expr(p), _to_expr(g))


def _proportional(a: sympy.Basic, b: sympy.Basic) -> bool:
    """``a == c * b`` for one constant ``c != 0`` (checked at random points, like :func:`_equal_expr`)."""
    zero = sympy.Integer(0)
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        return _numbers_equal(a, zero) and _numbers_equal(b, zero)
    ratios = []
    for point in _points(symbols, 1):
        va, vb = a.subs(point), b.subs(point)
        if _numbers_equal(vb, zero):
            if not _numbers_equal(va, zero):
                return False
            continue
        ratios.append(va / vb)
    return bool(ratios) and not _numbers_equal(ratios[0], zero) and all(_numbers_equal(r, ratios[0]) for r in ratios)


def handle(request: dict, proto_fds: tuple[int, int] | None = None) -> dict:
    """Helper request: ``{"pred", "gold"}`` -> ``{"equal": bool | None, "why": str}``."""
    try:
        if "expr" in request:
            val = _value(_to_expr(normalize_math(request["expr"])))
            real, imag = (float(part) for part in val.as_real_imag())
            ok = math.isfinite(real) and abs(imag) <= 1e-12 * max(1.0, abs(real))
            return {"value": real if ok else None}
        return {"equal": equal(request["pred"], request["gold"])}
    except Unsupported as err:
        return {"equal": None, "why": str(err)}
    except (TypeError, ValueError, ZeroDivisionError, AttributeError, RecursionError) as err:
        return {"equal": None, "why": f"{type(err).__name__}: {err}"}
