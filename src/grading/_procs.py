"""Long-lived helper processes that speak one JSON object per line (the sympy checker and the PoT workers).

The caller never runs untrusted or possibly-unbounded work in its own process: it sends a request line, waits
for the reply line with a deadline, and kills and restarts the helper when the deadline passes or the helper
dies. The helper starts with a scrubbed environment, so nothing it (or a program it forks) runs can read the
caller's secrets.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

# Single-threaded maths libraries: a forked child cannot inherit a thread pool, and the machine has 2 cores.
_THREAD_VARS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "NUMEXPR_NUM_THREADS": "1"}
# Sandbox switches a helper inherits from its caller (every other variable is dropped):
UNCONFINED_OPT_OUT_VAR = "GSI_UNSAFE_UNCONFINED_POT"  # "1": run PoT programs even where they cannot be confined
TEST_DISABLE_VAR = "GSI_SANDBOX_TEST_DISABLE"  # tests only: layers to treat as missing, e.g. "landlock,mountns"


def scrubbed_env(home: str) -> dict[str, str]:
    """The whole environment a helper gets: no inherited variables at all (API keys, tokens, proxies)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
            "PYTHONUNBUFFERED": "1", **_THREAD_VARS,
            **{k: os.environ[k] for k in (UNCONFINED_OPT_OUT_VAR, TEST_DISABLE_VAR) if k in os.environ}}


_warned: set[str] = set()


class HelperDied(RuntimeError):
    """The helper process exited or closed its pipe."""


class HelperRefused(RuntimeError):
    """The helper's start-up refused to serve (raised there, and again in the caller with the same message)."""


class LineWorker:
    """Client side of one helper process running ``serve`` with the handler named ``module:function``."""

    def __init__(self, handler: str, startup_timeout: float = 120.0, setup: str = ""):
        self.handler = handler
        self.setup = setup  # module:function the helper runs once before serving (e.g. pre-imports)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self._buf = b""
        self._home: str | None = None  # the helper's empty working directory, while it runs
        self.lock = threading.Lock()
        self.restarts = 0
        self._owner = os.getpid()  # only the process that started the helper may stop it (not a forked copy)

    def start(self) -> None:
        self._owner = os.getpid()
        self._home = tempfile.mkdtemp(prefix="gsi_helper_")
        code = (f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); "
                f"from src.grading._procs import serve; serve({self.handler!r}, {self.setup!r})")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=scrubbed_env(self._home), cwd=self._home, close_fds=True,
            start_new_session=True,  # its own process group: a kill takes down anything it forked
        )
        self._buf = b""
        ready = self._read_line(time.monotonic() + self.startup_timeout)
        if "refused" in ready:
            self.kill()
            raise HelperRefused(ready["refused"])
        if ready.get("ready") is not True:
            raise HelperDied(f"helper {self.handler} did not start: {ready}")
        if ready.get("warning") and ready["warning"] not in _warned:
            _warned.add(ready["warning"])  # once per process, not once per helper restart
            print(f"warning: {ready['warning']}", file=sys.stderr)

    def _read_line(self, deadline: float) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise HelperDied(f"helper {self.handler} exited (code {self.proc.poll()})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def call(self, request: dict, timeout: float) -> dict:
        """Send one request and return the reply; raise TimeoutError / HelperDied after killing the helper."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:  # it died between requests
                self.restarts += 1
                self.kill()
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
            return self._read_line(time.monotonic() + timeout)
        except (TimeoutError, HelperDied, BrokenPipeError, OSError, ValueError) as err:
            self.restarts += 1
            self.kill()  # a fresh helper for the next request: its state after a timeout is unknown
            if isinstance(err, TimeoutError):
                raise
            raise HelperDied(str(err)) from None

    def kill(self) -> None:
        if self.proc is None or os.getpid() != self._owner:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self.proc = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def close(self) -> None:
        self.kill()


def _resolve(spec: str) -> Callable[..., Any]:
    module, _, func = spec.partition(":")
    mod = __import__(module, fromlist=[func])
    return getattr(mod, func)


def serve(handler: str, setup: str = "") -> None:
    """Helper side: run ``setup`` once, then answer one JSON request per stdin line on stdout."""
    # Keep the protocol on private descriptors; fd 0/1 point at /dev/null so stray prints cannot corrupt it.
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    warning = None
    if setup:
        try:
            warning = _resolve(setup)()  # a setup may return a warning for the caller to print
        except HelperRefused as err:
            proto_out.write(json.dumps({"ready": False, "refused": str(err)}).encode() + b"\n")
            return
    func = _resolve(handler)
    proto_out.write(json.dumps({"ready": True, "warning": warning} if warning else {"ready": True}).encode() + b"\n")
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = proto_in.read(1 << 16)
            if not chunk:
                return
            buf += chunk
        line, _, buf = buf.partition(b"\n")
        try:
            reply = func(json.loads(line), proto_fds=(proto_in.fileno(), proto_out.fileno()))
        except Exception as err:  # report, keep serving: one bad request must not take the helper down
            reply = {"error": f"{type(err).__name__}: {err}"}
        proto_out.write(json.dumps(reply).encode() + b"\n")
