"""A scripted teacher for the synthetic world, served over HTTP like a real one (OpenAI-compatible).

    python -m src.synthetic_teacher --pool data/synthetic/inference/cot/synthetic.json --port 8000
    python inference_teacher_help.py ... --dataset_name synthetic \\
        --teacher_model synthetic-teacher --teacher_base_url http://127.0.0.1:8000/v1

It answers ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1 (``--port 0``: a free port, printed
at start), so ``teacher_help`` runs through the same client (src/sampling/teacher.py) and prompts (src/prompts.py)
as against a 70B model on a cluster. For the interactive critique prompt it looks the question up in the pool,
finds the student's first wrong step with the process check (:func:`src.synthetic.first_wrong_synthetic_step`)
and writes a critique that names that step and gives the correct step from the gold rationale: what a good
teacher says, with no model in the loop. The reply is deterministic; temperature, top_p and max_tokens are
accepted and ignored. A request it cannot answer (unknown question, another prompt, malformed JSON) gets an
OpenAI-style error body (400; 404 for an unknown model or path), never a crash.

In code: ``with serve_teacher(pool_records) as base_url: ...`` (a thread; shut down on exit), or
``with scripted_teacher_client(pool_records) as teacher: run_sampling(..., teacher=teacher)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from src import prompts
from src.grading.process import ANNOTATION
from src.records import RecordError
from src.synthetic import check_synthetic_rationale, first_wrong_synthetic_step

log = logging.getLogger(__name__)

MODEL_NAME = "synthetic-teacher"  # the name GET /v1/models lists (--teacher_model must say the same)
HOST = "127.0.0.1"  # never reachable from another machine: the teacher holds the pool's gold rationales
MAX_BODY_BYTES = 4 << 20  # a critique request is a few kB; refuse anything far larger unread


class RequestError(ValueError):
    """A request the teacher refuses: HTTP ``status`` with an OpenAI-style error body."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


def template_regex(template: str, greedy: tuple[str, ...] = ()) -> re.Pattern[str]:
    """A regex matching exactly the texts ``template.format(**fields)`` produces, one named group per field
    (the prompt's one home stays src/prompts.py; the teacher parses what the client built from it). Fields
    are matched shortest first, those in ``greedy`` longest first."""
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.*{'' if p in greedy else '?'})"
                      for i, p in enumerate(parts))
    return re.compile(pattern, re.DOTALL)


# The student's answer is model text and may repeat the prompt's headings; the question and the gold rationale
# come from the pool and do not, so the answer is everything between the first and the LAST heading around it.
CRITIQUE_USER = template_regex(prompts.TEACHER_USER_TEMPLATE, greedy=("wrong_answer",))


def _gold_step(gold_lines: list[str], n_before: int) -> str:
    """The gold line a solution with ``n_before`` correct calculation steps continues with (the final answer
    line once every calculation is done)."""
    seen = 0
    for line in gold_lines:
        seen += len(ANNOTATION.findall(line))
        if seen > n_before:
            return line
    return gold_lines[-1]


def critique(question: str, gold: str, wrong_answer: str) -> str:
    """A good teacher's critique of ``wrong_answer``: the first wrong step by the process check, why, and the
    correct step from the gold rationale (never the whole solution: the student writes it)."""
    lines = [line for line in wrong_answer.splitlines() if line.strip()]
    gold_lines = [line for line in gold.splitlines() if line.strip()]
    found = first_wrong_synthetic_step(question, gold, wrong_answer)
    if found is not None:
        step, why = found
    else:  # every prefix holds: it stops early, or its last line (the final answer) is wrong
        why = check_synthetic_rationale(question, gold, wrong_answer)
        if why is None and lines and lines[-1].strip() == gold_lines[-1].strip():
            return f"All {len(lines)} steps are correct and so is the final answer."  # not wrong after all
        why = why or "the final answer is not the result of the last calculation"
        ends_with_calculation = bool(lines) and bool(ANNOTATION.search(lines[-1]))
        step = len(lines) + 1 if ends_with_calculation or not lines else len(lines)
    correct_before = len(ANNOTATION.findall("\n".join(lines[:step - 1])))
    right = _gold_step(gold_lines, correct_before)
    out = []
    if step > 1:
        out.append("Step 1 is correct." if step == 2 else "Steps 1 and 2 are correct." if step == 3
                   else f"Steps 1 to {step - 1} are correct.")
    if step <= len(lines):
        out.append(f"Step {step} is incorrect: \"{lines[step - 1].strip()}\" ({why}).")
    else:
        out.append(f"Step {step} is missing: the solution stops too early ({why}).")
    out.append(f"The correct step {step} is: \"{right.strip()}\"")
    out.append("Continue from this step and write the complete solution, ending with \"The answer is\" and the "
               "result.")
    return "\n".join(out)


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise RequestError(f"{where}.content must be a string or a list of text parts", param=f"{where}.content")


