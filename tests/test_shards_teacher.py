"""A replicated teacher (src/sampling/teacher.py, comma-separated --teacher_base_url): requests are spread over two
real local OpenAI-compatible servers (separate processes), and when one is killed mid-run the run finishes on the
other. The servers are small stand-ins answering every chat request after a short delay (a vLLM server per replica
would cost minutes of start-up on this machine; tests/test_teacher.py runs the real one).

    .venv/bin/python -m pytest -x -q tests/test_shards_teacher.py
"""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request

import pytest

from src.sampling.teacher import TeacherClient, TeacherConfig, TeacherError

SERVER = r'''
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1]

class Handler(BaseHTTPRequestHandler):
    def _send(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "stub-teacher", "object": "model"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.2)
        self._send({"id": "x", "object": "chat.completion", "created": 0, "model": "stub-teacher",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "feedback from " + NAME}}]})
        print("served", flush=True)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
'''


@pytest.fixture()
def two_servers():
    procs, urls = [], []
    for name in ("a", "b"):
        proc = subprocess.Popen([sys.executable, "-c", SERVER, name], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        urls.append(f"http://127.0.0.1:{int(proc.stdout.readline())}/v1")
    for url in urls:
        urllib.request.urlopen(f"{url}/models", timeout=10).read()
    yield procs, urls
    for proc in procs:
        proc.kill()
        proc.wait()


def config(urls: list[str], retries: int = 2) -> TeacherConfig:
    return TeacherConfig(teacher_model="stub-teacher", teacher_base_url=",".join(urls), teacher_timeout=5,
                         teacher_max_retries=retries, teacher_max_concurrency=2, teacher_preflight_timeout=5)


CONVERSATIONS = [[{"role": "user", "content": f"critique attempt {i}"}] for i in range(16)]


def test_requests_are_spread_over_the_replicas(two_servers):
    _, urls = two_servers
    client = TeacherClient(config(urls))
    answers = client.critique_many(CONVERSATIONS[:8])
    client.close()
    assert answers.count("feedback from a") == answers.count("feedback from b") == 4


def test_a_replica_killed_mid_run_the_run_finishes_on_the_other(two_servers):
    procs, urls = two_servers
    client = TeacherClient(config(urls))

    def kill_b_after_two_answers():
        for _ in range(2):
            procs[1].stdout.readline()
        procs[1].kill()

    killer = threading.Thread(target=kill_b_after_two_answers)
    killer.start()
    answers = client.critique_many(CONVERSATIONS)
    killer.join(timeout=30)
    client.close()
    assert procs[1].poll() is not None  # b really died, while the run went on
    assert len(answers) == len(CONVERSATIONS) and set(answers) == {"feedback from a", "feedback from b"}
    assert answers.count("feedback from b") <= 3  # at most one more in flight when it died; a served the rest


def test_every_replica_gone_fails_naming_them(two_servers):
    procs, urls = two_servers
    client = TeacherClient(config(urls, retries=1))
    for proc in procs:
        proc.kill()
        proc.wait()
    with pytest.raises(TeacherError) as err:
        client.critique(CONVERSATIONS[0])
    assert urls[0] in str(err.value) and urls[1] in str(err.value)


def test_preflight_checks_every_replica(two_servers):
    procs, urls = two_servers
    procs[1].kill()
    procs[1].wait()
    with pytest.raises(TeacherError, match=urls[1].replace(".", r"\.")):
        TeacherClient(config(urls))
