"""The interactive strategy's teacher: an instruction-tuned model behind an OpenAI-compatible endpoint.

    python -m vllm.entrypoints.openai.api_server --model meta-llama/Meta-Llama-3-70B-Instruct --port 8000 ...
    OPENAI_API_KEY=EMPTY python inference_teacher_help.py --teacher_model meta-llama/Meta-Llama-3-70B-Instruct \
        --teacher_base_url http://127.0.0.1:8000/v1 ...

Before anything is sampled, :func:`preflight` asks the endpoint for its model list (``GET <base_url>/models``,
a short timeout, no retries): a closed port or a wrong model name fails in seconds with a message saying what to
fix, instead of a 404 after the whole initial round (vLLM serves a model under its ``--model`` path unless
``--served-model-name`` says otherwise).

Requests go out concurrently (at most ``teacher_max_concurrency`` at a time, one thread each); every request has
a timeout and is retried with exponential back-off by the ``openai`` client itself (0.5 s doubling, capped at
8 s, with jitter). When a request still fails, :class:`TeacherError` says which endpoint failed and why.

A replicated teacher: ``--teacher_base_url http://a:8000/v1,http://b:8000/v1`` spreads the requests over the
replicas (round robin); a request that fails on one (connection, timeout, 429, 5xx) is retried at once on the next,
and the failed replica is skipped for :data:`REPLICA_COOL_OFF_S`, so the run finishes on the others.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace


class TeacherError(RuntimeError):
    """The teacher endpoint failed for good (after its retries)."""


@dataclass
class TeacherConfig:
    teacher_model: str = field(default="", metadata={"help": "teacher model name as the endpoint serves it"})
    teacher_base_url: str = field(default="http://127.0.0.1:8000/v1",
                                  metadata={"help": "OpenAI-compatible base URL of the teacher (ends in /v1); "
                                                    "replicas: several URLs, comma-separated"})
    teacher_api_key_env: str = field(default="OPENAI_API_KEY",
                                     metadata={"help": "environment variable holding the teacher's API key "
                                                       "(a local vLLM server accepts any value)"})
    teacher_temperature: float = field(default=1.0, metadata={"help": "teacher sampling temperature (SPEC: 1.0)"})
    teacher_top_p: float = field(default=0.95, metadata={"help": "teacher nucleus sampling (SPEC: 0.95)"})
    teacher_max_tokens: int = field(default=1024, metadata={"help": "teacher tokens per critique (SPEC: 1024)"})
    teacher_max_concurrency: int = field(default=16, metadata={"help": "teacher requests in flight at once"})
    teacher_timeout: float = field(default=120.0, metadata={"help": "seconds per teacher request"})
    teacher_max_retries: int = field(default=4, metadata={
        "help": "retries per request on connection errors, timeouts, 429 and 5xx (exponential back-off)"})
    teacher_preflight_timeout: float = field(default=10.0, metadata={
        "help": "seconds for the check of the endpoint's model list before sampling (0 = skip the check)"})


def _api_key(cfg: TeacherConfig) -> str:
    # A local OpenAI-compatible server ignores the key; the client still insists on one.
    return os.environ.get(cfg.teacher_api_key_env) or "EMPTY"


def preflight(cfg: TeacherConfig) -> list[str]:
    """Check that ``cfg.teacher_base_url`` answers and serves ``cfg.teacher_model``; return the served names.

    Raises :class:`TeacherError` naming the URL and what to change (port, model name).
    """
    url = cfg.teacher_base_url.rstrip("/") + "/models"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {_api_key(cfg)}"})
    try:
        with urllib.request.urlopen(request, timeout=cfg.teacher_preflight_timeout) as resp:
            listing = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        raise TeacherError(f"teacher endpoint {url} answered HTTP {err.code}; --teacher_base_url must be the "
                           "OpenAI-compatible base URL ending in /v1") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TeacherError(f"teacher endpoint {url} does not answer ({reason}); start the teacher server first or "
                           "fix --teacher_base_url (scripts: TEACHER_PORT / TEACHER_BASE_URL)") from err
    except json.JSONDecodeError as err:
        raise TeacherError(f"teacher endpoint {url} did not return JSON; is it an OpenAI-compatible server?") \
            from err
    served = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)] \
        if isinstance(listing, dict) else []
    if cfg.teacher_model not in served:
        raise TeacherError(f"teacher endpoint {url} serves {served}, not {cfg.teacher_model!r}; pass the served "
                           "name as --teacher_model (scripts: TEACHER_MODEL) or start the server with "
                           f"--served-model-name {cfg.teacher_model}")
    return served


class TeacherClient:
    """Critiques wrong attempts: ``critique_many(list of chat messages) -> list of feedback texts``.

    Construction runs :func:`preflight` (unless ``teacher_preflight_timeout`` is 0), so a bad endpoint fails here.
    """

    def __init__(self, cfg: TeacherConfig):
        from openai import OpenAI

        if not cfg.teacher_model:
            raise ValueError("the interactive strategy needs --teacher_model (the served model's name)")
        self.urls = base_urls(cfg)
        if cfg.teacher_preflight_timeout > 0:
            for url in self.urls:
                preflight(replace(cfg, teacher_base_url=url))
        self.cfg = cfg
        self.client = OpenAI(base_url=self.urls[0], api_key=_api_key(cfg), timeout=cfg.teacher_timeout,
                             max_retries=cfg.teacher_max_retries)
        self.replicas = None if len(self.urls) == 1 else _Replicas(self.urls, cfg)

    def critique(self, messages: list[dict[str, str]]) -> str:
        import openai

        if self.replicas is not None:
            return self.replicas.critique(messages)
        try:
            resp = self.client.chat.completions.create(
                model=self.cfg.teacher_model, messages=messages, temperature=self.cfg.teacher_temperature,
                top_p=self.cfg.teacher_top_p, max_tokens=self.cfg.teacher_max_tokens)
        except openai.APIError as err:
            raise TeacherError(f"teacher {self.cfg.teacher_model!r} at {self.cfg.teacher_base_url} failed after "
                               f"{self.cfg.teacher_max_retries} retries: {type(err).__name__}: {err}") from err
        return resp.choices[0].message.content or ""

    def critique_many(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        """Critique every conversation, in order; the first permanent failure raises :class:`TeacherError`."""
        if not conversations:
            return []
        workers = max(1, min(self.cfg.teacher_max_concurrency, len(conversations)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="teacher")
        try:
            futures = [pool.submit(self.critique, messages) for messages in conversations]
            return [f.result() for f in futures]
        finally:
            # after a permanent failure, requests not yet started are dropped instead of retried one by one
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.client.close()
        if self.replicas is not None:
            self.replicas.close()


REPLICA_COOL_OFF_S = 30.0  # a replica that failed is skipped this long (a restarted server comes back)


def base_urls(cfg: TeacherConfig) -> list[str]:
    """The teacher's endpoints: ``--teacher_base_url`` may list replicas, comma-separated."""
    return [u.strip() for u in cfg.teacher_base_url.split(",") if u.strip()] or [cfg.teacher_base_url]


