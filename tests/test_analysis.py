"""analyze.py / src.analysis on experiment folders built from real tiny runs (shared `llm`, real sampling and
evaluation), read back from the files: every table and figure exists, figures are real pictures, table numbers
equal those recounted from the result files, perplexity agrees with transformers, gaps never crash it."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.records import load_records, write_json

# Small runs on the 60-query synthetic pool: enough correct samples on the trained tiny model to draw every
# distribution, a few seconds of generation per arm.
ARMS = {  # folder name -> (strategy, max_resample_num)
    "iter_original_sample_4_correct_2_max_0": ("vanilla", 0),
    "uniform_sample_4_correct_2_max_3": ("vanilla", 3),
    "state_reset_sample_4_correct_2_max_3": ("state_reset", 3),
}
LABELS = {"iter_original_sample_4_correct_2_max_0": "vanilla", "uniform_sample_4_correct_2_max_3": "brute_force",
          "state_reset_sample_4_correct_2_max_3": "state_reset"}  # the strategy each run's files name
EVAL_SETS = ("synthetic", "synthetic_heldout")


@pytest.fixture(scope="module")
def experiments(llm, synthetic_dir, trained_tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Three experiment folders in the iteration scripts' layout: iter_data/synthetic_iter_0.json,
    iter_0/model, iter_0/eval_data (eval.py's files), iter_0/inference_data (the sampling run's files)."""
    from src.evaluation import evaluate_dataset
    from src.sampling import SamplingConfig, run_sampling, write_sampling_outputs

    root = tmp_path_factory.mktemp("experiments")
    original = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")
    pool = load_records(synthetic_dir / "inference" / "cot" / "synthetic.json")
    evals = {}
    for name in EVAL_SETS:
        items, metrics = evaluate_dataset(llm, load_records(synthetic_dir / "test" / f"{name}.json", "test"), name,
                                          max_tokens=128)
        evals[name] = (items, metrics)
    out = {}
    for folder, (strategy, max_resample) in ARMS.items():
        exp = root / folder
        write_json(exp / "iter_data" / "synthetic_iter_0.json", original)
        shutil.copytree(trained_tiny_model_dir, exp / "iter_0" / "model" / "model")
        for name, (items, _) in evals.items():
            write_json(exp / "iter_0" / "eval_data" / f"{name}_res.json", items)
        write_json(exp / "iter_0" / "eval_data" / "metrics.json",
                   {"model": str(trained_tiny_model_dir), "mode": "cot",
                    "datasets": {name: m for name, (_, m) in evals.items()}})
        cfg = SamplingConfig(strategy=strategy, sample_num=4, min_correct_num=2, max_resample_num=max_resample,
                             max_new_tokens=128, progress=False)
        write_sampling_outputs(run_sampling(llm, pool, "synthetic", cfg), exp / "iter_0" / "inference_data")
        out[folder] = exp
    return out


