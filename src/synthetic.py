"""The embedded synthetic world: GSM8K-style word problems with k = 1..6 arithmetic steps.

One person holds one kind of object; each step adds, removes, doubles or triples the count (all values stay in
0..99). The CoT rationale has one line per step with a ``<<a op b=c>>`` calculator annotation and ends with
``The answer is N``; the PoT form is a short program that prints the answer. Everything is deterministic by seed.

Template families: ``"A"`` (held-in: iteration-0 training data, sampling pool, held-in test), ``"B"`` (the
held-out test: A's operations, verbs and number ranges; every step names the person and the question is
reworded) and ``"C"`` (a far held-out test: other verbs and larger start values). Example (family A, k = 2)::

    Mia has 7 apples. Then she buys 3 more apples. Then she doubles her apples. How many apples does Mia have now?
    Mia buys 3 more apples, so she has <<7+3=10>>10 apples.
    Mia doubles her apples, so she has <<10*2=20>>20 apples.
    The answer is 20

Usage: ``python -m src.synthetic --out_dir data/synthetic --seed 0`` writes the world's files.
"""

from __future__ import annotations

import argparse
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from src.grading.process import ANNOTATION
from src.records import write_json

NAMES = [("Mia", "she"), ("Liam", "he"), ("Ava", "she"), ("Noah", "he"), ("Zoe", "she"), ("Omar", "he"),
         ("Lena", "she"), ("Ravi", "he"), ("Iris", "she"), ("Tom", "he"), ("Nina", "she"), ("Sam", "he"),
         ("Yuki", "she"), ("Ben", "he"), ("Ella", "she"), ("Leo", "he")]
OBJECTS = ["apples", "marbles", "stickers", "coins", "books", "pencils", "cookies", "shells", "cards", "stamps",
           "beads", "toys"]
OPS = ("add", "sub", "mul2", "mul3")
LEVEL_WEIGHTS = (3, 3, 2, 2, 1, 1)  # k = 1..6: easier problems are more common, as in real data

# Question sentences per operation and family; {n} name, {p} pronoun, {o} object, {b} operand.
QUESTION_STEPS: dict[str, dict[str, list[str]]] = {
    "A": {
        "add": ["Then {p} buys {b} more {o}.", "Then {p} finds {b} more {o}.", "Then {p} gets {b} more {o}."],
        "sub": ["Then {p} gives away {b} {o}.", "Then {p} loses {b} {o}.", "Then {p} uses {b} {o}."],
        "mul2": ["Then {p} doubles {h} {o}."],
        "mul3": ["Then {p} triples {h} {o}."],
    },
    # held-out: A's operations, verbs and number ranges, reworded: each step names the person instead of using the
    # pronoun, and the question at the end is asked in other words (the openings are A's)
    "B": {
        "add": ["Then {n} buys {b} more {o}.", "Then {n} finds {b} more {o}.", "Then {n} gets {b} more {o}."],
        "sub": ["Then {n} gives away {b} {o}.", "Then {n} loses {b} {o}.", "Then {n} uses {b} {o}."],
        "mul2": ["Then {n} doubles {h} {o}."],
        "mul3": ["Then {n} triples {h} {o}."],
    },
    # far held-out (the demo's first held-out family): other verbs and larger start values; tiny bases score ~0-1%
    "C": {
        "add": ["After that, a friend hands {n} {b} extra {o}.", "Next, {n} collects another {b} {o}."],
        "sub": ["After that, {n} trades away {b} {o}.", "Next, {b} of the {o} get lost."],
        "mul2": ["Next, the number of {o} becomes twice as large."],
        "mul3": ["Next, the number of {o} becomes three times as large."],
    },
}
QUESTION_OPENINGS = {"A": ["{n} has {v} {o}.", "{n} starts with {v} {o}."],
                     "B": ["{n} has {v} {o}.", "{n} starts with {v} {o}."],
                     "C": ["At first, {n} owns {v} {o}.", "In the morning {n} counts {v} {o}."]}
QUESTION_ENDINGS = {"A": ["How many {o} does {n} have now?", "How many {o} does {n} have at the end?"],
                    "B": ["How many {o} does {n} own in the end?", "What is the final number of {o} that {n} has?"],
                    "C": ["What is the final number of {o} that {n} owns?", "How many {o} are left with {n}?"]}
START_RANGE = {"A": (2, 20), "B": (2, 20), "C": (21, 40)}

