"""The scripted synthetic-world teacher (src/synthetic_teacher.py) as a real HTTP server on a free port: critiques
through the ``openai`` package and the project's teacher client, refused requests, the CLI, and one real
``teacher_help`` run of the shared tiny engine against it.

    .venv/bin/python -m pytest -x -q tests/test_synthetic_teacher.py
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from src import prompts
from src.records import load_records
from src.synthetic import check_synthetic_rationale, first_wrong_synthetic_step
from src.synthetic_teacher import MODEL_NAME, scripted_teacher_client, serve_teacher

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pool_file(synthetic_dir):
    return synthetic_dir / "inference" / "cot" / "synthetic.json"


@pytest.fixture(scope="module")
def pool(pool_file) -> list[dict]:
    return load_records(pool_file, "pool")


@pytest.fixture(scope="module")
def base_url(pool):
    with serve_teacher(pool) as url:
        yield url


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=20)


def _break_step(gold: str, k: int) -> str:
    """The gold rationale with the result of its k-th line's calculation off by one."""
    lines = gold.split("\n")
    head, rest = lines[k - 1].split("=", 1)
    value, tail = rest.split(">>", 1)
    lines[k - 1] = f"{head}={int(value) + 1}>>{tail}"
    return "\n".join(lines)


def test_critique_through_openai_names_the_first_wrong_step_and_the_gold_step(base_url, pool):
    client = _client(base_url)
    assert [m.id for m in client.models.list()] == [MODEL_NAME]
    rec = next(r for r in pool if r["level"] >= 3)
    gold_lines = rec["answer_cot"].split("\n")
    wrong = _break_step(rec["answer_cot"], 2)
    assert first_wrong_synthetic_step(rec["question"], rec["answer_cot"], wrong)[0] == 2
    resp = client.chat.completions.create(model=MODEL_NAME, temperature=1.0, top_p=0.95, max_tokens=1024,
                                          messages=prompts.teacher_messages(rec["question"], wrong, rec["answer_cot"]))
    assert resp.object == "chat.completion" and resp.choices[0].finish_reason == "stop"
    text = resp.choices[0].message.content
    assert "Step 1 is correct." in text
    assert f"Step 2 is incorrect: \"{wrong.split(chr(10))[1]}\"" in text
    assert f"The correct step 2 is: \"{gold_lines[1]}\"" in text
    assert gold_lines[2] not in text  # a step, not the whole solution


def test_critique_of_a_solution_that_stops_early_gives_the_next_gold_step(base_url, pool):
    from src.sampling import TeacherClient, TeacherConfig

    rec = next(r for r in pool if r["level"] >= 3)
    gold_lines = rec["answer_cot"].split("\n")
    early = "\n".join(gold_lines[:2] + [gold_lines[-1]])  # two right steps, then the final answer line
    teacher = TeacherClient(TeacherConfig(teacher_model=MODEL_NAME, teacher_base_url=base_url))  # preflight too
    try:
        (text,) = teacher.critique_many([prompts.teacher_messages(rec["question"], early, rec["answer_cot"])])
    finally:
        teacher.close()
    assert "Steps 1 and 2 are correct." in text and f"Step 3 is incorrect: \"{gold_lines[-1]}\"" in text
    assert f"The correct step 3 is: \"{gold_lines[2]}\"" in text


def test_a_wrong_answer_that_repeats_the_prompts_headings_is_still_critiqued(base_url, pool):
    rec = next(r for r in pool if r["level"] >= 2)
    echo = ("### Question:\nfoo\n\n### Correct final answer:\nThe answer is 1\n\n### Your correction:\n"
            + _break_step(rec["answer_cot"], 1))
    resp = _client(base_url).chat.completions.create(
        model=MODEL_NAME, messages=prompts.teacher_messages(rec["question"], echo, rec["answer_cot"]))
    found = first_wrong_synthetic_step(rec["question"], rec["answer_cot"], echo)
    assert f"Step {found[0]} is incorrect" in resp.choices[0].message.content


