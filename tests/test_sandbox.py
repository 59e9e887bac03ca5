"""The PoT sandbox pool: adversarial programs are contained, crashes are survived, print formats do not matter."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from src.grading import PotExecutor, grade_batch, grade_program_output
from src.grading.extract import normalize_program_output
from src.grading.sandbox import DEFAULT_TIMEOUT_S, NOBODY
from src.records import load_records

SECRET = "sk-test-0123456789-do-not-leak"
TEST_TIMEOUT_S = 3.0  # shorter than the 5 s default to keep the suite quick, long enough for a loaded machine


@pytest.fixture(scope="module")
def executor():
    # The secret is in the caller's environment before the pool starts, as an API key would be.
    os.environ["GSI_FAKE_API_KEY"] = SECRET
    ex = PotExecutor(workers=2, timeout=TEST_TIMEOUT_S)
    ex.run(["print(1)", "print(2)", "import scipy"])  # start every helper before any timing is taken
    yield ex
    ex.close()
    os.environ.pop("GSI_FAKE_API_KEY", None)


def test_default_wall_timeout_is_five_seconds():
    with PotExecutor() as ex:  # helpers start lazily: nothing runs yet
        assert DEFAULT_TIMEOUT_S == 5.0 and ex.timeout == 5.0


def test_programs_run_in_other_processes_and_results_keep_order(executor):
    results = executor.run([f"import os\nprint({i}, os.getpid())" for i in range(20)])
    assert [r.status for r in results] == ["ok"] * 20
    assert [int(r.stdout.split()[0]) for r in results] == list(range(20))
    assert all(int(r.stdout.split()[1]) != os.getpid() for r in results)
    assert len({r.stdout.split()[1] for r in results}) == 20  # one fresh child per program


def test_adversarial_programs_are_contained(executor, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("keep me")
    outside = tmp_path / "written_by_program.txt"
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    programs = {
        "infinite_loop": "while True:\n    pass",
        "allocate_20gb": "x = bytearray(20 * 2**30)\nprint(len(x))",
        "fork_bomb": "import os\nwhile True:\n    os.fork()",
        "fork_unaudited": "import _posixsubprocess, os\n"
                          "r, w = os.pipe()\n"
                          "_posixsubprocess.fork_exec(['/bin/true'], [b'/bin/true'], True, (), None, None, -1, -1,"
                          " -1, -1, -1, -1, r, w, True, False, 0, None, None, None, -1, None, False)\n"
                          "print('forked')",
        "delete_canary": f"import os\nos.remove({str(canary)!r})",
        "overwrite_canary": f"open({str(canary)!r}, 'w').write('gone')",
        "write_outside": f"open({str(outside)!r}, 'w').write('x')",
        "write_outside_low_level": f"import os\nfd = os.open({str(outside)!r}, os.O_WRONLY | os.O_CREAT)\n"
                                   "os.write(fd, b'x')",
        "env_secret": "import os\nprint(dict(os.environ))",
        "parent_environ": f"print(open('/proc/{os.getpid()}/environ', 'rb').read())",
        "socket": f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('up')",
        "ctypes_system": "import ctypes\nctypes.CDLL(None).system(b'touch /tmp/gsi_sandbox_escape')",
        "os_exit": "import os\nprint('partial')\nos._exit(3)",
        "huge_output": "import sys\nsys.stdout.write('x' * (100 * 2**20))",
        "read_stdin": "print(input())",
        "close_pipes_and_sleep": "import os, time\nfor fd in range(3, -1, -1):\n    os.close(fd)\ntime.sleep(600)",
        "kill_helper": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "fine_afterwards": "import numpy as np, sympy, scipy.special\nprint(int(np.sum(np.arange(5))) + 1)",
    }
    start = time.monotonic()
    results = dict(zip(programs, executor.run(list(programs.values()))))
    elapsed = time.monotonic() - start
    server_got_connection = True
    try:
        server.accept()
    except BlockingIOError:
        server_got_connection = False
    finally:
        server.close()

    assert elapsed < 60, elapsed  # 19 programs, 2 of them running into the timeout
    assert results["infinite_loop"].status == "timeout"
    assert results["allocate_20gb"].status == "error" and "MemoryError" in results["allocate_20gb"].stderr
    assert results["fork_bomb"].status == "error" and results["fork_bomb"].seconds < TEST_TIMEOUT_S
    assert results["fork_unaudited"].status == "error" and "forked" not in results["fork_unaudited"].stdout
    for name in ("delete_canary", "overwrite_canary", "write_outside", "write_outside_low_level"):
        assert results[name].status == "error", name
    assert canary.read_text() == "keep me"
    assert not outside.exists()
    assert not os.path.exists("/tmp/gsi_sandbox_escape")
    assert results["env_secret"].status == "ok" and SECRET not in results["env_secret"].stdout
    assert "GSI_FAKE_API_KEY" not in results["env_secret"].stdout
    assert SECRET not in results["parent_environ"].stdout and results["parent_environ"].status == "error"
    assert results["socket"].status == "error" and "up" not in results["socket"].stdout
    assert not server_got_connection
    assert results["ctypes_system"].status == "error"
    assert results["os_exit"].status == "error" and results["os_exit"].stdout == "partial\n"
    assert results["huge_output"].status == "error" and len(results["huge_output"].stdout) <= 2**20
    assert results["read_stdin"].status == "error" and "EOFError" in results["read_stdin"].stderr
    assert results["close_pipes_and_sleep"].status == "timeout" and \
        results["close_pipes_and_sleep"].seconds < TEST_TIMEOUT_S + 1
    assert results["kill_helper"].status == "error"
    assert results["fine_afterwards"].status == "ok" and results["fine_afterwards"].stdout.strip() == "11"


def test_a_dead_helper_is_replaced(executor):
    assert [r.status for r in executor.run(["print(1)", "print(2)"])] == ["ok", "ok"]
    before = executor.restarts
    victim = executor.helpers[0].proc
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    results = executor.run([f"print({i})" for i in range(6)])
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(6)]
    assert executor.restarts == before + 1


@pytest.mark.parametrize("printed,expected", [
    ("[np.float64(18.0)]", "[18.0]"),
    ("np.float64(18.000000000001)", "18.0"),
    ("0.30000000000000004", "0.3"),
    ("(np.int64(3), np.float64(2.5))", "(3, 2.5)"),
    ("Fraction(3, 4)", "3/4"),
    ("debug line\n42\n\n", "42"),
])
def test_program_output_normalisation(printed, expected):
    assert normalize_program_output(printed) == expected


def test_pot_grades_do_not_depend_on_print_formats(executor):
    cases = [  # (program, gold, dataset)
        ("import numpy as np\nprint([np.float64(18.0)])", "18", "gsm8k"),
        ("import numpy as np\nprint(np.float64(6) * 3)", "18", "gsm8k"),
        ("print(0.1 * 3 * 60)", "18", "gsm8k"),
        ("print(18.000000000001)", "18", "svamp"),
        ("import numpy as np\nprint(np.int64(1000))", "1,000", "gsm8k"),
        ("from fractions import Fraction\nprint(Fraction(3, 4))", "\\frac{3}{4}", "math"),
        ("import sympy\nprint(sympy.sqrt(8))", "2\\sqrt{2}", "math"),
        ("import numpy as np\nprint((np.float64(1.5), np.float64(2.0)))", "[1.5, 2]", "theoremqa"),
        ("print(True)", "True", "theoremqa"),
        ("import scipy.special\nprint(scipy.special.comb(10, 3))", "120", "gsm8k"),
    ]
    runs = executor.run([c[0] for c in cases])
    assert [r.status for r in runs] == ["ok"] * len(cases)
    graded = [grade_program_output(run, gold, ds) for run, (_, gold, ds) in zip(runs, cases)]
    assert [g.correct for g in graded] == [True] * len(cases), graded
    wrong = grade_batch(["print(12)", "print(18.01)"], ["120", "18"], "gsm8k", mode="pot", executor=executor)
    assert [g.correct for g in wrong] == [False, False]


def test_timeouts_and_errors_are_reported(executor):
    results = grade_batch(["while True: pass", "print(1/0)", "x = 1"], ["1", "1", "1"], "gsm8k", mode="pot",
                          executor=executor)
    assert [r.status for r in results] == ["timeout", "error", "no_answer"]
    assert not any(r.correct for r in results)


def test_synthetic_gold_programs_grade_correct(executor, synthetic_dir):
    records = load_records(synthetic_dir / "inference" / "pot" / "synthetic.json")
    results = grade_batch([r["answer_cot"] for r in records], [r["answer_value"] for r in records], "synthetic",
                          mode="pot", executor=executor)
    assert all(r.correct for r in results), [r for r in results if not r.correct]


def test_benchmark_prints_its_summary_line_last():
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run([sys.executable, "benchmarks/grading.py", "--n_pool", "40", "--n_process", "6",
                           "--n_cot", "200", "--math_file", "/nonexistent"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"pot_pool_per_s", "pot_per_process_per_s", "ratio", "cot_per_s"} <= set(summary)
    assert summary["pool_correct"] == "40/40" and summary["per_process_correct"] == "6/6"


def test_cli_grades_programs(tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    items = [{"item_id": "p0", "answer_cot": "print(6 * 7)", "answer_value": "42"},
             {"item_id": "p1", "answer_cot": "while True: pass", "answer_value": "1"},
             {"item_id": "p2", "answer_cot": "print(1 / 0)", "answer_value": "1"},
             {"item_id": "p3", "answer_cot": "import numpy as np\nprint(np.float64(2.5) * 2)", "answer_value": "5"}]
    src = tmp_path / "programs.json"
    src.write_text(json.dumps(items))
    proc = subprocess.run([sys.executable, "-m", "src.grading", str(src), "--dataset", "gsm8k", "--mode", "pot",
                           "--out", str(tmp_path / "graded.json")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (summary["n"], summary["correct"], summary["timeouts"], summary["errors"]) == (4, 2, 1, 1)
    graded = json.loads((tmp_path / "graded.json").read_text())
    assert [g["correct"] for g in graded] == [True, False, False, True]


# ---------------------------------------------------------------------------------------------------------------
# Without Landlock (older kernels): the mount namespace, network namespace and seccomp layers stand in for it.
# GSI_SANDBOX_TEST_DISABLE makes the helpers behave as on such a kernel.


def _shared_dir(request) -> Path:
    """A world-writable folder outside pytest's private tree: only the sandbox stands between user nobody and it."""
    import shutil
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="gsi_canary_"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o777)
    return shared


