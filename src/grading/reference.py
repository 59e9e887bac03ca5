"""The reference grader: the original GSI code's answer extraction and comparison, decision for decision.

    from src.grading import grade_response
    grade_response("The answer is 18.\\n\\nQuestion: ...\\nThe answer is 7.", "18", "gsm8k", grader="reference")

Reproduces ``src/eval_utils.py`` of Yiwen-Ding/Guided-Self-Improvement@77ba9ed as its ``Query.add_response``
calls it (``get_answer`` then ``compare_answer_with_groundtruth`` without a numeric gold), with the original's
quirks kept on purpose: when a trigger appears twice only the first paragraph is read; answers are compared as
strings, case-insensitively, after removing ``\\text{`` (no numeric tolerance, no option text); a TheoremQA answer
that contains "yes"/"true" is "True", one that contains "no"/"false" (also inside "not", "know") is "False".
PoT: the program is wrapped in a function the way the original wraps it (so ``__name__`` is not
``"__main__"`` and a guarded ``main()`` never runs), its whole stdout is read, and a program that raises, exits
or times out gives "". Differences from the original that remain are listed in docs/FIDELITY.md.

Safety, unlike the original: programs run in the PoT sandbox, never here; the original's ``eval`` of numeric
strings and of ``latex2sympy`` output is replaced by :func:`_value_of_latex` (a small LaTeX parser building the
same sympy objects latex2sympy2 builds, printed by sympy, then evaluated by a whitelist arithmetic walker). That
parser is deliberately not :mod:`src.grading.mathparse`: it reproduces latex2sympy2's quirks (implicit products
associate to the right, any letter but ``e`` fails as the original's ``eval`` raised NameError, trailing text is
ignored), which the project's grammar must not have.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from fractions import Fraction

from src.registry import get_dataset

GRADERS = ("project", "reference")
TRIGGERS = ("The answer is:", "The answer is", "the answer is")
_TRIGGER_RE = re.compile("|".join(TRIGGERS))
_OPTION_GOLDS = ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)")
# the original's answer_clean branch per answer format (it knows the six paper data sets by name)
_BRANCH = {"number": "gsm8k", "math": "math", "choice_upper": "aqua", "choice_lower": "aqua",
           "theoremqa": "theoremqa"}
COMPLETED = "<reference-grader: program completed>"  # written to stderr after the wrapped program returns


# ---------------------------------------------------------------------------------------------------------------
# Comparison


def reference_compare(answer: str, gold: str) -> bool:
    """The original's ``compare_answer_with_groundtruth(answer, gold)`` (no numeric gold: strings only)."""
    answer, gold = str(answer), str(gold)
    if "\\text{" in answer:
        answer = answer.replace("\\text{", "").rstrip("}")
    if "\\text{" in gold:
        gold = gold.replace("\\text{", "").rstrip("}")
    if gold.lower() in _OPTION_GOLDS:
        return gold.lower() in answer.lower()
    return answer.lower() == gold.lower()


# ---------------------------------------------------------------------------------------------------------------
# CoT extraction (answer_clean)


def reference_extract(response: str, dataset: str) -> str:
    """The original's ``get_answer(response, dataset, "cot")``."""
    return _answer_clean(_BRANCH[get_dataset(dataset).answer_format], response)


def _answer_clean(branch: str, pred: str) -> str:
    pred = pred.strip("\n")
    if any(pred.count(t) > 1 for t in TRIGGERS):
        pred = pred.split("\n\n")[0]  # a few-shot style run-on: the first paragraph only
    parts = _TRIGGER_RE.split(pred)
    answer_flag = len(parts) > 1
    if answer_flag:
        pred = parts[-1]
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ")
    if branch == "aqua":
        found = re.findall(r"\b(A|B|C|D|E|F|G|H|I|J)\b", pred.upper())
        candidates = found or [pred.strip().strip(".")]
    elif branch == "gsm8k":
        pred = pred.replace(",", "")
        candidates = [_delete_extra_zero(s) for s in re.findall(r"-?\d+/?\.?\d*", pred)]
    elif branch == "math":
        candidates = [_math_answer(pred, answer_flag)]
    else:
        candidates = [_theoremqa_answer(pred, answer_flag)]
    if not candidates:
        return ""
    chosen = candidates[0] if answer_flag else candidates[-1]
    return chosen.rstrip(".").rstrip("/")


def _python_int_literal(digits: str) -> bool:
    """Whether Python source would accept ``digits`` as an int literal (no leading zeros, ASCII only)."""
    return digits.isascii() and digits.isdigit() and (digits[0] != "0" or set(digits) == {"0"})


