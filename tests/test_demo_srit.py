"""``demo.py --experiment srit`` end to end at ``--scale test`` on the session's engine, and the claims that both
arms take the same optimizer steps from the base, that every DPO pair is a valid pair of the base's own graded
samples, that the control's data is O + exactly those correct samples, and that the reported figures recompute
from the files the run wrote.

    .venv/bin/python -m pytest -x -q tests/test_demo_srit.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.demo_stats import paired_bootstrap_diff, wilson


@pytest.fixture(scope="module")
def srit_run(tmp_path_factory, llm, trained_tiny_model_dir):
    import src.demo_srit as srit
    from src.demo import DemoConfig, Runner, apply_scale

    out = tmp_path_factory.mktemp("demo_srit")
    # the engine was built on the fixture model: the base starts from it so that the vocabularies match
    cfg = apply_scale(DemoConfig(out_dir=str(out), scale="test", experiment="srit",
                                 init_model_dir=str(trained_tiny_model_dir), progress=False),
                      explicit={"out_dir", "experiment", "init_model_dir", "progress"})
    # the test-scale base is almost never right, so "self" would give no pair: "mixed" falls back to the
    # demonstration as chosen (the real run's "self" pairs are checked by the same property below)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(srit, "SRIT", srit.SritConfig(pair_mode="mixed"))
        summary = Runner(cfg, llm=llm, log=lambda _: None).run()
    yield cfg, out, summary
    from src.engine import reload_weights

    reload_weights(llm, trained_tiny_model_dir)  # later tests expect the session model in the shared engine


def _read(path: Path):
    return json.loads(path.read_text())


def test_summary_and_table_hold_every_reported_part(srit_run):
    from src.demo_srit import format_table

    cfg, out, summary = srit_run
    assert _read(out / "srit" / "summary.json") == json.loads(json.dumps(summary))
    assert set(summary) >= {"config", "srit", "base", "sampling", "pairs", "control_data", "arms", "comparisons",
                            "verdicts", "dpo_training", "optimizer_steps", "times"}
    assert set(summary["arms"]) == {"control", "dpo"}
    for info in summary["arms"].values():
        assert set(info["seeds"]) == {str(s) for s in cfg.seeds}
        for block in info["seeds"].values():
            for test in ("held_in", "held_out"):
                assert set(block[test]["by_level"]) == {"1", "2", "3", "4", "5", "6"}
                for acc in block[test]["by_level"].values():
                    assert acc["n"] == cfg.test_per_level
                    assert acc["ci95"][0] <= acc["accuracy"] <= acc["ci95"][1]
        assert {"mean", "min", "max", "sd"} <= set(info["over_seeds"]["held_out"]["all"])
    assert set(summary["comparisons"]["dpo_vs_control"]) == {"held_in_all", "held_in_hard", "held_out_all",
                                                             "held_out_hard"}
    assert summary["times"]["by_category_when_computed"]["train_dpo"] > 0
    table = format_table(summary)
    assert "DPO trainer, per seed" in table and "dpo " in table and "Optimizer steps" in table


def test_both_arms_take_equal_optimizer_steps_from_the_base_and_dpo_saves_an_untied_model(srit_run):
    cfg, out, summary = srit_run
    for seed in cfg.seeds:
        control = _read(out / "srit" / "arms" / "control" / f"seed{seed}" / "train_log.json")
        dpo = _read(out / "srit" / "arms" / "dpo" / f"seed{seed}" / "train_log.json")
        assert control["step"] == cfg.arm_steps == len(dpo["log"]) == dpo["run_shape"]["total_steps"]
        # the same sequences per step: batch_size records against batch_size / 2 (chosen, rejected) pairs
        assert control["run_shape"]["effective_batch_size"] == 2 * dpo["run_shape"]["effective_batch_size"]
        assert dpo["config"]["run"]["model_name_or_path"] == str(out / "base" / "model")  # start and reference
        config = _read(out / "srit" / "arms" / "dpo" / f"seed{seed}" / "model" / "config.json")
        assert config["tie_word_embeddings"] is False  # what the engine's in-place reload needs
        evaluated = _read(out / "eval" / f"srit_dpo_seed{seed}" / "metrics.json")["model"]
        assert evaluated == str(out / "srit" / "arms" / "dpo" / f"seed{seed}" / "model")
    assert summary["optimizer_steps"]["equal"] is True


def test_pairs_are_valid_pairs_of_the_base_samples_and_the_control_holds_exactly_the_correct_ones(srit_run):
    from src.prompts import student_prompt

    cfg, out, summary = srit_run
    items = {i["item_id"]: i for i in _read(out / "srit" / "sampling" / "results.json")}
    pairs = _read(out / "srit" / "pairs" / "pairs.json")
    assert pairs and len(pairs) == summary["pairs"]["pairs"]
    per_question: dict[str, list[dict]] = {}
    for p in pairs:
        item = items[p["item_id"]]
        assert p["prompt"] == student_prompt(item["question"])
        assert p["rejected"] in item["pred"] and p["rejected"] not in item["correct_pred"]
        if p["chosen_source"] == "student":
            assert p["chosen"] in item["correct_pred"]
        else:  # mixed falls back to the demonstration only when no sample is correct
            assert p["chosen"] == item["answer_cot"] and not item["correct_pred"]
        assert p["chosen"] != p["rejected"]
        per_question.setdefault(p["item_id"], []).append(p)
    for qpairs in per_question.values():
        assert len(qpairs) <= summary["srit"]["max_pairs_per_question"]
        rejected = [p["rejected"] for p in qpairs]
        assert len(set(rejected)) == len(rejected)  # no sample used twice
    control = _read(out / "srit" / "arms" / "control" / "data" / "train.json")
    original = _read(out / "world" / "data" / "train" / "cot" / "synthetic.json")
    correct = [(i["item_id"], s) for i in items.values() for s in dict.fromkeys(i["correct_pred"])]
    assert [r["answer_cot"] for r in control[:len(original)]] == [r["answer_cot"] for r in original]
    assert [(r["item_id"], r["answer_cot"]) for r in control[len(original):]] == correct


def test_reported_figures_recompute_from_the_run_files(srit_run):
    cfg, out, summary = srit_run
    flags = {}
    for arm in ("control", "dpo"):
        for seed in cfg.seeds:
            items = _read(out / "eval" / f"srit_{arm}_seed{seed}" / "synthetic_heldout_res.json")
            flags.setdefault(arm, []).append([i["correct"] for i in items])
            block = summary["arms"][arm]["seeds"][str(seed)]["held_out"]["all"]
            assert block["correct"] == sum(flags[arm][-1])
            assert block["ci95"] == [round(x, 4) for x in wilson(block["correct"], block["n"])]
    assert summary["comparisons"]["dpo_vs_control"]["held_out_all"]["ci95"] == \
        paired_bootstrap_diff(flags["dpo"], flags["control"])["ci95"]
    for seed in cfg.seeds:
        log = _read(out / "srit" / "arms" / "dpo" / f"seed{seed}" / "train_log.json")["log"]
        reported = summary["dpo_training"][str(seed)]
        assert reported["first"]["rewards/margins"] == log[0]["rewards/margins"]
        assert reported["last"]["rewards/accuracies"] == log[-1]["rewards/accuracies"]