@pytest.fixture(scope="module")
def report(experiments, tmp_path_factory):
    """The report of the three folders, written by analyze.py's main (transformers perplexities)."""
    import analyze

    out = tmp_path_factory.mktemp("report")
    assert analyze.main([*map(str, experiments.values()), "--out", str(out), "--ppl_backend", "transformers",
                         "--max_ppl_records", "60"]) == 0
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def assert_real_image(path: Path) -> None:
    """A PNG of plausible size with drawn content: many colours and a fair share of non-white pixels."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width >= 400 and img.height >= 300
        pixels = np.asarray(img.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, f"{path.name}: too few colours"
    non_white = np.mean(np.any(pixels < 240, axis=-1))
    assert 0.03 < non_white < 0.9, f"{path.name}: {non_white:.3f} of the pixels are drawn"


def test_every_table_and_figure_is_written(report):
    names = {p.name for p in report.iterdir()}
    for table in ("accuracy", "tail_summary", "sampling_efficiency"):
        assert f"{table}.csv" in names and f"{table}.md" in names
    figures = ["tail_difficulty_by_strategy.png", "tail_vanilla.png", "tail_brute_force.png",
               "tail_state_reset.png", "efficiency_iter0_synthetic.png", "efficiency_levels_iter0_synthetic.png"]
    md = (report / "report.md").read_text(encoding="utf-8")
    for fig in figures:
        assert fig in names, fig
        assert_real_image(report / fig)
        assert f"]({fig})" in md  # embedded in report.md
    for table in ("accuracy", "tail_summary", "sampling_efficiency"):
        assert (report / f"{table}.md").read_text(encoding="utf-8").strip() in md


def test_accuracy_table_equals_result_files(report, experiments):
    rows = read_csv(report / "accuracy.csv")
    assert [r["strategy"] for r in rows] == ["vanilla (control)", "brute_force", "state_reset"]
    for row, exp in zip(rows, experiments.values()):
        accs = {}
        for name in EVAL_SETS:
            items = json.loads((exp / "iter_0" / "eval_data" / f"{name}_res.json").read_text())
            accs[name] = 100 * sum(it["correct"] for it in items) / len(items)
            assert float(row[name]) == pytest.approx(accs[name], abs=0.005)
        assert float(row["held-in avg"]) == pytest.approx(accs["synthetic"], abs=0.005)
        assert float(row["held-out avg"]) == pytest.approx(accs["synthetic_heldout"], abs=0.005)


def test_efficiency_table_equals_sampling_stats(report, experiments):
    rows = {r["strategy"]: r for r in read_csv(report / "sampling_efficiency.csv")}
    bf = json.loads((experiments["uniform_sample_4_correct_2_max_3"] / "iter_0" / "inference_data" /
                     "sampling_stats.json").read_text())
    bf_final = bf["rounds"][-1]["coverage"]
    for folder, label in LABELS.items():
        stats = json.loads((experiments[folder] / "iter_0" / "inference_data" / "sampling_stats.json").read_text())
        last = stats["rounds"][-1]
        row = rows[label]
        assert int(row["samples"]) == last["cumulative_samples"]
        assert int(row["generated tokens"]) == last["cumulative_generated_tokens"]
        assert float(row["coverage (%)"]) == pytest.approx(100 * last["coverage"], abs=0.005)
        for level, frac in last["coverage_by_level"].items():
            assert float(row[f"coverage level {level} (%)"]) == pytest.approx(100 * frac, abs=0.005)
        reached = [r["cumulative_generated_tokens"] for r in stats["rounds"] if r["coverage"] >= bf_final - 1e-9]
        assert row["tokens to reach it"] == (str(reached[0]) if reached else "not reached")


def test_tail_summary_recounts_levels_from_results(report, experiments, synthetic_dir):
    rows = read_csv(report / "tail_summary.csv")
    original = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")
    top = max(r["level"] for r in original)
    for folder in ARMS:
        results = json.loads((experiments[folder] / "iter_0" / "inference_data" / "results.json").read_text())
        levels = [it["level"] for it in results for _ in it["correct_pred"]]
        label = LABELS[folder]
        row = next(r for r in rows if r["strategy"] == label and r["data"] == "iter 0"
                   and r["metric"] == "difficulty (level)")
        assert int(row["n"]) == len(levels)
        assert float(row["mean"]) == pytest.approx(float(np.mean(levels)), rel=1e-6)
        assert float(row["tail share (%)"]) == pytest.approx(100 * np.mean([lv >= top for lv in levels]), abs=1e-6)
        ppl = next(r for r in rows if r["strategy"] == label and r["data"] == "original"
                   and r["metric"] == "perplexity")
        assert int(ppl["n"]) == 60 and math.isfinite(float(ppl["mean"])) and float(ppl["mean"]) > 1


def test_original_rows_recount_the_iteration_0_data(report, experiments, trained_tiny_model_dir):
    """The original data's row: levels and token lengths recounted from iter_data/synthetic_iter_0.json with the
    model's tokenizer; its tail share is the share at its own hardest level."""
    from transformers import AutoTokenizer

    original = load_records(next(iter(experiments.values())) / "iter_data" / "synthetic_iter_0.json")
    levels = [r["level"] for r in original]
    tok = AutoTokenizer.from_pretrained(str(trained_tiny_model_dir))
    lengths = [len(tok(r["answer_cot"], add_special_tokens=False).input_ids) for r in original]
    rows = [r for r in read_csv(report / "tail_summary.csv") if r["strategy"] == "state_reset"
            and r["data"] == "original"]
    level_row = next(r for r in rows if r["metric"] == "difficulty (level)")
    length_row = next(r for r in rows if r["metric"] == "length")
    assert int(level_row["n"]) == len(original)
    assert float(level_row["mean"]) == pytest.approx(float(np.mean(levels)), rel=1e-9)
    assert float(level_row["tail share (%)"]) == pytest.approx(100 * levels.count(max(levels)) / len(levels))
    assert float(length_row["mean"]) == pytest.approx(float(np.mean(lengths)), rel=1e-9)
    assert float(length_row["q90"]) == pytest.approx(float(np.quantile(lengths, 0.9)), rel=1e-9)


