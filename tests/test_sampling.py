"""Sampling end to end with real vLLM on the tiny model: every strategy, the stop rule, state-reset prefixes,
output files that agree with each other, reruns that replace instead of append, the CLI and in-place reloads.

    .venv/bin/python -m pytest -x -q tests/test_sampling.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from src import prompts
from src.records import load_records
from src.sampling import OUTPUT_FILES, QueryState, SamplingConfig, run_sampling, write_sampling_outputs
from src.sampling.strategies import StrategyContext, get_strategy, reset_prefix

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(sample_num=3, min_correct_num=2, max_resample_num=3, max_new_tokens=48, progress=False)


@pytest.fixture(scope="module")
def pool(synthetic_dir) -> list[dict]:
    return load_records(synthetic_dir / "inference" / "cot" / "synthetic.json")[:16]


def read_outputs(folder: Path) -> dict[str, object]:
    return {name: json.loads((folder / name).read_text()) for name in OUTPUT_FILES}


def assert_consistent(out: dict, pool: list[dict], cfg: SamplingConfig) -> None:
    """The four files describe one run: counts, strategies, plain questions and the per-round bookkeeping agree."""
    before, results, resampled, stats = (out[n] for n in OUTPUT_FILES)
    gold = {r["item_id"]: r for r in pool}
    assert [r["item_id"] for r in results] == [r["item_id"] for r in pool]  # every query once, in order
    assert [r["item_id"] for r in before] == [r["item_id"] for r in pool]
    per_item = Counter(item["item_id"] for item in resampled)
    for b, r in zip(before, results):
        assert len(b["pred"]) == len(b["pred_value"]) == cfg.sample_num
        assert r["pred"][: cfg.sample_num] == b["pred"]  # resampling only appends
        assert len(r["pred"]) == len(r["pred_value"])
        assert len(r["correct_pred"]) == len(r["correct_strategy"])
        assert len(r["correct_pred"]) == len(b["correct_pred"]) + per_item[r["item_id"]]
        assert r["correct_strategy"].count("initial") == len(b["correct_pred"])
        assert set(r["correct_pred"]) <= set(r["pred"])
        assert r.get("level") == gold[r["item_id"]]["level"]  # extra pool fields pass through
    for item in resampled:
        src = gold[item["item_id"]]
        assert item["question"] == src["question"]  # the plain question: no hint leaks into training data
        assert item["answer_value"] == src["answer_value"]
        assert item["strategy"] in (cfg.strategy, "vanilla")
        assert item["answer_cot"] in next(r for r in results if r["item_id"] == item["item_id"])["correct_pred"]
    rounds = stats["rounds"]
    assert stats["strategy"] == cfg.strategy and stats["n_queries"] == len(pool)
    assert rounds[0]["prompts"] == len(pool) and rounds[0]["samples"] == len(pool) * cfg.sample_num
    for prev, cur in zip(rounds, rounds[1:]):
        assert cur["prompts"] == cur["samples"] == prev["below_min_correct"] > 0  # only queries still below
        assert cur["cumulative_samples"] == prev["cumulative_samples"] + cur["samples"]
    # stop rule: either nobody is below min_correct_num any more, or the round budget is spent
    assert rounds[-1]["below_min_correct"] == 0 or len(rounds) - 1 == cfg.max_resample_num
    assert len(rounds) - 1 <= cfg.max_resample_num
    assert rounds[-1]["cumulative_samples"] == sum(len(r["pred"]) for r in results)
    assert sum(rounds[-1]["correct_count_histogram"].values()) == len(pool)
    assert rounds[-1]["covered"] == sum(bool(r["correct_pred"]) for r in results)
    assert rounds[-1]["below_min_correct"] == sum(len(r["correct_pred"]) < cfg.min_correct_num for r in results)
    assert set(rounds[-1]["coverage_by_level"]) == {str(r["level"]) for r in pool}
    assert all(0 < r["generate_seconds"] <= r["wall_seconds"] for r in rounds)
    assert all(sum(r["generated_tokens_by_level"].values()) == r["generated_tokens"] for r in rounds)


# ---- prompts and state-reset cuts (no engine) ---------------------------------------------------------------
def test_guided_prompts_follow_the_spec(pool):
    rec = pool[0]
    q = QueryState(rec)
    ctx = StrategyContext()
    plain = ("Below is a math problem, please give a step-by-step answer.\n\n### Question:\n"
             f"{rec['question']}\n\n### Your step-by-step answer:\n")
    assert get_strategy("vanilla").requests([q], ctx)[0].prompt == plain
    answer = get_strategy("answer_driven").requests([q], ctx)[0].prompt
    assert answer == plain.replace(rec["question"], f"{rec['question']} {rec['answer_value']}")
    rationale = get_strategy("rationale_driven").requests([q], ctx)[0].prompt
    assert f"### Question:\n{rec['question']} \n\n### Reference Answer:\n{rec['answer_cot']}\n\n" in rationale
    reset = get_strategy("state_reset").requests([q], ctx)[0]
    first_line = rec["answer_cot"].split("\n")[0] + "\n"
    assert reset.prefix == first_line and reset.prompt == plain + first_line and q.reset_position == 1


def test_state_reset_lines_grow_then_repeat_the_cap_then_wrap():
    rationale = "step one\nstep two\nstep three\nThe answer is 4"  # n = 4 lines
    got = [reset_prefix(rationale, pos, "lines") for pos in range(9)]
    lines = [line + "\n" for line in rationale.split("\n")]
    expected_counts = [1, 2, 3, 3, 1, 2, 3, 3, 1]  # 1..n-1, n-1 once more, back to 1
    assert got == ["".join(lines[:k]) for k in expected_counts]
    assert all(p.endswith("\n") and "The answer is" not in p for p in got)  # never the whole rationale


def test_brute_force_is_the_vanilla_strategy_with_rounds_wherever_a_run_is_read():
    from src.analysis.experiment import strategy_of_name, strategy_of_stats
    from src.sampling.strategies import BRUTE_FORCE, arm_of, strategy_of_arm

    assert arm_of("vanilla", 128) == BRUTE_FORCE and arm_of("vanilla", 0) == "vanilla"
    assert arm_of("state_reset", 8) == "state_reset" and strategy_of_arm(BRUTE_FORCE) == "vanilla"
    assert strategy_of_stats({"strategy": "vanilla", "max_resample_num": 128}) == BRUTE_FORCE
    assert strategy_of_name("uniform_sample_8_correct_4_max_128") == BRUTE_FORCE  # the original scripts' name
    assert strategy_of_name("state_reset_sample_8") == "state_reset" and strategy_of_name("misc") == ""
    with pytest.raises(ValueError):
        strategy_of_arm("brute")


def test_state_reset_token_fractions_use_the_students_tokenizer(tiny_model_dir, pool):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rationale = pool[3]["answer_cot"]
    ids = tok(rationale, add_special_tokens=False)["input_ids"]
    got = [reset_prefix(rationale, pos, "token_fraction", tok) for pos in range(7)]
    for pos, frac in enumerate([0.2, 0.4, 0.6, 0.8, 0.8, 0.2, 0.4]):
        assert got[pos] == tok.decode(ids[: int(len(ids) * frac)])
        assert rationale.startswith(got[pos]) and got[pos] != rationale
    assert len(got[0]) < len(got[1]) < len(got[2]) < len(got[3]) == len(got[4]) and got[5] == got[0]


# ---- end to end with the shared engine ---------------------------------------------------------------------
def _greedy(llm, texts: list[str], max_tokens: int = 16) -> list[str]:
    from src.engine import generate, sampling_params

    return [t[0] for t in generate(llm, texts, sampling_params(1, 0.0, 1.0, max_tokens)).texts]


@pytest.mark.parametrize("strategy", ["vanilla", "answer_driven", "rationale_driven", "state_reset"])
def test_strategy_end_to_end_outputs_agree(llm, pool, tmp_path, strategy):
    cfg = SamplingConfig(strategy=strategy, **SMALL)
    run = run_sampling(llm, pool, "synthetic", cfg)
    write_sampling_outputs(run, tmp_path)
    assert_consistent(read_outputs(tmp_path), pool, cfg)


def test_state_reset_run_continues_each_querys_own_prefixes(llm, pool, tmp_path):
    # min_correct_num above any reachable count keeps every query active in every round.
    cfg = SamplingConfig(strategy="state_reset", sample_num=1, min_correct_num=100, max_resample_num=5,
                         max_new_tokens=16, progress=False)
    run = run_sampling(llm, pool[:6], "synthetic", cfg)
    for rec, res in zip(pool[:6], run.results):
        lines = [line + "\n" for line in rec["answer_cot"].split("\n")]
        n = len(lines)
        cycle = list(range(1, n)) + [n - 1]
        for pos, response in enumerate(res["pred"][1:]):
            assert response.startswith("".join(lines[: cycle[pos % len(cycle)]]))  # kept = prefix + continuation


def test_state_reset_token_fraction_dataset_in_a_run(llm, pool):
    cfg = SamplingConfig(strategy="state_reset", sample_num=1, min_correct_num=100, max_resample_num=2,
                         max_new_tokens=8, progress=False)
    run = run_sampling(llm, pool[:4], "math", cfg)  # MATH cuts by token fraction (registry)
    tok = llm.get_tokenizer()
    for rec, res in zip(pool[:4], run.results):
        for pos, response in enumerate(res["pred"][1:]):
            assert response.startswith(reset_prefix(rec["answer_cot"], pos, "token_fraction", tok))


def test_no_resampling_when_every_query_has_enough(llm, pool):
    run = run_sampling(llm, pool, "synthetic", SamplingConfig(strategy="answer_driven", min_correct_num=0,
                                                              **{k: v for k, v in SMALL.items()
                                                                 if k != "min_correct_num"}))
    assert len(run.stats["rounds"]) == 1 and run.resample_results == []
    assert run.results == run.before_resample


def test_queries_drop_out_at_min_correct_and_the_loop_stops_early(llm, pool):
    # Greedy decoding makes every sample of a query the same; a query whose gold is set to the model's own greedy
    # answer is right every time, one with an impossible gold never is.
    from src.grading import grade_batch

    greedy = _greedy(llm, [prompts.student_prompt(r["question"]) for r in pool], max_tokens=48)
    graded = grade_batch(greedy, [r["answer_value"] for r in pool], "synthetic")
    reachable = [{**r, "answer_value": g.pred_value} for r, g in zip(pool, graded) if g.pred_value][:4]
    unreachable = [{**r, "answer_value": "-987654321"} for r in pool[:3]]
    assert reachable, "the model extracted no answer from any greedy sample"
    cfg = SamplingConfig(strategy="vanilla", sample_num=1, min_correct_num=2, max_resample_num=4, temperature=0.0,
                         max_new_tokens=48, progress=False)
    mixed = run_sampling(llm, reachable + unreachable, "synthetic", cfg)
    n_r, n_u = len(reachable), len(unreachable)
    assert [r["prompts"] for r in mixed.stats["rounds"]] == [n_r + n_u, n_r + n_u, n_u, n_u, n_u]
    assert [len(r["pred"]) for r in mixed.results] == [2] * n_r + [5] * n_u
    assert [len(r["correct_pred"]) for r in mixed.results] == [2] * n_r + [0] * n_u
    only_reachable = run_sampling(llm, reachable, "synthetic", cfg)
    assert [r["below_min_correct"] for r in only_reachable.stats["rounds"]] == [n_r, 0]  # stopped after round 1
    assert len(only_reachable.resample_results) == n_r


def test_strategies_can_share_one_initial_round(llm, pool):
    first = run_sampling(llm, pool, "synthetic", SamplingConfig(max_resample_num=0, sample_num=2,
                                                                max_new_tokens=16, progress=False))
    cfg = SamplingConfig(strategy="state_reset", sample_num=2, min_correct_num=100, max_resample_num=5,
                         max_new_tokens=16, progress=False)
    cont = run_sampling(llm, [], "synthetic", cfg, initial=first, token_budget=1)
    assert cont.before_resample == first.before_resample
    assert [r["pred"][:2] for r in cont.results] == [r["pred"] for r in first.results]
    assert len(cont.stats["rounds"]) == 2  # a one-token budget is spent by the first resampling round
    assert all(len(r["pred"]) == 3 for r in cont.results)


def test_rerun_into_the_same_folder_replaces_the_files(llm, pool, tmp_path):
    cfg = SamplingConfig(strategy="answer_driven", **SMALL)
    write_sampling_outputs(run_sampling(llm, pool, "synthetic", cfg), tmp_path)
    write_sampling_outputs(run_sampling(llm, pool[:5], "synthetic", cfg), tmp_path)
    out = read_outputs(tmp_path)
    assert_consistent(out, pool[:5], cfg)  # only the second run's five queries, no leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(OUTPUT_FILES)  # no temporary files left


def test_pot_mode_grades_programs_in_the_sandbox(llm, synthetic_dir, tmp_path):
    pool = load_records(synthetic_dir / "inference" / "pot" / "synthetic.json")[:6]
    cfg = SamplingConfig(strategy="state_reset", mode="pot", sample_num=2, min_correct_num=1, max_resample_num=2,
                         max_new_tokens=48, progress=False)
    run = run_sampling(llm, pool, "synthetic", cfg)
    write_sampling_outputs(run, tmp_path)
    assert_consistent(read_outputs(tmp_path), pool, cfg)
    assert run.stats["mode"] == "pot"


# ---- engine: in-place weight reload ------------------------------------------------------------------------
def test_reload_weights_swaps_and_restores_the_model(llm, pool, tmp_path):
    from safetensors.torch import load_file, save_file

    from src.engine import reload_weights

    model_dir = Path(llm.llm_engine.model_config.model)
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    weights = load_file(other / "model.safetensors")
    weights["lm_head.weight"] = weights["lm_head.weight"].flip(0).contiguous()  # a different model
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    texts = [prompts.student_prompt(r["question"]) for r in pool[:4]]
    before = _greedy(llm, texts)
    try:
        reload_weights(llm, other)
        assert _greedy(llm, texts) != before
    finally:
        reload_weights(llm, model_dir)
    assert _greedy(llm, texts) == before


def test_reload_weights_refuses_tied_checkpoints(llm, tmp_path):
    from src.engine import reload_weights

    model_dir = Path(llm.llm_engine.model_config.model)
    config = json.loads((model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    with pytest.raises(ValueError, match="untied"):
        reload_weights(llm, tmp_path)


# ---- the command line --------------------------------------------------------------------------------------
def test_cli_serves_several_datasets_with_one_engine(llm, synthetic_dir, tmp_path):
    model_dir = llm.llm_engine.model_config.model
    pool_file = synthetic_dir / "inference" / "cot" / "synthetic.json"
    small = tmp_path / "pool.json"
    small.write_text(json.dumps(load_records(pool_file)[:6]))
    out = tmp_path / "out"
    cmd = [sys.executable, "inference_answer_driven.py", "--model_name_or_path", model_dir,
           "--inference_data_file", str(small), str(small), "--dataset_name", "synthetic", "gsm8k",
           "--results_path", str(out), "--sample_num", "2", "--min_correct_num", "1", "--max_resample_num", "1",
           "--temperature", "0.7",
           "--max_length", "32", "--max_model_len", "512", "--cpu_kvcache_gib", "1", "--no_progress"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("synthetic", "gsm8k"):
        stats = json.loads((out / name / "sampling_stats.json").read_text())
        assert stats["dataset"] == name and stats["strategy"] == "answer_driven"
        assert stats["engine_start_seconds"] > 0  # reported, and the same engine served both
    first = json.loads((out / "synthetic" / "sampling_stats.json").read_text())["engine_start_seconds"]
    assert first == json.loads((out / "gsm8k" / "sampling_stats.json").read_text())["engine_start_seconds"]


def test_cli_rejects_unpaired_datasets_before_starting_an_engine(tmp_path):
    cmd = [sys.executable, "inference.py", "--model_name_or_path", "nowhere", "--inference_data_file", "a.json",
           "b.json", "--dataset_name", "gsm8k", "--results_path", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "one name per file" in proc.stderr
