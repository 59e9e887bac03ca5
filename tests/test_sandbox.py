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
from src.grading.sandbox import DEFAULT_TIMEOUT_S
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


KERNEL_ONLY_SCRIPT = r"""
import json, sys
import src.grading.sandbox as sb
sb.warm_up(("math",))
abi = sb._LIBC.syscall(sb._LANDLOCK_CREATE_RULESET, None, 0, 1)
sb._audit_guard = lambda workdir: (lambda event, args: None)  # no Python-level guard: kernel limits only
canary, port = sys.argv[1], int(sys.argv[2])
programs = {
    "write": f"open({canary!r}, 'w').write('gone')",
    "delete": f"import os\nos.remove({canary!r})",
    "fork": "import os\nos.fork()\nprint('forked')",
    "connect": f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\nprint('up')",
    "environ": "print(open('/proc/1/environ', 'rb').read())",
}
out = {name: sb.run_program(code, 2.0, 1024, 1 << 20, 1 << 20) for name, code in programs.items()}
print(json.dumps({"abi": abi, "results": out}))
"""


def test_kernel_limits_alone_contain_programs(request):
    """Defense in depth: with the audit hook switched off, Landlock, the process limit, user nobody and the
    network namespace still stop writes outside the sandbox (even to a world-writable file), forks and sockets."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    if os.geteuid() != 0:
        pytest.skip("the kernel layers checked here (user nobody, network namespace) need root")
    import shutil
    import tempfile

    # Outside pytest's private (0700) tmp tree, so that only Landlock stands between user nobody and the file.
    shared = Path(tempfile.mkdtemp(prefix="gsi_canary_"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o777)
    canary = shared / "canary.txt"
    canary.write_text("keep me")
    canary.chmod(0o666)  # file permissions alone would let user nobody write it
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    proc = subprocess.run([sys.executable, "-c", KERNEL_ONLY_SCRIPT, str(canary), str(server.getsockname()[1])],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["abi"] < 4:
        pytest.skip(f"Landlock ABI {report['abi']} (< 4) cannot restrict these")
    results = report["results"]
    assert {name: r["status"] for name, r in results.items()} == dict.fromkeys(results, "error")
    assert canary.read_text() == "keep me"
    assert "forked" not in results["fork"]["stdout"] and "up" not in results["connect"]["stdout"]
    with pytest.raises(BlockingIOError):
        server.accept()
    server.close()
