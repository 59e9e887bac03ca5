"""``demo.py --experiment tripost`` end to end at ``--scale test`` on the session's engine, and the claims that the
two arms train for the same optimizer steps on the same questions, that the TriPosT data follows the p = 1.5
rule, and that every reported count recomputes from the files the run wrote.

    .venv/bin/python -m pytest -x -q tests/test_demo_tripost.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from src.demo_stats import paired_bootstrap_diff, wilson


@pytest.fixture(scope="module")
def tripost_run(tmp_path_factory, llm, trained_tiny_model_dir):
    from src.demo import DemoConfig, Runner, apply_scale

    out = tmp_path_factory.mktemp("demo_tripost")
    # the engine was built on the fixture model: it IS the base (--base_steps 0), so the vocabularies match and
    # no base is trained here (the experiment only needs a base that attempts the questions)
    cfg = apply_scale(DemoConfig(out_dir=str(out), scale="test", experiment="tripost", base_steps=0,
                                 init_model_dir=str(trained_tiny_model_dir), progress=False),
                      explicit={"out_dir", "experiment", "base_steps", "init_model_dir", "progress"})
    logs: list[str] = []
    summary = Runner(cfg, llm=llm, log=logs.append).run()
    yield cfg, out, summary, llm
    from src.engine import reload_weights

    reload_weights(llm, trained_tiny_model_dir)  # later tests expect the session model in the shared engine


def _read(path: Path):
    return json.loads(path.read_text())


def test_summary_and_table_hold_every_reported_part(tripost_run):
    from src.demo_tripost import format_table

    cfg, out, summary, _ = tripost_run
    assert _read(out / "tripost" / "summary.json") == json.loads(json.dumps(summary))
    assert set(summary) >= {"config", "base", "data", "arms", "comparisons", "verdicts", "times"}
    assert set(summary["arms"]) == {"tripost", "control"}
    for info in summary["arms"].values():
        assert set(info["seeds"]) == {str(s) for s in cfg.seeds}
        for block in info["seeds"].values():
            for test in ("held_in", "held_out"):
                for when in ("first", "final"):
                    assert set(block[test][when]["by_level"]) == {"1", "2", "3", "4", "5", "6"}
                    for acc in block[test][when]["by_level"].values():
                        assert acc["n"] == cfg.test_per_level
                        assert acc["ci95"][0] <= acc["accuracy"] <= acc["ci95"][1]
        assert {"mean", "min", "max", "sd"} <= set(info["over_seeds"]["held_in"]["final"]["all"])
    for name in ("tripost_final_vs_control_final", "tripost_first_vs_control_first",
                 "tripost_final_vs_tripost_first"):
        assert set(summary["comparisons"][name]) == {"held_in_all", "held_in_hard", "held_out_all", "held_out_hard"}
    assert summary["times"]["by_category_when_computed"]["training"] > 0
    table = format_table(summary)
    assert "first attempt vs after 2 self-improvement rounds" in table and "fixed/broken" in table


def test_arms_train_equal_steps_on_the_same_questions_with_the_p_rule(tripost_run):
    cfg, out, summary, _ = tripost_run
    for arm in ("tripost", "control"):
        for seed in cfg.seeds:
            log = _read(out / "tripost" / "arms" / arm / f"seed{seed}" / "train_log.json")
            assert log["step"] == cfg.arm_steps  # equal optimizer steps, whatever the data size
        assert summary["arms"][arm]["optimizer_steps"] == [cfg.arm_steps] * len(cfg.seeds)
    pool = _read(out / "world" / "data" / "inference" / "cot" / "synthetic.json")
    attempted = [i["item_id"] for i in _read(out / "tripost" / "attempts" / "results.json")]
    assert attempted == [r["item_id"] for r in pool[:len(attempted)]]
    control = _read(out / "tripost" / "data" / "control" / "train.json")
    tripost = _read(out / "tripost" / "data" / "tripost" / "train.json")
    # the control is the gold rationale of every attempted question, and TriPosT saw only those questions
    assert sorted(r["item_id"] for r in control) == sorted(attempted)
    assert {r["item_id"] for r in tripost} <= set(attempted)
    gold = {r["item_id"]: r["answer_cot"] for r in pool}
    assert all(r["answer_cot"] == gold[r["item_id"]] for r in control)
    kinds = {k: sum(r["kind"] == k for r in tripost) for k in ("improvement", "non_improvement", "gold")}
    counts = summary["data"]["examples"]
    assert kinds["improvement"] == counts["improvement"] > 0
    expected = min(math.ceil(kinds["improvement"] / 1.5), counts["non_improvement_available"])
    assert kinds["non_improvement"] == expected and kinds["gold"] == min(expected, len(attempted))
    # every kept trajectory's error step moves strictly forward and ends correct
    for t in _read(out / "tripost" / "edit" / "trajectories.json"):
        if t["status"] == "improved":
            steps = t["error_steps"]
            assert steps[-1] is None and all(a < b for a, b in zip(steps[:-2], steps[1:-1]))


def test_first_final_fixed_broken_recompute_from_the_eval_files(tripost_run):
    cfg, out, summary, _ = tripost_run
    finals = {}
    for arm in ("tripost", "control"):
        for seed in cfg.seeds:
            items = _read(out / "tripost" / "eval" / f"{arm}_seed{seed}" / "synthetic_res.json")
            block = summary["arms"][arm]["seeds"][str(seed)]["held_in"]
            first = sum(i["first_attempt_correct"] for i in items)
            assert block["first"]["all"]["correct"] == first
            assert block["first"]["all"]["ci95"] == [round(x, 4) for x in wilson(first, len(items))]
            assert block["final"]["all"]["correct"] == sum(i["correct"] for i in items)
            for lv, row in block["by_level"].items():
                mine = [i for i in items if str(i["level"]) == lv]
                assert row["fixed"] == sum(i["correct"] and not i["first_attempt_correct"] for i in mine)
                assert row["broken"] == sum(i["first_attempt_correct"] and not i["correct"] for i in mine)
            # the final answer is the last attempt of the self-improvement rounds
            assert all(i["pred"][0] == i["self_improve"]["attempts"][-1] for i in items)
            finals[(arm, seed)] = [i["correct"] for i in items]
    diff = paired_bootstrap_diff([finals[("tripost", s)] for s in cfg.seeds],
                                 [finals[("control", s)] for s in cfg.seeds])
    got = summary["comparisons"]["tripost_final_vs_control_final"]["held_in_all"]
    assert got["diff"] == diff["diff"] and got["ci95"] == diff["ci95"]


def test_rerun_reuses_every_finished_stage(tripost_run):
    from src.demo import Runner

    cfg, out, summary, llm = tripost_run
    logs: list[str] = []
    again = Runner(cfg, llm=llm, log=logs.append).run()
    assert logs and all(line.startswith("[cached]") for line in logs), logs
    assert again["arms"] == summary["arms"] and again["data"] == summary["data"]