def _listening_socket() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    return server


ATTACKS = {  # name -> program; {shared}: a world-writable folder, {port}: a listening TCP port on the host
    "import_sandbox": "import src.grading.sandbox as sb\nprint(sb._LIBC.syscall(257, -100, b'{shared}/libc', 65, 438))",
    "sandbox_via_sys_modules": "import sys\nsb = sys.modules['src.grading.sandbox']\n"
                               "print(sb._LIBC.syscall(257, -100, b'{shared}/modules', 65, 438))",
    "libc_via_frames": "import sys\nf = sys._getframe()\nwhile f:\n    libc = f.f_globals.get('_LIBC')\n"
                       "    if libc is not None:\n        print(libc.syscall(257, -100, b'{shared}/frames', 65, 438))\n"
                       "    f = f.f_back\nraise LookupError('no libc handle reachable')",
    "os_open_dir_fd": "import os\nd = os.open('{shared}', os.O_RDONLY)\n"
                      "os.write(os.open('dirfd', os.O_WRONLY | os.O_CREAT, dir_fd=d), b'x')",
    "ctypes_syscall": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                      "assert libc.syscall(257, -100, b'{shared}/ctypes', 65, 438) >= 0",
    "subprocess": "import subprocess\nsubprocess.run(['touch', '{shared}/subprocess'], check=True)",
    "write_shared": "open('{shared}/open', 'w').write('x')",
    "write_tmp": "import os\nopen('/tmp/gsi_sandbox_escape_' + str(os.getpid()), 'w').write('x')",
    "tcp": "import socket\nsocket.socket().connect(('127.0.0.1', {port}))\nprint('up')",
    "udp": "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {port}))",
    "own_folder": "open('here.txt', 'w').write('fine')\nprint(open('here.txt').read())",  # allowed: the control
}