# Rationale lines: a few phrasings per operation so that correct samples are not all identical.
RATIONALE_STEPS = {
    "add": ["{n} gets {b} more {o}, so {p} has <<{a}+{b}={c}>>{c} {o}.",
            "{n} adds {b} {o}, so {p} has <<{a}+{b}={c}>>{c} {o}."],
    "sub": ["{n} gives away {b} {o}, so {p} has <<{a}-{b}={c}>>{c} {o}.",
            "{n} loses {b} {o}, so {p} has <<{a}-{b}={c}>>{c} {o}."],
    "mul2": ["{n} doubles the {o}, so {p} has <<{a}*2={c}>>{c} {o}.",
             "Twice {a} is <<{a}*2={c}>>{c}, so {n} has {c} {o}."],
    "mul3": ["{n} triples the {o}, so {p} has <<{a}*3={c}>>{c} {o}.",
             "Three times {a} is <<{a}*3={c}>>{c}, so {n} has {c} {o}."],
}
POT_STEPS = {"add": "{v} = {v} + {b}", "sub": "{v} = {v} - {b}", "mul2": "{v} = {v} * 2", "mul3": "{v} = {v} * 3"}
_SYMBOL = {"add": "+", "sub": "-", "mul2": "*", "mul3": "*"}


@dataclass
class Problem:
    """One generated problem: enough to rebuild its text, gold rationale and program."""

    name: str
    pronoun: str
    obj: str
    start: int
    ops: list[tuple[str, int]]  # (operation, operand); operand is 2 or 3 for mul2/mul3
    family: str
    values: list[int] = field(default_factory=list)  # value after each step

    @property
    def level(self) -> int:
        return len(self.ops)

    @property
    def answer(self) -> int:
        return self.values[-1]


def _apply(op: str, a: int, b: int) -> int:
    return {"add": a + b, "sub": a - b, "mul2": a * 2, "mul3": a * 3}[op]


def sample_problem(rng: random.Random, level: int, family: str = "A") -> Problem:
    name, pronoun = rng.choice(NAMES)
    obj = rng.choice(OBJECTS)
    start = rng.randint(*START_RANGE[family])
    value, ops, values = start, [], []
    for _ in range(level):
        choices = []
        for op in OPS:
            b = {"mul2": 2, "mul3": 3}.get(op) or rng.randint(1, 9)
            if 0 <= _apply(op, value, b) <= 99:
                choices.append((op, b))
        op, b = rng.choice(choices)
        value = _apply(op, value, b)
        ops.append((op, b))
        values.append(value)
    return Problem(name, pronoun, obj, start, ops, family, values)


def question_text(p: Problem, rng: random.Random) -> str:
    fam = p.family
    fill = {"n": p.name, "p": p.pronoun, "o": p.obj, "h": "his" if p.pronoun == "he" else "her"}
    parts = [rng.choice(QUESTION_OPENINGS[fam]).format(v=p.start, **fill)]
    for op, b in p.ops:
        parts.append(rng.choice(QUESTION_STEPS[fam][op]).format(b=b, **fill))
    parts.append(rng.choice(QUESTION_ENDINGS[fam]).format(**fill))
    text = " ".join(parts)
    return text[0].upper() + text[1:]


def rationale_text(p: Problem, rng: random.Random) -> str:
    lines, a = [], p.start
    for (op, b), c in zip(p.ops, p.values):
        lines.append(rng.choice(RATIONALE_STEPS[op]).format(n=p.name, p=p.pronoun, o=p.obj, a=a, b=b, c=c))
        a = c
    lines.append(f"The answer is {p.answer}")
    return "\n".join(lines)


def program_text(p: Problem) -> str:
    var = p.obj
    lines = [f"{var} = {p.start}"] + [POT_STEPS[op].format(v=var, b=b) for op, b in p.ops] + [f"print({var})"]
    return "\n".join(lines)


def make_record(p: Problem, rng: random.Random, item_id: str, mode: str = "cot") -> dict:
    return {
        "item_id": item_id,
        "question": question_text(p, rng),
        "answer_cot": rationale_text(p, rng) if mode == "cot" else program_text(p),
        "answer_value": str(p.answer),
        "level": p.level,
    }


@dataclass
class WorldConfig:
    seed: int = 0
    n_train: int = 2000  # iteration-0 training set ("original data")
    n_pool: int = 1000  # sampling pool (its gold rationales serve only as guidance)
    n_test_held_in: int = 600  # family A test set
    n_test_held_out: int = 600  # family B test set
    level_weights: tuple[int, ...] = LEVEL_WEIGHTS
    test_level_weights: tuple[int, ...] = (1, 1, 1, 1, 1, 1)  # tests: equal items per level for tight intervals
    train_family: str = "A"
    held_out_family: str = "B"  # B: A's verbs and numbers reworded; C: other verbs, larger start values


def generate_world(cfg: WorldConfig) -> dict[str, list[dict]]:
    """Generate every split (CoT and PoT forms share problems); questions never repeat across splits."""
    rng = random.Random(cfg.seed)
    seen: set[str] = set()
    out: dict[str, list[dict]] = {}
    plan = [("train", cfg.n_train, cfg.train_family, cfg.level_weights),
            ("pool", cfg.n_pool, "A", cfg.level_weights),
            ("test_held_in", cfg.n_test_held_in, "A", cfg.test_level_weights),
            ("test_held_out", cfg.n_test_held_out, cfg.held_out_family, cfg.test_level_weights)]
    for split, n, family, weights in plan:
        cot, pot = [], []
        levels = list(range(1, len(weights) + 1))
        while len(cot) < n:
            level = rng.choices(levels, weights=weights)[0] if split.startswith("train") or split == "pool" \
                else levels[len(cot) % len(levels)]
            p = sample_problem(rng, level, family)
            rec = make_record(p, rng, f"synthetic_{split}_{len(cot)}")
            if rec["question"] in seen:
                continue
            seen.add(rec["question"])
            cot.append(rec)
            pot.append({**rec, "answer_cot": program_text(p)})
        out[f"{split}_cot"], out[f"{split}_pot"] = cot, pot
    return out


