"""Fine-tune a causal LM on one iteration's data (the flags of the original script; --help explains each).

    python train.py --model_name_or_path output/tiny-model --train_file data/synthetic/train/cot/synthetic.json \\
        --model_dir output/tiny-sft --batch_size 16 --learning_rate 3e-3
    accelerate launch --config_file configs/accelerate_cpu_zero2_2proc.yaml train.py --model_name_or_path ...
    accelerate launch --config_file default_config_deepspeed_ga2.yaml train.py ...   # the paper: 8 GPUs, ZeRO-2

Bad input (a flag out of range, a missing model or data file, a record without answer_cot, an unusable
--model_dir) is one line on stderr and exit status 2, before the model loads (src/cli.py). The main process holds
``<model_dir>.lock`` for the run, so a second run on the same --model_dir is refused.
"""

from __future__ import annotations

import contextlib
import os
import sys

from src import training
from src.cli import (
    UsageError,
    check_input_file,
    check_model_source,
    check_output,
    check_range,
    output_lock,
    parse_args,
    run_cli,
)
from src.fidelity import TRAIN_DEFAULTS
from src.training import TrainConfig


def check_train_args(cfg: TrainConfig) -> None:
    """Every check that needs no model: numbers, the data file, the model, the output folder."""
    for flag in ("batch_size", "n_epochs", "gradient_accumulation_steps", "max_input_length", "logging_epoch_freq",
                 "saving_epoch_freq", "logging_step_freq"):
        check_range(flag, getattr(cfg, flag), 1)
    for flag in ("num_workers", "keep_num_ckpt", "saving_step_freq", "weight_decay", "clip_grad_norm",
                 "learning_rate"):
        check_range(flag, getattr(cfg, flag), 0)
    if cfg.lr_scheduler not in ("linear", "cosine"):
        raise UsageError(f"--lr_scheduler must be linear or cosine, got {cfg.lr_scheduler!r}")
    train_file = check_input_file("train_file", cfg.train_file)  # its records: train() checks them before loading
    check_model_source("model_name_or_path", cfg.model_name_or_path)
    if cfg.tokenizer_name_or_path and not os.path.isdir(cfg.tokenizer_name_or_path):
        check_model_source("tokenizer_name_or_path", cfg.tokenizer_name_or_path)
    check_output("model_dir", cfg.model_dir, "folder", inputs=[train_file])


def _is_main_process() -> bool:
    # accelerate starts one process per device, each running this script: only the first holds the lock
    return os.environ.get("RANK", "0") == "0"


def run(argv: list[str] | None) -> None:
    # an omitted flag takes the original train.py's default (src/fidelity.py); the scripts pass every value
    (cfg,) = parse_args([TrainConfig], argv, "train.py", defaults=TRAIN_DEFAULTS)
    check_train_args(cfg)
    with output_lock(cfg.model_dir) if _is_main_process() else contextlib.nullcontext():
        out = training.train(cfg)
    print(f"saved {out}")


def main(argv: list[str] | None = None) -> int:
    return run_cli("train.py", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
