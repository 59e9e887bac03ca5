"""Bad input to every command line: one line ``<prog>: error: ...`` on stderr, exit status 2, no traceback, nothing
written or clobbered, and no engine or model started (the builders are patched to fail the test if called).

Also the file guarantees behind every CLI's outputs: modes follow the umask, no temporary file survives a rerun,
data and counts stay consistent after a kill, and a second run on the same output is refused by a lock.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from src import records as records_module
from src.cli import output_lock
from src.records import RecordError, read_summary, write_json, write_json_with_summary, write_jsonl

REPO = Path(__file__).resolve().parents[1]
POOL = [{"item_id": f"p{i}", "question": f"What is {i} + 1?", "answer_cot": f"{i} + 1 = {i + 1}\nThe answer is "
         f"{i + 1}", "answer_value": str(i + 1)} for i in range(3)]
NOT_UTF8 = b'[{"item_id": "p0", "question": "caf\xe9", "answer_cot": "x", "answer_value": "1"}]'


# ---- helpers -------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_engine_and_no_model(monkeypatch):
    """Starting vLLM, loading a model for training or running the demo fails the test."""
    import transformers

    import src.demo
    import src.engine

    def forbidden(*args, **kwargs):
        raise AssertionError("an engine/model was started although the input was bad")

    monkeypatch.setattr(src.engine, "build_llm", forbidden)
    for auto in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):  # what train() loads first
        monkeypatch.setattr(auto, "from_pretrained", forbidden)
    monkeypatch.setattr(src.demo, "Runner", forbidden)


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content (folders as 'dir'), to prove nothing changed."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_refused(rc: int, capsys, prog: str, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def work(tmp_path) -> Path:
    """A folder with a model folder (config.json only: nothing can load it), a pool and a test file."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "pool.json").write_text(json.dumps(POOL))
    (tmp_path / "test.json").write_text(json.dumps([{k: r[k] for k in ("item_id", "question", "answer_value")}
                                                    for r in POOL]))
    (tmp_path / "a_file").write_text("not a folder")
    return tmp_path


def _write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# ---- inference*.py (src/sampling/cli.py) ---------------------------------------------------------------------
def _sampling_argv(work: Path, pool: Path | None = None, out: Path | None = None, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(work / "model"), "--inference_data_file", str(pool or work / "pool.json"),
            "--dataset_name", "gsm8k", "--results_path", str(out or work / "out"), *extra]


SAMPLING_CASES = {
    # case: (strategy, pool content or None for the good pool, extra flags, results path, words in the message)
    "missing_file": ("vanilla", "MISSING", [], None, ["nowhere.json", "file not found"]),
    "truncated_file": ("state_reset", json.dumps(POOL)[:40], [], None, ["bad.json", "invalid JSON"]),
    "numeric_answer_value": ("vanilla", [{**POOL[0], "answer_value": 2}], [], None,
                             ["bad.json", "record 0", "answer_value", "should be str"]),
    "not_utf8": ("vanilla", NOT_UTF8, [], None, ["bad.json", "not UTF-8"]),
    "duplicate_item_ids": ("answer_driven", [POOL[0], POOL[1], POOL[0]], [], None,
                           ["bad.json", "records 0 and 2", "item_id=p0"]),
    "unknown_strategy": ("vanilla", None, ["--strategy", "majority_vote"], None, ["majority_vote"]),
    "negative_sample_num": ("vanilla", None, ["--sample_num", "-1", "--min_correct_num", "0"], None,
                            ["sample_num"]),
    "min_correct_above_sample_num": ("state_reset", None, ["--sample_num", "2", "--min_correct_num", "4"], None,
                                     ["--min_correct_num 4", "--sample_num 2"]),
    "teacher_without_model": ("teacher_help", None, [], None, ["--teacher_model"]),
    "teacher_url_not_http": ("teacher_help", None, ["--teacher_model", "t", "--teacher_base_url", "localhost:8000"],
                             None, ["--teacher_base_url"]),
    "unknown_dataset": ("vanilla", None, ["--dataset_name", "gsm9k"], None, ["gsm9k", "known datasets"]),
    "results_path_under_a_file": ("vanilla", None, [], "a_file/out", ["results_path", "a_file", "is a file"]),
    "results_path_is_a_file": ("vanilla", None, [], "a_file", ["results_path", "is a file"]),
    "results_path_is_the_pool": ("vanilla", None, [], "pool.json", ["results_path"]),
    "missing_model": ("rationale_driven", None, ["--model_name_or_path", "nowhere/model"], None,
                      ["nowhere/model", "model"]),
}