def _quotient(s: str):
    """What the original's ``eval`` makes of a ``-?\\d+/\\.?\\d*`` match; None where eval raises."""
    num, den = s.split("/", 1)
    if not _python_int_literal(num.lstrip("-")):
        return None
    try:
        if den.startswith("."):
            if len(den) < 2 or not den[1:].isascii():
                return None
            return int(num) / float(den)
        if not _python_int_literal(den):
            return None
        return int(num) / int(den)
    except (ZeroDivisionError, OverflowError):
        return None


def _delete_extra_zero(s: str) -> str:
    """The original's ``delete_extra_zero``: a number as a float string without trailing zeros."""
    try:
        n = float(s)
    except ValueError:
        n = _quotient(s) if "/" in s else None
        if n is None:
            return s
    text = str(n).rstrip("0")
    return str(int(text.rstrip("."))) if text.endswith(".") else str(float(text))


# ---------------------------------------------------------------------------------------------------------------
# PoT: the original's CodeExecutor, with the program run in the sandbox


def reference_program(code: str) -> str:
    """``code`` wrapped the way the original's ``format_code`` wraps it, for the sandbox to run.

    The original indents every line by two spaces into ``def run_it():`` and execs it with the globals of its
    ``src.code_utils`` module, so the program sees ``__name__ == "src.code_utils"``; a line written to stderr
    after ``run_it()`` returns tells a finished program from one that raised or called ``sys.exit``.
    """
    body = "".join(f"  {line}\n" for line in code.split("\n"))
    return (f"__name__ = 'src.code_utils'\ndef run_it():\n{body}run_it()\n"
            f"import sys\nsys.stderr.write({COMPLETED!r})\n")


def reference_program_output(status: str, stdout: str, stderr: str) -> str:
    """What the original's executor returns: the whole stdout without outer newlines, "" unless it finished."""
    if status != "ok" or not stderr.endswith(COMPLETED):
        return ""
    return stdout.strip("\n")


def reference_grade_batch(responses: list[str], golds: list[str], dataset: str, mode: str, executor) -> list:
    """GradeResults of the reference grader; PoT programs run through ``executor`` (a PotExecutor)."""
    from src.grading import GradeResult  # the package imports this module

    branch = _BRANCH[get_dataset(dataset).answer_format]
    if mode == "cot":
        preds = [_answer_clean(branch, r) for r in responses]
        statuses = ["ok"] * len(preds)
    else:
        runs = executor.run([reference_program(r) for r in responses])
        outputs = [reference_program_output(r.status, r.stdout, r.stderr) for r in runs]
        preds = [_answer_clean(branch, "The answer is " + out) for out in outputs]
        # a program that exited before finishing (sys.exit) gave the original nothing: status "error"
        statuses = [r.status if r.status != "ok" or r.stderr.endswith(COMPLETED) else "error" for r in runs]
    return [GradeResult(p, reference_compare(p, g), s if p or s != "ok" else "no_answer")
            for p, g, s in zip(preds, golds, statuses)]


# --- MATH ------------------------------------------------------------------------------------------------------


def _last_box(text: str) -> str:
    """The original's ``find_box``: what follows the LAST "boxed", up to its closing brace or a "$"."""
    rest = text.split("boxed")[-1]
    if not rest:
        return ""
    if rest[0] != "{":
        return rest.split("$")[0].strip()
    depth, out = 1, []
    for c in rest[1:]:
        depth += (c == "{") - (c == "}")
        if depth == 0:
            break
        out.append(c)
    return "".join(out)


def _math_answer(pred: str, answer_flag: bool) -> str:
    if "boxed" in pred:
        pred = _last_box(pred)
    elif answer_flag:
        pred = pred.split("=")[-1].strip()
        if re.match(r"[\d\.]+\s\D+$", pred):
            pred = pred.split(" ")[0]
    else:
        found = re.findall(r"-?\d*\.?\d+", pred)
        pred = found[-1] if found else ""
    return _normalize_math(pred)