class _Replicas:
    """Round robin over several teacher endpoints; a failed request moves on to the next healthy one."""

    def __init__(self, urls: list[str], cfg: TeacherConfig):
        from openai import OpenAI

        self.urls, self.cfg = urls, cfg
        # no client-side retries: the next attempt goes to another replica instead of waiting for this one
        self.clients = [OpenAI(base_url=u, api_key=_api_key(cfg), timeout=cfg.teacher_timeout, max_retries=0)
                        for u in urls]
        self.down_until = [0.0] * len(urls)
        self.turn = itertools.count()
        self.lock = threading.Lock()

    def pick(self) -> int:
        with self.lock:
            start, now = next(self.turn), time.monotonic()
            order = [(start + j) % len(self.urls) for j in range(len(self.urls))]
            healthy = [i for i in order if self.down_until[i] <= now]
            return healthy[0] if healthy else min(order, key=lambda i: self.down_until[i])

    def critique(self, messages: list[dict[str, str]]) -> str:
        import openai

        failures = []
        for attempt in range(self.cfg.teacher_max_retries + 1):
            i = self.pick()
            try:
                resp = self.clients[i].chat.completions.create(
                    model=self.cfg.teacher_model, messages=messages, temperature=self.cfg.teacher_temperature,
                    top_p=self.cfg.teacher_top_p, max_tokens=self.cfg.teacher_max_tokens)
                return resp.choices[0].message.content or ""
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as err:
                with self.lock:
                    self.down_until[i] = time.monotonic() + REPLICA_COOL_OFF_S
                    all_down = all(t > time.monotonic() for t in self.down_until)
                failures.append(f"{self.urls[i]}: {type(err).__name__}")
                if all_down:  # every replica failed lately: back off before trying again
                    time.sleep(min(0.5 * 2 ** attempt, 8.0))
            except openai.APIError as err:  # 400/404: the request itself is wrong, another replica won't help
                raise TeacherError(f"teacher {self.cfg.teacher_model!r} at {self.urls[i]} refused the request: "
                                   f"{type(err).__name__}: {err}") from err
        raise TeacherError(f"teacher {self.cfg.teacher_model!r} failed on its replicas after "
                           f"{self.cfg.teacher_max_retries} retries: {'; '.join(failures)}")

    def close(self) -> None:
        for client in self.clients:
            client.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m src.sampling.teacher --teacher_model NAME --teacher_base_url URL``: the preflight alone (the
    iteration scripts run it before the first stage, so a wrong name or port fails before hours of training).
    A failed check is one line on stderr and exit 2 (src/cli.py)."""
    from src.cli import UsageError, parse_args, run_cli

    prog = "python -m src.sampling.teacher"

    def body() -> None:
        (cfg,) = parse_args([TeacherConfig], argv, prog)
        try:
            served = preflight(cfg)
        except TeacherError as err:
            raise UsageError(str(err)) from None
        print(f"teacher ok: {cfg.teacher_base_url} serves {served}")

    return run_cli(prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
