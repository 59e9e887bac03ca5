"""scripts/prepare_data.py --source gsi: the original repository's data files, verified by git blob id.

The tests read the files from ../shared/data (--mirror), a copy of the original's data/ folder in which
inference/cot/math.json is cut to 1,000 items (so its blob id differs) and test/math.json and MathInstruct are
absent: the files that match are verified and written byte for byte, the others are refused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import src.prepare
from src.prepare import GSI_FILES, git_blob_id

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path("/work/shared/data")
MATCHING = ["gsm8k", "aqua", "mathqa", "svamp", "theoremqa"]
pytestmark = pytest.mark.skipif(not (MIRROR / "test" / "gsm8k.json").is_file(), reason="no copy of the data")


def prepare_main(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("prepare_data_script", REPO / "scripts" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_blob_id_is_gits():
    assert git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git hash-object /dev/null
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_mirror_files_are_verified_and_written_byte_for_byte(tmp_path):
    out = tmp_path / "data"
    argv = ["--source", "gsi", "--mirror", str(MIRROR), "--out_dir", str(out), "--datasets", *MATCHING,
            "--skip_mathinstruct"]
    assert prepare_main(argv) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.json"))
    expected = sorted(f.target for f in GSI_FILES if f.dataset in ("gsm8k", "aqua", "mathqa", "svamp", "theoremqa"))
    assert written == expected and len(written) == 9
    for f in GSI_FILES:
        if f.target in written:
            content = (out / f.target).read_bytes()
            assert content == (MIRROR / f.path).read_bytes() and git_blob_id(content) == f.blob


def test_a_file_that_is_not_the_originals_is_refused_and_nothing_written(tmp_path, capsys):
    out = tmp_path / "data"
    # math: the mirror's inference/cot/math.json is cut (another blob id) and test/math.json is missing
    rc = prepare_main(["--mirror", str(MIRROR), "--out_dir", str(out), "--datasets", "gsm8k", "math",
                       "--skip_mathinstruct"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "inference/cot/math.json: git blob id 8e528e4f" in err and "22e03c86" in err
    assert "test/math.json: not found" in err
    assert not list(tmp_path.rglob("*.json"))


def test_a_tampered_copy_is_refused(tmp_path, capsys):
    mirror = tmp_path / "mirror"
    shutil.copytree(MIRROR / "test", mirror / "test")
    path = mirror / "test" / "svamp.json"
    path.write_bytes(path.read_bytes().replace(b'"51"', b'"52"', 1))
    out = tmp_path / "data"
    argv = ["--mirror", str(mirror), "--out_dir", str(out), "--datasets", "svamp", "--skip_mathinstruct"]
    assert prepare_main(argv) == 2
    assert "test/svamp.json: git blob id" in capsys.readouterr().err and not out.exists()


def test_without_network_and_without_mirror_one_line_and_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(src.prepare, "GSI_HOST", "gsi-data.invalid")  # unreachable whatever the machine
    out = tmp_path / "data"
    assert prepare_main(["--source", "gsi", "--out_dir", str(out), "--datasets", "svamp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs network access" in err[0] and "--mirror" in err[0]
    assert not out.exists()


def test_llama3_stage_commands_run_on_the_prepared_data(tmp_path, tiny_model_dir):
    """prepare_data --source gsi output (first items of each file), the llama3 script's data, eval, sample and
    generate commands (tiny model substituted), with the reference grader the llama3 profile uses."""
    full = tmp_path / "full"
    names = ["gsm8k", "aqua", "mathqa", "svamp", "theoremqa"]
    assert prepare_main(["--mirror", str(MIRROR), "--out_dir", str(full), "--datasets", *names,
                         "--skip_mathinstruct"]) == 0
    data = tmp_path / "data"
    for path in full.rglob("*.json"):
        target = data / path.relative_to(full)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(json.loads(path.read_text())[:6]))
    env = {"MODEL_PATH": str(tiny_model_dir), "DATA_DIR": str(data), "OUTPUT_DIR": str(tmp_path / "out"),
           "NUM_ITERS": "1", "TRAIN_DATASETS": "gsm8k aqua", "EVAL_DATASETS": " ".join(names),
           "ORIGINAL_DATA": str(data / "inference" / "cot" / "aqua_rat.json"),  # as the original scripts pass it
           "DEVICE_NUM": "1", "MAX_MODEL_LEN": "1024", "MAX_LENGTH": "16", "SAMPLE_NUM": "2", "MAX_RESAMPLE_NUM": "1",
           "MIN_CORRECT_NUM": "2", "INCLUDE_ORIGINAL": "true", "CHECK_RESULT": "true", "DRY_RUN": "1"}
    proc = subprocess.run(["bash", "scripts/llama3/cot_train_state_reset.sh"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    stages = {ln[len("[dry-run] "):].split(":", 1)[0]: shlex.split(ln.split(":", 1)[1])
              for ln in proc.stdout.splitlines() if ln.startswith("[dry-run] ")}
    exp = tmp_path / "out" / "llama3-8b_cot" / "state_reset_sample_2_correct_2_max_1_orig_true_preiter_false"
    (exp / "iter_data").mkdir(parents=True, exist_ok=True)  # src.stages creates output folders before a stage
    shutil.copytree(tiny_model_dir, exp / "iter_0" / "model")  # stands in for the train stage's output
    for stage in ("data", "eval", "sample", "generate"):
        assert "--grader" not in stages[stage] or stages[stage][stages[stage].index("--grader") + 1] == "reference"
        run = subprocess.run(stages[stage], cwd=REPO, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        assert run.returncode == 0, f"{stage}: {run.stderr[-3000:]}"
    metrics = json.loads((exp / "iter_0" / "eval_data" / "metrics.json").read_text())
    assert metrics["grader"] == "reference" and sorted(metrics["datasets"]) == sorted(names)
    next_data = json.loads((exp / "iter_data" / "train_iter_1.json").read_text())
    assert next_data[-6:] == json.loads(Path(env["ORIGINAL_DATA"]).read_text())  # appended after the samples