def _braced_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{2}`` -> ``\\frac{1}{2}`` (the original's _fix_fracs)."""
    pieces = s.split("\\frac")
    out = pieces[0]
    for piece in pieces[1:]:
        out += "\\frac"
        if not piece or piece[0] == "{":
            out += piece
            continue
        if len(piece) < 2:
            return s
        a, b, tail = piece[0], piece[1], piece[2:]
        out += "{" + a + "}" + (b + tail if b == "{" else "{" + b + "}" + tail)
    return out


def _slash_to_frac(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def _braced_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    pieces = s.split("\\sqrt")
    return pieces[0] + "".join("\\sqrt{" + p[0] + "}" + p[1:] if p and p[0] != "{" else "\\sqrt" + p
                               for p in pieces[1:])


def _normalize_math(s: str) -> str:
    """The original's ``_strip_string`` (MAmmoTH's MATH normalisation)."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").strip("$").replace("\\$", "")
    if "\\text{ " in s:
        s = s.split("\\text{ ")[0]  # units
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _braced_sqrt(s).replace(" ", "")
    return _slash_to_frac(_braced_fracs(s))


# --- TheoremQA -------------------------------------------------------------------------------------------------


def _clean_units(s: str) -> str:
    """The original's ``clean_units``: pi to 3.14, % to /100, currency and degree signs removed."""
    s = s.replace("\\pi", "π")
    s = re.sub(r"(?<![\d}])\\?π", "3.14", s)
    s = re.sub(r"(\d)(\\?π)", r"\1*3.14", s)
    s = re.sub(r"\{(\\?π)\}", "3.14", s)
    s = re.sub(r"\*(\\?π)", "*3.14", s)
    s = s.replace("%", "/100")
    for sign in ("$", "¥", "°C", " C", "°"):
        s = s.replace(sign, "")
    return s


def _theoremqa_answer(pred: str, answer_flag: bool) -> str:
    low = pred.lower()
    if "yes" in low or "true" in low:
        return "True"
    if "no" in low or "false" in low:
        return "False"
    if any(o in low for o in _OPTION_GOLDS):
        return pred
    if "boxed" in pred:
        pred = _last_box(pred)
    if not answer_flag:
        found = re.findall(r"-?\d*\.?\d+", pred)
        return found[-1] if found else ""
    pred = _clean_units(pred.split("=")[-1].strip())
    value = _value_of_latex(pred)
    if value is not None:
        return value
    if re.match(r"-?[\d\.]+\s\D+$", pred) or re.match(r"-?[\d\.]+\s[^\s]+$", pred):
        return pred.split(" ")[0]
    return pred


# --- latex2sympy2 + eval, without eval ------------------------------------------------------------------------
# latex2sympy2 turns the answer into unevaluated sympy objects; the original prints them and evals the text in
# a namespace holding math's functions, math.e as ``e``, 2.718 as ``E`` and nothing else the printer can emit.

_NAMES = {"E": 2.718, "e": math.e, "pi": math.pi}
_FUNCS = {"sqrt": math.sqrt, "exp": math.exp, "log": math.log, "sin": math.sin, "cos": math.cos,
          "factorial": math.factorial}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.Mod: operator.mod}
_COMPARE_OPS = {ast.Lt: operator.lt, ast.Gt: operator.gt, ast.LtE: operator.le, ast.GtE: operator.ge}
MAX_INT_DIGITS = 4300  # Python's str(int) limit: the original's str(eval(...)) raises past it
MAX_FACTORIAL = 3000  # 3000! has 9,131 digits: past the limit, so refused before computing it


class _Fail(Exception):
    """The original's latex2sympy or eval raised here: its regex fallback decides."""


def _value_of_latex(text: str) -> str | None:
    """``str(eval(str(latex2sympy(text))))`` for the forms handled here; None where the original's try fails."""
    try:
        printed = str(_LatexParser(text).parse())
        return str(_arith(ast.parse(printed, mode="eval").body))
    except (_Fail, SyntaxError, ArithmeticError, ValueError, TypeError, RecursionError):
        return None


def _arith(node: ast.AST):
    """Evaluate sympy's printed form with Python's arithmetic (the original's ``eval``), whitelisted nodes only."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _arith(node.operand)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.Pow) and type(left) is int and type(right) is int and abs(left) > 1 \
                and right * math.log10(abs(left)) > MAX_INT_DIGITS:
            raise _Fail("the original's str() of this power raises (over Python's int digit limit)")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS \
            and not node.keywords:
        args = [_arith(a) for a in node.args]
        if node.func.id == "factorial" and args and isinstance(args[0], int) and args[0] > MAX_FACTORIAL:
            raise _Fail("the original's str() of this factorial raises (over Python's int digit limit)")
        return _FUNCS[node.func.id](*args)
    if isinstance(node, ast.Compare):  # a relation latex2sympy2 keeps unevaluated ("5 > 3")
        left = _arith(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE_OPS:
                raise _Fail("comparison")
            right = _arith(right_node)
            if not _COMPARE_OPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.List):
        return [_arith(e) for e in node.elts]
    raise _Fail(f"the original's eval fails on {type(node).__name__}")


_TOKEN_RE = re.compile(
    r"\s+|(?P<enot>\d+(?:,\d{3})*(?:\.\d*)?E[+-]?\d+)|(?P<num>\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)"
    r"|(?P<cmd>\\[a-zA-Z]+|\\[{}\[\]|])|(?P<letter>[a-zA-Z])|(?P<op>[-+*/^!(){}\[\],_<>:])")
_SPACES = (r"\displaystyle", r"\qquad", r"\quad", "~", r"\,", "$")


class _LatexParser:
    """A recursive-descent parser for the part of latex2sympy2's grammar that numeric answers use.

    It builds the same unevaluated sympy objects (``Mul``/``Add``/``Pow`` with ``evaluate=False``, numbers as
    ``Rational``), so sympy prints the same text the original evals. Anything else raises ``_Fail``.
    """

    def __init__(self, text: str):
        import sympy

        self.sp = sympy
        text = text.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
        for s in _SPACES:
            text = text.replace(s, " ")
        for cmd, plain in (("\\left(", "("), ("\\right)", ")"), ("\\left[", "["), ("\\right]", "]")):
            text = text.replace(cmd, plain)
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            if not m:
                raise _Fail(f"unknown character {text[pos]!r}")
            if m.lastgroup:
                self.tokens.append((m.lastgroup, m.group(m.lastgroup)))
            pos = m.end()
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str]:
        return self.tokens[self.i + k] if self.i + k < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "end" or (value is not None and tok[1] != value):
            raise _Fail(f"expected {value!r}")
        self.i += 1
        return tok

    def parse(self):
        """A list (``[a, b]``, ``{a, b}`` or ``a, b``) or one relation; like latex2sympy2's parser (no EOF rule),
        whatever follows a complete parse is ignored."""
        close = {"[": "]", "{": "}"}
        first = self.peek()[1]
        if first in close and self.bracket_holds_comma():
            self.take()
            items = self.items()
            self.take(close[first])
            return items
        items = self.items()
        if self.peek()[0] == "cmd":  # "5 \\text{ m}", "5 \\pm 1": commands it does not know make it fail
            raise _Fail(f"unsupported {self.peek()[1]!r}")
        return items if len(items) > 1 else items[0]

    def bracket_holds_comma(self) -> bool:
        depth = 0
        for _, v in self.tokens:
            depth += (v in ("(", "[", "{")) - (v in (")", "]", "}"))
            if depth == 0:
                return False
            if v == "," and depth == 1:
                return True
        return False

    def items(self) -> list:
        out = [self.relation()]
        while self.peek()[1] == ",":
            self.take()
            out.append(self.relation())
        return out

    def relation(self):
        ops = {"<": "StrictLessThan", ">": "StrictGreaterThan", r"\leq": "LessThan", r"\le": "LessThan",
               r"\geq": "GreaterThan", r"\ge": "GreaterThan"}
        left = self.expr()
        while self.peek()[1] in ops:
            rel = getattr(self.sp, ops[self.take()[1]])
            left = rel(left, self.expr(), evaluate=False)
        return left

    def expr(self):
        sp = self.sp
        left = self.term()
        while self.peek()[1] in ("+", "-"):
            sign = self.take()[1]
            right = self.term()
            if sign == "-":
                right = -right if right.func.is_Number else self.mul_flat(sp.Integer(-1), right)
            left = self.add_flat(left, right)
        return left

    def add_flat(self, a, b):
        args = [*(a.args if a.is_Add else [a]), *(b.args if b.is_Add else [b])]
        return self.sp.Add(*args, evaluate=False)

    def mul_flat(self, a, b):
        args = [*(a.args if a.is_Mul else [a]), *(b.args if b.is_Mul else [b])]
        return self.sp.Mul(*args, evaluate=False)

    def term(self):
        sp = self.sp
        left = self.unary()
        while self.peek()[1] in ("*", "/", ":", r"\times", r"\cdot", r"\div"):
            op = self.take()[1]
            right = self.unary()
            if op in ("/", ":", r"\div"):
                left = sp.Mul(left, sp.Pow(right, -1, evaluate=False), evaluate=False)
            else:
                left = self.mul_flat(left, right)
        return left

    def unary(self):
        if self.peek()[1] == "+":
            self.take()
            return self.unary()
        if self.peek()[1] == "-":
            self.take()
            inner = self.unary()
            return -inner if inner.func.is_Number else self.mul_flat(self.sp.Integer(-1), inner)
        factors = [self.postfix()]
        while self.starts_factor():
            factors.append(self.postfix())
        out = factors[-1]
        for f in reversed(factors[:-1]):  # implicit products associate to the right, as in latex2sympy2
            out = self.mul_flat(f, out)
        return out

    def starts_factor(self) -> bool:
        kind, v = self.peek()
        return kind in ("num", "enot", "letter") or v in ("(", "{", "[", r"\frac", r"\sqrt", r"\ln", r"\log",
                                                           r"\pi")

    def postfix(self):
        base = self.power()
        while self.peek()[1] == "!":
            self.take()
            base = self.sp.factorial(base, evaluate=False)
        return base

    def power(self):
        if self.peek() == ("letter", "e") and self.peek(1)[1] == "^":
            self.take()
            self.take("^")
            return self.sp.exp(self.exponent())
        base = self.atom()
        while self.peek()[1] == "^":
            self.take()
            base = self.sp.Pow(base, self.exponent(), evaluate=False)
        return base

    def exponent(self):
        if self.peek()[1] == "{":
            return self.group("{", "}")
        kind, _ = self.peek()
        if kind not in ("num", "letter"):
            raise _Fail("exponent")
        return self.atom()

    def group(self, open_: str, close: str):
        self.take(open_)
        inner = self.expr()
        self.take(close)
        return inner

    def atom(self):
        sp = self.sp
        kind, v = self.peek()
        if kind in ("num", "enot"):
            self.take()
            return sp.Rational(*_fraction(v.replace(",", "")))
        if kind == "letter":
            self.take()
            if v == "e":
                return sp.E
            raise _Fail("a variable: the original's eval raises NameError")
        groups = {"(": ")", "{": "}", "[": "]"}
        if v in groups:
            return self.group(v, groups[v])
        if v == r"\frac":
            self.take()
            top, bottom = self.group("{", "}"), self.group("{", "}")
            return sp.Mul(top, sp.Pow(bottom, -1, evaluate=False), evaluate=False)
        if v == r"\sqrt":
            return self.sqrt()
        if v == r"\binom":
            self.take()
            n, k = self.group("{", "}"), self.group("{", "}")
            if any(abs(x) > MAX_FACTORIAL for x in (n, k) if x.is_Number):
                raise _Fail("binomial too large to compute here")
            return sp.binomial(n, k)
        if v in (r"\ln", r"\log"):
            return self.log()
        if v in (r"\sin", r"\cos", r"\exp"):
            return self.function()
        if v == r"\pi":
            self.take()
            return sp.pi
        raise _Fail(f"unsupported {v!r}")

    def sqrt(self):
        sp = self.sp
        self.take()
        if self.peek()[1] == "[":
            root = self.group("[", "]")
            return sp.Pow(self.group("{", "}"), 1 / root, evaluate=False)
        return sp.Pow(self.group("{", "}"), sp.S.Half, evaluate=False)

    def argument(self):
        """A function's argument: a parenthesised or braced group, else a product (``\\ln 2 \\cdot 3``)."""
        if self.peek()[1] in ("(", "{"):
            return self.group(self.peek()[1], ")" if self.peek()[1] == "(" else "}")
        return self.term()

    def log(self):
        sp = self.sp
        name = self.take()[1]
        base = sp.E if name == r"\ln" else sp.Integer(10)
        if self.peek()[1] == "_":
            self.take()
            base = self.exponent()
        return sp.log(self.argument(), base, evaluate=False)

    def function(self):
        sp = self.sp
        name = self.take()[1]
        power = None
        if self.peek()[1] == "^":
            self.take()
            power = self.exponent()
        if name == r"\exp":
            value = sp.exp(self.argument())
        else:
            value = getattr(sp, name[1:])(self.argument(), evaluate=False)
        if power is None:
            return value
        if power == -1:
            raise _Fail("inverse trigonometric function")
        return sp.Pow(value, power, evaluate=False)


def _fraction(token: str) -> tuple[int, int]:
    """Numerator and denominator of a decimal or E-notation token (latex2sympy2 reads numbers as Rational)."""
    mantissa, _, exp = token.partition("E")
    value = Fraction(mantissa if not mantissa.endswith(".") else mantissa + "0")
    if exp:
        value *= Fraction(10) ** int(exp)
    return value.numerator, value.denominator
