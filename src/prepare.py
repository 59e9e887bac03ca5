"""The project's data files: the paper's (``--source gsi``, the default) or built from the Hugging Face Hub.

    python scripts/prepare_data.py --out_dir data                                  # the paper's data files
    python scripts/prepare_data.py --out_dir data --mirror /copy/of/original/data  # the same, from a local copy
    python scripts/prepare_data.py --source hf --out_dir data --datasets gsm8k svamp --skip_mathinstruct

``--source gsi`` reads the original repository's data files (Yiwen-Ding/Guided-Self-Improvement at commit
77ba9ed: test sets, CoT and PoT sampling pools, MathInstruct and its PoT subset), refuses any whose git blob id is
not the original's, and writes them byte for byte in this project's layout (``data/MathInstruct.json`` becomes
``train/cot/mathinstruct.json``, ``data/MathInstruct_pot.json`` ``train/pot/mathinstruct.json``, the rest keep
their paths). Nothing is written unless every selected file was read and verified.

``--source hf`` writes, in the schema of SPEC.md (validated with :mod:`src.records` before anything is written):

- ``test/<stem>.json`` for gsm8k, math, aqua (``aqua_rat``), mathqa, svamp, theoremqa;
- ``inference/cot/<stem>.json``: the held-in sampling pools (GSM8K 3000, MATH 4000, AQuA 3000 training
  questions, a seeded sample of each training split) with their gold rationales;
- ``inference/pot/<stem>.json``: the held-in PoT pools: MathInstruct's PoT programs for those training questions,
  each under MathInstruct's instruction (which asks for a program) with the gold answer of the CoT source;
- ``train/{cot,pot}/mathinstruct.json``: the iteration-0 data (TIGER-Lab/MathInstruct, CoT / PoT subsets).

Every source is downloaded and converted in memory first, and files are written only when all of them
succeeded, so a failed run (no network, a renamed data set) leaves nothing half-made. Each source's row format
is handled by one small converter below; ``tests/test_prepare.py`` runs them on rows written in that format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from src.grading.extract import last_boxed
from src.grading.process import ANSWER_TRIGGER, final_answer
from src.records import validate_records, write_json, write_text
from src.registry import get_dataset

CHOICE_LETTERS = "ABCDE"


class Refused(RuntimeError):
    """Nothing can be written: the message says why in one line (no network, a file that is not the original's)."""


class NeedsNetwork(Refused):
    """The Hugging Face Hub cannot be reached and the data sets are not in the local cache."""


class NotTheOriginal(Refused):
    """A downloaded or mirrored file's git blob id is not the one the original repository has at GSI_COMMIT."""


# ---------------------------------------------------------------------------------------------------------------
# Small text helpers
# ---------------------------------------------------------------------------------------------------------------
def format_number(value: Any) -> str:
    """A numeric answer as the project writes it: ``51.0 -> "51"``, ``"1,500" -> "1500"``, ``0.5 -> "0.5"``."""
    text = str(value).strip().replace(",", "")
    try:
        num = float(text)
    except ValueError:
        return text
    if num.is_integer() and abs(num) < 1e15:
        return str(int(num))
    return text


def normalize_math_answer(answer: str) -> str:
    """MATH answers as the project's files store them: LaTeX thin spaces (``\\!``) and whitespace removed
    (``40,\\!320 -> 40,320``, ``-x + 118 -> -x+118``)."""
    return re.sub(r"\s+", "", answer.replace("\\!", ""))


def with_answer_line(rationale: str, answer: str) -> str:
    """The rationale with a last line ``The answer is X`` (the trigger the graders read)."""
    return f"{rationale.rstrip()}\n{ANSWER_TRIGGER} {answer}"


def answer_after_trigger(text: str) -> str:
    """The text after the last ``The answer is`` (trailing period removed); ``""`` when there is none."""
    return (final_answer(text) or "").removesuffix(".").strip()


# ---------------------------------------------------------------------------------------------------------------
# Converters: one source row (in the source's own format) -> one record of the project's schema
# ---------------------------------------------------------------------------------------------------------------
def convert_gsm8k(row: dict, item_id: str) -> dict:
    """openai/gsm8k ``{"question", "answer": "...<<48/2=24>>24...\\n#### 72"}``: the ``#### N`` line becomes
    ``The answer is N``; the ``<<a*b=c>>`` calculator annotations are kept (the process check reads them)."""
    body, sep, value = row["answer"].rpartition("####")
    if not sep:
        raise ValueError(f"{item_id}: GSM8K answer has no '#### N' line")
    value = format_number(value)
    lines = [ln.rstrip() for ln in body.strip().splitlines() if ln.strip()]
    return {"item_id": item_id, "question": row["question"].strip(),
            "answer_cot": with_answer_line("\n".join(lines), value), "answer_value": value}


def convert_math(row: dict, item_id: str) -> dict:
    """hendrycks MATH ``{"problem", "level": "Level 5", "type", "solution": "... \\boxed{X} ..."}``: the answer is
    the last boxed expression; the rationale gets a last line ``The answer is X``; ``level`` kept as an int."""
    boxed = last_boxed(row["solution"])
    if boxed is None:
        raise ValueError(f"{item_id}: MATH solution has no \\boxed{{}} answer")
    value = normalize_math_answer(boxed)
    rec = {"item_id": item_id, "question": row["problem"].strip(),
           "answer_cot": with_answer_line(row["solution"].strip(), value), "answer_value": value}
    level = re.search(r"\d+", str(row.get("level", "")))  # "Level ?" occurs in a few rows: left out then
    if level:
        rec["level"] = int(level.group(0))
    return rec


def aqua_question(question: str, options: list[str]) -> str:
    """AQuA question text with its choices, as the project's files write it:
    ``...\\nAnswer Choices: (A) 21 (B) 21.5 ...`` built from options like ``"A)21"``."""
    choices = []
    for opt in options:
        letter, _, text = opt.partition(")")
        choices.append(f"({letter.strip()}) {text.strip()}")
    return f"{question.strip()}\nAnswer Choices: {' '.join(choices)}"


def convert_aqua(row: dict, item_id: str) -> dict:
    """deepmind/aqua_rat ``{"question", "options": ["A)21", ...], "rationale", "correct": "A"}``."""
    letter = row["correct"].strip().upper()
    if letter not in CHOICE_LETTERS:
        raise ValueError(f"{item_id}: AQuA answer {row['correct']!r} is not a letter A-E")
    return {"item_id": item_id, "question": aqua_question(row["question"], row["options"]),
            "options": [o.strip() for o in row["options"]], "answer_cot": with_answer_line(row["rationale"], letter),
            "answer_value": letter}


def convert_mathqa(row: dict, item_id: str) -> dict:
    """allenai/math_qa ``{"Problem", "Rationale": "\\"explanation ...\\"", "options": "a ) 38 , b ) ...",
    "correct": "a", ...}``: options stay one string, the answer a lower-case letter."""
    letter = row["correct"].strip().lower()
    if letter not in CHOICE_LETTERS.lower():
        raise ValueError(f"{item_id}: MathQA answer {row['correct']!r} is not a letter a-e")
    options = row["options"].strip()
    rationale = row.get("Rationale", "").strip().strip('"').strip()
    return {"item_id": item_id, "question": f"{row['Problem'].strip()}\nAnswer Choices: {options}",
            "options": options, "answer_cot": with_answer_line(rationale, letter), "answer_value": letter}


def convert_svamp(row: dict, item_id: str) -> dict:
    """ChilleD/SVAMP ``{"Body", "Question", "Equation", "Answer": 51.0, ...}``: question = body + question."""
    question = f"{row['Body'].strip()} {row['Question'].strip()}"
    value = format_number(row["Answer"])
    equation = row.get("Equation", "").strip()
    return {"item_id": item_id, "question": question,
            "answer_cot": with_answer_line(equation, value), "answer_value": value}


def convert_theoremqa(row: dict, item_id: str) -> dict:
    """TIGER-Lab/TheoremQA ``{"Question", "Answer", "Answer_type", ...}``: answers kept as strings
    (numbers, lists like ``[0, 5]``, ``True``/``False``)."""
    return {"item_id": item_id, "question": row["Question"].strip(), "answer_value": str(row["Answer"]).strip()}


def mathinstruct_mode(source: str) -> str | None:
    """``data/CoT/gsm_rft.json -> "cot"``, ``data/PoT/mathqa.json -> "pot"``; None for anything else."""
    parts = source.split("/")
    if "CoT" in parts:
        return "cot"
    if "PoT" in parts:
        return "pot"
    return None


def convert_mathinstruct(row: dict, item_id: str) -> dict:
    """TIGER-Lab/MathInstruct ``{"source": "data/CoT/...", "instruction", "output"}``.

    ``answer_value`` is the text after the last ``The answer is`` of a CoT output, and ``""`` for PoT programs
    and the few CoT outputs without that trigger: MathInstruct has no separate answer field, and iteration-0
    training reads only the question and the rationale.
    """
    output = row["output"].strip()
    value = answer_after_trigger(output) if mathinstruct_mode(row["source"]) == "cot" else ""
    return {"item_id": item_id, "question": row["instruction"].strip(), "answer_cot": output, "answer_value": value}


# MathInstruct PoT instructions end in a request for a program; the question before it keys the match with the
# CoT source: its first characters (letters and digits only) must start the instruction's, whatever the ending.
_KEY_CHARS = 120


def question_key(question: str) -> str:
    return re.sub(r"[^a-z0-9]", "", question.lower())[:_KEY_CHARS]


def pot_pool(mathinstruct_rows: list[dict], gold: list[dict], dataset: str, source_tag: str,
             size: int, seed: int) -> list[dict]:
    """The PoT sampling pool of one held-in data set: MathInstruct PoT programs whose question is one of the
    CoT source's training questions, with that question's gold answer (MathInstruct has none for programs). The
    question is MathInstruct's instruction, which ends in its request for a program (like the original's pools).

    ``source_tag`` selects MathInstruct sources (e.g. ``"gsm"`` matches ``data/PoT/gsm_gpt4.json``).
    """
    gold_by_key = {question_key(r["question"]): r for r in gold}
    key_lengths = sorted({len(k) for k in gold_by_key}, reverse=True)  # longest match first
    matched: list[dict] = []
    seen: set[str] = set()
    for row in mathinstruct_rows:
        src = row["source"]
        if mathinstruct_mode(src) != "pot" or source_tag.lower() not in src.rsplit("/", 1)[-1].lower():
            continue
        # the gold question is a prefix of the instruction (which adds "Let's write a program." or similar)
        instruction_key = question_key(row["instruction"])
        key = next((instruction_key[:n] for n in key_lengths if instruction_key[:n] in gold_by_key), "")
        ref = gold_by_key.get(key)
        if ref is None or key in seen:  # one program per question
            continue
        seen.add(key)
        # the question as MathInstruct asks it, program request included ("... Let's write a Python program."),
        # as in the original's PoT pools; the gold answer comes from the CoT source
        rec = {"question": row["instruction"].strip(), "answer_cot": row["output"].strip(),
               "answer_value": ref["answer_value"]}
        for extra in ("options", "level"):
            if extra in ref:
                rec[extra] = ref[extra]
        matched.append(rec)
    return number_records(sample(matched, size, seed), dataset)


# ---------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One public data set: where it lives on the Hub and how its rows become the project's records."""

    dataset: str  # project name (src.registry registry)
    hf_path: str
    configs: tuple[str | None, ...]  # several configs are concatenated (hendrycks MATH: one per subject)
    test_splits: tuple[str, ...]
    train_split: str | None  # None: held-out data set (no sampling pool)
    convert: Callable[[dict, str], dict]
    pot_tag: str | None = None  # MathInstruct PoT source tag for the PoT pool
    fallbacks: tuple[tuple[str, tuple[str | None, ...]], ...] = ()  # other Hub copies to try, in order


MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")

SOURCES: dict[str, Source] = {s.dataset: s for s in [
    Source("gsm8k", "openai/gsm8k", ("main",), ("test",), "train", convert_gsm8k, pot_tag="gsm"),
    Source("math", "EleutherAI/hendrycks_math", MATH_SUBJECTS, ("test",), "train", convert_math, pot_tag="MATH",
           fallbacks=(("lighteval/MATH", ("all",)),)),
    Source("aqua", "deepmind/aqua_rat", ("raw",), ("test",), "train", convert_aqua, pot_tag="aqua"),
    Source("mathqa", "allenai/math_qa", (None,), ("test",), None, convert_mathqa),
    # SVAMP's 1000 problems are split 700/300 on the Hub; the paper evaluates on all 1000.
    Source("svamp", "ChilleD/SVAMP", (None,), ("train", "test"), None, convert_svamp),
    Source("theoremqa", "TIGER-Lab/TheoremQA", (None,), ("test",), None, convert_theoremqa),
]}
MATHINSTRUCT = ("TIGER-Lab/MathInstruct", None, "train")
DEFAULT_POOL_SIZES = {"gsm8k": 3000, "math": 4000, "aqua": 3000}  # SPEC.md: the paper's held-in pools


def sample(rows: list[dict], size: int, seed: int) -> list[dict]:
    """A seeded sample of ``size`` rows in a fixed order (all rows when there are fewer)."""
    if size <= 0 or size >= len(rows):
        return list(rows)
    idx = sorted(random.Random(seed).sample(range(len(rows)), size))
    return [rows[i] for i in idx]


def number_records(records: list[dict], dataset: str) -> list[dict]:
    """Give records item ids ``<stem>_<i>`` in file order (``aqua_rat_0``, ``gsm8k_1``...)."""
    stem = get_dataset(dataset).file_stem
    return [{"item_id": f"{stem}_{i}", **{k: v for k, v in r.items() if k != "item_id"}}
            for i, r in enumerate(records)]


def convert_rows(rows: list[dict], convert: Callable[[dict, str], dict], dataset: str,
                 skipped: dict[str, int]) -> list[dict]:
    """Convert rows, counting (not hiding) the ones a converter rejects, e.g. MATH solutions without a box."""
    stem = get_dataset(dataset).file_stem
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(convert(row, f"{stem}_{i}"))
        except (ValueError, KeyError, TypeError):
            skipped[dataset] = skipped.get(dataset, 0) + 1
    return number_records(out, dataset)


# ---------------------------------------------------------------------------------------------------------------
# Loading from the Hub
# ---------------------------------------------------------------------------------------------------------------
def host_reachable(host: str, port: int = 443, timeout: float = 5.0) -> bool:
    """True when a TCP connection opens: a fast check instead of a client's retries."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 5.0) -> bool:
    """True when a TCP connection to the Hub (``HF_ENDPOINT``) opens."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return host_reachable(url.hostname or "huggingface.co", url.port or 443, timeout)


def load_hf_rows(path: str, config: str | None, split: str) -> list[dict]:
    """Rows of one split; :class:`NeedsNetwork` when the Hub is unreachable and the split is not cached."""
    import datasets

    try:
        return list(datasets.load_dataset(path, config, split=split))
    except ConnectionError as err:
        raise NeedsNetwork(f"needs network access to the Hugging Face Hub to download {path} ({err})") from None


@dataclass
class PrepareConfig:
    out_dir: str = field(default="data", metadata={"help": "data root to write test/, inference/, train/ under"})
    datasets: list[str] = field(default_factory=lambda: list(SOURCES),
                                metadata={"help": "data sets to build (gsm8k math aqua mathqa svamp theoremqa)"})
    gsm8k_pool: int = field(default=DEFAULT_POOL_SIZES["gsm8k"], metadata={"help": "GSM8K pool size (0: all)"})
    math_pool: int = field(default=DEFAULT_POOL_SIZES["math"], metadata={"help": "MATH pool size (0: all)"})
    aqua_pool: int = field(default=DEFAULT_POOL_SIZES["aqua"], metadata={"help": "AQuA pool size (0: all)"})
    seed: int = field(default=42, metadata={"help": "seed of the pool samples"})
    skip_mathinstruct: bool = field(default=False, metadata={
        "help": "do not build train/{cot,pot}/mathinstruct.json nor the PoT pools (they come from MathInstruct)"})
    source: str = field(default="gsi", metadata={
        "help": "gsi: the paper's data files, downloaded from the original repository at commit 77ba9ed and "
                "verified by git blob id; hf: built from the public Hugging Face data sets (new experiments)",
        "choices": ["gsi", "hf"]})
    mirror: str | None = field(default=None, metadata={
        "help": "gsi: read the files from this local copy of the original's data/ folder instead of downloading"})

    def pool_size(self, dataset: str) -> int:
        return int(getattr(self, f"{dataset}_pool"))


def load_source(src: Source, split: str, loader: Callable[[str, str | None, str], list[dict]]) -> list[dict]:
    """All configs of one split of a source, trying the fallback Hub copies when the first is gone."""
    candidates = [(src.hf_path, src.configs), *src.fallbacks]
    last: Exception | None = None
    for path, configs in candidates:
        try:
            return [row for cfg in configs for row in loader(path, cfg, split)]
        except NeedsNetwork:
            raise
        except Exception as err:  # noqa: BLE001 - a renamed or removed copy: try the next one, report the last
            last = err
    raise RuntimeError(f"could not load {src.dataset} ({split}) from {[c[0] for c in candidates]}: {last} "
                       f"(leave it out with --datasets)")


def build_files(cfg: PrepareConfig, loader: Callable[[str, str | None, str], list[dict]] = load_hf_rows,
                ) -> dict[str, list[dict]]:
    """Download and convert everything in memory: ``{relative path: records}``, each validated."""
    unknown = [d for d in cfg.datasets if d not in SOURCES]
    if unknown:
        raise ValueError(f"unknown data sets {unknown}; choose from {list(SOURCES)}")
    files: dict[str, list[dict]] = {}
    skipped: dict[str, int] = {}
    pot_gold: dict[str, list[dict]] = {}
    for name in cfg.datasets:
        src = SOURCES[name]
        stem = get_dataset(name).file_stem
        test_rows = [row for split in src.test_splits for row in load_source(src, split, loader)]
        test = convert_rows(test_rows, src.convert, name, skipped)
        files[f"test/{stem}.json"] = [{k: v for k, v in r.items() if k != "answer_cot"} for r in test]
        if src.train_split:
            train = convert_rows(load_source(src, src.train_split, loader), src.convert, name, skipped)
            files[f"inference/cot/{stem}.json"] = number_records(sample(train, cfg.pool_size(name), cfg.seed), name)
            pot_gold[name] = train
    if not cfg.skip_mathinstruct:
        path, config, split = MATHINSTRUCT
        try:
            rows = loader(path, config, split)
        except NeedsNetwork:
            raise
        except Exception as err:  # noqa: BLE001 - one clear line for a renamed or removed data set
            raise RuntimeError(f"could not load {path}: {err}") from None
        for mode in ("cot", "pot"):
            subset = [r for r in rows if mathinstruct_mode(r["source"]) == mode]
            files[f"train/{mode}/mathinstruct.json"] = [
                convert_mathinstruct(r, f"mathinstruct_{mode}_{i}") for i, r in enumerate(subset)]
        for name, gold in pot_gold.items():
            pool = pot_pool(rows, gold, name, SOURCES[name].pot_tag or name, cfg.pool_size(name), cfg.seed)
            if pool:
                files[f"inference/pot/{get_dataset(name).file_stem}.json"] = pool
    for rel, records in files.items():
        validate_records(records, "test" if rel.startswith("test/") else "train", source=rel)
    for name, n in skipped.items():
        logging.getLogger(__name__).warning("%s: %d rows left out (no usable answer)", name, n)
    return files


# ---------------------------------------------------------------------------------------------------------------
# The paper's data: the original repository's files, verified by git blob id (--source gsi)
# ---------------------------------------------------------------------------------------------------------------
GSI_REPO = "Yiwen-Ding/Guided-Self-Improvement"
GSI_COMMIT = "77ba9edaca544af8b551198fe5eca1cb1c2781ff"
GSI_HOST = "raw.githubusercontent.com"
GSI_URL = f"https://{GSI_HOST}/{GSI_REPO}/{GSI_COMMIT}/data/{{path}}"


@dataclass(frozen=True)
class GsiFile:
    path: str  # under the original's data/ folder (and under --mirror)
    target: str  # under this project's data root
    blob: str  # git blob id at GSI_COMMIT: sha1 of b"blob <size>\0" + content
    dataset: str | None  # None: MathInstruct, the iteration-0 data


def _gsi_files() -> tuple[GsiFile, ...]:
    blobs = {
        "test/math.json": "648d191d5af77b51de642e93210abcc1059c0ef2",
        "test/gsm8k.json": "5341122095ba4990278bfb00eed0fe4137860741",
        "test/aqua_rat.json": "74dca097608ecb32eaa613a00d9c31463937eb12",
        "test/mathqa.json": "4d5ac6367cafd0732ceb935ecd855e12f981ef4f",
        "test/svamp.json": "3068df6eedfd270110e14940f3a9f75ba0bb0b88",
        "test/theoremqa.json": "b187dfc6215078c7f0fb703a42705f54bf75c205",
        "inference/cot/gsm8k.json": "ea9f31bda5d49ff9446195ca28073ede069c37db",
        "inference/cot/aqua_rat.json": "bf70cee9c9829a694d4d22684b53cff03d62f64f",
        "inference/cot/math.json": "22e03c863a4a40d2efb8455c7eabbf5af4ab9d82",
        "inference/pot/gsm8k.json": "4d97e657be83e4b94aa5a45d1a962d7244761fe8",
        "inference/pot/aqua_rat.json": "473af622a1e35f8221978d73eda7941baed3d1fe",
        "inference/pot/math.json": "30ea2744ff069ad940686b69846ef01edcdb5fc0",
    }
    files = [GsiFile(path, path, blob, get_dataset(Path(path).stem).name) for path, blob in blobs.items()]
    files += [GsiFile("MathInstruct.json", "train/cot/mathinstruct.json", "c6b9b338f94ac82fd18837a5c9ef0e0a361bcffa",
                      None),
              GsiFile("MathInstruct_pot.json", "train/pot/mathinstruct.json",
                      "30bbebe7b0c4226a8cbd0d47647dca801cf0c669", None)]
    return tuple(files)


GSI_FILES = _gsi_files()


def git_blob_id(content: bytes) -> str:
    """The id git gives a file's content (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def selected_gsi_files(cfg: PrepareConfig) -> list[GsiFile]:
    """The files of the chosen ``--datasets`` (test sets and pools), plus MathInstruct unless skipped."""
    wanted = {get_dataset(d).name for d in cfg.datasets}
    return [f for f in GSI_FILES if (f.dataset in wanted) or (f.dataset is None and not cfg.skip_mathinstruct)]


def read_gsi_file(f: GsiFile, mirror: str | None) -> bytes:
    """One file's bytes, from the mirror folder or from the original repository at GSI_COMMIT."""
    if mirror is not None:
        path = Path(mirror) / f.path
        if not path.is_file():
            raise NotTheOriginal(f"{f.path}: not found in the mirror {mirror}")
        return path.read_bytes()
    url = GSI_URL.format(path=f.path)
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:  # noqa: S310 - a fixed https URL
            return resp.read()
    except (urllib.error.URLError, OSError) as err:
        raise NeedsNetwork(f"needs network access to {GSI_HOST} to download {url} ({err}), or --mirror DIR "
                           f"with a copy of the original's data/ folder") from None


def build_gsi_files(cfg: PrepareConfig) -> dict[str, str]:
    """``{target: text}`` of every selected file, each verified by its git blob id; raise before writing any."""
    files = selected_gsi_files(cfg)
    if cfg.mirror is None and not host_reachable(GSI_HOST):
        raise NeedsNetwork(f"needs network access to {GSI_HOST} to download the original's data files (commit "
                           f"{GSI_COMMIT[:7]}), or --mirror DIR with a copy of its data/ folder")
    out: dict[str, str] = {}
    problems: list[str] = []  # every file that is missing or not the original's, in one line
    for f in files:
        try:
            content = read_gsi_file(f, cfg.mirror)
        except NotTheOriginal as err:
            problems.append(str(err))
            continue
        blob = git_blob_id(content)
        if blob != f.blob:
            problems.append(f"{f.path}: git blob id {blob} ({len(content)} bytes) is not the original's {f.blob} "
                            f"(commit {GSI_COMMIT[:7]})")
            continue
        text = content.decode("utf-8")
        if f.dataset is not None:  # test sets and pools must follow the schema this project reads
            validate_records(json.loads(text), "test" if f.target.startswith("test/") else "train", source=f.path)
        out[f.target] = text
    if problems:
        raise NotTheOriginal("refused: " + "; ".join(problems))
    return out


def prepare(cfg: PrepareConfig, loader: Callable[[str, str | None, str], list[dict]] | None = None,
            ) -> dict[str, Path]:
    """Build and write every file; nothing is written unless every source loaded and converted (or, with
    ``--source gsi``, every file was read and verified)."""
    if cfg.source == "gsi" and loader is None:
        texts = build_gsi_files(cfg)
        return {rel: write_text(Path(cfg.out_dir) / rel, text) for rel, text in texts.items()}
    if loader is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false")
        if not offline and not hub_reachable():
            raise NeedsNetwork("needs network access to the Hugging Face Hub to download the data sets (not "
                               "reachable)")
        # datasets retries each unreachable file five times with warnings; the check above answers first
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        loader = load_hf_rows
    files = build_files(cfg, loader)
    return {rel: write_json(Path(cfg.out_dir) / rel, records) for rel, records in files.items()}