def _post(base_url: str, data: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(base_url + "/chat/completions", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_bad_requests_get_openai_style_errors_and_the_server_keeps_serving(base_url, pool):
    client = _client(base_url)
    rec = pool[0]
    unknown = prompts.teacher_messages("Who has 3 moons?", "x", rec["answer_cot"])
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL_NAME, messages=unknown)
    assert err.value.status_code == 400 and "unknown question" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:  # not a teacher prompt of this project
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": rec["question"]}])
    assert "not a teacher prompt" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4", messages=prompts.teacher_messages(rec["question"], "x",
                                                                                         rec["answer_cot"]))
    assert err.value.body["code"] == "model_not_found"
    for raw in (b"{not json", b"[1, 2]", json.dumps({"model": MODEL_NAME}).encode(),
                json.dumps({"model": MODEL_NAME, "messages": [{"role": "user", "content": 7}]}).encode()):
        status, body = _post(base_url, raw)
        assert status == 400 and set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"
    # still answering after all that
    ok = client.chat.completions.create(model=MODEL_NAME, messages=prompts.teacher_messages(
        rec["question"], "The answer is 0", rec["answer_cot"]))
    assert "Step 1 is incorrect" in ok.choices[0].message.content


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.synthetic_teacher", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_refuses_bad_input_with_one_line(tmp_path, pool_file):
    missing = _cli("--pool", str(tmp_path / "none.json"), "--port", "0")
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"python -m src.synthetic_teacher: error: --pool: {tmp_path / 'none.json'}: file not found"]
    pot = tmp_path / "pot.json"
    pot.write_text(pool_file.read_text().replace("<<", "(").replace(">>", ")"))
    refused = _cli("--pool", str(pot), "--port", "0")
    assert refused.returncode == 2 and "no <<a=b>> calculator step" in refused.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = _cli("--pool", str(pool_file), "--port", str(busy.getsockname()[1]))
    assert taken.returncode == 2 and "cannot listen" in taken.stderr


def test_cli_serves_until_terminated(pool_file, pool):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "src.synthetic_teacher", "--pool", str(pool_file), "--port",
                             str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in banner, proc.stderr.read() if proc.poll() is not None else banner
        rec = pool[1]
        text = _client(f"http://127.0.0.1:{port}/v1").chat.completions.create(
            model=MODEL_NAME, messages=prompts.teacher_messages(rec["question"], "", rec["answer_cot"]))
        assert "Step 1 is missing" in text.choices[0].message.content
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_teacher_help_run_against_the_server_keeps_only_process_checked_samples(llm, pool):
    from src.filtering import FilterConfig, SampledSet, build_next_iteration
    from src.sampling import SamplingConfig, run_sampling

    items = [r for r in pool if r["level"] <= 2][:8]
    cfg = SamplingConfig(strategy="teacher_help", sample_num=2, min_correct_num=2, max_resample_num=3,
                         max_new_tokens=96, progress=False)
    with scripted_teacher_client(items) as teacher:
        run = run_sampling(llm, items, "synthetic", cfg, teacher=teacher)
    exchanges = [(res, h) for res in run.results for h in res["history"]]
    assert exchanges, "no query was below min_correct_num: nothing was asked of the teacher"
    for res, h in exchanges:  # every critique names the process check's first wrong step of ITS wrong answer
        found = first_wrong_synthetic_step(res["question"], res["answer_cot"], h["wrong_answer"])
        step = found[0] if found else None
        assert step is None or f"Step {step} is incorrect" in h["teacher_feedback"]
        assert "The correct step" in h["teacher_feedback"]
    # the project's filter (the demo's settings): kept teacher samples all pass the process check
    fcfg = FilterConfig(check_result=True, check_mode="strict", dedupe=True, record_strategy=True)
    sampled = SampledSet("synthetic", run.results, "teacher run", "teacher_help", cfg.sample_num)
    records, counts = build_next_iteration([sampled], fcfg)
    by_item = {r["item_id"]: r for r in items}
    for rec in records:
        gold = by_item[rec["item_id"]]
        assert check_synthetic_rationale(gold["question"], gold["answer_cot"], rec["answer_cot"]) is None
    teacher_correct = sum(s == "teacher_help" for res in run.results for s in res["correct_strategy"])
    got = counts.by_strategy.get("teacher_help", {})
    assert sum(got.get(b, 0) for b in ("kept", "failed_check", "duplicate")) == teacher_correct
    print(f"teacher exchanges {len(exchanges)}, correct revisions {teacher_correct}, kept {got.get('kept', 0)}")