@pytest.mark.parametrize("case", sorted(SAMPLING_CASES))
def test_inference_refuses_bad_input_before_the_engine(case, work, capsys):
    from src.sampling.cli import SCRIPTS, main

    strategy, pool, extra, out, needles = SAMPLING_CASES[case]
    pool_file = None
    if pool == "MISSING":
        pool_file = work / "nowhere.json"
    elif pool is not None:
        pool_file = _write(work / "bad.json", pool)
    before = tree(work)
    argv = _sampling_argv(work, pool_file, work / out if out else None)
    rc = main(strategy, argv + extra)  # later flags win: extra overrides the defaults above
    assert_refused(rc, capsys, SCRIPTS[strategy], *needles)
    assert tree(work) == before


def test_inference_script_exits_2_in_a_subprocess(tmp_path):
    """The script itself (not only main) returns the status; a missing model path is never loaded."""
    proc = subprocess.run([sys.executable, "inference.py", "--model_name_or_path", "nowhere",
                           "--inference_data_file", str(tmp_path / "nowhere.json"), "--dataset_name", "gsm8k",
                           "--results_path", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("inference.py: error: "), proc.stderr
    assert "nowhere.json" in lines[0] and list(tmp_path.iterdir()) == []


# ---- eval.py -------------------------------------------------------------------------------------------------
EVAL_CASES = {
    "negative_max_length": (["--max_length", "-5"], None, ["--max_length", "-5"]),
    "results_path_under_a_file": ([], "a_file/eval", ["results_path", "is a file"]),
    "results_path_is_a_file": ([], "a_file", ["results_path", "is a file"]),
    "not_utf8": (["--eval_data_file", "BAD"], None, ["bad.json", "not UTF-8"]),
    "duplicate_item_ids": (["--eval_data_file", "DUP"], None, ["dup.json", "records 0 and 1", "item_id=p0"]),
    "missing_model": (["--model_name_or_path", "nowhere"], None, ["nowhere", "config.json"]),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_eval_refuses_bad_input_before_the_engine(case, work, capsys):
    from eval import main

    extra, out, needles = EVAL_CASES[case]
    _write(work / "bad.json", NOT_UTF8)
    test = json.loads((work / "test.json").read_text())
    _write(work / "dup.json", [test[0], test[0]])
    extra = [{"BAD": str(work / "bad.json"), "DUP": str(work / "dup.json")}.get(a, a) for a in extra]
    before = tree(work)
    rc = main(["--model_name_or_path", str(work / "model"), "--results_path", str(work / (out or "eval_out")),
               "--dataset_name", "gsm8k", "--eval_data_file", str(work / "test.json"), *extra])
    assert_refused(rc, capsys, "eval.py", *needles)
    assert tree(work) == before


# ---- train.py ------------------------------------------------------------------------------------------------
TRAIN_CASES = {
    "missing_model": (["--model_name_or_path", "output/no-such-model"], ["output/no-such-model", "model"]),
    "not_utf8": (["--train_file", "BAD"], ["bad.json", "not UTF-8"]),
    "missing_train_file": (["--train_file", "NOWHERE"], ["nowhere.json", "file not found"]),
    "negative_batch_size": (["--batch_size", "-1"], ["--batch_size", "-1"]),
    "model_dir_is_a_file": (["--model_dir", "FILE"], ["model_dir", "is a file"]),
    "unknown_flag": (["--learning_rat", "1"], ["--learning_rat"]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_refuses_bad_input_before_the_model_loads(case, work, capsys):
    from train import main

    extra, needles = TRAIN_CASES[case]
    _write(work / "bad.json", NOT_UTF8)
    names = {"BAD": str(work / "bad.json"), "NOWHERE": str(work / "nowhere.json"), "FILE": str(work / "a_file")}
    before = tree(work)
    rc = main(["--model_name_or_path", str(work / "model"), "--train_file", str(work / "pool.json"),
               "--model_dir", str(work / "run"), *[names.get(a, a) for a in extra]])
    assert_refused(rc, capsys, "train.py", *needles)
    assert tree(work) == before


# ---- generate_train_data.py ----------------------------------------------------------------------------------
def _results(tmp_path: Path, items: list[dict] | None = None) -> Path:
    folder = tmp_path / "inference_data"
    folder.mkdir(exist_ok=True)
    rows = items or [{**r, "pred": [r["answer_cot"]], "pred_value": [r["answer_value"]],
                      "correct_pred": [r["answer_cot"]]} for r in POOL]
    _write(folder / "results.json", rows)
    return folder


GENERATE_CASES = {
    "output_is_the_sampling_file": ("inference_data/results.json", None, ["next_iter_data_path", "input file"]),
    "output_is_the_original_data": ("pool.json", None, ["next_iter_data_path", "input file"]),
    "output_is_a_folder": ("inference_data", None, ["next_iter_data_path", "is a folder"]),
    "output_under_a_file": ("a_file/next.json", None, ["next_iter_data_path", "a_file", "is a file"]),
    "not_utf8": ("next.json", NOT_UTF8, ["results.json", "not UTF-8"]),
    "duplicate_item_ids": ("next.json", "DUP", ["results.json", "records 0 and 1"]),
}


@pytest.mark.parametrize("case", sorted(GENERATE_CASES))
def test_generate_train_data_refuses_and_never_clobbers_an_input(case, work, capsys):
    from generate_train_data import main

    out, content, needles = GENERATE_CASES[case]
    folder = _results(work)
    if content == "DUP":
        rows = json.loads((folder / "results.json").read_text())
        _write(folder / "results.json", [rows[0], rows[0]])
    elif content is not None:
        _write(folder / "results.json", content)
    before = tree(work)
    rc = main(["--cur_sampled_data_path", str(folder), "--next_iter_data_path", str(work / out),
               "--original_data_path", str(work / "pool.json"), "--include_original_data", "true"])
    assert_refused(rc, capsys, "generate_train_data.py", *needles)
    assert tree(work) == before


# ---- python -m src.grading -----------------------------------------------------------------------------------
GRADING_CASES = {
    "out_is_the_input": ("pool.json", None, ["--out", "input file"]),
    "out_is_a_folder": ("model", None, ["--out", "is a folder"]),
    "out_under_a_file": ("a_file/graded.json", None, ["--out", "a_file", "is a file"]),
    "not_utf8": ("graded.json", NOT_UTF8, ["pool.json", "not UTF-8"]),
    "missing_input": ("graded.json", "MISSING", ["pool.json", "file not found"]),
    "bad_choice": ("graded.json", ["--mode", "sql"], ["--mode", "sql"]),
}


@pytest.mark.parametrize("case", sorted(GRADING_CASES))
def test_grading_cli_refuses_and_never_clobbers_its_input(case, work, capsys):
    from src.grading.__main__ import main

    out, content, needles = GRADING_CASES[case]
    extra = content if isinstance(content, list) else []
    if content == "MISSING":
        (work / "pool.json").unlink()
    elif isinstance(content, bytes):
        _write(work / "pool.json", content)
    before = tree(work)
    rc = main([str(work / "pool.json"), "--dataset", "gsm8k", "--out", str(work / out), *extra])
    assert_refused(rc, capsys, "python -m src.grading", *needles)
    assert tree(work) == before


def _run_as_nobody(main, argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` in a forked child running as user nobody (root may write anywhere; nobody may not)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest, skip the parent's exit handlers
        try:
            os.close(r)
            os.dup2(w, 2)
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - pytest replaced sys.stderr
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            rc = main(argv)
            sys.stderr.flush()
            os._exit(rc)
        except BaseException:  # noqa: BLE001 - report anything as a distinct status
            os._exit(99)
    os.close(w)
    with os.fdopen(r, encoding="utf-8", errors="replace") as fh:
        err = fh.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), err


@pytest.fixture
def shared_dir():
    """A folder user nobody can read (pytest's tmp tree is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="cli_errors_"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to user nobody needs root")
def test_read_only_output_folder_is_one_line(shared_dir):
    from src.grading.__main__ import main as grading_main
    from src.sampling.cli import main as sampling_main

    _write(shared_dir / "pool.json", POOL).chmod(0o644)
    (shared_dir / "model").mkdir(mode=0o755)
    _write(shared_dir / "model" / "config.json", "{}").chmod(0o644)
    locked = shared_dir / "read_only"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    rc, err = _run_as_nobody(grading_main, [str(shared_dir / "pool.json"), "--dataset", "gsm8k",
                                            "--out", str(locked / "graded.json")])
    assert rc == 2 and err.count("\n") == 1 and "not writable" in err and "Traceback" not in err, err
    rc, err = _run_as_nobody(lambda argv: sampling_main("vanilla", argv),
                             ["--model_name_or_path", str(shared_dir / "model"), "--inference_data_file",
                              str(shared_dir / "pool.json"), "--dataset_name", "gsm8k",
                              "--results_path", str(locked / "out")])
    assert rc == 2 and err.startswith("inference.py: error: --results_path") and "not writable" in err, err
    assert list(locked.iterdir()) == []


# ---- analyze.py, demo.py, scripts/prepare_data.py ------------------------------------------------------------
def test_analyze_on_a_missing_folder_exits_2_and_writes_nothing(work, capsys):
    import analyze

    before = tree(work)
    rc = analyze.main([str(work / "nowhere"), "--out", str(work / "report")])
    assert_refused(rc, capsys, "analyze.py", "nowhere", "not found")
    assert tree(work) == before


DEMO_CASES = {
    "negative_arm_steps": (["--arm_steps", "-3"], ["--arm_steps", "-3"]),
    "out_dir_is_a_file": (["--out_dir", "FILE"], ["--out_dir", "is a file"]),
    "min_correct_above_sample_num": (["--sample_num", "2", "--min_correct_num", "3"], ["--min_correct_num"]),
    "unknown_arm": (["--arms", "control", "telepathy"], ["telepathy"]),
}


@pytest.mark.parametrize("case", sorted(DEMO_CASES))
def test_demo_refuses_bad_flags_before_anything_runs(case, work, capsys):
    import demo

    extra, needles = DEMO_CASES[case]
    before = tree(work)
    argv = ["--out_dir", str(work / "demo"), *[str(work / "a_file") if a == "FILE" else a for a in extra]]
    assert_refused(demo.main(argv), capsys, "demo.py", *needles)
    assert tree(work) == before


def _prepare_main():
    spec = importlib.util.spec_from_file_location("prepare_data_script", REPO / "scripts" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("extra,needles", [(["--datasets", "gsm9k"], ["gsm9k"]),
                                           (["--gsm8k_pool", "-1"], ["--gsm8k_pool"]),
                                           (["--out_dir", "FILE"], ["--out_dir", "is a file"])])
def test_prepare_data_refuses_bad_flags_before_any_download(extra, needles, work, capsys):
    before = tree(work)
    rc = _prepare_main()(["--out_dir", str(work / "data"),
                          *[str(work / "a_file") if a == "FILE" else a for a in extra]])
    assert_refused(rc, capsys, "prepare_data.py", *needles)
    assert tree(work) == before


# ---- output files: modes, temporaries, data + counts, locks --------------------------------------------------
def test_output_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_json(tmp_path / "a.json", [1])
        write_jsonl(tmp_path / "b.jsonl", [{"a": 1}])
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.jsonl").stat().st_mode & 0o777 == 0o640
    write_json(tmp_path / "c.json", [1])
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o666 & ~old


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_the_temporaries_of_dead_or_ancient_writers_are_removed(tmp_path):
    host = records_module._HOST
    dead = _write(tmp_path / f".res.json.{host}.{_dead_pid()}.0a1b.tmp", "partial")
    live = _write(tmp_path / f".res.json.{host}.{os.getpid()}.0a1c.tmp", "being written")
    other_host = _write(tmp_path / f".res.json.{host}x.{_dead_pid()}.0a1d.tmp", "another machine's")
    old_style = _write(tmp_path / ".res.json.k2j4h5.tmp", "mkstemp, before this rule")
    ancient = _write(tmp_path / ".res.json.oldformat.tmp", "two days old")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(ancient, (two_days_ago, two_days_ago))
    other_file = _write(tmp_path / f".other.json.{host}.{_dead_pid()}.0a1e.tmp", "not ours to judge")
    write_json(tmp_path / "res.json", [1])
    assert not dead.exists() and not ancient.exists()
    assert live.exists() and other_host.exists() and old_style.exists() and other_file.exists()


KILLED_WRITER = r"""
import os, sys, time
from src.records import write_jsonl
def rows():
    yield {"a": 1}
    open(sys.argv[2], "w").close()  # tell the test the temporary exists, then wait to be killed
    time.sleep(60)
    yield {"a": 2}
write_jsonl(sys.argv[1], rows())
"""


def test_a_killed_writer_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    out = tmp_path / "big.jsonl"
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out), str(ready)], cwd=REPO)
    try:
        for _ in range(600):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), "the writer did not start"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftovers = list(tmp_path.glob(".big.jsonl.*.tmp"))
    assert len(leftovers) == 1 and not out.exists()
    write_jsonl(out, [{"a": 3}])  # the rerun
    assert list(tmp_path.glob(".*.tmp")) == [] and out.read_text() == '{"a": 3}\n'


def test_summary_written_last_detects_a_half_finished_rewrite(tmp_path):
    data, counts = tmp_path / "d.json", tmp_path / "d.counts.json"
    write_json_with_summary(data, [1, 2], counts, {"kept": 2})
    assert read_summary(counts, data)["kept"] == 2
    write_json(data, [1, 2, 3])  # a second run killed after its data file, before its counts
    with pytest.raises(RecordError, match="does not describe"):
        read_summary(counts, data)


KILL_BEFORE_COUNTS = r"""
import os, sys
import src.records as records
real = records.write_json
def write_json(path, obj, *args, **kwargs):
    if str(path).endswith(".counts.json"):
        os.kill(os.getpid(), 9)  # killed between the data file and its counts
    return real(path, obj, *args, **kwargs)
records.write_json = write_json
from generate_train_data import main
sys.exit(main(sys.argv[1:]))
"""


def test_generate_train_data_killed_between_data_and_counts_is_detected(tmp_path):
    from generate_train_data import main
    from src.filtering import read_counts

    folder = _results(tmp_path)
    out = tmp_path / "iter_data" / "next.json"
    assert main(["--cur_sampled_data_path", str(folder), "--next_iter_data_path", str(out)]) == 0
    first = read_counts(out)
    assert first["records_written"] == 3
    rows = json.loads((folder / "results.json").read_text())[:2]
    _write(folder / "results.json", rows)
    proc = subprocess.run([sys.executable, "-c", KILL_BEFORE_COUNTS, "--cur_sampled_data_path", str(folder),
                           "--next_iter_data_path", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(json.loads(out.read_text())) == 2  # the new data, beside the old counts
    with pytest.raises(RecordError, match="does not describe"):
        read_counts(out)
    assert main(["--cur_sampled_data_path", str(folder), "--next_iter_data_path", str(out)]) == 0  # the rerun
    assert read_counts(out)["records_written"] == 2


HOLD_LOCK = r"""
import sys, time
from src.cli import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_the_same_output_is_refused(tmp_path, capsys):
    from generate_train_data import main

    folder = _results(tmp_path)
    out = tmp_path / "next.json"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(["--cur_sampled_data_path", str(folder), "--next_iter_data_path", str(out)])
        assert_refused(rc, capsys, "generate_train_data.py", str(out), f"pid {holder.pid}", "another run")
        assert not out.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder's lock file is left behind, but its flock died with it: the next run proceeds
    assert main(["--cur_sampled_data_path", str(folder), "--next_iter_data_path", str(out)]) == 0
    assert out.exists() and not Path(f"{out}.lock").exists()


def test_lock_records_the_pid_and_is_removed_after_the_run(tmp_path):
    target = tmp_path / "x"
    with output_lock(target) as lock:
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()
    with output_lock(target):
        pass



# ---- --help --------------------------------------------------------------------------------------------------
CLIS = sorted(p.name for p in REPO.glob("*.py")) + ["scripts/prepare_data.py"]


@pytest.mark.parametrize("cli", CLIS)
def test_every_cli_prints_its_help(cli):
    """argparse formats help strings (a bare % crashes --help): every command line explains itself, exit 0."""
    proc = subprocess.run([sys.executable, str(REPO / cli), "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout and "Traceback" not in proc.stderr


def test_greedy_sampling_of_several_samples_is_refused_before_the_engine(tmp_path, capsys):
    """vLLM refuses n > 1 at temperature 0 only after the engine started: the CLI says so first."""
    from src.sampling.cli import main

    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(POOL))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    rc = main("vanilla", ["--model_name_or_path", str(model), "--inference_data_file", str(pool),
                          "--dataset_name", "gsm8k", "--results_path", str(tmp_path / "out"), "--sample_num", "2",
                          "--min_correct_num", "1", "--temperature", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--temperature > 0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ---- the modules' own command lines (python -m src.X) ----------------------------------------------------------
MODULE_CASES = {
    "stages: unknown data set": ("src.stages", ["files", "test", "--data_dir", "data", "gsm9k"], ["gsm9k"]),
    "stages: unknown command": ("src.stages", ["bogus"], ["bogus"]),
    "synthetic: bad number": ("src.synthetic", ["--n_pool", "many"], ["--n_pool"]),
    "tiny: missing corpus": ("src.tiny", ["--out_dir", "{work}/tiny", "--corpus", "{work}/none.json"],
                             ["--corpus", "none.json"]),
    "profiles: a recipe word without =": ("src.profiles", ["shell", "PROFILE"], ["NAME=VALUE", "PROFILE"]),
    "profiles: unknown profile": ("src.profiles", ["shell", "PROFILE=laptop"], ["laptop", "llama3 or tiny"]),
    "teacher: closed port": ("src.sampling.teacher", ["--teacher_model", "t", "--teacher_base_url",
                                                      "http://127.0.0.1:{free_port}/v1", "--teacher_preflight_timeout",
                                                      "5"], ["does not answer", "TEACHER_PORT"]),
}


@pytest.mark.parametrize("case", sorted(MODULE_CASES))
def test_module_clis_refuse_in_one_line(case, work, capsys):
    import importlib

    module, argv, needles = MODULE_CASES[case]
    with socket.socket() as sock:  # bound and released: nothing listens there
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    argv = [a.replace("{work}", str(work)).replace("{free_port}", str(free_port)) for a in argv]
    assert_refused(importlib.import_module(module).main(argv), capsys, f"python -m {module}", *needles)
    assert not (work / "tiny").exists()
