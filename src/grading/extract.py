"""Final-answer extraction from a CoT response or a PoT program's output, per answer format.

CoT: the text after the LAST "The answer is" trigger (up to the end of that line); inside it a ``\\boxed{...}``
wins. Without a trigger: the last ``\\boxed{...}``, then (numbers, MATH, TheoremQA) the last number in the
response. PoT: the last non-empty line the program printed, with library print formats undone first
(``np.float64(18.0)`` -> ``18.0``, float noise rounded to 10 significant digits).
"""

from __future__ import annotations

import re

TRIGGER_RE = re.compile(r"the answer is", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|-?\.\d+")
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


def extract_number(response: str, from_program: bool = False) -> str:
    seg = normalize_program_output(response) if from_program else answer_segment(response)
    if seg is None:
        boxed = last_boxed(response)
        return (first_number(boxed) if boxed is not None else last_number(response)) or ""
    boxed = last_boxed(seg)
    if boxed is not None:
        seg = boxed
    seg = re.sub(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", seg)
    if "=" in seg:  # "5 + 3 = 8": the result is on the right of the last "="
        seg = seg.rsplit("=", 1)[1]
    return first_number(seg) or ""


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


def parse_options(options: list | str | None) -> dict[str, str]:
    """``["A)5", "B)6"]`` or ``"a ) 38 , b ) 27.675"`` -> ``{"A": "5", "B": "6"}`` (letters upper-cased)."""
    if not options:
        return {}
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
    # an upper-case letter standing alone ("E", "E.", "is E because") names an option too
    found += [(m.start(1), m.group(1)) for m in re.finditer(r"(?<![A-Za-z'])([A-E])(?![A-Za-z'])", s)]
    letters: list[str] = []
    for _, letter in sorted(found):
        if letter.upper() not in letters:
            letters.append(letter.upper())
    return letters


def _match_option_text(seg: str, options: dict[str, str]) -> str | None:
    """The letter whose option text is the answer (number or normalised text), if exactly one matches."""
    from src.grading.compare import clean_number_text, numbers_equal, parse_number

    value = parse_number(seg) if seg else None
    if value is None and seg:
        num = first_number(seg)
        rest = seg.replace(num or "", "").strip(" .$%") if num else seg
        value = parse_number(num) if num and len(rest) <= 12 else None  # "40 inches" names option 40
    hits = []
    for letter, text in options.items():
        opt_value = parse_number(text)
        if value is not None and opt_value is not None:
            if numbers_equal(value, opt_value):
                hits.append(letter)
        elif clean_number_text(text).lower() == clean_number_text(seg).lower() and text:
            hits.append(letter)
    return hits[0] if len(hits) == 1 else None


def extract_choice(response: str, options: list | str | None = None, from_program: bool = False) -> str:
    """The option letter (upper-cased; several letters joined with commas, which never grade as correct)."""
    seg = normalize_program_output(response) if from_program else answer_segment(response)
    if seg is None:
        boxed = last_boxed(response)
        if boxed is not None:
            seg = boxed
        else:
            strong = [m.group(1) for m in re.finditer(_LETTER_PATTERNS[0], response)]
            return strong[-1].upper() if strong else ""
    boxed = last_boxed(seg)
    if boxed is not None:
        seg = boxed
    parsed = parse_options(options)
    if parsed:
        by_text = _match_option_text(seg.strip().rstrip(".").strip(), parsed)
        if by_text is not None and not choice_letters(seg):
            return by_text
    letters = choice_letters(seg)
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