def _messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string 'role'", param=f"messages[{i}]")
        out.append((m["role"], _text(m.get("content"), f"messages[{i}]")))
    return out


@dataclass
class ScriptedTeacher:
    """The teacher's answers (no HTTP): built from the world's CoT pool, question -> gold rationale."""

    gold: dict[str, str]  # question -> gold rationale
    model_name: str = MODEL_NAME

    @classmethod
    def from_pool(cls, records: list[dict], source: str = "<pool records>",
                  model_name: str = MODEL_NAME) -> ScriptedTeacher:
        """Check the records (question + a CoT gold rationale with calculator steps) and index them."""
        gold: dict[str, str] = {}
        for i, rec in enumerate(records):
            where = f"{source}: record {i} (item_id={rec.get('item_id', '?') if isinstance(rec, dict) else '?'})"
            if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) \
                    or not isinstance(rec.get("answer_cot"), str):
                raise RecordError(f"{where}: needs string fields 'question' and 'answer_cot'")
            if not ANNOTATION.search(rec["answer_cot"]):
                raise RecordError(f"{where}: field 'answer_cot' has no <<a=b>> calculator step; the scripted "
                                  "teacher needs the synthetic world's CoT pool (inference/cot/synthetic.json)")
            if gold.setdefault(rec["question"], rec["answer_cot"]) != rec["answer_cot"]:
                raise RecordError(f"{where}: field 'question' repeats an earlier record's with another answer_cot")
        if not gold:
            raise RecordError(f"{source}: no records")
        return cls(gold, model_name)

    def complete(self, body: Any) -> str:
        """The assistant's reply to one chat-completion request body; :class:`RequestError` when refused."""
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        if body.get("model") != self.model_name:
            raise RequestError(f"The model `{body.get('model')}` does not exist; this server serves "
                               f"{self.model_name!r}.", status=404, param="model", code="model_not_found")
        if body.get("stream"):
            raise RequestError("streaming is not supported by the scripted teacher", param="stream")
        messages = _messages(body)
        if [r for r, _ in messages] == ["system", "user"] and messages[0][1] == prompts.TEACHER_SYSTEM_PROMPT:
            found = CRITIQUE_USER.fullmatch(messages[1][1])
            if found is not None:
                gold = self._gold(found["question"], found["gold"])
                return critique(found["question"], gold, found["wrong_answer"])
        raise RequestError("not a teacher prompt this server knows: it answers the interactive strategy's critique "
                           "request (system = prompts.TEACHER_SYSTEM_PROMPT, user = prompts.TEACHER_USER_TEMPLATE)",
                           param="messages")

    def _gold(self, question: str, gold_in_request: str) -> str:
        gold = self.gold.get(question)
        if gold is None:
            raise RequestError(f"unknown question (not in the teacher's pool): {question[:120]!r}",
                               param="messages", code="unknown_question")
        if gold_in_request.strip() != gold.strip():
            raise RequestError("the request's gold rationale differs from the pool's for this question (is the "
                               "teacher serving the same pool as the sampler?)", param="messages",
                               code="gold_mismatch")
        return gold


def _usage(body: dict[str, Any], reply: str) -> dict[str, int]:
    # words, not tokens: the scripted teacher has no tokenizer; the client only logs these numbers
    prompt = sum(len(_text(m.get("content"), "m").split()) for m in body["messages"])
    completion = len(reply.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_response(teacher: ScriptedTeacher, body: Any) -> dict[str, Any]:
    """OpenAI's ``chat.completion`` object for one request (``n`` identical choices: the teacher is scripted)."""
    n = (body.get("n") or 1) if isinstance(body, dict) else 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise RequestError("'n' must be an integer between 1 and 128", param="n")
    reply = teacher.complete(body)
    choice = {"message": {"role": "assistant", "content": reply}, "finish_reason": "stop", "logprobs": None}
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": teacher.model_name, "choices": [{"index": i, **choice} for i in range(n)],
            "usage": _usage(body, reply)}


