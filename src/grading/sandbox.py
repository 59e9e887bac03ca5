"""Sandboxed, pooled execution of untrusted PoT programs.

    with PotExecutor(workers=2) as ex:
        results = ex.run(["print(1 + 1)", "while True: pass"])  # [ProgramResult(status="ok", stdout="2\\n"), ...]

Design: ``workers`` long-lived helper processes (started with a scrubbed environment) pre-import math,
fractions, itertools, numpy, sympy and scipy once, then confine themselves (layers every child inherits):

- an empty network namespace (root), and a seccomp filter without network sockets or io_uring (any user);
- a private mount namespace in which every mount is read-only except the helper's scratch folder (root; this is
  what denies writes on kernels without Landlock).

Where neither Landlock nor the mount namespace can deny writes, or nothing can deny the network, the helper
refuses to start and :meth:`PotExecutor.run` raises :class:`SandboxUnavailable` (one line) unless the user sets
``GSI_UNSAFE_UNCONFINED_POT=1``. For each program a helper forks one short-lived child (cheap: the modules are
already in memory), and the child, before running the program:

- starts its own session (process group) and closes every inherited descriptor; stdin is /dev/null;
- sets resource limits: CPU time, address space, file size, open files, no core dumps, no new processes;
- drops to user ``nobody`` when running as root (so file permissions and the process limit apply);
- restricts the file system with Landlock where the kernel has it (writes only inside its own fresh temporary
  directory, reads only of system and library folders, not the project's);
- forgets the project: no ``src`` modules, no repository on the import path, no libc handle;
- clears its environment and installs a Python audit hook (no sockets, processes, native calls, directory
  descriptors or writes outside its directory): a second wall, which raw system calls would get past.

The helper enforces the wall-clock timeout and kills the child's whole process group, caps captured output,
removes the temporary directory, and replies. The caller distributes a batch over the helpers with one thread
per helper and replaces a helper that died or stopped answering. Programs never run in the caller's process
(the original code ran them with ``exec`` and no limits).

The symbolic checker's helper (:func:`symbolic_handle`) uses the same layers, with no writable folder at all and
one fresh child per comparison, so nothing an answer does survives its comparison.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import json
import os
import platform
import queue
import re
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass

from src.grading._procs import (
    REPO_ROOT,
    TEST_DISABLE_VAR,
    UNCONFINED_OPT_OUT_VAR,
    HelperDied,
    HelperRefused,
    LineWorker,
)

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
_LANDLOCK_ABI = 0  # Landlock ABI version of this kernel (0: none), probed once per helper
_SCRATCH: str | None = None  # the only writable folder of the helper's read-only mount namespace (when it has one)
_STATUS_FD = 3  # the child reports its exit status here before exiting (see run_program)
_pending_reap: list[int] = []  # children that reported their status and are still exiting
_LAYERS: dict[str, bool] = {}  # which confinement layers this helper has (see _confine_helper)
NOBODY = 65534
_CLONE_NEWNS, _CLONE_NEWNET = 0x00020000, 0x40000000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_WRITE_ALL = sum(1 << i for i in range(4, 13)) | _FS_WRITE_FILE  # remove/make dir/file/sock/fifo/sym...
_READ_ROOTS = ("/usr", "/lib", "/lib64", "/etc", "/bin", "/opt", "/dev/null", "/dev/urandom", "/dev/zero",
               "/sys/devices/system/cpu")
_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
# per-mount flags a read-only remount must keep (the kernel refuses to clear some of them in a container)
_MS_KEEP = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21,
            "strictatime": 1 << 24}
# seccomp: (audit arch, socket, io_uring_setup) per machine; io_uring can open sockets without the socket call
_SECCOMP_ARCH = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}


class SandboxUnavailable(SystemExit):
    """This machine cannot confine PoT programs (no Landlock and no read-only mount namespace, or no network
    isolation) and the user did not opt out with ``GSI_UNSAFE_UNCONFINED_POT=1``. A ``SystemExit``: any command
    stops with this one line on stderr and exit status 1, and no ``except Exception`` grades on without it."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _simulated_missing(layer: str) -> bool:
    """Tests only: ``GSI_SANDBOX_TEST_DISABLE=landlock,mountns`` makes the helper behave as on a kernel (or a
    container) without those layers, so both paths are tested on one machine."""
    return layer in os.environ.get(TEST_DISABLE_VAR, "").split(",")


