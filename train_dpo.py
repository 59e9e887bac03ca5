"""DPO on preference pairs (Self-Refine Instruction-Tuning, phase 2): a thin CLI over ``trl.DPOTrainer``.

    python train_dpo.py --model_name_or_path output/srit/phase1/model --train_file pairs.json \\
        --model_dir output/srit/dpo --beta 0.1 --learning_rate 5e-7 --per_device_train_batch_size 8
    accelerate launch --config_file configs/accelerate_cpu_zero2_2proc.yaml train_dpo.py ...   # CPU, 2 processes
    accelerate launch --config_file default_config_deepspeed_ga2.yaml train_dpo.py ...         # 8 GPUs, ZeRO-2

Every ``trl.DPOConfig`` flag is accepted (``--help`` lists them); the project's defaults are in
``src.dpo.dpo_defaults`` (fp32 on CPU, reference log-probs precomputed, no checkpoints). Bad input exits with
status 2 and one line before any model loads. The logic is in src/dpo.py.
"""

from __future__ import annotations

import contextlib
import os
import sys

from src.cli import check_input_file, check_model_source, check_output, output_lock, parse_args, run_cli

PROG = "train_dpo.py"


def check_dpo_args(run) -> None:
    """Paths (the pairs' content and the tokenizers are checked by src.dpo.prepare, still before any model loads)."""
    pairs = check_input_file("train_file", run.train_file)
    check_model_source("model_name_or_path", run.model_name_or_path)
    if run.ref_model_name_or_path:
        check_model_source("ref_model_name_or_path", run.ref_model_name_or_path)
    check_output("model_dir", run.model_dir, "folder", inputs=[pairs])


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        from trl import DPOConfig

        from src.dpo import DPORunConfig, dpo_defaults, run_dpo

        run, args = parse_args([DPORunConfig, DPOConfig], argv, PROG, __doc__.split("\n\n")[0], dpo_defaults())
        check_dpo_args(run)
        main_process = os.environ.get("RANK", "0") == "0"  # accelerate starts one process per device: one lock
        with output_lock(run.model_dir) if main_process else contextlib.nullcontext():
            out = run_dpo(run, args)
        print(f"saved {out}")

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
