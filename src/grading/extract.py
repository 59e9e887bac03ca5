"""Final-answer extraction from a CoT response or a PoT program's output, per answer format.

CoT: the text after the LAST "The answer is" trigger (up to the end of that line); inside it a ``\\boxed{...}``
wins. Without a trigger: the last ``\\boxed{...}``, then (numbers, MATH, TheoremQA) the last number in the
response. PoT: the last non-empty line the program printed, with library print formats undone first
(``np.float64(18.0)`` -> ``18.0``, float noise rounded to 10 significant digits).
"""

from __future__ import annotations

import ast
import re

from src.grading.compare import numbers_equal, parse_number

OPTION_REL_TOL = 1e-3  # "2.333333" names option "7/3": options are few and far apart, and must match uniquely
TRIGGER_RE = re.compile(r"the answer is", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?(?:/\d+(?:\.\d+)?)?|-?\.\d+")
_LETTER_PATTERNS = (
    r"\(\s*([A-Ea-e])\s*\)",  # (C)
    r"(?<![A-Za-z])([A-Ea-e])\s*\)",  # C)  c )
    r"(?:option|choice|answer)\s*:?\s*([A-Ea-e])(?![A-Za-z])",  # option C
)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces (None if absent/unclosed)."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        m = re.match(r"\\boxed\s+(\S+)", text[start:])  # "\boxed 5"
        return m.group(1).rstrip("$.") if m else None
    depth = 0
    for i in range(brace, len(text)):
        depth += text[i] == "{"
        depth -= text[i] == "}"
        if depth == 0:
            return text[brace + 1:i]
    return None


def answer_segment(response: str) -> str | None:
    """The text after the last trigger, up to the end of its line (the next line when the trigger ends one)."""
    matches = list(TRIGGER_RE.finditer(response))
    if not matches:
        return None
    rest = response[matches[-1].end():].lstrip(" \t:")
    lines = rest.split("\n")
    seg = next((line for line in lines if line.strip()), "") if not lines[0].strip() else lines[0]
    if "\\boxed" in seg and last_boxed(seg) is None:
        seg = rest  # a multi-line boxed answer
    return seg.strip()


def _strip_math(seg: str) -> str:
    seg = seg.strip()
    boxed = last_boxed(seg)
    if boxed is not None:
        return boxed.strip()
    seg = seg.strip("$ ").rstrip(".").strip().strip("$").strip()
    seg = re.sub(r"^\\\(|\\\)$", "", seg).strip()
    return seg


def first_number(text: str) -> str | None:
    m = _NUMBER_RE.search(text.replace("−", "-"))
    return m.group(0).replace(",", "") if m else None


def last_number(text: str) -> str | None:
    found = _NUMBER_RE.findall(text.replace("−", "-"))
    return found[-1].replace(",", "") if found else None


_HEDGE_GAP_RE = re.compile(r",|,?\s*(?:or|or maybe|or perhaps|or possibly|to|and)|[-–~]", re.IGNORECASE)


def stated_number(seg: str) -> str:
    """The number a final-answer segment states. Alternatives or a range ("12 or 13", "between 12 and 13",
    "12-13", "12, 13, 14 or 15", a bare list "12, 13") come back joined with " or ", which never grades as
    correct: taking the first number would accept a hedge."""
    text = seg.replace("−", "-")
    found = list(_NUMBER_RE.finditer(text))
    if not found:
        return ""
    chain, connective = [found[0]], False
    for cur in found[1:]:
        gap = text[chain[-1].end():cur.start()].strip()
        if gap == "" and cur.group(0).startswith("-"):  # "12-13"
            connective = True
        elif _HEDGE_GAP_RE.fullmatch(gap):
            connective = connective or gap != ","
        else:
            break
        chain.append(cur)
    numbers = [m.group(0).replace(",", "") for m in chain]
    same = len({parse_number(n) for n in numbers}) == 1  # "1/2 or 0.5" names one value twice
    if len(numbers) > 1 and not same and (connective or not text[chain[-1].end():].strip(" .")):
        return " or ".join(numbers)
    return numbers[0]


def extract_number(response: str, from_program: bool = False) -> str:
    seg = normalize_program_output(response) if from_program else answer_segment(response)
    if seg is None:
        boxed = last_boxed(response)
        return (stated_number(boxed) if boxed is not None else last_number(response)) or ""
    boxed = last_boxed(seg)
    if boxed is not None:
        seg = boxed
    seg = re.sub(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", seg)
    seg = seg.replace("\\$", "").replace("$", "").replace("\\!", "")  # "-$5" is -5
    if "=" in seg:  # "5 + 3 = 8": the result is on the right of the last "="
        seg = seg.rsplit("=", 1)[1]
    return stated_number(seg)


def extract_math(response: str, from_program: bool = False) -> str:
    if from_program:
        return normalize_program_output(response)
    seg = answer_segment(response)
    if seg is not None:
        return _strip_math(seg)
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed.strip()
    return last_number(response) or ""


def parse_options(options: list | str | dict | None) -> dict[str, str]:
    """Options as ``{letter: text}`` (a dict passes through).
    ``["A)5", "B)6"]`` or ``"a ) 38 , b ) 27.675"`` -> ``{"A": "5", "B": "6"}`` (letters upper-cased)."""
    if not options:
        return {}
    if isinstance(options, dict):
        return {str(k).upper(): str(v) for k, v in options.items()}
    if isinstance(options, str) and options.lstrip().startswith("["):
        try:  # a list stored as its Python text: "['a ) 2 : 3', 'b ) 4 : 5']"
            options = ast.literal_eval(options)
        except (ValueError, SyntaxError):
            options = options.strip().strip("[]")
    if isinstance(options, str):
        parts = re.split(r"(?:^|,)\s*([a-eA-E])\s*\)\s*", options)
        return {parts[i].upper(): parts[i + 1].strip().rstrip(",").strip() for i in range(1, len(parts) - 1, 2)}
    out = {}
    for opt in options:
        m = re.match(r"\s*\(?([A-Za-z])\s*\)\s*(.*)", str(opt), re.DOTALL)
        if m:
            out[m.group(1).upper()] = m.group(2).strip()
    return out


def choice_letters(seg: str) -> list[str]:
    """Distinct option letters named in ``seg`` (upper-cased, in order of appearance)."""
    s = seg.strip().rstrip(".").strip()
    found: list[tuple[int, str]] = []
    if re.fullmatch(r"\(?\s*[A-Ea-e]\s*\)?\s*[.:]?", s):
        found.append((0, re.search(r"[A-Ea-e]", s).group(0)))
    for pattern in _LETTER_PATTERNS:
        found += [(m.start(1), m.group(1)) for m in re.finditer(pattern, s, re.IGNORECASE)]
    # an upper-case letter standing alone ("E", "E.", "is E because") names an option too; "8C3" does not
    found += [(m.start(1), m.group(1)) for m in re.finditer(r"(?<![A-Za-z0-9'])([A-E])(?![A-Za-z0-9'])", s)]
    letters: list[str] = []
    for _, letter in sorted(found):
        if letter.upper() not in letters:
            letters.append(letter.upper())
    return letters


# Without a trigger, only the closing line is read, and only where it names the answer explicitly.
_KW = r"(?i:answer|ans|option|choice|opt)"
# Bounded repetitions only: nested unbounded ones backtrack exponentially on lines like "answer::::::...".
_FALLBACK_PATTERNS = (
    # "Answer: C", "AnswerB", "correct answer - D", "Answer will be C", "answer choice E", "(optionB"
    _KW + r"\W{0,6}(?:(?i:is|was|will be|should be|must be|would be|choice|option)\W{0,6}){0,3}"
    r"\(?([A-E])\)?(?![A-Za-z0-9])",
    # "D is the answer", "C is correct answer", "B it is", "Choice A is correct"
    r"(?<![A-Za-z0-9'])\(?([A-E])\)?\s{1,6}(?i:is|it is)\b",
    # "Hence C.", "So, answer is D", "Therefore E"
    r"(?i:hence|so|thus|therefore|=>|imo)[\s,:'\"]{1,6}(?:(?i:the|answer|is|option|choice)[\s,:'\"]{1,6}){0,4}"
    r"\(?([A-E])\)?(?![A-Za-z0-9])",
    # "= 24=A", "ans=D", "E=60"
    r"=\s{0,6}([A-E])(?![A-Za-z0-9])",
    # "C ans ....", "B answer"
    r"(?<![A-Za-z0-9'])\(?([A-E])\)?\s{1,6}(?i:ans|answer)\b",
    # a letter glued to the end of the line: "... less than m+d.D"
    r"(?<=[.)])\s{0,6}([A-E])\.?$",
)


def fallback_choice(text: str, options: dict[str, str] | None = None) -> str:
    """The option a trigger-less response's last line names ("Answer: C", "D is the answer", "Hence B"), or
    else the one option whose value is the last number of that line (the last-number fallback)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    m = re.fullmatch(r"\W{0,4}([A-E])\)?[\W\d]{0,20}", last)  # "B", "(D)", "D. 220", "C 85%"
    if m:
        return m.group(1)
    for line in reversed(lines[-3:]):  # "My Answer is E.\nr=10\ns=3": the statement may precede a check
        hits = sorted((m.start(1), m.group(1)) for p in _FALLBACK_PATTERNS for m in re.finditer(p, line))
        if hits:
            return hits[-1][1]
    num = last_number(last.rsplit("=", 1)[-1])
    if options and num is not None:
        return _match_option_text(num, options) or ""
    return ""


def options_from_question(question: str) -> dict[str, str]:
    """Options written into a question ("Answer Choices: (A) 35 (B) 25 ..." or "a ) 38 , b ) 27.675")."""
    m = re.search(r"Answer Choices:(.*)$", question, re.DOTALL)
    if not m:
        return {}
    text = m.group(1).strip()
    if re.match(r"\(\s*[A-E]\s*\)", text):
        parts = re.split(r"\(\s*([A-E])\s*\)", text)
        return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    return parse_options(text)


def _value_with_unit(text: str):
    """The number in "40", "$1,500", "12 min" or "24 kmph" (a number and at most a short unit word)."""
    value = parse_number(text) if text else None
    if value is None and text:
        num = first_number(text)
        rest = text.replace(num or "", "", 1).strip(" .$%") if num else text
        value = parse_number(num) if num and re.fullmatch(r"[A-Za-z ]{0,12}", rest) else None
    return value


def _option_key(text: str) -> str:
    return re.sub(r"\s+", "", text).lower().rstrip(".")


def _match_option_text(seg: str, options: dict[str, str]) -> str | None:
    """The letter whose option text is the answer: the same text, or else the same number (with at most a
    short unit word: "40 inches" names option "40"), when exactly one option matches."""
    if not seg:
        return None
    same_text = [letter for letter, text in options.items() if text and _option_key(text) == _option_key(seg)]
    if same_text:
        return same_text[0] if len(same_text) == 1 else None
    seg = seg.rsplit("=", 1)[-1].strip() if "=" in seg else seg  # "119 - 31 = 88": the result
    value = _value_with_unit(seg)
    if value is None:
        return None
    hits = [letter for letter, text in options.items()
            if (opt := _value_with_unit(text)) is not None and numbers_equal(value, opt, OPTION_REL_TOL)]
    return hits[0] if len(hits) == 1 else None


def extract_choice(response: str, options: list | str | None = None, from_program: bool = False) -> str:
    """The option letter (upper-cased; several letters joined with commas, which never grade as correct)."""
    seg = normalize_program_output(response) if from_program else answer_segment(response)
    if seg is None:
        boxed = last_boxed(response)
        if boxed is None:
            return fallback_choice(response, parse_options(options))
        seg = boxed
    boxed = last_boxed(seg)
    if boxed is not None:
        seg = boxed
    parsed = parse_options(options)
    seg_text = seg.strip().rstrip(".").strip()
    bare_letter = re.fullmatch(r"\(?\s*[A-Ea-e]\s*\)?", seg_text) is not None  # "B" names option B, not "b"
    exact = [k for k, text in parsed.items() if text and _option_key(text) == _option_key(seg_text)]
    if len(exact) == 1 and not bare_letter:  # "(a + b)(a - b)" is an option's text, not options a and b
        return exact[0]
    letters = choice_letters(seg)
    if parsed and not letters:
        by_text = _match_option_text(seg_text, parsed)
        if by_text is not None:
            return by_text
    if not letters and not from_program:  # "The answer is 8C3 = 56.\nD": the letter follows on a later line
        after = response[list(TRIGGER_RE.finditer(response))[-1].end():] if TRIGGER_RE.search(response) else ""
        return fallback_choice(after, parsed)
    return ",".join(letters)


def extract_theoremqa(response: str, from_program: bool = False) -> str:
    seg = normalize_program_output(response) if from_program else answer_segment(response)
    if seg is None:
        boxed = last_boxed(response)
        return boxed.strip() if boxed is not None else (last_number(response) or "")
    return _strip_math(seg)


# ---------------------------------------------------------------------------------------------------------------
# Program output

_NP_WRAPPER_RE = re.compile(r"\b(?:np|numpy)\.(?:float|int|uint|complex|bool|str)_?\d*\(([^()]*)\)")
_FRACTION_RE = re.compile(r"\bFraction\((-?\d+),\s*(-?\d+)\)")
_FLOAT_RE = re.compile(r"(?<![\w.])-?\d+\.\d+(?:[eE][+-]?\d+)?(?![\w.])|(?<![\w.])-?\d+[eE][+-]?\d+(?![\w.])")


def _round_float(m: re.Match) -> str:
    text = m.group(0)
    try:
        value = float(text)
    except ValueError:
        return text
    rounded = f"{value:.10g}"  # 18.000000000001 -> 18; 0.30000000000000004 -> 0.3
    if "e" not in rounded and "." not in rounded and abs(value) < 1e16:
        rounded += ".0"
    return rounded


def normalize_program_output(stdout: str) -> str:
    """The answer a program printed: its last non-empty line, independent of numpy/Fraction print formats."""
    lines = [line.strip() for line in stdout.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    out = lines[-1]
    for _ in range(3):  # nested wrappers: np.float64(np.int64(3))
        out = _NP_WRAPPER_RE.sub(r"\1", out)
    out = _FRACTION_RE.sub(r"\1/\2", out)
    return _FLOAT_RE.sub(_round_float, out)


# A line that opens a new question: "Question: ...", "### Question:", "Problem:", "Q:" (a base model's run-on).
_NEW_QUESTION_RE = re.compile(r"^[ \t]*(?:#+[ \t]*)?(?:question|problem|q)[ \t]*:", re.IGNORECASE | re.MULTILINE)


def drop_runaway(response: str) -> str:
    """The response up to the first line that opens a new question after some content of its own.

    A model that answers and then writes a new "Question: ... The answer is ..." has answered once: the text
    after the new question belongs to another problem and is never graded (self-corrections before it are).
    """
    for m in _NEW_QUESTION_RE.finditer(response):
        if response[:m.start()].strip():
            return response[:m.start()]
    return response
