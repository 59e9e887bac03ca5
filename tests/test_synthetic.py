"""The synthetic world: deterministic, and every gold rationale computes and ends in its answer."""

import re

from src.records import load_records
from src.synthetic import WorldConfig, check_synthetic_rationale, generate_world, write_world

ANNOT = re.compile(r"<<(\d+)([+\-*])(\d+)=(\d+)>>(\d+)")


def test_deterministic_by_seed():
    cfg = WorldConfig(seed=3, n_train=50, n_pool=20, n_test_held_in=12, n_test_held_out=12)
    assert generate_world(cfg) == generate_world(cfg)
    other = generate_world(WorldConfig(seed=4, n_train=50, n_pool=20, n_test_held_in=12, n_test_held_out=12))
    assert other["train_cot"] != generate_world(cfg)["train_cot"]


def test_rationales_compute_and_chain_to_answer():
    world = generate_world(WorldConfig(seed=1, n_train=300, n_pool=100, n_test_held_in=60, n_test_held_out=60))
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    for rec in world["train_cot"] + world["pool_cot"]:
        lines = rec["answer_cot"].split("\n")
        assert lines[-1] == f"The answer is {rec['answer_value']}"
        assert len(lines) == rec["level"] + 1  # one line per step
        prev = None
        for line in lines[:-1]:
            (a, op, b, c, shown), = ANNOT.findall(line)
            assert ops[op](int(a), int(b)) == int(c) == int(shown)
            assert 0 <= int(c) <= 99
            assert prev is None or int(a) == prev  # the chain holds
            prev = int(c)
        assert str(prev) == rec["answer_value"]


def test_pot_programs_print_the_answer():
    import contextlib
    import io

    world = generate_world(WorldConfig(seed=2, n_train=40, n_pool=0, n_test_held_in=0, n_test_held_out=0))
    for rec in world["train_pot"]:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(rec["answer_cot"], {})  # our own generated gold programs, not model output
        assert buf.getvalue().strip() == rec["answer_value"]


def test_splits_disjoint_levels_and_heldout_family(tmp_path):
    cfg = WorldConfig(seed=0, n_train=200, n_pool=100, n_test_held_in=60, n_test_held_out=60)
    paths = write_world(cfg, tmp_path)
    train = load_records(paths["train_cot"])
    test_in = load_records(paths["test_held_in"], "test")
    test_out = load_records(paths["test_held_out"], "test")
    qs = [r["question"] for r in train + load_records(paths["pool_cot"]) + test_in + test_out]
    assert len(qs) == len(set(qs))
    assert {r["level"] for r in test_in} == set(range(1, 7))
    assert sum(r["level"] == 1 for r in test_in) == 10  # equal items per level in tests
    b_endings = ("own in the end?", "that {n} has?")
    assert all(not r["question"].endswith(b_endings[0]) and "What is the final number" not in r["question"]
               for r in test_in)
    # held-out (family B): A's verbs, reworded: the question asked in other words, each step names the person
    for r in test_out:
        name = r["question"].split()[0]
        assert r["question"].endswith(b_endings[0]) or "What is the final number" in r["question"]
        assert r["question"].count(f"Then {name} ") == r["level"] and " Then she " not in r["question"]


def test_process_check():
    rec = generate_world(WorldConfig(seed=5, n_train=20))["train_cot"][7]
    gold = rec["answer_cot"]
    assert check_synthetic_rationale(rec["question"], gold, gold) is None
    first = re.search(r"<<(\d+)", gold).group(1)
    broken = gold.replace(f"<<{first}", f"<<{int(first) + 1}", 1)
    assert "step 1" in check_synthetic_rationale(rec["question"], gold, broken)
    name = rec["question"].split()[0]
    other = "Zoe" if name != "Zoe" else "Mia"
    assert "not in the question" in check_synthetic_rationale(rec["question"], gold, gold.replace(name, other))
    skipped = "\n".join(gold.split("\n")[1:])
    if rec["level"] > 1:
        assert "step count" in check_synthetic_rationale(rec["question"], gold, skipped)