def _check_contained(results: dict, shared: Path, server: socket.socket) -> None:
    statuses = {name: r["status"] if isinstance(r, dict) else r.status for name, r in results.items()}
    assert statuses == {name: "ok" if name == "own_folder" else "error" for name in results}, results
    tcp = results["tcp"]
    assert "up" not in (tcp["stdout"] if isinstance(tcp, dict) else tcp.stdout)
    assert list(shared.iterdir()) == []  # no canary was ever created
    assert not list(Path("/tmp").glob("gsi_sandbox_escape_*"))
    with pytest.raises(BlockingIOError):
        server.accept()


@pytest.fixture
def no_landlock(monkeypatch):
    monkeypatch.setenv("GSI_SANDBOX_TEST_DISABLE", "landlock")


@pytest.mark.parametrize("disable", ["", "landlock"])
def test_attacks_through_the_pool_are_contained(request, monkeypatch, disable):
    monkeypatch.setenv("GSI_SANDBOX_TEST_DISABLE", disable)
    shared, server = _shared_dir(request), _listening_socket()
    request.addfinalizer(server.close)
    port = server.getsockname()[1]
    with PotExecutor(workers=1, timeout=TEST_TIMEOUT_S) as ex:
        runs = ex.run([code.format(shared=shared, port=port) for code in ATTACKS.values()])
    results = dict(zip(ATTACKS, runs))
    _check_contained(results, shared, server)
    assert results["own_folder"].stdout == "fine\n"
    assert "No module named 'src'" in results["import_sandbox"].stderr
    assert "KeyError" in results["sandbox_via_sys_modules"].stderr
    assert "no libc handle reachable" in results["libc_via_frames"].stderr


