"""The demo end to end at a scaled-down size, on the session's engine (weights reloaded in place), and the claim
that every number of its summary can be recomputed from the files the run wrote.

    .venv/bin/python -m pytest -x -q tests/test_demo.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.demo_stats import paired_bootstrap_diff, seed_spread, wilson

HARD = [5, 6]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, llm, trained_tiny_model_dir):
    from src.demo import DemoConfig, Runner, apply_scale

    out = tmp_path_factory.mktemp("demo")
    # The engine was built on the fixture model: the base starts from it so that the vocabularies match.
    cfg = apply_scale(DemoConfig(out_dir=str(out), scale="test", init_model_dir=str(trained_tiny_model_dir)),
                      explicit={"out_dir", "init_model_dir"})
    logs: list[str] = []
    summary = Runner(cfg, llm=llm, log=logs.append).run()
    yield cfg, out, summary, logs, llm
    from src.engine import reload_weights

    reload_weights(llm, trained_tiny_model_dir)  # later tests expect the session model in the shared engine


def _read(path: Path):
    return json.loads(path.read_text())


def test_summary_file_holds_every_reported_part(demo_run):
    cfg, out, summary, _, _ = demo_run
    assert _read(out / "summary.json") == json.loads(json.dumps(summary))
    assert set(summary) >= {"config", "base", "sampling", "data", "arms", "comparisons", "verdicts", "times"}
    for arm in cfg.arms:
        assert set(summary["arms"][arm]["seeds"]) == {str(s) for s in cfg.seeds}
        for block in summary["arms"][arm]["seeds"].values():
            for test in ("held_in", "held_out"):
                assert set(block[test]["by_level"]) == {"1", "2", "3", "4", "5", "6"}
                for acc in block[test]["by_level"].values():
                    assert acc["n"] == cfg.test_per_level
                    assert acc["ci95"][0] <= acc["accuracy"] <= acc["ci95"][1]
        assert set(summary["arms"][arm]["over_seeds"]["held_in"]["all"]) >= {"mean", "min", "max", "sd"}
    for name in ("state_reset", "brute_force"):
        s = summary["sampling"][name]
        assert s["coverage_by_round"][0]["round"] == 0 and len(s["coverage_by_round"]) == s["rounds_run"] + 1
        assert set(s["by_level"]["6"]) >= {"unsolved_after_initial", "newly_covered", "tokens_per_newly_covered"}
    assert {"ratio", "meets_2x"} <= set(summary["sampling"]["hard_coverage_per_token_ratio"])
    assert {"state_reset_vs_control", "state_reset_vs_vanilla"} <= set(summary["comparisons"])
    cat = summary["times"]["by_category_when_computed"]
    assert {"base", "training", "engine_start", "generation", "grading_and_bookkeeping"} <= set(cat)
    assert cat["training"] > 0 and cat["generation"] > 0
    table = (out / "summary.md").read_text()  # the README's tables, from the same summary
    for arm in cfg.arms:
        assert f"| {arm} | mean |" in table and f"| {arm} | {cfg.seeds[0]} |" in table
    assert "| state_reset vs gold |" in table


def test_accuracies_and_comparisons_recompute_from_the_eval_files(demo_run):
    cfg, out, summary, _, _ = demo_run
    flags = {}
    for arm in cfg.arms:
        for seed in cfg.seeds:
            items = _read(out / "eval" / f"{arm}_seed{seed}" / "synthetic_res.json")
            flags[(arm, seed)] = [i["correct"] for i in items]
            block = summary["arms"][arm]["seeds"][str(seed)]["held_in"]
            for lv, acc in block["by_level"].items():
                level_items = [i for i in items if i["level"] == int(lv)]
                correct = sum(i["correct"] for i in level_items)
                assert acc["correct"] == correct and acc["n"] == len(level_items)
                assert acc["ci95"] == [round(x, 4) for x in wilson(correct, len(level_items))]
            hard = [i["correct"] for i in items if i["level"] in HARD]
            assert block["hard"]["accuracy"] == sum(hard) / len(hard)
        means = [summary["arms"][arm]["seeds"][str(s)]["held_in"]["all"]["accuracy"] for s in cfg.seeds]
        assert summary["arms"][arm]["over_seeds"]["held_in"]["all"] == seed_spread(means)
    diff = paired_bootstrap_diff([flags[("state_reset", s)] for s in cfg.seeds],
                                 [flags[("control", s)] for s in cfg.seeds])
    assert summary["comparisons"]["state_reset_vs_control"]["held_in_all"]["diff"] == diff["diff"]
    assert summary["comparisons"]["state_reset_vs_control"]["held_in_all"]["ci95"] == diff["ci95"]


def test_sampling_and_data_numbers_recompute_from_the_sampling_files(demo_run):
    cfg, out, summary, _, _ = demo_run
    before = _read(out / "sampling" / "vanilla" / "results_before_resample.json")
    assert summary["sampling"]["initial"]["samples"] == sum(len(i["pred"]) for i in before) == \
        cfg.n_pool * cfg.sample_num
    unsolved = {i["item_id"] for i in before if not i["correct_pred"]}
    for name in ("state_reset", "brute_force"):
        after = _read(out / "sampling" / name / "results.json")
        stats = _read(out / "sampling" / name / "sampling_stats.json")
        # every strategy continues from the same initial samples
        assert [i["pred"][:cfg.sample_num] for i in after] == [i["pred"] for i in before]
        newly = [i for i in after if i["item_id"] in unsolved and i["correct_pred"]]
        assert summary["sampling"][name]["newly_covered"] == len(newly)
        assert summary["sampling"][name]["resample_tokens"] == sum(r["generated_tokens"] for r in stats["rounds"][1:])
        assert summary["sampling"][name]["resample_samples"] == sum(len(i["pred"]) for i in after) - len(before) * \
            cfg.sample_num
    sr = _read(out / "sampling" / "state_reset" / "sampling_stats.json")
    bf = _read(out / "sampling" / "brute_force" / "sampling_stats.json")
    budget = sum(r["generated_tokens"] for r in sr["rounds"][1:])
    spent = sum(r["generated_tokens"] for r in bf["rounds"][1:])
    # brute force stops once it has spent state reset's budget (or ran out of rounds / active queries)
    assert bf["token_budget"] == budget
    assert spent >= budget or len(bf["rounds"]) - 1 == cfg.brute_force_max_rounds or bf["rounds"][-1][
        "below_min_correct"] == 0
    for arm in cfg.arms:
        records = _read(out / "arms" / arm / "data" / "train.json")
        d = summary["data"][arm]
        assert d["records"] == len(records) == d["original"] + d["kept"]
        assert d["original"] == cfg.n_original
    assert summary["data"]["control"]["kept"] == 0
    # the process check ran: every kept synthetic sample reproduces its gold chain
    from src.synthetic import check_synthetic_rationale

    pool = {r["item_id"]: r for r in _read(out / "world" / "data" / "inference" / "cot" / "synthetic.json")}
    for rec in _read(out / "arms" / "state_reset" / "data" / "train.json")[cfg.n_original:]:
        gold = pool[rec["item_id"]]
        assert check_synthetic_rationale(gold["question"], gold["answer_cot"], rec["answer_cot"]) is None


def test_rerun_reuses_every_finished_stage(demo_run):
    from src.demo import Runner

    cfg, out, summary, _, llm = demo_run
    logs: list[str] = []
    again = Runner(cfg, llm=llm, log=logs.append).run()
    assert logs and all(line.startswith("[cached]") for line in logs), logs
    assert again["arms"] == summary["arms"] and again["sampling"] == summary["sampling"]


def test_gold_arm_trains_on_o_plus_every_pool_gold_rationale(demo_run):
    cfg, out, summary, _, _ = demo_run
    original = _read(out / "world" / "data" / "train" / "cot" / "synthetic.json")
    pool = _read(out / "world" / "data" / "inference" / "cot" / "synthetic.json")
    records = _read(out / "arms" / "gold" / "data" / "train.json")
    assert records[:len(original)] == original
    assert [(r["item_id"], r["answer_cot"]) for r in records[len(original):]] == \
        [(p["item_id"], p["answer_cot"]) for p in pool]
    assert summary["data"]["gold"]["kept"] == cfg.n_pool
    assert {"state_reset_vs_gold", "gold_vs_control", "vanilla_vs_gold"} <= set(summary["comparisons"])


def test_second_iteration_samples_with_each_arms_own_model(demo_run):
    from src.demo import FIXED
    from src.synthetic import check_synthetic_rationale

    cfg, out, summary, _, _ = demo_run
    assert cfg.iterations == 2
    pool = {r["item_id"]: r for r in _read(out / "world" / "data" / "inference" / "cot" / "synthetic.json")}
    chains = [a for a in cfg.arms if a not in FIXED]
    for arm in chains:
        stats = _read(out / "iter2" / "sampling" / arm / "sampling_stats.json")
        assert stats["strategy"] == ("vanilla" if arm in ("vanilla", "brute_force") else arm)
        if arm == "vanilla":
            assert len(stats["rounds"]) == 1  # the vanilla arm never resamples
        kept = [r for r in _read(out / "iter2" / "arms" / arm / "data" / "train.json") if "strategy" in r]
        for rec in kept:
            gold = pool[rec["item_id"]]
            assert check_synthetic_rationale(gold["question"], gold["answer_cot"], rec["answer_cot"]) is None
        rows = summary["iterations"]["arms"][arm]
        assert [r["iteration"] for r in rows] == [1, 2]
        hard = sum(1 for r in kept if r["level"] in HARD)
        assert rows[1]["kept"] == {"n": len(kept), "hard": hard, "hard_share": hard / len(kept) if kept else None}
        for seed in cfg.seeds:
            assert (out / "eval" / f"iter2_{arm}_seed{seed}" / "synthetic_heldout_res.json").is_file()
    # brute force spends what state reset spent on resampling in the same iteration
    sr = _read(out / "iter2" / "sampling" / "state_reset" / "sampling_stats.json")
    bf = _read(out / "iter2" / "sampling" / "brute_force" / "sampling_stats.json")
    assert bf["token_budget"] == sum(r["generated_tokens"] for r in sr["rounds"][1:])
    for arm in FIXED:
        assert [r["iteration"] for r in summary["iterations"]["arms"][arm]] == [1]
        assert not (out / "iter2" / "arms" / arm).exists()


def test_iterations_with_brute_force_need_state_reset(tmp_path, capsys):
    import demo

    out = tmp_path / "d"
    assert demo.main(["--out_dir", str(out), "--iterations", "2", "--arms", "control", "brute_force"]) == 2
    assert "needs state_reset" in capsys.readouterr().err
    assert not out.exists()


def test_report_has_each_sampling_run_once_perplexities_and_the_tail_figure(demo_run):
    import csv

    from src.analysis.tail import plot_tail_over_iterations
    from src.demo import write_report

    cfg, out, summary, _, _ = demo_run
    report = write_report(out, cfg)
    text = report.read_text()
    assert "under `the base`" in text and "| state_reset (seed 1) | original | perplexity |" in text
    with open(out / "report" / "sampling_efficiency.csv") as fh:
        rows = list(csv.DictReader(fh))
    # shared sampling is attached to the first seed of each arm only: one row per arm and sampled iteration
    labels = [r["strategy"] for r in rows]
    assert labels and all(label.endswith(f"(seed {cfg.seeds[0]})") for label in labels)
    assert sum(label.startswith("state_reset ") for label in labels) == cfg.iterations
    png = plot_tail_over_iterations(summary["iterations"], out / "report" / "tail_over_iterations.png")
    assert png.stat().st_size > 0


def test_the_shipped_base_serves_the_default_recipe_only(tmp_path):
    """make demo starts from data/demo_base when the world and base recipe are the default ones; any other
    recipe trains its own base. Fails when the default world or recipe changes: rebuild the shipped base (its
    stage.json says how)."""
    import hashlib

    from src.demo import SHIPPED_BASE, DemoConfig, Runner

    runner = Runner(DemoConfig(out_dir=str(tmp_path / "default")), log=lambda _: None)
    runner.world()
    info = runner.base()
    assert info.get("copied_from") == str(SHIPPED_BASE), "the default world or base recipe no longer matches"
    shipped = json.loads((SHIPPED_BASE / "stage.json").read_text())
    weights = (tmp_path / "default" / "base" / "model" / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == shipped["model_sha256"]
    other = Runner(DemoConfig(out_dir=str(tmp_path / "other"), n_original=40, n_pool=8, test_per_level=2,
                              base_steps=2, torch_threads=1, progress=False), log=lambda _: None)
    other.world()
    assert "copied_from" not in other.base()  # trained (2 steps), not copied
