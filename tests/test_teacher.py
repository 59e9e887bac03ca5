"""The interactive strategy against a real OpenAI-compatible server (vLLM's api_server serving the tiny model on
127.0.0.1), including a server that goes away mid-run, and the preflight check of the endpoint (a real HTTP server
serving another model name, a closed port) before anything is sampled.

    .venv/bin/python -m pytest -x -q tests/test_teacher.py
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from src.records import load_records
from src.sampling import (
    OUTPUT_FILES,
    SamplingAborted,
    SamplingConfig,
    TeacherClient,
    TeacherConfig,
    TeacherError,
    run_sampling,
)
from src.sampling.cli import sample_and_save

SERVED_NAME = "tiny-teacher"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TeacherServer:
    """``python -m vllm.entrypoints.openai.api_server`` (the ``vllm serve`` script fails with the CPU build)."""

    def __init__(self, model_dir, log):
        self.model_dir, self.log = model_dir, log
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    def ensure_up(self) -> None:
        """Start the server unless it runs (a test that stops it may run anywhere in the module)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        port = _free_port()
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
               "--max-model-len", "1024", "--seed", "0"]
        with open(self.log, "a") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.time() + 240
        while True:
            try:
                urllib.request.urlopen(f"{self.base_url}/models", timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.proc.kill()
                    pytest.fail(f"teacher server did not start; log:\n{self.log.read_text()[-3000:]}")
                time.sleep(1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def module_server(tiny_model_dir, tmp_path_factory):
    server = TeacherServer(tiny_model_dir, tmp_path_factory.mktemp("teacher") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def teacher_server(module_server):
    """(process, base URL) of a running teacher server; shared by the module's tests, restarted if one stopped it."""
    module_server.ensure_up()
    return module_server.proc, module_server.base_url


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
    # stops the server; the next test that needs one gets a new one (teacher_server)
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


# ------------------------------------------------------------------------------------------------ preflight
class _ModelList(BaseHTTPRequestHandler):
    """An OpenAI-compatible model list serving one model under its path (vLLM's default without
    --served-model-name); every request is recorded."""

    served = "/models/Meta-Llama-3-70B-Instruct"
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        if self.path != "/v1/models":
            self.send_error(404)
            return
        body = json.dumps({"object": "list", "data": [{"id": self.served, "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def model_list_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ModelList)
    _ModelList.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_preflight_names_the_served_model_when_the_name_differs(model_list_server):
    cfg = TeacherConfig(teacher_model="meta-llama/Meta-Llama-3-70B-Instruct", teacher_base_url=model_list_server,
                        teacher_preflight_timeout=5)
    with pytest.raises(TeacherError) as err:
        TeacherClient(cfg)
    message = str(err.value)
    assert "/models/Meta-Llama-3-70B-Instruct" in message and "meta-llama/Meta-Llama-3-70B-Instruct" in message
    assert "--served-model-name" in message and model_list_server in message
    assert _ModelList.requests == ["/v1/models"]  # one look at the model list, no completion attempted
    # the served name passes
    TeacherClient(TeacherConfig(teacher_model=_ModelList.served, teacher_base_url=model_list_server)).close()


def test_preflight_fails_fast_on_a_closed_port():
    port = _free_port()  # bound and released: nothing listens there
    cfg = TeacherConfig(teacher_model=SERVED_NAME, teacher_base_url=f"http://127.0.0.1:{port}/v1",
                        teacher_preflight_timeout=5)
    with pytest.raises(TeacherError) as err:
        TeacherClient(cfg)
    assert f"127.0.0.1:{port}/v1/models does not answer" in str(err.value) and "TEACHER_PORT" in str(err.value)


def test_preflight_cli_answers_in_one_line(model_list_server, capsys):
    from src.sampling.teacher import main

    assert main(["--teacher_model", "meta-llama/Meta-Llama-3-70B-Instruct",
                 "--teacher_base_url", model_list_server, "--teacher_preflight_timeout", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m src.sampling.teacher: error: ") and "\n" not in err
    assert "--served-model-name" in err
    assert main(["--teacher_model", _ModelList.served, "--teacher_base_url", model_list_server]) == 0
    assert capsys.readouterr().out.startswith(f"teacher ok: {model_list_server} serves")


def test_teacher_cli_stops_before_the_engine_on_a_closed_port(synthetic_dir, tmp_path):
    port = _free_port()
    cmd = [sys.executable, "inference_teacher_help.py", "--model_name_or_path", str(tmp_path / "no_model"),
           "--inference_data_file", str(synthetic_dir / "inference" / "cot" / "synthetic.json"),
           "--dataset_name", "synthetic", "--results_path", str(tmp_path / "out"),
           "--teacher_model", SERVED_NAME, "--teacher_base_url", f"http://127.0.0.1:{port}/v1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode != 0
    assert f"127.0.0.1:{port}/v1/models does not answer" in proc.stderr.splitlines()[-1]
    assert "engine started" not in proc.stderr and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ the scripts' teacher
TEACHER_UP_DOWN = """
set -euo pipefail
source scripts/_common.sh PROFILE=tiny STRATEGY=teacher_help
if TEACHER_SERVE_PATH="$OUTPUT_DIR/no-model" gsi_teacher_up; then echo "up without a model"; else echo "refused"; fi
gsi_teacher_up
pid=$GSI_TEACHER_PID
served_models="$("$PYTHON" -c "import sys, urllib.request as u; print(u.urlopen(sys.argv[1]).read().decode())" \
    "$TEACHER_BASE_URL/models")"
"$PYTHON" -c "import json, sys; print('serves', json.loads(sys.argv[1])['data'][0]['id'])" "$served_models"
gsi_teacher_down
if kill -0 "$pid" 2>/dev/null; then echo "still running"; else echo "stopped"; fi
"""


def test_the_scripts_serve_the_teacher_for_the_sampling_stage_then_stop_it(tiny_model_dir, tmp_path):
    """scripts/_common.sh's gsi_teacher_up serves TEACHER_SERVE_PATH as TEACHER_MODEL on TEACHER_PORT (a real vLLM
    server) until gsi_teacher_down; a server that cannot start fails the function, naming its log."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TEACHER_SERVE_PATH", "TEACHER_MODEL")}
    env.update({"MODEL_PATH": str(tiny_model_dir), "OUTPUT_DIR": str(tmp_path), "TEACHER_PORT": str(port),
                "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable})
    proc = subprocess.run(["bash", "-c", TEACHER_UP_DOWN], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:3] == ["refused", f"serves {SERVED_NAME}", "stopped"], proc.stdout
    assert "teacher server did not come up; see" in proc.stderr and f"port {port}" in proc.stderr