LAYERS_SCRIPT = r"""
import json, sys
import src.grading.sandbox as sb
sb._confine_helper()  # the layers warm_up relies on, without its refusal
print(json.dumps({"abi": sb._LANDLOCK_ABI, **sb._LAYERS}))
"""

KERNEL_ONLY_SCRIPT = r"""
import json, sys
import src.grading.sandbox as sb
sb.warm_up()
sb._audit_guard = lambda workdir: (lambda event, args: None)  # no Python-level guard: kernel limits only
shared, port = sys.argv[1], int(sys.argv[2])
programs = json.loads(sys.argv[3])
programs.update({
    "delete": f"import os\nos.remove({shared + '/keep.txt'!r})",
    "fork": "import os\nos.fork()\nprint('forked')",
    "environ": "print(open('/proc/1/environ', 'rb').read())",
})
out = {name: sb.run_program(code.format(shared=shared, port=port), 2.0, 1024, 1 << 20, 1 << 20)
       for name, code in programs.items()}
print(json.dumps({"abi": sb._LANDLOCK_ABI, "layers": sb._LAYERS, "results": out}))
"""


def _run_script(script: str, args: list[str], disable: str, timeout: float = 120) -> dict:
    import json
    import shutil
    import subprocess
    import sys
    import tempfile

    from tests.conftest import REPO

    home = tempfile.mkdtemp(prefix="gsi_helper_")  # as LineWorker gives a helper: HOME == cwd, removed after
    try:
        proc = subprocess.run([sys.executable, "-c", script, *args], cwd=home, capture_output=True, text=True,
                              timeout=timeout, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": home,
                                                    "OPENBLAS_NUM_THREADS": "1", "GSI_SANDBOX_TEST_DISABLE": disable})
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("disable", ["", "landlock"])
def test_kernel_limits_alone_contain_programs(request, disable):
    """Defense in depth: with the audit hook switched off, the kernel layers (Landlock, or without it a read-only
    mount namespace; the network namespace and seccomp; the process limit and user nobody) still stop raw
    writes outside the sandbox (even to a world-writable file), forks and sockets."""
    import json

    if os.geteuid() != 0:
        pytest.skip("the kernel layers checked here (user nobody, namespaces) need root")
    shared, server = _shared_dir(request), _listening_socket()
    request.addfinalizer(server.close)
    keep = shared / "keep.txt"
    keep.write_text("keep me")
    keep.chmod(0o666)  # file permissions alone would let user nobody write or delete it
    attacks = {k: v for k, v in ATTACKS.items() if k not in ("import_sandbox", "sandbox_via_sys_modules")}
    report = _run_script(KERNEL_ONLY_SCRIPT, [str(shared), str(server.getsockname()[1]), json.dumps(attacks)],
                         disable)
    if disable == "" and report["abi"] < 1:
        pytest.skip("this kernel has no Landlock")
    assert report["layers"]["landlock"] == (disable == "")
    assert report["layers"]["mountns"] and report["layers"]["netns"] and report["layers"]["seccomp"]
    results = report["results"]
    assert "forked" not in results["fork"]["stdout"]
    for name in ("delete", "fork", "environ"):
        assert results.pop(name)["status"] == "error", name
    assert keep.read_text() == "keep me"
    keep.unlink()
    _check_contained(results, shared, server)


