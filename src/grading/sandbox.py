"""Sandboxed, pooled execution of untrusted PoT programs.

    with PotExecutor(workers=2) as ex:
        results = ex.run(["print(1 + 1)", "while True: pass"])  # [ProgramResult(status="ok", stdout="2\\n"), ...]

Design: ``workers`` long-lived helper processes (started with a scrubbed environment) pre-import math,
fractions, itertools, numpy, sympy and scipy once. For each program a helper forks one short-lived child
(cheap: the modules are already in memory), and the child, before running the program:

- starts its own session (process group) and closes every inherited descriptor; stdin is /dev/null;
- enters a new network namespace (no interfaces) when the OS allows, and blocks socket creation in any case;
- sets resource limits: CPU time, address space, file size, open files, no core dumps, no new processes;
- drops to user ``nobody`` when running as root (so file permissions and the process limit apply);
- restricts the file system with Landlock where the kernel has it (writes only inside its own fresh temporary
  directory, reads only of system and library folders), and with a Python audit hook in any case;
- clears its environment.

The helper enforces the wall-clock timeout and kills the child's whole process group, caps captured output,
removes the temporary directory, and replies. The caller distributes a batch over the helpers with one thread
per helper and replaces a helper that died or stopped answering. Programs never run in the caller's process
(the original code ran them with ``exec`` and no limits).
"""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import queue
import resource
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass

from src.grading._procs import HelperDied, LineWorker

DEFAULT_TIMEOUT_S = 5.0  # SPEC: a program gets 5 s of wall-clock time
DEFAULT_MEMORY_MB = 2048  # address-space limit of one program (the pre-imported libraries use ~0.5 GB of it)
DEFAULT_OUTPUT_BYTES = 1 << 20  # captured stdout cap; a program printing more is killed
DEFAULT_FILE_BYTES = 16 << 20  # largest file a program may write in its own directory
# Imported once per helper. Beyond what PoT programs use, the standard library modules they may import lazily:
# after dropping to ``nobody`` a child may be unable to read an interpreter installed under /root.
PREIMPORTS = ("math", "cmath", "fractions", "decimal", "numbers", "itertools", "functools", "operator",
              "collections", "heapq", "bisect", "statistics", "random", "re", "string", "textwrap", "json", "csv",
              "copy", "datetime", "calendar", "time", "array", "struct", "enum", "dataclasses", "typing", "pprint",
              "gzip", "bz2", "lzma", "zlib", "io", "contextlib", "inspect", "traceback", "numpy", "numpy.linalg",
              "numpy.polynomial", "numpy.random", "numpy.fft", "sympy", "mpmath", "scipy")
# scipy's submodules double a helper's memory (62 -> 131 MB), and forking costs time in proportion to it, so
# they live in a separate helper that only runs programs mentioning scipy.
SCIPY_PREIMPORTS = ("scipy.special", "scipy.optimize", "scipy.integrate", "scipy.stats", "scipy.linalg",
                    "scipy.interpolate")


@dataclass
class ProgramResult:
    status: str  # "ok" | "error" (exception, crash, non-zero exit, output cap) | "timeout"
    stdout: str
    stderr: str = ""
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------------------------
# Helper side (runs in the worker process)

_LIBC = None
_HELPER_NETNS = False  # the helper (and so each child) already sits in an empty network namespace
_STATUS_FD = 3  # the child reports its exit status here before exiting (see run_program)
_pending_reap: list[int] = []  # children that reported their status and are still exiting
NOBODY = 65534
_CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_WRITE_ALL = sum(1 << i for i in range(4, 13)) | _FS_WRITE_FILE  # remove/make dir/file/sock/fifo/sym...
_READ_ROOTS = ("/usr", "/lib", "/lib64", "/etc", "/bin", "/opt", "/dev/null", "/dev/urandom", "/dev/zero",
               "/sys/devices/system/cpu")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def warm_up_scipy() -> None:
    """Start-up of the helper for programs that use scipy: :func:`warm_up` plus scipy's submodules."""
    warm_up(PREIMPORTS + SCIPY_PREIMPORTS)


