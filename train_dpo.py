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

import sys

from src.cli import parse_args, run_cli

PROG = "train_dpo.py"


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        from trl import DPOConfig

        from src.dpo import DPORunConfig, dpo_defaults, run_dpo

        run, args = parse_args([DPORunConfig, DPOConfig], argv, PROG, __doc__.split("\n\n")[0], dpo_defaults())
        print(f"saved {run_dpo(run, args)}")

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