def write_world(cfg: WorldConfig, out_dir: str | Path) -> dict[str, Path]:
    """Write the world in the project's data layout under ``out_dir`` (see README "Data")."""
    out_dir = Path(out_dir)
    world = generate_world(cfg)
    paths = {}
    for mode in ("cot", "pot"):
        paths[f"train_{mode}"] = write_json(out_dir / "train" / mode / "synthetic.json", world[f"train_{mode}"])
        paths[f"pool_{mode}"] = write_json(out_dir / "inference" / mode / "synthetic.json", world[f"pool_{mode}"])
    test_fields = ("item_id", "question", "answer_value", "level")
    for split, name in (("test_held_in", "synthetic"), ("test_held_out", "synthetic_heldout")):
        rows = [{k: r[k] for k in test_fields} for r in world[f"{split}_cot"]]
        paths[split] = write_json(out_dir / "test" / f"{name}.json", rows)
    write_json(out_dir / "world_config.json", asdict(cfg))
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Process check for the synthetic world: a "correct" answer reached by a broken chain is noise, not signal.
_WORD = re.compile(r"[A-Za-z]+")
_VOCAB = {n for n, _ in NAMES} | set(OBJECTS)


def check_synthetic_rationale(question: str, gold_rationale: str, rationale: str) -> str | None:
    """Return why ``rationale`` is not a faithful solution of ``question`` (or None when it is).

    The world has one solution path, so the sample's calculator annotations must equal the gold's, step by
    step (this checks every step's arithmetic, the chain from the start value and the step count), and the
    names and objects it mentions must be those of the question (weak models miscopy them).
    """
    gold_steps = [(e.replace(" ", ""), r.strip()) for e, r in ANNOTATION.findall(gold_rationale)]
    steps = [(e.replace(" ", ""), r.strip()) for e, r in ANNOTATION.findall(rationale)]
    if len(steps) != len(gold_steps):
        return f"step count {len(steps)} != {len(gold_steps)}"
    for i, (got, want) in enumerate(zip(steps, gold_steps)):
        if got != want:
            return f"step {i + 1}: <<{got[0]}={got[1]}>> != <<{want[0]}={want[1]}>>"
    allowed = {w for w in _WORD.findall(question) if w in _VOCAB}
    wrong = sorted({w for w in _WORD.findall(rationale) if w in _VOCAB} - allowed)
    if wrong:
        return f"mentions {', '.join(wrong)} not in the question"
    return None


def first_wrong_synthetic_step(question: str, gold_rationale: str, rationale: str) -> tuple[int, str] | None:
    """(1-based number of the first line of ``rationale`` at which :func:`check_synthetic_rationale` fails, why)
    or None: each prefix of lines is checked against the gold prefix with as many annotations (TriPosT's
    process verifier, src/tripost). A rationale that stops early passes every prefix; its full check fails."""
    gold_lines = [line for line in gold_rationale.splitlines() if line.strip()]
    gold_counts = [len(ANNOTATION.findall("\n".join(gold_lines[:j]))) for j in range(len(gold_lines) + 1)]
    lines = [line for line in rationale.splitlines() if line.strip()]
    for k in range(1, len(lines) + 1):
        prefix = "\n".join(lines[:k])
        m = len(ANNOTATION.findall(prefix))
        if m > gold_counts[-1]:
            return k, f"step count {m} > {gold_counts[-1]}"
        gold_prefix = "\n".join(gold_lines[:next(j for j, c in enumerate(gold_counts) if c >= m)])
        why = check_synthetic_rationale(question, gold_prefix, prefix)
        if why is not None:
            return k, why
    return None


def main(argv: list[str] | None = None) -> int:
    from src.cli import check_output, one_line_errors, run_cli

    prog = "python -m src.synthetic"
    ap = one_line_errors(argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter), prog)
    ap.add_argument("--out_dir", default="data/synthetic", help="root of the written data layout")
    for name, default in asdict(WorldConfig()).items():
        if isinstance(default, int):
            ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--train_family", default="A", choices=["A", "B", "C"])
    ap.add_argument("--held_out_family", default="B", choices=["B", "C"])

    def body() -> None:
        args = ap.parse_args(argv)
        check_output("out_dir", args.out_dir, "folder")
        cfg = WorldConfig(**{k: v for k, v in vars(args).items() if k in WorldConfig.__dataclass_fields__})
        for split, path in write_world(cfg, args.out_dir).items():
            print(f"{split}: {path}")

    return run_cli(prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
