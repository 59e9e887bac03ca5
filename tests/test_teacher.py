"""The interactive strategy against a real OpenAI-compatible server (vLLM's api_server serving the tiny model on
127.0.0.1), including a server that goes away mid-run.

    .venv/bin/python -m pytest -x -q tests/test_teacher.py
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from src.records import load_records
from src.sampling import OUTPUT_FILES, SamplingAborted, SamplingConfig, TeacherClient, TeacherConfig, run_sampling
from src.sampling.cli import sample_and_save

SERVED_NAME = "tiny-teacher"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def teacher_server(tiny_model_dir, tmp_path_factory):
    """``python -m vllm.entrypoints.openai.api_server`` (the ``vllm serve`` script fails with the CPU build)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("teacher") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_dir),
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
           "--max-model-len", "1024", "--seed", "0"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 240
    while True:
        try:
            urllib.request.urlopen(f"{base_url}/models", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"teacher server did not start; log:\n{log.read_text()[-3000:]}")
            time.sleep(1)
    yield proc, base_url
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def pool(synthetic_dir) -> list[dict]:
    return load_records(synthetic_dir / "inference" / "cot" / "synthetic.json")[:6]


def teacher_config(base_url: str) -> TeacherConfig:
    return TeacherConfig(teacher_model=SERVED_NAME, teacher_base_url=base_url, teacher_max_tokens=32,
                         teacher_max_concurrency=4, teacher_timeout=20, teacher_max_retries=2)


# min_correct_num above any reachable count: every query asks the teacher in every round.
CFG = SamplingConfig(strategy="teacher_help", sample_num=2, min_correct_num=100, max_resample_num=2,
                     max_new_tokens=32, progress=False)


def test_teacher_critiques_only_wrong_samples_and_revisions_are_graded(llm, teacher_server, pool):
    _, base_url = teacher_server
    run = run_sampling(llm, pool, "synthetic", CFG, teacher=TeacherClient(teacher_config(base_url)))
    for res in run.results:
        assert len(res["pred"]) == CFG.sample_num + CFG.max_resample_num
        history = res["history"]
        assert [h["round"] for h in history] == [1, 2]
        for h in history:
            assert h["wrong_answer"] in res["pred"] and h["wrong_answer"] not in res["correct_pred"]
            assert isinstance(h["teacher_feedback"], str)
            assert h["revision"] == res["pred"][CFG.sample_num + h["round"] - 1]  # graded like any sample
            assert (h["revision"] in res["correct_pred"]) == h["correct"]
        if not history[0]["correct"]:
            assert history[1]["wrong_answer"] == history[0]["revision"]  # the LATEST wrong sample
    for item in run.resample_results:  # plain question: no teacher text in the training data
        assert item["question"] == next(r["question"] for r in pool if r["item_id"] == item["item_id"])
        assert item["strategy"] == "teacher_help"
    rounds = run.stats["rounds"]
    assert [r["prompts"] for r in rounds] == [len(pool)] * 3


class StopServerAfterFirstRound(TeacherClient):
    """The real client; the server process is terminated once the first round's critiques came back."""

    def __init__(self, cfg: TeacherConfig, server: subprocess.Popen):
        super().__init__(cfg)
        self.server, self.calls = server, 0

    def critique_many(self, conversations):
        if self.calls == 1:
            self.server.terminate()
            self.server.wait(timeout=60)
        self.calls += 1
        return super().critique_many(conversations)


def test_server_stopped_mid_run_retries_then_fails_and_keeps_results(llm, teacher_server, pool, tmp_path,
                                                                        caplog):
    # Runs last in this module: it stops the module's server.
    proc, base_url = teacher_server
    teacher = StopServerAfterFirstRound(teacher_config(base_url), proc)
    caplog.set_level(logging.INFO, logger="openai")
    with pytest.raises(SamplingAborted) as err:
        sample_and_save(llm, pool, "synthetic", CFG, tmp_path, teacher=teacher)
    message = str(err.value)
    assert "teacher failed in resampling round 2" in message and base_url in message
    assert "retries" in message and str(tmp_path) in message
    assert sum("Retrying request" in r.getMessage() for r in caplog.records) >= 2  # back-off retries happened
    out = {name: json.loads((tmp_path / name).read_text()) for name in OUTPUT_FILES}
    results = out["results.json"]
    assert [len(r["pred"]) for r in results] == [CFG.sample_num + 1] * len(pool)  # round 1 kept, not lost
    assert all(len(r["history"]) == 1 for r in results)
    stats = out["sampling_stats.json"]
    assert [r["round"] for r in stats["rounds"]] == [0, 1] and "round 2" in stats["aborted"]
    assert len(out["results_before_resample.json"]) == len(pool)