def warm_up(modules: tuple[str, ...] = PREIMPORTS) -> None:
    """Helper start-up: import what programs use, single-threaded, and prepare libc for the children."""
    global _LIBC
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            pass
    _LIBC = ctypes.CDLL(None, use_errno=True)
    global _HELPER_NETNS
    # One empty network namespace for the helper, inherited by every child: creating one per child costs
    # ~4 ms of kernel work per program. The helper itself talks to the caller over pipes only.
    _HELPER_NETNS = _LIBC.unshare(_CLONE_NEWNET) == 0
    # Pre-imported objects move to a permanent generation: a child's garbage collector then never touches
    # (and so never copies) the helper's ~100 MB heap.
    gc.collect()
    gc.freeze()


def _landlock(workdir: str) -> bool:
    """Allow writes only under ``workdir`` and reads only under system/library roots; False if unsupported."""
    libc = _LIBC
    abi = libc.syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return False
    handled = _FS_EXECUTE | _FS_WRITE_ALL | _FS_READ_FILE | _FS_READ_DIR
    if abi >= 2:
        handled |= 1 << 13  # REFER
    if abi >= 3:
        handled |= 1 << 14  # TRUNCATE
    attr = _RulesetAttr(handled, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)  # TCP bind/connect; scopes
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    try:
        read = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
        roots = {p: read for p in (*_READ_ROOTS, sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path)
                 if p and os.path.exists(p)}
        roots[workdir] = handled
        for path, access in roots.items():
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                if os.path.isfile(path):
                    access &= _FS_EXECUTE | _FS_READ_FILE | _FS_WRITE_FILE | (1 << 14)
                rule = _PathBeneathAttr(access & handled, fd)
                libc.syscall(_LANDLOCK_ADD_RULE, ruleset, 1, ctypes.byref(rule), ctypes.c_uint32(0))
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return libc.syscall(_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) == 0
    finally:
        os.close(ruleset)


def _audit_guard(workdir: str):
    """A Python audit hook: no sockets, processes, native calls, or writes outside ``workdir``."""
    root = os.path.realpath(workdir) + os.sep
    denied = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "subprocess.Popen",
              "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
              "os.killpg", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle",
              "ctypes.call_function", "ctypes.cdata", "os.chroot", "os.setuid", "resource.setrlimit",
              "sys.remote_exec", "mmap.__new__"}
    path_events = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                   "os.link", "os.symlink", "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.utime",
                   "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod"}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path) -> bool:
        if isinstance(path, int):
            return True
        try:
            return (os.path.realpath(os.fsdecode(path)) + os.sep).startswith(root)
        except (TypeError, ValueError):
            return False

    def hook(event: str, args: tuple) -> None:
        if event in denied:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open" and args:
            path, mode, flags = (list(args) + [None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & write_flags)
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} is not allowed")
            if isinstance(path, (str, bytes)) and os.fsdecode(path).startswith("/proc/") and \
                    not os.fsdecode(path).startswith("/proc/self/"):
                raise PermissionError("sandbox: /proc is not readable")
        elif event in path_events:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    raise PermissionError(f"sandbox: {event} outside the sandbox directory")

    return hook


