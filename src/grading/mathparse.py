"""A parser for answer expressions that never evaluates its input: LaTeX (and Python-style program output such as
``sqrt(2)/2`` or ``x**2 + 1``) to a sympy expression built only through constructors.

Model answers are untrusted. sympy's ``parse_expr``/``sympify`` run ``eval`` on the text (an answer
``exec("...")`` runs as Python), so this module never hands text to sympy: a whitelist tokenizer turns the text
into numbers, names and operators, and a recursive-descent parser builds ``Integer``/``Rational``/``Float``/
``Symbol``/``Add``/``Mul``/``Pow`` and a fixed table of functions, all unevaluated (``evaluate=False``) so that the
size guards in :mod:`src.grading.symbolic` run before any arithmetic. Text outside the grammar raises
:class:`Unsupported`; no name is ever looked up in a namespace, so ``__import__``, ``getattr`` or ``lambda`` are
at most symbols (``lambda`` and dunder names are refused outright).

Grammar (loosest first): relation = sum [relop sum]; sum = term {(+|-) term}; term = signed {(*|/|\\cdot|
\\times|\\div) signed | signed (implicit product)}; signed = (+|-) signed | power; power = postfix [^ signed];
postfix = atom {!}; atom = number | name | (sum) | {sum} | function | \\frac{}{} | \\binom{}{} | \\sqrt[n]{}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

import sympy

MAX_DIGITS = 10_000  # longest number literal (and largest |exponent| of 1e-notation) accepted
MAX_TOKENS = 100_000  # answers are short (callers send at most 400 characters); this only bounds memory


class Unsupported(ValueError):
    """The answer cannot be compared symbolically (outside the grammar, or too large to evaluate safely)."""


def _func(f):
    return lambda *args: f(*args, evaluate=False)


def _log(x, base=None):
    if base is None:
        return sympy.log(x, evaluate=False)
    return sympy.Mul(sympy.log(x, evaluate=False), sympy.Pow(sympy.log(base, evaluate=False), -1, evaluate=False),
                     evaluate=False)


# name -> (constructor, number of arguments accepted); the only callables an answer can reach
_FUNCTIONS = {
    "sqrt": (lambda x: sympy.Pow(x, sympy.Rational(1, 2), evaluate=False), (1,)),
    "log": (_log, (1, 2)), "ln": (_log, (1,)), "exp": (_func(sympy.exp), (1,)),
    "sin": (_func(sympy.sin), (1,)), "cos": (_func(sympy.cos), (1,)), "tan": (_func(sympy.tan), (1,)),
    "cot": (_func(sympy.cot), (1,)), "sec": (_func(sympy.sec), (1,)), "csc": (_func(sympy.csc), (1,)),
    "arcsin": (_func(sympy.asin), (1,)), "arccos": (_func(sympy.acos), (1,)), "arctan": (_func(sympy.atan), (1,)),
    "asin": (_func(sympy.asin), (1,)), "acos": (_func(sympy.acos), (1,)), "atan": (_func(sympy.atan), (1,)),
    "factorial": (_func(sympy.factorial), (1,)), "binomial": (_func(sympy.binomial), (2,)),
    "Abs": (_func(sympy.Abs), (1,)), "abs": (_func(sympy.Abs), (1,)),
}
_CONSTANTS = {"pi": sympy.pi, "oo": sympy.oo, "infty": sympy.oo, "I": sympy.I, "i": sympy.I, "E": sympy.E,
              "e": sympy.E}
_GREEK = frozenset(("alpha", "beta", "gamma", "delta", "theta", "phi", "varphi", "psi", "omega", "lambda", "mu",
                    "sigma", "rho", "tau", "epsilon", "varepsilon", "eta", "kappa", "nu", "xi", "zeta", "chi"))
_OPERATOR_COMMANDS = {"cdot": "*", "times": "*", "div": "/", "le": "<=", "leq": "<=", "ge": ">=", "geq": ">=",
                      "neq": "!=", "ne": "!=", "lt": "<", "gt": ">"}
_COMMANDS = ({"frac", "binom", "sqrt"} | set(_OPERATOR_COMMANDS) | (set(_FUNCTIONS) - {"Abs", "abs", "factorial",
             "binomial", "asin", "acos", "atan"}) | {"pi", "infty"} | _GREEK)
_RELATIONS = {"<=": sympy.LessThan, ">=": sympy.GreaterThan, "<": sympy.StrictLessThan,
              ">": sympy.StrictGreaterThan, "!=": sympy.Unequality}
_COMMAND = re.compile(r"\\([A-Za-z]+)")
_NAME = re.compile(r"[A-Za-z]+")
_NUMBER = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?")
_PUNCT = ("**", "<=", ">=", "!=", "+", "-", "*", "/", "^", "!", "(", ")", "{", "}", "[", "]", ",", "<", ">", "_")


@dataclass(frozen=True)
class Token:
    kind: str  # "num" | "name" | "cmd" | "op"
    text: str


def _command(s: str, i: int) -> tuple[Token, int]:
    """``\\name`` at ``s[i]``: the longest known command that prefixes the letters (``\\pia`` is ``\\pi a``)."""
    m = _COMMAND.match(s, i)
    if not m:
        raise Unsupported(f"stray backslash at {i}")
    letters = m.group(1)
    for end in range(len(letters), 0, -1):
        if letters[:end] in _COMMANDS:
            name = letters[:end]
            if name in _OPERATOR_COMMANDS:
                return Token("op", _OPERATOR_COMMANDS[name]), i + 1 + end
            return Token("cmd", name), i + 1 + end
    raise Unsupported(f"unknown command \\{letters}")


def tokenize(s: str) -> list[Token]:
    """Whitelist tokenizer: numbers, letter names, known ``\\commands`` and the operators in ``_PUNCT``."""
    tokens: list[Token] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if len(tokens) > MAX_TOKENS:
            raise Unsupported("too long")
        if ch.isspace():
            i += 1
        elif ch.isdigit() or (ch == "." and s[i + 1:i + 2].isdigit()):
            m = _NUMBER.match(s, i)
            tokens.append(Token("num", m.group(0)))
            i = m.end()
        elif ch.isascii() and ch.isalpha():
            m = _NAME.match(s, i)
            tokens.append(Token("name", m.group(0)))
            i = m.end()
        elif ch == "\\":
            tok, i = _command(s, i)
            tokens.append(tok)
        else:
            op = next((p for p in _PUNCT if s.startswith(p, i)), None)
            if op is None:
                raise Unsupported(f"unexpected character {ch!r}")
            tokens.append(Token("op", "^" if op == "**" else op))
            i += len(op)
    return tokens


def _number(text: str) -> sympy.Expr:
    m = _NUMBER.fullmatch(text)
    mantissa, exponent = m.group(1), m.group(2)
    if len(mantissa) > MAX_DIGITS or (exponent and abs(int(exponent)) > MAX_DIGITS):
        raise Unsupported("number too large")
    if exponent is None and "." not in mantissa:
        return sympy.Integer(int(mantissa))
    value = Fraction(text)  # exact; a decimal stays marked as inexact by being a Float
    digits = max(15, len(mantissa) + 2)
    return sympy.Float(sympy.Rational(value.numerator, value.denominator), digits)


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.toks = tokens
        self.pos = 0

    def peek(self) -> Token | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise Unsupported("unexpected end")
        self.pos += 1
        return tok

    def accept(self, text: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.text == text:
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise Unsupported(f"expected {text!r}")

    def relation(self) -> sympy.Basic:
        left = self.sum()
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.text in _RELATIONS:
            self.pos += 1
            return _RELATIONS[tok.text](left, self.sum(), evaluate=False)
        return left

    def sum(self) -> sympy.Expr:
        terms = [self.term()]
        while True:
            if self.accept("+"):
                terms.append(self.term())
            elif self.accept("-"):
                terms.append(sympy.Mul(-1, self.term(), evaluate=False))
            else:
                return terms[0] if len(terms) == 1 else sympy.Add(*terms, evaluate=False)

    def _starts_atom(self) -> bool:
        tok = self.peek()
        if tok is None:
            return False
        return tok.kind in ("num", "name", "cmd") or (tok.kind == "op" and tok.text in ("(", "{"))

    def term(self) -> sympy.Expr:
        factors = [self.signed()]
        while True:
            if self.accept("*"):
                factors.append(self.signed())
            elif self.accept("/"):
                factors.append(sympy.Pow(self.signed(), -1, evaluate=False))
            elif self._starts_atom():  # implicit product: 2x, 2\pi, (x+1)(x-1)
                factors.append(self.power())
            else:
                return factors[0] if len(factors) == 1 else sympy.Mul(*factors, evaluate=False)

    def signed(self) -> sympy.Expr:
        if self.accept("-"):
            return sympy.Mul(-1, self.signed(), evaluate=False)
        if self.accept("+"):
            return self.signed()
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.postfix()
        if self.accept("^"):
            return sympy.Pow(base, self.signed(), evaluate=False)
        return base

    def postfix(self) -> sympy.Expr:
        expr = self.atom()
        while self.accept("!"):
            expr = sympy.factorial(expr, evaluate=False)
        return expr

    def group(self) -> sympy.Expr:
        """A LaTeX argument: ``{...}``, or else one character (``\\log_28`` is log base 2 of 8)."""
        if self.accept("{"):
            inner = self.sum()
            self.expect("}")
            return inner
        tok = self.peek()
        if tok is not None and tok.kind in ("num", "name") and len(tok.text) > 1 and tok.text[0] != ".":
            self.toks[self.pos] = Token(tok.kind, tok.text[1:])
            return self.atom_of(Token(tok.kind, tok.text[0]))
        return self.atom()

    def atom(self) -> sympy.Expr:
        return self.atom_of(self.take())

    def atom_of(self, tok: Token) -> sympy.Expr:
        if tok.kind == "num":
            if self.peek() == Token("op", "_"):
                raise Unsupported("number with a base subscript")
            return _number(tok.text)
        if tok.kind == "op" and tok.text in ("(", "{"):
            inner = self.sum()
            self.expect(")" if tok.text == "(" else "}")
            return inner
        if tok.kind == "cmd":
            return self.command(tok.text)
        if tok.kind == "name":
            return self.name(tok.text)
        raise Unsupported(f"unexpected {tok.text!r}")

    def command(self, name: str) -> sympy.Expr:
        if name in ("frac", "binom"):
            a, b = self.group(), self.group()
            if name == "binom":
                return sympy.binomial(a, b, evaluate=False)
            return sympy.Mul(a, sympy.Pow(b, -1, evaluate=False), evaluate=False)
        if name == "sqrt":
            if self.accept("["):
                index = self.sum()
                self.expect("]")
                return sympy.Pow(self.group(), sympy.Pow(index, -1, evaluate=False), evaluate=False)
            return _FUNCTIONS["sqrt"][0](self.group() if self.peek() != Token("op", "(") else self.atom())
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        if name in _GREEK:
            return sympy.Symbol(name)
        return self.apply(name, latex=True)

    def apply(self, name: str, latex: bool) -> sympy.Expr:
        """A function call: ``f(a, b)``; in LaTeX also ``\\sin x``, ``\\sin^2 x``, ``\\log_2 8``."""
        func, arities = _FUNCTIONS[name]
        base = power = None
        if latex and self.accept("_"):
            base = self.group()
        if latex and self.accept("^"):
            power = self.group()
        if self.accept("("):
            args = [self.sum()]
            while self.accept(","):
                args.append(self.sum())
            self.expect(")")
        elif latex:
            args = [self.postfix()]
        else:
            raise Unsupported(f"{name} without arguments")
        if base is not None:
            args.append(base)
        if len(args) not in arities:
            raise Unsupported(f"{name} takes {arities} arguments")
        value = func(*args)
        return sympy.Pow(value, power, evaluate=False) if power is not None else value

    def name(self, text: str) -> sympy.Expr:
        if text in _FUNCTIONS and self.peek() == Token("op", "("):
            return self.apply(text, latex=False)
        if text in _CONSTANTS:
            return _CONSTANTS[text]
        if text == "lambda" or text in _FUNCTIONS:
            raise Unsupported(f"{text} is not a value")
        if self.accept("_"):  # x_1, a_n: one symbol
            sub = self.take()
            if sub.kind not in ("num", "name"):
                raise Unsupported("subscript")
            return sympy.Symbol(f"{text}_{sub.text}")
        return sympy.Symbol(text)


def parse(text: str) -> sympy.Basic:
    """The sympy expression (or one relation such as ``x \\le 3``) written in ``text``; raises Unsupported."""
    if "__" in text:
        raise Unsupported("dunder")
    tokens = tokenize(text)
    if not tokens:
        raise Unsupported("empty")
    parser = _Parser(tokens)
    expr = parser.relation()
    if parser.peek() is not None:
        raise Unsupported(f"unexpected {parser.peek().text!r}")
    return expr
