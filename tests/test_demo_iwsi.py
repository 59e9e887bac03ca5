"""`demo.py --experiment iwsi` end to end at `--scale test` size (the session engine: one run for the module), and
what the arms' data must satisfy: IWSI keeps exactly floor(k * n) of the vote-kept samples, the lowest DS weights;
the DS losses are the base model's; LMSI keeps the majority class; label keeps gold-correct samples only; every
arm trains the same number of optimizer steps; the summary's statistics recompute from the files.

    .venv/bin/python -m pytest -x -q tests/test_demo_iwsi.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from src.demo_stats import paired_bootstrap_diff

ARM_STEPS = 6
SEEDS = ["1", "2"]  # the experiment itself runs 3 seeds; two keep this test short


def _read(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def iwsi_run(tmp_path_factory, llm, trained_tiny_model_dir):
    import demo
    from src.demo import Runner
    from src.engine import reload_weights

    out = tmp_path_factory.mktemp("demo_iwsi")
    # the fixture model is the base as is (--base_steps 0): it writes answers, so votes have something to count.
    # The flags go through the CLI's parser and checks; the run uses the session engine (built on the same
    # model, so the vocabularies match): a second in-process engine would tear down vLLM's process-wide state
    # on deletion and break the shared one.
    cfg = demo.parse(["--experiment", "iwsi", "--scale", "test", "--out_dir", str(out), "--init_model_dir",
                      str(trained_tiny_model_dir), "--base_steps", "0", "--arm_steps", str(ARM_STEPS),
                      "--seeds", *SEEDS, "--n_pool", "40", "--test_per_level", "6", "--torch_threads", "1",
                      "--progress", "false"])
    demo.check_demo_args(cfg)
    Runner(cfg, llm=llm, log=lambda _: None).run()
    yield out, _read(out / "iwsi" / "summary.json")
    reload_weights(llm, trained_tiny_model_dir)  # later tests expect the session model in the shared engine


def test_summary_reports_every_arm_comparison_and_figure(iwsi_run):
    out, s = iwsi_run
    assert set(s["arms"]) == {"lmsi", "iwsi", "iwsi_w", "label"}
    for arm in s["arms"].values():
        assert set(arm["seeds"]) == set(SEEDS)
        for test in ("held_in", "held_out"):
            block = arm["seeds"]["1"][test]["all"]
            assert block["ci95"][0] <= block["accuracy"] <= block["ci95"][1]
            assert set(arm["over_seeds"][test]["all"]) >= {"mean", "min", "max", "sd"}
    assert {"iwsi_vs_lmsi", "iwsi_vs_label", "iwsi_w_vs_lmsi", "iwsi_w_vs_label"} <= set(s["comparisons"])
    assert [b["bin"] for b in s["figure"]["ds_bins"]] == ["[1,1.1)", "[1.1,1.3)", "[1.3,1.5)", "[1.5,2)", "[2,inf)"]
    h = s["figure"]["loss_histograms"]
    ds = _read(out / "iwsi" / "data" / "ds.json")
    assert sum(h["valid"]) == len(ds["valid_losses"]) and sum(h["generated_before"]) == len(ds["samples"])
    assert sum(h["generated_after"]) == sum(x["kept"] for x in ds["samples"])
    assert sum(b["n"] for b in s["figure"]["ds_bins"]) == len(ds["samples"])  # every DS weight is >= 1
    assert (out / "iwsi" / "figure.png").stat().st_size > 0
    # the statistics recompute from the evaluation files
    flags = {arm: [[i["correct"] for i in _read(out / "eval" / f"iwsi_{arm}_seed{seed}" / "synthetic_res.json")]
                   for seed in SEEDS] for arm in ("iwsi", "lmsi")}
    d = paired_bootstrap_diff(flags["iwsi"], flags["lmsi"])
    assert s["comparisons"]["iwsi_vs_lmsi"]["held_in_all"]["ci95"] == d["ci95"]


def test_every_arm_trains_the_same_optimizer_steps(iwsi_run):
    out, s = iwsi_run
    for arm in s["arms"]:
        assert s["optimizer_steps"][arm] == [ARM_STEPS] * len(SEEDS)
        for seed in SEEDS:
            assert _read(out / "iwsi" / "arms" / arm / f"seed{seed}" / "train_log.json")["step"] == ARM_STEPS


def test_iwsi_keeps_floor_k_n_lowest_ds_of_the_vote_kept_samples(iwsi_run):
    out, s = iwsi_run
    data = out / "iwsi" / "data"
    n_o = s["data"]["original"]
    lmsi, iwsi, iwsi_w = (_read(data / f"{a}.json") for a in ("lmsi", "iwsi", "iwsi_w"))
    assert lmsi[:n_o] == iwsi[:n_o] == iwsi_w[:n_o]  # every arm = O + its kept samples
    samples = iwsi_w[n_o:]
    assert len(samples) > 0, "the fixture model should reach some voted answer"
    assert [(r["item_id"], r["answer_cot"]) for r in samples] == [(r["item_id"], r["answer_cot"]) for r in lmsi[n_o:]]
    kept = iwsi[n_o:]
    assert len(kept) == math.floor(s["iwsi"]["keep_fraction"] * len(samples) + 1e-9)
    for r in samples:
        assert r["ds_weight"] == pytest.approx(max(r["w_prime"], 1 / r["w_prime"]))
    kept_keys = {(r["item_id"], r["answer_cot"]) for r in kept}
    dropped = [r["ds_weight"] for r in samples if (r["item_id"], r["answer_cot"]) not in kept_keys]
    assert max(r["ds_weight"] for r in kept) <= min(dropped, default=math.inf)


def test_ds_losses_are_the_base_models(iwsi_run, trained_tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from src.iwsi import load_tokenizer, per_sample_losses, span_examples

    out, s = iwsi_run
    samples = _read(out / "iwsi" / "data" / "iwsi_w.json")[s["data"]["original"]:][:5]
    ds = _read(out / "iwsi" / "data" / "ds.json")
    tok = load_tokenizer(str(trained_tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(out / "base" / "model")
    losses = per_sample_losses(model, span_examples(samples, tok, "full", 1024), tok.pad_token_id, batch_size=1)
    assert losses == pytest.approx([x["loss"] for x in ds["samples"][:5]], abs=1e-4)
    valid_mean = sum(ds["valid_losses"]) / len(ds["valid_losses"])
    assert [r["w_prime"] for r in samples] == pytest.approx([valid_mean / x for x in losses], rel=1e-4)


def test_vote_and_label_arms_keep_what_they_claim(iwsi_run):
    from src.grading import answers_equal

    out, s = iwsi_run
    n_o = s["data"]["original"]
    items = {i["item_id"]: i for i in _read(out / "iwsi" / "sampling" / "results.json")}
    for r in _read(out / "iwsi" / "data" / "label.json")[n_o:]:
        assert r["answer_cot"] in items[r["item_id"]]["correct_pred"]
    lmsi_by_item: dict[str, list[str]] = {}
    for r in _read(out / "iwsi" / "data" / "lmsi.json")[n_o:]:
        lmsi_by_item.setdefault(r["item_id"], []).append(r["answer_cot"])
    right = 0
    for item_id, texts in lmsi_by_item.items():
        item = items[item_id]
        value = item["pred_value"][item["pred"].index(texts[0])]
        same = sum(1 for v in item["pred_value"] if v and answers_equal(v, value, "synthetic"))
        others = [v for v in item["pred_value"] if v and not answers_equal(v, value, "synthetic")]
        # the kept class is a majority: no other answer has more samples
        assert all(sum(1 for w in others if answers_equal(w, v, "synthetic")) <= same for v in others)
        right += answers_equal(value, item["answer_value"], "synthetic")
    assert s["vote_accuracy"]["voted"] == len(lmsi_by_item)
    assert s["vote_accuracy"]["vote_equals_gold"] == right