def _child(code: str, workdir: str, w_out: int, w_err: int, w_status: int, limits: dict) -> None:
    """Runs in the forked child: isolate, limit, then execute ``code``. Never returns."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(w_out, 1)
    os.dup2(w_err, 2)
    os.dup2(w_status, _STATUS_FD)
    os.closerange(_STATUS_FD + 1, 65536)  # the helper's protocol pipes and anything else inherited
    libc = _LIBC
    if not _HELPER_NETNS and libc is not None:
        libc.unshare(_CLONE_NEWNET)  # a namespace with no interfaces: no network at all
    os.chdir(workdir)
    cpu = int(limits["timeout"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    mem = limits["memory_mb"] << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))  # no fork, no threads (counted per user)
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)  # root is exempt from RLIMIT_NPROC and from file permissions: stop being root
    if libc is not None:
        _landlock(workdir)
    os.environ.clear()
    os.environ.update({"HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    tempfile.tempdir = workdir
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    # line-buffered: what a program printed before os._exit() or a kill is still captured
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.argv = ["program.py"]
    sys.addaudithook(_audit_guard(workdir))
    status = 0
    try:
        exec(compile(code, "program.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as err:
        status = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    except BaseException:  # the program's own exception: report it like Python would
        import traceback

        traceback.print_exc()
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        # Report, then close everything: the helper answers at once instead of waiting for this (large,
        # copy-on-write) process to be torn down.
        os.write(_STATUS_FD, str(status).encode())
        os.closerange(0, 65536)
    finally:
        os._exit(status)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait(pid: int, flags: int = 0) -> int:
    """Exit code (negative: killed by that signal) of child ``pid``; 0 if it is gone or still running."""
    while True:
        try:
            done, wstatus = os.waitpid(pid, flags)
            return os.waitstatus_to_exitcode(wstatus) if done else 0
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def _reap(block: bool = False) -> None:
    """Collect children that already reported their status (they were killed; this only clears zombies)."""
    for pid in list(_pending_reap):
        try:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _pending_reap.remove(pid)


def run_program(code: str, timeout: float, memory_mb: int, output_bytes: int, file_bytes: int) -> dict:
    """Helper side: fork one sandboxed child for ``code``, collect its output, enforce the wall timeout."""
    base = tempfile.mkdtemp(prefix="pot_")
    workdir = os.path.join(base, "work")
    os.mkdir(workdir, 0o700)
    if os.geteuid() == 0:
        os.chown(workdir, NOBODY, NOBODY)
        os.chmod(base, 0o711)
    _reap(block=len(_pending_reap) > 16)
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    r_st, w_st = os.pipe()
    start = time.monotonic()
    limits = {"timeout": timeout, "memory_mb": memory_mb, "file_bytes": file_bytes}
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (r_out, r_err, r_st):
                os.close(fd)
            _child(code, workdir, w_out, w_err, w_st, limits)
        finally:
            os._exit(111)
    for fd in (w_out, w_err, w_st):
        os.close(fd)
    out, err, reported = bytearray(), bytearray(), bytearray()
    open_fds = {r_out: out, r_err: err, r_st: reported}
    status = None
    deadline = start + timeout
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            status = "timeout"
            break
        ready, _, _ = select.select(list(open_fds), [], [], remaining)
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                del open_fds[fd]
                continue
            buf = open_fds[fd]
            if fd == r_st:
                buf += chunk[:16]
            elif len(buf) < output_bytes:
                buf += chunk[: output_bytes - len(buf)]
            elif fd == r_out:
                status = "output_limit"
        if status:
            break
    exited = None
    if status is None and not reported.isdigit():
        # Every pipe closed without a report (os._exit, a crash, or a program closing its descriptors and
        # sleeping): wait for the exit, but never past the deadline.
        while exited is None:
            done, wstatus = os.waitpid(pid, os.WNOHANG)
            if done:
                exited = os.waitstatus_to_exitcode(wstatus)
            elif time.monotonic() >= deadline:
                status = "timeout"
                break
            else:
                time.sleep(0.002)
    _kill_group(pid)  # also ends anything the program left behind in its group
    if exited is not None:
        code_or_sig = exited
    elif status is None:
        code_or_sig = int(reported)  # it finished and said how; reap it later
        _pending_reap.append(pid)
    else:
        code_or_sig = _wait(pid)
    for fd in (r_out, r_err, r_st):
        os.close(fd)
    shutil.rmtree(base, ignore_errors=True)
    if status is None:
        status = "ok" if code_or_sig == 0 else "error"
    elif status == "output_limit":
        err += f"\nsandbox: output over {output_bytes} bytes, program killed".encode()
        status = "error"
    if status == "error" and code_or_sig < 0:
        sig = -code_or_sig
        reason = "CPU time limit" if sig == signal.SIGXCPU else signal.Signals(sig).name
        err += f"\nsandbox: killed by {reason}".encode()
        if sig == signal.SIGXCPU:
            status = "timeout"
    return {"status": status, "stdout": out.decode("utf-8", "replace"),
            "stderr": err[-4000:].decode("utf-8", "replace"), "seconds": time.monotonic() - start}


def handle(request: dict, proto_fds: tuple[int, int] | None = None) -> dict:
    """Helper request: ``{"code", "timeout", "memory_mb", "output_bytes", "file_bytes"}`` -> ProgramResult."""
    try:
        return run_program(request["code"], float(request["timeout"]), int(request["memory_mb"]),
                           int(request["output_bytes"]), int(request["file_bytes"]))
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.ENOMEM):
            return {"status": "error", "stdout": "", "stderr": f"sandbox: cannot fork: {err}", "seconds": 0.0}
        raise


# ---------------------------------------------------------------------------------------------------------------
# Caller side


class PotExecutor:
    """A pool of sandbox helpers; ``run(programs)`` returns one :class:`ProgramResult` per program, in order.

    ``workers`` helpers run programs in parallel; programs that mention scipy go to one extra helper that has
    scipy's submodules imported (started on first need), which also takes other programs when it is idle.
    """

    def __init__(self, workers: int = 2, timeout: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB,
                 output_bytes: int = DEFAULT_OUTPUT_BYTES, file_bytes: int = DEFAULT_FILE_BYTES):
        self.timeout = timeout
        self.limits = {"timeout": timeout, "memory_mb": memory_mb, "output_bytes": output_bytes,
                       "file_bytes": file_bytes}
        self.helpers = [LineWorker("src.grading.sandbox:handle", setup="src.grading.sandbox:warm_up")
                        for _ in range(max(1, workers))]
        self.scipy_helper = LineWorker("src.grading.sandbox:handle", setup="src.grading.sandbox:warm_up_scipy")
        self._closed = False
        # stop the helpers when the executor is garbage-collected or the program exits without close()
        self._finalizer = weakref.finalize(self, _close_all, [*self.helpers, self.scipy_helper])

    def __enter__(self) -> PotExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def restarts(self) -> int:
        """How many times a helper was replaced after a crash or a missed deadline."""
        return sum(h.restarts for h in [*self.helpers, self.scipy_helper])

    def _run_one(self, helper: LineWorker, code: str) -> ProgramResult:
        # The helper enforces the program's timeout; our deadline only catches a helper that is itself stuck.
        try:
            reply = helper.call({"code": code, **self.limits}, self.timeout + 30.0)
        except TimeoutError:
            return ProgramResult("timeout", "", "sandbox: helper missed its deadline and was replaced")
        except HelperDied as err:
            return ProgramResult("error", "", f"sandbox: helper died and was replaced ({err})")
        if "status" not in reply:
            return ProgramResult("error", "", reply.get("error", "sandbox: bad reply"))
        return ProgramResult(reply["status"], reply["stdout"], reply["stderr"], reply["seconds"])

    def run(self, programs: list[str]) -> list[ProgramResult]:
        """Run every program (in parallel over the helpers); results come back in input order."""
        if self._closed:
            raise RuntimeError("PotExecutor is closed")
        results: list[ProgramResult | None] = [None] * len(programs)
        plain: queue.Queue[int] = queue.Queue()
        with_scipy: queue.Queue[int] = queue.Queue()
        for i, code in enumerate(programs):
            (with_scipy if "scipy" in code else plain).put(i)

        def drain(helper: LineWorker, queues: list[queue.Queue]) -> None:
            with helper.lock:
                for q in queues:
                    while True:
                        try:
                            i = q.get_nowait()
                        except queue.Empty:
                            break
                        results[i] = self._run_one(helper, programs[i])

        jobs = [(h, [plain]) for h in self.helpers]
        if not with_scipy.empty():
            jobs.append((self.scipy_helper, [with_scipy, plain]))
        threads = [threading.Thread(target=drain, args=job, daemon=True) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [r if r is not None else ProgramResult("error", "", "sandbox: not run") for r in results]

    def close(self) -> None:
        self._closed = True
        self._finalizer()


def _close_all(helpers: list[LineWorker]) -> None:
    for helper in helpers:
        helper.close()
