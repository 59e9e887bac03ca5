"""The interactive strategy's teacher: an instruction-tuned model behind an OpenAI-compatible endpoint.

    python -m vllm.entrypoints.openai.api_server --model meta-llama/Meta-Llama-3-70B-Instruct --port 8000 ...
    OPENAI_API_KEY=EMPTY python inference_teacher_help.py --teacher_model meta-llama/Meta-Llama-3-70B-Instruct \
        --teacher_base_url http://127.0.0.1:8000/v1 ...

Requests go out concurrently (at most ``teacher_max_concurrency`` at a time, one thread each); every request has
a timeout and is retried with exponential back-off by the ``openai`` client itself (0.5 s doubling, capped at
8 s, with jitter). When a request still fails, :class:`TeacherError` says which endpoint failed and why.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


class TeacherError(RuntimeError):
    """The teacher endpoint failed for good (after its retries)."""


@dataclass
class TeacherConfig:
    teacher_model: str = field(default="", metadata={"help": "teacher model name as the endpoint serves it"})
    teacher_base_url: str = field(default="http://127.0.0.1:8000/v1",
                                  metadata={"help": "OpenAI-compatible base URL of the teacher (ends in /v1)"})
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


class TeacherClient:
    """Critiques wrong attempts: ``critique_many(list of chat messages) -> list of feedback texts``."""

    def __init__(self, cfg: TeacherConfig):
        from openai import OpenAI

        if not cfg.teacher_model:
            raise ValueError("the interactive strategy needs --teacher_model (the served model's name)")
        self.cfg = cfg
        # A local OpenAI-compatible server ignores the key; the client still insists on one.
        api_key = os.environ.get(cfg.teacher_api_key_env) or "EMPTY"
        self.client = OpenAI(base_url=cfg.teacher_base_url, api_key=api_key, timeout=cfg.teacher_timeout,
                             max_retries=cfg.teacher_max_retries)

    def critique(self, messages: list[dict[str, str]]) -> str:
        import openai

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