def test_without_landlock_and_mount_namespace_pot_is_refused(monkeypatch, capfd):
    """Nothing but the audit hook would stop writes: refuse with one line naming the opt-out, unless it is set."""
    from src.grading.sandbox import SandboxUnavailable

    monkeypatch.setenv("GSI_SANDBOX_TEST_DISABLE", "landlock,mountns")
    monkeypatch.delenv("GSI_UNSAFE_UNCONFINED_POT", raising=False)
    with PotExecutor(workers=1) as ex, pytest.raises(SandboxUnavailable) as err:
        ex.run(["print(1)", "print(2)"])
    message = str(err.value)
    assert "\n" not in message and "file-system isolation" in message and "network" not in message
    assert "GSI_UNSAFE_UNCONFINED_POT=1" in message
    monkeypatch.setenv("GSI_UNSAFE_UNCONFINED_POT", "1")
    with PotExecutor(workers=1) as ex:
        assert [r.stdout for r in ex.run(["print(1)", "print(2)"])] == ["1\n", "2\n"]
    assert "warning: sandbox: PoT programs run without file-system isolation" in capfd.readouterr().err


def test_helper_layers_report():
    """What the fallback rests on is really there on this machine (and reported missing when simulated so)."""
    if os.geteuid() != 0:
        pytest.skip("namespaces need root")
    assert _run_script(LAYERS_SCRIPT, [], "landlock") == {"abi": 0, "landlock": False, "netns": True,
                                                           "mountns": True, "seccomp": True}
    assert _run_script(LAYERS_SCRIPT, [], "landlock,mountns,netns,seccomp") == {
        "abi": 0, "landlock": False, "netns": False, "mountns": False, "seccomp": False}


# ---------------------------------------------------------------------------------------------------------------
# The symbolic checker: one confined child per comparison

SYMBOLIC_SCRIPT = r"""
import json, os, socket, sys
import src.grading.sandbox as sb
sb.warm_up_symbolic()
if sys.argv[3] == "kernel_only":
    sb._audit_guard = lambda workdir: (lambda event, args: None)
shared, port = sys.argv[1], int(sys.argv[2])
from src.grading import symbolic

def succeeded(status):
    if status != 0:
        raise OSError(f"exit status {status}")

def parser_bug(request):
    # What a parser that evaluated answer text would let an answer do.
    out = {"uid": os.getuid()}
    attempts = {
        "eval": lambda: succeeded(eval("__import__('os').system('touch %s/eval')" % shared)),
        "write": lambda: open(shared + "/write", "w").write("x"),
        "raw_write": lambda: os.write(os.open(shared + "/raw", os.O_WRONLY | os.O_CREAT), b"x"),
        "tcp": lambda: socket.socket().connect(("127.0.0.1", port)),
        "fork": lambda: os.waitpid(os.fork() or os._exit(0), 0),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
            out[name] = "done"
        except BaseException as err:
            out[name] = type(err).__name__
    symbolic.equal = lambda *args: True  # patch the grader: must not outlive this comparison
    return out

out = {"attack": sb.call_confined(parser_bug, {}, sb.SYMBOLIC_LIMITS),
       "after": [sb.call_confined(symbolic.handle, {"pred": p, "gold": g}, sb.SYMBOLIC_LIMITS)
                 for p, g in (("\\frac{1}{2}", "0.5"), ("\\frac{1}{3}", "0.5"))],
       "crash": sb.call_confined(lambda request: os._exit(9), {}, sb.SYMBOLIC_LIMITS),
       "layers": sb._LAYERS}
print(json.dumps(out))
"""


@pytest.mark.parametrize("disable,guard", [("", "audit_hook"), ("landlock", "audit_hook"), ("landlock", "kernel_only")])
def test_symbolic_comparisons_run_confined_one_child_each(request, disable, guard):
    if os.geteuid() != 0:
        pytest.skip("user nobody and the namespaces need root")
    shared, server = _shared_dir(request), _listening_socket()
    request.addfinalizer(server.close)
    report = _run_script(SYMBOLIC_SCRIPT, [str(shared), str(server.getsockname()[1]), guard], disable)
    attack = report["attack"]
    assert attack["uid"] == 65534
    assert all(attack[name] != "done" for name in ("eval", "write", "raw_write", "tcp", "fork")), attack
    assert list(shared.iterdir()) == []
    with pytest.raises(BlockingIOError):
        server.accept()
    # the patched grader died with its child: the next comparisons are graded by the real one
    assert [r["equal"] for r in report["after"]] == [True, False]
    assert "no reply" in report["crash"]["error"]
    assert report["layers"]["landlock"] == (disable == "") and report["layers"]["mountns"]