class _Handler(BaseHTTPRequestHandler):
    server: _TeacherServer
    protocol_version = "HTTP/1.0"  # one request per connection: shutdown never waits on an idle keep-alive

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self._route() == "/v1/models":
            model = {"id": self.server.teacher.model_name, "object": "model", "created": 0,
                     "owned_by": "src.synthetic_teacher"}
            self._send(200, {"object": "list", "data": [model]})
        else:
            self._send(404, RequestError(f"no route GET {self.path}", status=404).body())

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self._read_json()
            if self._route() != "/v1/chat/completions":
                raise RequestError(f"no route POST {self.path} (this server answers /v1/chat/completions)",
                                   status=404)
            self._send(200, completion_response(self.server.teacher, body))
        except RequestError as err:
            log.info("refused %s: %s", self.path, err)
            self._send(err.status, err.body())
        except Exception as err:  # noqa: BLE001 - a bug answers 500 (the client retries), never kills the server
            log.exception("scripted teacher failed on %s", self.path)
            self._send(500, RequestError(f"internal error: {type(err).__name__}: {err}", status=500).body())

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError("a request body with a Content-Length header is required")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(f"request body of {length} bytes is over the limit of {MAX_BODY_BYTES}",
                               status=413)
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RequestError(f"the request body is not JSON: {err}") from None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s " + format, self.address_string(), *args)


class _TeacherServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never blocks shutdown

    def __init__(self, teacher: ScriptedTeacher, port: int):
        self.teacher = teacher
        super().__init__((HOST, port), _Handler)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/v1"


@contextlib.contextmanager
def serve_teacher(pool_records: list[dict], port: int = 0, model_name: str = MODEL_NAME) -> Iterator[str]:
    """Serve the scripted teacher for ``pool_records`` on 127.0.0.1 in a thread; yields its base URL (ending
    in /v1); the server is shut down on exit."""
    server = _TeacherServer(ScriptedTeacher.from_pool(pool_records, model_name=model_name), port)
    thread = threading.Thread(target=server.serve_forever, name="synthetic-teacher", daemon=True)
    thread.start()
    try:
        yield server.base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def scripted_teacher_client(pool_records: list[dict], **teacher_settings: Any) -> Iterator[Any]:
    """:func:`serve_teacher` plus the project's client pointed at it: what ``run_sampling(..., teacher=)`` takes.

        with scripted_teacher_client(pool) as teacher:
            run = run_sampling(llm, pool, "synthetic", SamplingConfig(strategy="teacher_help"), teacher=teacher)

    ``teacher_settings``: other :class:`src.sampling.TeacherConfig` fields (e.g. ``teacher_max_concurrency``).
    """
    from src.sampling.teacher import TeacherClient, TeacherConfig

    with serve_teacher(pool_records) as base_url:
        client = TeacherClient(TeacherConfig(teacher_model=MODEL_NAME, teacher_base_url=base_url,
                                             **teacher_settings))
        try:
            yield client
        finally:
            client.close()


@dataclass
class ServerConfig:
    pool: str = field(default="", metadata={
        "help": "the synthetic world's CoT pool (question -> gold rationale), e.g. "
                "data/synthetic/inference/cot/synthetic.json"})
    port: int = field(default=8000, metadata={"help": "port on 127.0.0.1 (0 = a free port, printed at start)"})
    model_name: str = field(default=MODEL_NAME, metadata={
        "help": "model name the server lists and accepts (the sampler's --teacher_model)"})


PROG = "python -m src.synthetic_teacher"


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM ends the server like Ctrl-C, so the socket is closed either way."""
    raise KeyboardInterrupt


def _serve(cfg: ServerConfig) -> int:
    from src.cli import UsageError, check_input_file, check_range
    from src.records import load_records

    if not cfg.pool:
        raise UsageError("--pool is required (the synthetic world's inference/cot/synthetic.json)")
    check_range("port", cfg.port, 0, 65535)
    pool = check_input_file("pool", cfg.pool)
    teacher = ScriptedTeacher.from_pool(load_records(pool, "pool"), str(pool), cfg.model_name)
    try:
        server = _TeacherServer(teacher, cfg.port)
    except OSError as err:
        raise UsageError(f"--port {cfg.port}: cannot listen on {HOST}:{cfg.port} ({err.strerror})") from None
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"scripted teacher for {len(teacher.gold)} questions of {pool}: {server.base_url} serves "
          f"{cfg.model_name!r}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    from src.cli import parse_args, run_cli

    return run_cli(PROG, lambda: _serve(*parse_args([ServerConfig], argv, PROG, __doc__.split("\n\n")[0])))


if __name__ == "__main__":
    raise SystemExit(main())
