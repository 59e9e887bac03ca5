"""Stage bookkeeping (src.stages): skip when done, redo when inputs or outputs changed, clean retries, resumable
paths, markers that survive copying the experiment folder. Small shell commands stand in for the real stages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from src.stages import StageFailed, run_stage, why_not_done

REPO = Path(__file__).resolve().parents[1]
# Appends one line per run: a stage that was not cleared before a rerun would show duplicated lines.
APPEND = "mkdir -p out && cat in.txt >> out/data.txt && echo ran >> runs.txt"


def stage(tmp: Path, command: str = APPEND, **kw):
    return run_stage("demo", tmp / "exp" / "stages" / "demo.json", ["bash", "-c", command], [str(tmp / "in.txt")],
                     [str(tmp / "out")], tmp / "exp" / "logs" / "demo.log", root=tmp / "exp", **kw)


@pytest.fixture
def tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("a\n")
    return tmp_path


def test_finished_stage_is_skipped(tmp):
    first = stage(tmp)
    second = stage(tmp)
    assert (tmp / "runs.txt").read_text() == "ran\n"
    assert second == first
    marker = json.loads((tmp / "exp" / "stages" / "demo.json").read_text())
    assert set(marker["consumed"]) == {str(tmp / "in.txt")} and set(marker["produced"]) == {str(tmp / "out")}
    assert marker["wall_seconds"] >= 0 and marker["engine_start_seconds"] is None


def test_changed_input_or_damaged_output_reruns_from_a_clean_output(tmp):
    stage(tmp)
    (tmp / "in.txt").write_text("b\n")
    assert "changed" in why_not_done(tmp / "exp" / "stages" / "demo.json", [str(tmp / "in.txt")],
                                     [str(tmp / "out")], tmp / "exp")
    stage(tmp)
    assert (tmp / "out" / "data.txt").read_text() == "b\n"  # not "a\nb\n": outputs cleared before the rerun
    (tmp / "out" / "data.txt").write_text("tampered\n")
    stage(tmp)
    assert (tmp / "out" / "data.txt").read_text() == "b\n"
    assert (tmp / "runs.txt").read_text() == "ran\n" * 3


def test_a_retried_failure_never_duplicates_data(tmp):
    # the first attempt writes part of its output, then fails; the retry starts from nothing
    flaky = APPEND + " && if [ ! -f failed_once ]; then touch failed_once; exit 3; fi"
    stage(tmp, flaky, retries=1)
    assert (tmp / "out" / "data.txt").read_text() == "a\n"
    assert json.loads((tmp / "exp" / "stages" / "demo.json").read_text())["attempts"] == 2


def test_a_failed_stage_leaves_no_marker_and_reports_its_log(tmp):
    with pytest.raises(StageFailed, match="demo.log"):
        stage(tmp, "exit 4")
    assert not (tmp / "exp" / "stages" / "demo.json").exists()
    with pytest.raises(StageFailed, match="did not produce"):
        stage(tmp, "true")


def test_resumable_paths_survive_only_a_rerun_with_the_same_inputs(tmp):
    command = "mkdir -p out ckpt && echo x >> ckpt/state && exit 1"
    kw = {"resumable": [str(tmp / "ckpt")]}
    with pytest.raises(StageFailed):
        stage(tmp, command, **kw)
    with pytest.raises(StageFailed):
        stage(tmp, command, **kw)
    assert (tmp / "ckpt" / "state").read_text() == "x\nx\n"  # same inputs: the trainer resumes its checkpoint
    (tmp / "in.txt").write_text("other\n")
    with pytest.raises(StageFailed):
        stage(tmp, command, **kw)
    assert (tmp / "ckpt" / "state").read_text() == "x\n"  # other inputs: the stale checkpoint is gone


def test_markers_stay_valid_when_the_experiment_folder_is_copied(tmp):
    run_stage("demo", tmp / "exp" / "stages" / "demo.json", ["bash", "-c", "mkdir -p exp/out && echo 1 > exp/out/f"],
              [str(tmp / "in.txt")], [str(tmp / "exp" / "out")], tmp / "exp" / "demo.log", root=tmp / "exp")
    shutil.copytree(tmp / "exp", tmp / "copy")
    assert why_not_done(tmp / "copy" / "stages" / "demo.json", [str(tmp / "in.txt")], [str(tmp / "copy" / "out")],
                        tmp / "copy") is None


def test_engine_start_seconds_are_read_from_the_outputs(tmp):
    command = "mkdir -p out/gsm8k && echo '{\"engine_start_seconds\": 19.5}' > out/gsm8k/sampling_stats.json"
    record = stage(tmp, command)
    assert record.engine_start_seconds == 19.5


def test_cli_run_skip_and_report(tmp):
    args = [sys.executable, "-m", "src.stages", "run", "--stage", "eval", "--root", str(tmp / "exp"),
            "--marker", str(tmp / "exp" / "iter_0" / "stages" / "eval.json"),
            "--log", str(tmp / "exp" / "iter_0" / "logs" / "eval.log"), "--inputs", str(tmp / "in.txt"),
            "--outputs", str(tmp / "out"), "--", "bash", "-c", APPEND]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    first = subprocess.run(args, cwd=tmp, capture_output=True, text=True, env=env)
    second = subprocess.run(args, cwd=tmp, capture_output=True, text=True, env=env)
    assert "[stages] done eval" in first.stdout and "[stages] skip eval" in second.stdout
    report = subprocess.run([sys.executable, "-m", "src.stages", "report", str(tmp / "exp"), "--json"], cwd=tmp,
                            capture_output=True, text=True, env=env, check=True).stdout
    assert [(r["iteration"], r["stage"]) for r in json.loads(report)] == [(0, "eval")]
    # other settings (a changed command) redo the stage, even with the same inputs
    failing = subprocess.run(args[:-1] + ["exit 5"], cwd=tmp, capture_output=True, text=True, env=env)
    assert failing.returncode == 5 and "eval.log" in failing.stderr and "command" in failing.stdout