def test_symbolic_checker_verdicts_through_the_confined_helper(no_landlock):
    from src.grading.compare import SympyChecker

    checker = SympyChecker()
    try:
        pairs = [("\\frac{1}{2}", "0.5"), ("2\\sqrt{2}", "\\sqrt{8}"), ("\\frac{1}{3}", "0.5"), ("x+1", "1+x")]
        assert [checker.equal(p, g) for p, g in pairs] == [True, True, False, True]
        assert checker.value("\\frac{\\pi}{4}") == pytest.approx(0.7853981633974483)
    finally:
        checker.close()


NON_ROOT_SCRIPT = r"""
import json, sys
from src.grading.sandbox import PotExecutor, SandboxUnavailable
programs = json.loads(sys.argv[1])
try:
    with PotExecutor(workers=1, timeout=3.0) as ex:
        out = {name: r.status for name, r in zip(programs, ex.run(list(programs.values())))}
except SandboxUnavailable as err:
    out = {"refused": str(err)}
print(json.dumps(out))
"""


@pytest.mark.parametrize("disable", ["", "landlock"])
def test_a_caller_without_root(request, disable):
    """Not root: no namespaces and no user switch. With Landlock (and seccomp) programs are still contained;
    without it PoT is refused in one line."""
    import json
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    if os.geteuid() != 0:
        pytest.skip("runs the caller as user nobody, which needs root to start")
    shared, server = _shared_dir(request), _listening_socket()
    request.addfinalizer(server.close)
    attacks = {name: code.format(shared=shared, port=server.getsockname()[1]) for name, code in ATTACKS.items()}
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "GSI_SANDBOX_TEST_DISABLE": disable}
    # An interpreter user nobody can start (and start again, for the helper): the project's may live under /root.
    probe = "import subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True)"
    usable = [exe for exe in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
              if shutil.which("setpriv") and os.path.exists(exe) and
              subprocess.run([*as_nobody, exe, "-c", probe], cwd="/", env=env, capture_output=True).returncode == 0]
    if not usable:
        pytest.skip("user nobody cannot start a Python interpreter here")
    proc = subprocess.run([*as_nobody, usable[0], "-c", NON_ROOT_SCRIPT, json.dumps(attacks)], cwd="/",
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if disable:
        assert list(report) == ["refused"] and "file-system isolation" in report["refused"]
        assert "network" not in report["refused"]  # seccomp needs no privileges
        return
    assert report == {name: "ok" if name == "own_folder" else "error" for name in ATTACKS}
    assert list(shared.iterdir()) == []
    with pytest.raises(BlockingIOError):
        server.accept()


def test_symbolic_checker_degrades_with_a_warning(monkeypatch, capfd):
    """Where writes cannot be denied the symbolic checker still grades (its parser never evaluates), and says so."""
    from src.grading.compare import SympyChecker

    monkeypatch.setenv("GSI_SANDBOX_TEST_DISABLE", "landlock,mountns")
    checker = SympyChecker()
    try:
        assert [checker.equal("\\frac{1}{2}", "0.5"), checker.equal("\\frac{1}{3}", "0.5")] == [True, False]
    finally:
        checker.close()
    assert "warning: sandbox: symbolic comparisons run without file-system isolation" in capfd.readouterr().err


def test_cli_refuses_in_one_line_and_writes_nothing(tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    src = tmp_path / "programs.json"
    src.write_text(json.dumps([{"item_id": "p0", "answer_cot": "print(6 * 7)", "answer_value": "42"}]))
    out = tmp_path / "graded.json"
    env = {k: v for k, v in os.environ.items() if k != "GSI_UNSAFE_UNCONFINED_POT"}
    proc = subprocess.run([sys.executable, "-m", "src.grading", str(src), "--dataset", "gsm8k", "--mode", "pot",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**env, "GSI_SANDBOX_TEST_DISABLE": "landlock,mountns"})
    assert proc.returncode == 1
    assert proc.stderr.count("\n") <= 1 and proc.stderr.startswith("sandbox: refusing to run PoT programs without")
    assert not out.exists()
