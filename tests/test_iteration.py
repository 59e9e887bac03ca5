"""One GSI iteration of a scripts/tiny/ script end to end (DeepSpeed training, vLLM eval, vLLM sampling, filtering),
and the same run killed with SIGKILL during sampling, rerun, and checked against the uninterrupted run.

Every stage is a real subprocess started by the real shell script; only sizes are overridden (through the
environment, as a user would): 24 pool questions, 24 + 24 test items, 2 samples, 3 training steps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "tiny" / "cot_train_state_reset.sh"
EXP = "tiny_cot/state_reset_sample_2_correct_2_max_8_orig_true_preiter_false"


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    from src.synthetic import WorldConfig, write_world

    out = tmp_path_factory.mktemp("loop_world")
    write_world(WorldConfig(seed=1, n_train=64, n_pool=24, n_test_held_in=24, n_test_held_out=24), out)
    return out


def script_env(out_dir: Path, world: Path, model: Path) -> dict[str, str]:
    return {
        **os.environ, "OUTPUT_DIR": str(out_dir), "DATA_DIR": str(world), "MODEL_PATH": str(model),
        "TINY_SETUP": "0", "NUM_ITERS": "1", "SEED": "0",
        # sampling: 2 samples, then resampling rounds for every query short of 2 correct (most, on this model)
        "SAMPLE_NUM": "2", "MIN_CORRECT_NUM": "2", "MAX_RESAMPLE_NUM": "8", "MAX_LENGTH": "128",
        # training: a few DeepSpeed steps with a small rate, so the already trained model stays useful
        "MAX_STEPS": "3", "BATCH_SIZE": "8", "WARMUP_STEP": "0", "LEARNING_RATE": "1e-4",
        "ACCELERATE_CONFIG": "configs/accelerate_cpu_zero2_2proc.yaml",
        # the original data too: the next iteration's data is never empty, however few samples pass the check
        "INCLUDE_ORIGINAL": "true",
    }


def run_script(env: dict[str, str], log: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    with log.open("w") as fh:
        proc = subprocess.run(["bash", str(SCRIPT)], env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout,
                              start_new_session=True)
    if proc.returncode != 0:
        pytest.fail(f"{SCRIPT.name} exited {proc.returncode}; last output:\n{log.read_text()[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_world, trained_tiny_model_dir) -> Path:
    """The output folder of one uninterrupted iteration."""
    out = tmp_path_factory.mktemp("loop_run")
    run_script(script_env(out, small_world, trained_tiny_model_dir), out / "script.log")
    return out


def test_one_tiny_iteration_end_to_end(uninterrupted, small_world):
    exp = uninterrupted / EXP
    it = exp / "iter_0"
    # the original layout
    for sub in ("model/config.json", "model/model.safetensors", "eval_data/metrics.json",
                "eval_data/synthetic_res.json", "eval_data/synthetic_heldout_res.json",
                "inference_data/results.json", "inference_data/sampling_stats.json"):
        assert (it / sub).is_file(), sub
    assert (exp / "iter_data" / "synthetic_iter_0.json").read_bytes() == \
        (small_world / "train" / "cot" / "synthetic.json").read_bytes()
    # training really ran through accelerate + DeepSpeed
    train_log = (it / "logs" / "train.log").read_text()
    assert "accelerate" in train_log and "launch" in train_log
    assert "deepspeed" in train_log.lower()
    # evaluation: both sets, metrics add up
    metrics = json.loads((it / "eval_data" / "metrics.json").read_text())
    assert set(metrics["datasets"]) == {"synthetic", "synthetic_heldout"}
    for name, m in metrics["datasets"].items():
        items = json.loads((it / "eval_data" / f"{name}_res.json").read_text())
        assert m["n"] == len(items) == 24 and m["correct"] == sum(i["correct"] for i in items)
    assert metrics["engine_start_seconds"] > 0
    # sampling with state reset
    stats = json.loads((it / "inference_data" / "sampling_stats.json").read_text())
    assert stats["strategy"] == "state_reset" and stats["sample_num"] == 2 and stats["n_queries"] == 24
    assert len(stats["rounds"]) > 1, "queries below min_correct_num were resampled"
    # next iteration's data, counts beside it agree with it
    data = json.loads((exp / "iter_data" / "synthetic_iter_1.json").read_text())
    counts = json.loads((exp / "iter_data" / "synthetic_iter_1.counts.json").read_text())
    original = json.loads((small_world / "train" / "cot" / "synthetic.json").read_text())
    assert data[:len(original)] == original and counts["included"]["original"] == len(original)
    kept = data[len(original):]
    assert counts["total"]["kept"] == len(kept) and counts["records_written"] == len(data)
    results = json.loads((it / "inference_data" / "results.json").read_text())
    n_samples = sum(len(r["pred"]) for r in results)
    assert sum(counts["total"].values()) == n_samples
    questions = {r["item_id"]: r["question"] for r in results}
    assert all(rec["question"] == questions[rec["item_id"]] for rec in kept)  # the plain question
    print("counts", counts["total"], "by strategy", counts["by_strategy"])
    # every stage recorded what it consumed and produced, and its time; vLLM stages their engine start
    for stage in ("data", "train", "eval", "sample", "generate"):
        marker = json.loads((it / "stages" / f"{stage}.json").read_text())
        assert marker["wall_seconds"] > 0 and marker["consumed"] and marker["produced"]
        assert (marker["engine_start_seconds"] is not None) == (stage in ("eval", "sample"))
    report = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "src.stages", "report", str(exp)],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout
    print(report)
    assert all(stage in report for stage in ("train", "eval", "sample", "generate"))


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            pytest.fail(f"the script ended (exit {proc.returncode}) before '{text}' appeared in {path}")
        time.sleep(0.05)
    pytest.fail(f"'{text}' did not appear in {path} within {timeout} s")


def test_sigkill_during_sampling_then_rerun_resumes_and_matches(uninterrupted, small_world, trained_tiny_model_dir,
                                                                 tmp_path):
    # Reuse the finished data, training and evaluation stages of the uninterrupted run (markers record paths
    # relative to the experiment folder, so a copied experiment stays valid); sampling and generation redo.
    src_exp, exp = uninterrupted / EXP, tmp_path / EXP
    shutil.copytree(src_exp, exp, ignore=shutil.ignore_patterns("inference_data", "sample.json", "generate.json",
                                                                 "synthetic_iter_1*", "sample.log", "generate.log"))
    markers_before = {s: (exp / "iter_0" / "stages" / f"{s}.json").read_bytes() for s in ("data", "train", "eval")}
    env = script_env(tmp_path, small_world, trained_tiny_model_dir)

    log = tmp_path / "killed.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        # kill the whole process group (shell, stage runner, vLLM workers) in the middle of the resampling rounds
        _wait_for(exp / "iter_0" / "logs" / "sample.log", "round 1:", proc, timeout=300)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    stages = exp / "iter_0" / "stages"
    assert not (stages / "sample.json").exists(), "killed sampling must not look finished"
    assert (stages / "sample.json.attempt").exists()
    assert not (exp / "iter_data" / "synthetic_iter_1.json").exists()

    run_script(env, tmp_path / "rerun.log")
    rerun = (tmp_path / "rerun.log").read_text()
    for stage in ("data", "train", "eval"):
        assert f"[stages] skip {stage}" in rerun
        assert (stages / f"{stage}.json").read_bytes() == markers_before[stage], f"{stage} was redone"
    assert "[stages] run sample" in rerun and "[stages] run generate" in rerun
    assert not (stages / "sample.json.attempt").exists()
    for name in ("synthetic_iter_1.json", "synthetic_iter_1.counts.json"):
        assert (exp / "iter_data" / name).read_bytes() == (src_exp / "iter_data" / name).read_bytes(), name
    assert (exp / "iter_0" / "inference_data" / "results.json").read_bytes() == \
        (src_exp / "iter_0" / "inference_data" / "results.json").read_bytes()