def warm_up_scipy() -> None:
    """Start-up of the helper for programs that use scipy: :func:`warm_up` plus scipy's submodules."""
    warm_up(PREIMPORTS + SCIPY_PREIMPORTS)


def warm_up(modules: tuple[str, ...] = PREIMPORTS) -> str | None:
    """PoT helper start-up: import what programs use, single-threaded, then confine the helper itself.

    Refuses (``HelperRefused``; the caller raises :class:`SandboxUnavailable`) when writes or the network cannot be
    denied by the kernel, unless the user opted out; then returns the warning the caller prints.
    """
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            pass
    missing = _missing_layers(_confine_helper())
    _freeze()
    if not missing:
        return None
    if os.environ.get(UNCONFINED_OPT_OUT_VAR) != "1":
        raise HelperRefused(f"sandbox: refusing to run PoT programs without {missing}; run as root or on a "
                                 f"newer kernel, or set {UNCONFINED_OPT_OUT_VAR}=1 to run them anyway")
    return f"sandbox: PoT programs run without {missing} ({UNCONFINED_OPT_OUT_VAR}=1)"


def warm_up_symbolic() -> str | None:
    """Symbolic-checker helper start-up: sympy and the checker imported and exercised, then the helper confined
    with whatever layers this machine has (the parser never evaluates answer text: this is the second wall).
    Returns a warning when a layer is missing."""
    from src.grading import symbolic

    symbolic.warm_up()
    missing = _missing_layers(_confine_helper())
    _freeze()
    return f"sandbox: symbolic comparisons run without {missing}" if missing else None


def _missing_layers(layers: dict[str, bool]) -> str:
    """What the kernel cannot deny, in words ("" when writes and the network are both denied)."""
    missing = [what for what, ok in (
        ("file-system isolation (no Landlock, Linux >= 5.13; no mount namespace, root)",
         layers["landlock"] or layers["mountns"]),
        ("network isolation (no network namespace, root; no seccomp)", layers["netns"] or layers["seccomp"]))
        if not ok]
    return " or ".join(missing)


def _freeze() -> None:
    """End of a helper's start-up: list the project's modules (for :func:`_forget_project`), freeze the heap."""
    _PROJECT_MODULES[:] = [name for name in sys.modules if name == "src" or name.startswith("src.")]
    _PROJECT_PATHS.update(p for p in sys.path if p and os.path.realpath(p) == str(REPO_ROOT))
    # Pre-imported objects move to a permanent generation: a child's garbage collector then never touches
    # (and so never copies) the helper's ~100 MB heap.
    gc.collect()
    gc.freeze()


def _confine_helper() -> dict:
    """Layers every child inherits: an empty network namespace, a mount namespace where everything but the
    scratch folder is read-only, a seccomp filter without sockets. Returns which of them (and Landlock) hold."""
    global _LIBC, _HELPER_NETNS, _LANDLOCK_ABI, _SCRATCH
    _LIBC = ctypes.CDLL(None, use_errno=True)
    home = os.getcwd()
    if os.environ.get("HOME") != home:  # not started by LineWorker (a test calling warm_up): a folder of its own
        home = tempfile.mkdtemp(prefix="gsi_helper_")
    # The helper's own empty folder (LineWorker removes it when the helper stops); user nobody must reach the
    # programs' folders below it.
    os.chmod(home, 0o711)
    _SCRATCH = os.path.join(home, "scratch")
    os.makedirs(_SCRATCH, 0o711, exist_ok=True)
    tempfile.tempdir = _SCRATCH
    if not _simulated_missing("landlock"):
        _LANDLOCK_ABI = max(0, _LIBC.syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                                             ctypes.c_uint32(1)))
    # One empty network namespace for the helper, inherited by every child: creating one per child costs
    # ~4 ms of kernel work per program. The helper itself talks to the caller over pipes only.
    _HELPER_NETNS = not _simulated_missing("netns") and _LIBC.unshare(_CLONE_NEWNET) == 0
    mountns = not _simulated_missing("mountns") and _read_only_mounts(_SCRATCH)
    seccomp = not _simulated_missing("seccomp") and _deny_sockets()
    _LAYERS.update(landlock=_LANDLOCK_ABI >= 1, netns=_HELPER_NETNS, mountns=mountns, seccomp=seccomp)
    return _LAYERS