def test_perplexity_matches_transformers_within_one_percent(llm, trained_tiny_model_dir):
    """The project's perplexity (vLLM prompt log-probs and the batched transformers path, padded next to a
    longer text) against a direct, unbatched transformers computation of exp(mean NLL of the rationale)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from src.analysis.perplexity import HfPerplexity, VllmPerplexity
    from src.prompts import student_prompt

    question = "Mia has 7 apples. Then she buys 3 more apples. How many apples does Mia have now?"
    rationale = "Mia buys 3 more apples, so she has <<7+3=10>>10 apples.\nThe answer is 10"
    longer = ("Liam has 12 coins. Then he doubles his coins. Then he loses 4 coins. How many coins does Liam "
              "have now?", "Liam doubles his coins, so he has <<12*2=24>>24 coins.\nLiam loses 4 coins, so he "
              "has <<24-4=20>>20 coins.\nThe answer is 20")
    tok = AutoTokenizer.from_pretrained(str(trained_tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(trained_tiny_model_dir), dtype=torch.float32).eval()
    prompt_ids = tok(student_prompt(question)).input_ids
    ids = torch.tensor([prompt_ids + tok(rationale, add_special_tokens=False).input_ids])
    labels = ids.clone()
    labels[0, :len(prompt_ids)] = -100  # loss on the rationale tokens only
    with torch.no_grad():
        direct = math.exp(model(input_ids=ids, labels=labels).loss.item())
    via_vllm = VllmPerplexity(llm)([(question, rationale), longer])[0]
    via_hf = HfPerplexity(trained_tiny_model_dir, batch_size=2)([(question, rationale), longer])[0]
    assert direct > 1
    assert via_vllm == pytest.approx(direct, rel=0.01)
    assert via_hf == pytest.approx(direct, rel=0.01)


def test_partial_and_missing_folders_give_a_report(experiments, tmp_path, capsys):
    """An unfinished iteration, a corrupt file, an empty folder: a report and a list of gaps."""
    import analyze

    partial = tmp_path / "state_reset_partial"
    shutil.copytree(experiments["state_reset_sample_4_correct_2_max_3"], partial)
    shutil.rmtree(partial / "iter_0" / "model")
    (partial / "iter_0" / "eval_data" / "metrics.json").write_text("{not json")
    (partial / "iter_0" / "eval_data" / "synthetic_heldout_res.json").unlink()
    (partial / "iter_2" / "inference_data").mkdir(parents=True)  # started, nothing written; iter_1 absent
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "report"
    # a folder that does not exist is refused by analyze.py (tests/test_cli_errors.py), an empty one is reported
    rc = analyze.main([str(partial), str(empty), "--out", str(out)])
    assert rc == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    for gap in ("iter_1/ missing", "iter_2: no evaluation results", "iter_2: sampling not finished",
                "metrics.json: invalid JSON", "no trained model", "not an experiment folder",
                "perplexities skipped"):
        assert gap in md, gap
    assert "Traceback" not in md and "could not be drawn" not in md
    rows = read_csv(out / "accuracy.csv")  # what exists is still reported: iteration 0, held-in set only
    assert len(rows) == 1 and rows[0]["synthetic"] != "" and "synthetic_heldout" not in rows[0]
    assert_real_image(out / "efficiency_iter0_synthetic.png")
    assert "missing:" in capsys.readouterr().out


def test_accuracy_table_averages_and_deltas_against_the_control_seeds():
    """Held-in/held-out averages are unweighted over data sets; deltas compare with the mean of the control's arms
    (e.g. two seeds) at the same iteration."""
    from src.analysis import Arm
    from src.analysis.tables import accuracy_table

    def items(correct: int, n: int) -> list[dict]:
        return [{"correct": i < correct} for i in range(n)]

    controls = [Arm(f"control s{s}", control=True) for s in (0, 1)]
    controls[0].add_eval(1, "gsm8k", items(4, 10))
    controls[1].add_eval(1, "gsm8k", items(6, 10))
    guided = Arm("state_reset", strategy="state_reset")
    guided.add_eval(1, "gsm8k", items(7, 10))
    guided.add_eval(1, "math", items(1, 4))  # held-in average: (70 + 25) / 2, not 8 / 14
    guided.add_eval(1, "svamp", items(3, 5))
    table = accuracy_table([guided, *controls])
    assert table.headers[:6] == ["strategy", "iteration", "gsm8k", "math", "held-in avg", "svamp"]
    rows = {r[0]: dict(zip(table.headers, r)) for r in table.rows}
    assert list(rows) == ["control s0 (control)", "control s1 (control)", "state_reset"]
    row = rows["state_reset"]
    assert (row["gsm8k"], row["math"], row["held-in avg"], row["svamp"]) == (70.0, 25.0, 47.5, 60.0)
    assert row["Δ held-in vs control"] == pytest.approx(47.5 - 50.0)
    assert rows["control s0 (control)"]["math"] is None and "| — |" in table.to_markdown()
