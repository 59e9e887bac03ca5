"""Multi-node training as configs/accelerate_multinode_zero2.yaml and scripts/cluster/train_multinode.sbatch
launch it, on one CPU machine: two "machines" on 127.0.0.1 (one process each, gloo, DeepSpeed ZeRO-2,
``--machine_rank`` 0 and 1, ``deepspeed_multinode_launcher: standard``) train with the same losses (1e-4) as
today's 2-process single-machine run (configs/accelerate_cpu_zero2_2proc.yaml).

    .venv/bin/python -m pytest -x -q tests/test_shards_multinode.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ["--batch_size", "4", "--gradient_accumulation_steps", "1", "--learning_rate", "3e-3",
              "--warmup_step", "1", "--max_steps", "4", "--adam_beta2", "0.98", "--seed", "7",
              "--show_progress", "false", "--logging_step_freq", "1", "--keep_num_ckpt", "0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def _train(config: Path, launch_flags: list[str], base: Path, train_file: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), *launch_flags,
            str(REPO / "train.py"), "--model_name_or_path", str(base), "--train_file", str(train_file),
            "--model_dir", str(out), *TRAIN_ARGS]


def _cpu_multinode_config(tmp_path: Path) -> Path:
    """The multi-node config with what a CPU machine needs instead of GPUs: fp32 (no bf16)."""
    config = yaml.safe_load((REPO / "configs" / "accelerate_multinode_zero2.yaml").read_text())
    assert config["deepspeed_config"]["deepspeed_multinode_launcher"] == "standard"
    assert config["deepspeed_config"]["zero_stage"] == 2 and config["num_processes"] == 32
    config["mixed_precision"] = "no"
    config["deepspeed_config"].pop("gradient_accumulation_steps")  # train.py's flag decides, as in the CPU configs
    path = tmp_path / "multinode_cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_machines_on_localhost_match_the_two_process_run(tmp_path, synthetic_dir, tiny_model_dir):
    from src.records import load_records, write_json

    train_file = write_json(tmp_path / "train.json",
                            load_records(synthetic_dir / "train" / "cot" / "synthetic.json")[:64])
    single = subprocess.run(
        _train(REPO / "configs" / "accelerate_cpu_zero2_2proc.yaml", ["--main_process_port", "0"], tiny_model_dir,
               train_file, tmp_path / "single"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-4000:]

    config, port = _cpu_multinode_config(tmp_path), str(_free_port())
    machines = [subprocess.Popen(
        _train(config, ["--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
                        "--main_process_ip", "127.0.0.1", "--main_process_port", port],
               tiny_model_dir, train_file, tmp_path / "multi"), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [m.communicate(timeout=900)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    one = json.loads((tmp_path / "single" / "train_log.json").read_text())
    two = json.loads((tmp_path / "multi" / "train_log.json").read_text())
    assert two["run_shape"]["num_processes"] == 2 and two["finished"]
    assert [e["tokens"] for e in one["log"]] == [e["tokens"] for e in two["log"]]  # the same examples per step
    diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(one["log"], two["log"], strict=True)]
    assert max(diffs) <= 1e-4, (one["log"], two["log"])