def _mount_points() -> dict[str, list[str]]:
    """Visible mount point -> its per-mount options (the last mount on a path hides the earlier ones)."""
    top = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            top[point] = fields[5].split(",")
    return top


def _read_only_mounts(scratch: str) -> bool:
    """Enter a private mount namespace in which every mount but ``scratch`` is read-only (needs root or
    CAP_SYS_ADMIN; works on kernels without Landlock). True when every visible mount was verified read-only."""
    libc = _LIBC
    path = scratch.encode()
    # MS_PRIVATE first, so nothing done here propagates to the host; every remount below carries MS_BIND, so it
    # changes this namespace's mount flags, never the file system's (which the host shares).
    if libc.unshare(_CLONE_NEWNS) != 0 or libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0 \
            or libc.mount(path, path, None, _MS_BIND, None) != 0:
        return False
    for point, options in _mount_points().items():
        if point != scratch:
            keep = sum(_MS_KEEP.get(o, 0) for o in options)
            libc.mount(None, point.encode(), None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | keep, None)
    return all(opts[0] == "ro" for point, opts in _mount_points().items() if point != scratch)


def _deny_sockets() -> bool:
    """A seccomp filter (unprivileged, any kernel since 3.5): no network sockets and no io_uring; syscalls of
    another ABI (32-bit x86, x32) are refused. Unix sockets stay allowed (no network)."""
    arch = _SECCOMP_ARCH.get(platform.machine())
    if arch is None:
        return False
    audit_arch, nr_socket, nr_io_uring = arch
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    deny, allow = 0x00050000 | errno.EPERM, 0x7FFF0000
    program = [(ld, 0, 0, 4), (jeq, 0, 7, audit_arch),  # seccomp_data.arch
               (ld, 0, 0, 0), (jge, 5, 0, 0x40000000), (jeq, 4, 0, nr_io_uring),  # .nr
               (jeq, 0, 2, nr_socket), (ld, 0, 0, 16), (jeq, 0, 1, socket.AF_UNIX),  # .args[0]: the family
               (ret, 0, 0, allow), (ret, 0, 0, deny)]
    filters = (_SockFilter * len(program))(*program)
    fprog = _SockFprog(len(program), filters)
    if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return _LIBC.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0


def _landlock(workdir: str | None) -> bool:
    """Allow writes only under ``workdir`` (none without one) and reads only under system/library roots (not the
    project's own folder); False if unsupported."""
    libc = _LIBC
    abi = _LANDLOCK_ABI
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
                 if p and p not in _PROJECT_PATHS and os.path.exists(p)}
        if workdir:
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


def _audit_guard(workdir: str | None):
    """A Python audit hook: no sockets, processes, native calls, or writes outside ``workdir`` (anywhere, without
    one); no directory descriptors outside it either (``os.open(name, ..., dir_fd=fd)`` names no folder)."""
    root = os.path.realpath(workdir) + os.sep if workdir else None
    denied = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "subprocess.Popen",
              "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
              "os.killpg", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle",
              "ctypes.call_function", "ctypes.cdata", "os.chroot", "os.setuid", "resource.setrlimit",
              "sys.remote_exec", "mmap.__new__", "gc.get_objects", "gc.get_referrers", "gc.get_referents"}
    path_events = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                   "os.link", "os.symlink", "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.utime",
                   "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod"}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path) -> bool:
        if isinstance(path, int):
            return True
        try:
            return root is not None and (os.path.realpath(os.fsdecode(path)) + os.sep).startswith(root)
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
            if isinstance(flags, int) and mode is None and isinstance(path, (str, bytes)) and \
                    os.path.isdir(path) and not inside(path):
                raise PermissionError("sandbox: no directory descriptors outside the sandbox directory")
            if isinstance(path, (str, bytes)) and os.fsdecode(path).startswith("/proc/") and \
                    not os.fsdecode(path).startswith("/proc/self/"):
                raise PermissionError("sandbox: /proc is not readable")
        elif event in path_events:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    raise PermissionError(f"sandbox: {event} outside the sandbox directory")

    return hook


