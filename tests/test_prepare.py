"""scripts/prepare_data.py: each source's rows, written here in that source's own Hub format, convert to valid
project records; the whole build writes loadable files; without network it says so and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.prepare import (
    PrepareConfig,
    convert_aqua,
    convert_gsm8k,
    convert_math,
    convert_mathinstruct,
    convert_mathqa,
    convert_svamp,
    convert_theoremqa,
    last_boxed,
    prepare,
)
from src.records import load_records, validate_records

REPO = Path(__file__).resolve().parents[1]

# Rows exactly as the Hub data sets hold them (field names, types, quirks).
GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
               "altogether in April and May.\n#### 72"},
    {"question": "A pilot must fly 1,500 hours. He flew 180. How many hours are left?",
     "answer": "He has 1,500 - 180 = <<1500-180=1320>>1,320 hours left.\n#### 1,320"},
]
MATH_ROWS = [
    {"problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?", "level": "Level 1", "type": "Prealgebra",
     "solution": "We have $\\frac{1}{2}+\\frac{1}{4}=\\frac{2}{4}+\\frac{1}{4}=\\boxed{\\frac{3}{4}}$."},
    {"problem": "In how many ways can 9 people sit around a round table?", "level": "Level 4",
     "type": "Counting & Probability",
     "solution": "There are $9!$ ways in a line, or $\\boxed{9}$ rotations each, so $\\dfrac{9!}{9} = "
                 "\\boxed{40,\\!320}$."},
    {"problem": "Find the remainder.", "level": "Level ?", "type": "Intermediate Algebra",
     "solution": "So the remainder is $\\boxed{-x + 118}.$"},
]
AQUA_ROWS = [
    {"question": "Two friends plan to walk along a 43-km trail. How many km will the faster one walk?",
     "options": ["A)21", "B)21.5", "C)22", "D)22.5", "E)23"],
     "rationale": "If Q complete x kilometers, then P completes 1.15x kilometers.\nx + 1.15x = 43\nx = 20\n"
                  "then P will have walked 1.15*20=23 km.\nThe answer is E.",
     "correct": "E"},
    {"question": "What is the remainder when 2^20 is divided by 10 ?",
     "options": ["A)0", "B)2", "C)4", "D)6", "E)8"],
     "rationale": "2^10 = 1024, so the unit digit of 2^20 is 6\nANSWER:D", "correct": "D"},
]
MATHQA_ROWS = [
    {"Problem": "a shopkeeper sold an article offering a discount of 5 % and earned a profit of 31.1 % . what "
                "would have been the percentage of profit earned if no discount had been offered ?",
     "Rationale": "\"giving no discount to customer implies selling the product on printed price . "
                  "answer : a\"",
     "options": "a ) 38 , b ) 27.675 , c ) 30 , d ) data inadequate , e ) none of these", "correct": "a",
     "annotated_formula": "divide(add(31.1, 100), subtract(100, 5))", "linear_formula": "subtract(n1,n0)|",
     "category": "gain"},
    {"Problem": "what will be the difference between simple and compound interest at 14 % per annum ?",
     "Rationale": "\"explanation : difference = 129 answer : a\"",
     "options": "a ) 129 , b ) 130 , c ) 124 , d ) 133 , e ) 145", "correct": "a",
     "annotated_formula": "", "linear_formula": "", "category": "gain"},
]
SVAMP_ROWS = [
    {"ID": "chal-1", "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack",
     "Question": "How much do you have to pay to buy each pack?", "Equation": "( 76.0 - 25.0 )",
     "Answer": 51.0, "Type": "Subtraction", "question_concat": "..."},
    {"ID": "chal-2", "Body": "Dan had $ 3 left with him after he bought a candy bar. If he had $ 4 at the start",
     "Question": "How much did the candy bar cost?", "Equation": "( 4.0 - 3.0 )", "Answer": 1.0,
     "Type": "Subtraction", "question_concat": "..."},
]
THEOREMQA_ROWS = [
    {"Question": "How many ways are there to divide a set of 8 elements into 5 non-empty ordered subsets?",
     "Answer": "11760", "Answer_type": "integer", "Picture": None},
    {"Question": "Is the function continuous?", "Answer": "True", "Answer_type": "bool", "Picture": None},
    {"Question": "Find the eigenvalues.", "Answer": "[0, 5]", "Answer_type": "list of integer", "Picture": None},
]
MATHINSTRUCT_ROWS = [
    {"source": "data/CoT/gsm_rft.json", "instruction": GSM8K_ROWS[0]["question"],
     "output": "In May she sold 48/2 = 24 clips.\nAltogether 48 + 24 = 72 clips.\nThe answer is 72."},
    {"source": "data/PoT/gsm_gpt4.json", "instruction": GSM8K_ROWS[0]["question"] + " Let's write a program.",
     "output": "april = 48\nmay = april / 2\nprint(april + may)"},
    {"source": "data/PoT/aqua_rat_filtered.json",
     "instruction": AQUA_ROWS[1]["question"] + "\nAnswer Choices: (A) 0 (B) 2 (C) 4 (D) 6 (E) 8 Let's program in "
                    "Python in the response.",
     "output": "print(['A', 'B', 'C', 'D', 'E'][[0, 2, 4, 6, 8].index(2**20 % 10)])"},
    {"source": "data/CoT/college_math.json", "instruction": "Compute 2+2.", "output": "2+2 is four."},
]
HUB = {
    "openai/gsm8k": GSM8K_ROWS, "EleutherAI/hendrycks_math": MATH_ROWS, "deepmind/aqua_rat": AQUA_ROWS,
    "allenai/math_qa": MATHQA_ROWS, "ChilleD/SVAMP": SVAMP_ROWS, "TIGER-Lab/TheoremQA": THEOREMQA_ROWS,
    "TIGER-Lab/MathInstruct": MATHINSTRUCT_ROWS,
}


def hub_loader(path: str, config: str | None, split: str) -> list[dict]:
    """Serves the rows above as the Hub would (MATH: one config per subject; here only 'algebra' has rows)."""
    if path == "EleutherAI/hendrycks_math" and config != "algebra":
        return []
    return HUB[path]


def test_gsm8k_answer_line_replaces_hashes_and_keeps_annotations():
    rec = convert_gsm8k(GSM8K_ROWS[0], "gsm8k_0")
    validate_records([rec], "train")
    assert rec["answer_cot"].splitlines()[-1] == "The answer is 72"
    assert "<<48/2=24>>24" in rec["answer_cot"] and "####" not in rec["answer_cot"]
    assert convert_gsm8k(GSM8K_ROWS[1], "gsm8k_1")["answer_value"] == "1320"  # commas dropped from the value


def test_math_answer_is_last_balanced_box():
    recs = [convert_math(r, f"math_{i}") for i, r in enumerate(MATH_ROWS)]
    validate_records(recs, "train")
    assert [r["answer_value"] for r in recs] == ["\\frac{3}{4}", "40,320", "-x+118"]
    assert recs[0]["answer_cot"].endswith("\nThe answer is \\frac{3}{4}")
    assert recs[0]["level"] == 1 and recs[1]["level"] == 4 and "level" not in recs[2]
    assert last_boxed("no box here") is None and last_boxed("\\boxed{\\frac{1}{2") is None
    assert last_boxed("so $\\boxed 5$.") == "5"


def test_aqua_choices_in_question_and_uppercase_letter():
    rec = convert_aqua(AQUA_ROWS[0], "aqua_rat_0")
    validate_records([rec], "train")
    assert rec["question"].endswith("\nAnswer Choices: (A) 21 (B) 21.5 (C) 22 (D) 22.5 (E) 23")
    assert rec["options"] == ["A)21", "B)21.5", "C)22", "D)22.5", "E)23"]
    assert rec["answer_value"] == "E" and rec["answer_cot"].splitlines()[-1] == "The answer is E"


def test_mathqa_options_string_and_lowercase_letter():
    rec = convert_mathqa(MATHQA_ROWS[0], "mathqa_0")
    validate_records([rec], "test")
    assert rec["options"] == "a ) 38 , b ) 27.675 , c ) 30 , d ) data inadequate , e ) none of these"
    assert rec["question"].endswith("?\nAnswer Choices: " + rec["options"])
    assert rec["answer_value"] == "a" and not rec["answer_cot"].startswith('"')


def test_svamp_and_theoremqa_answers_are_strings():
    svamp = [convert_svamp(r, f"svamp_{i}") for i, r in enumerate(SVAMP_ROWS)]
    assert svamp[0]["question"] == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on "
                                    "each pack How much do you have to pay to buy each pack?")
    assert [r["answer_value"] for r in svamp] == ["51", "1"]
    tqa = [convert_theoremqa(r, f"theoremqa_{i}") for i, r in enumerate(THEOREMQA_ROWS)]
    validate_records(tqa, "test")
    assert [r["answer_value"] for r in tqa] == ["11760", "True", "[0, 5]"]


def test_mathinstruct_value_from_trigger():
    cot = convert_mathinstruct(MATHINSTRUCT_ROWS[0], "mathinstruct_cot_0")
    assert cot["answer_value"] == "72"
    assert convert_mathinstruct(MATHINSTRUCT_ROWS[1], "mathinstruct_pot_0")["answer_value"] == ""


def test_prepare_writes_every_file_in_the_schema(tmp_path):
    written = prepare(PrepareConfig(out_dir=str(tmp_path), source="hf"), loader=hub_loader)
    rel = sorted(str(p.relative_to(tmp_path)) for p in written.values())
    assert rel == sorted([
        "test/gsm8k.json", "test/math.json", "test/aqua_rat.json", "test/mathqa.json", "test/svamp.json",
        "test/theoremqa.json", "inference/cot/gsm8k.json", "inference/cot/math.json", "inference/cot/aqua_rat.json",
        "inference/pot/gsm8k.json", "inference/pot/aqua_rat.json",
        "train/cot/mathinstruct.json", "train/pot/mathinstruct.json"])
    for path in written.values():
        schema = "test" if path.parent.name == "test" else "train"
        load_records(path, schema)
    svamp = load_records(tmp_path / "test" / "svamp.json", "test")
    assert [r["item_id"] for r in svamp] == [f"svamp_{i}" for i in range(4)]  # train + test splits, renumbered
    aqua = load_records(tmp_path / "test" / "aqua_rat.json", "test")
    assert aqua[0]["item_id"] == "aqua_rat_0" and "answer_cot" not in aqua[0]
    pot = load_records(tmp_path / "inference" / "pot" / "aqua_rat.json")
    assert pot[0]["answer_value"] == "D" and pot[0]["answer_cot"].startswith("print(")
    # PoT pool questions ask for a program, as the original's pools do (MathInstruct's instruction as is)
    assert pot[0]["question"] == MATHINSTRUCT_ROWS[2]["instruction"]
    gsm_pot = load_records(tmp_path / "inference" / "pot" / "gsm8k.json")
    assert gsm_pot[0]["question"].endswith(" Let's write a program.")
    assert len(load_records(tmp_path / "train" / "cot" / "mathinstruct.json")) == 2


def test_pool_is_a_seeded_sample(tmp_path):
    cfg = PrepareConfig(out_dir=str(tmp_path), datasets=["gsm8k"], gsm8k_pool=1, skip_mathinstruct=True)
    first = load_records(prepare(cfg, loader=hub_loader)["inference/cot/gsm8k.json"])
    again = load_records(prepare(cfg, loader=hub_loader)["inference/cot/gsm8k.json"])
    assert len(first) == 1 and first == again and first[0]["item_id"] == "gsm8k_0"


def test_without_network_one_clear_line_and_nothing_written(tmp_path):
    out = tmp_path / "data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--out_dir", str(out),
                           "--source", "hf", "--datasets", "gsm8k"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "needs network access" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize("bad", [{"question": "q", "answer": "no final line"}])
def test_gsm8k_row_without_answer_is_rejected(bad):
    with pytest.raises(ValueError, match="####"):
        convert_gsm8k(bad, "gsm8k_9")