def _confine(workdir: str | None, limits: dict) -> None:
    """In a forked child, on top of the helper's layers: resource limits, user nobody, Landlock, an empty
    environment. Without ``workdir`` the child may write nowhere."""
    if not _HELPER_NETNS and _LIBC is not None:
        _LIBC.unshare(_CLONE_NEWNET)  # a namespace with no interfaces: no network at all
    os.chdir(workdir or "/")
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
    if _LIBC is not None:
        _landlock(workdir)
    os.environ.clear()
    home = workdir or "/nonexistent"
    os.environ.update({"HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    tempfile.tempdir = workdir


def _forget_project() -> None:
    """Leave nothing of the project reachable from a program: no libc handle, no ``src`` modules, no repository
    on the import path (the program could otherwise import this module and make raw system calls)."""
    global _LIBC
    _LIBC = None
    sys.path[:] = [p for p in sys.path if p and p not in _PROJECT_PATHS]
    for path in _PROJECT_PATHS:
        sys.path_importer_cache.pop(path, None)
    # Names listed by the helper and modules kept alive: walking sys.modules or freeing modules would touch (and so
    # copy) ~1,000 of the helper's pages per program.
    _UNIMPORTABLE.extend(sys.modules.pop(name) for name in _PROJECT_MODULES if name in sys.modules)


_PROJECT_MODULES: list[str] = []  # the project's modules in the helper (listed once, at start-up)
_PROJECT_PATHS: set[str] = set()  # sys.path entries that lead to the project (idem)
_UNIMPORTABLE: list = []  # the same modules, in a child, after _forget_project


def _child(code: str, workdir: str, w_out: int, w_err: int, w_status: int, limits: dict) -> None:
    """Runs in the forked child: isolate, limit, then execute ``code``. Never returns."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(w_out, 1)
    os.dup2(w_err, 2)
    os.dup2(w_status, _STATUS_FD)
    os.closerange(_STATUS_FD + 1, 65536)  # the helper's protocol pipes and anything else inherited
    _confine(workdir, limits)
    _forget_project()
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


def _scratch_dir() -> tuple[str, str]:
    """A fresh ``(base, workdir)``: the program's only writable place, owned by nobody when we are root."""
    base = tempfile.mkdtemp(prefix="pot_")
    workdir = os.path.join(base, "work")
    os.mkdir(workdir, 0o700)
    if os.geteuid() == 0:
        os.chown(workdir, NOBODY, NOBODY)
        os.chmod(base, 0o711)
    return base, workdir


def _collect(fds: tuple[int, int, int], deadline: float, output_bytes: int) -> tuple[bytearray, bytearray,
                                                                                        bytearray, str | None]:
    """Read the child's stdout, stderr and status pipes until they close, the deadline passes or output overflows."""
    r_out, r_err, r_st = fds
    out, err, reported = bytearray(), bytearray(), bytearray()
    open_fds = {r_out: out, r_err: err, r_st: reported}
    status = None
    while open_fds and status is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return out, err, reported, "timeout"
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
    return out, err, reported, status


def _wait_until(pid: int, deadline: float) -> int | None:
    """The child's exit code (negative: signal), or None when the deadline passes first."""
    while True:
        done, wstatus = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(wstatus)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.002)


def _final_status(status: str | None, code_or_sig: int, err: bytearray, output_bytes: int) -> str:
    """ok / error / timeout from how the child ended; the reason is appended to ``err``."""
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
    return status


def run_program(code: str, timeout: float, memory_mb: int, output_bytes: int, file_bytes: int) -> dict:
    """Helper side: fork one sandboxed child for ``code``, collect its output, enforce the wall timeout."""
    base, workdir = _scratch_dir()
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
    deadline = start + timeout
    out, err, reported, status = _collect((r_out, r_err, r_st), deadline, output_bytes)
    exited = None
    if status is None and not reported.isdigit():
        # Every pipe closed without a report (os._exit, a crash, or a program closing its descriptors and
        # sleeping): wait for the exit, but never past the deadline.
        exited = _wait_until(pid, deadline)
        if exited is None:
            status = "timeout"
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
    status = _final_status(status, code_or_sig, err, output_bytes)
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


# The caller's deadline (compare.SYMPY_TIMEOUT_S, which kills the helper and so the child in its process group)
# comes first; these limits are backstops.
SYMBOLIC_LIMITS = {"timeout": 30.0, "memory_mb": 2048, "file_bytes": 0}
_MAX_REPLY_BYTES = 1 << 20


def symbolic_handle(request: dict, proto_fds: tuple[int, int] | None = None) -> dict:
    """Symbolic-checker helper request (:func:`src.grading.symbolic.handle`), answered by a fresh confined child
    per comparison: a parser bug can neither write, reach the network, nor leave state for the next comparison."""
    from src.grading.symbolic import handle as compare

    return call_confined(compare, request, SYMBOLIC_LIMITS)


def call_confined(func, request: dict, limits: dict) -> dict:
    """``func(request)`` in a forked child confined like a PoT program but with no writable folder at all; the
    child's JSON reply, or ``{"error": ...}`` when it failed or died."""
    _reap(block=len(_pending_reap) > 16)
    r_reply, w_reply = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r_reply)
            _confined_call(func, request, w_reply, limits)
        finally:
            os._exit(111)
    os.close(w_reply)
    data = bytearray()
    try:
        while len(data) <= _MAX_REPLY_BYTES:
            chunk = os.read(r_reply, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r_reply)
    try:
        reply = json.loads(data)
    except ValueError:
        _kill_child(pid)
        return {"error": f"sandbox: the confined child gave no reply (exit {_wait(pid)})"}
    _pending_reap.append(pid)  # it replied and closed everything; reap it later instead of waiting for its exit
    return reply


def _kill_child(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _confined_call(func, request: dict, w_reply: int, limits: dict) -> None:
    """Runs in the forked child of :func:`call_confined`. Never returns."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.dup2(w_reply, _STATUS_FD)
    os.closerange(_STATUS_FD + 1, 65536)
    _confine(None, limits)
    sys.addaudithook(_audit_guard(None))
    try:
        reply = func(request)
    except BaseException as err:  # MemoryError, RecursionError, a refused event: this comparison failed
        reply = {"error": f"{type(err).__name__}: {err}"[:500]}
    try:
        os.write(_STATUS_FD, json.dumps(reply).encode())
        os.closerange(0, 65536)
    finally:
        os._exit(0)


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
        except HelperRefused as err:  # this machine cannot confine programs: stop, do not grade them all wrong
            raise SandboxUnavailable(str(err)) from None
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

        refusals: list[SandboxUnavailable] = []

        def drain(helper: LineWorker, queues: list[queue.Queue]) -> None:
            with helper.lock:
                for q in queues:
                    while not refusals:
                        try:
                            i = q.get_nowait()
                        except queue.Empty:
                            break
                        try:
                            results[i] = self._run_one(helper, programs[i])
                        except SandboxUnavailable as err:
                            refusals.append(err)

        jobs = [(h, [plain]) for h in self.helpers]
        if not with_scipy.empty():
            jobs.append((self.scipy_helper, [with_scipy, plain]))
        threads = [threading.Thread(target=drain, args=job, daemon=True) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if refusals:
            raise refusals[0]
        return [r if r is not None else ProgramResult("error", "", "sandbox: not run") for r in results]

    def close(self) -> None:
        self._closed = True
        self._finalizer()


def _close_all(helpers: list[LineWorker]) -> None:
    for helper in helpers:
        helper.close()
