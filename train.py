"""Fine-tune a causal LM on one iteration's data (the flags of the original script; --help explains each).

    python train.py --model_name_or_path output/tiny-model --train_file data/synthetic/train/cot/synthetic.json \\
        --model_dir output/tiny-sft --batch_size 16 --learning_rate 3e-3
    accelerate launch --config_file configs/accelerate_cpu_zero2_2proc.yaml train.py --model_name_or_path ...
    accelerate launch --config_file default_config_deepspeed_ga2.yaml train.py ...   # the paper: 8 GPUs, ZeRO-2

Bad input (missing file, empty data, a record without answer_cot) exits with status 2 before the model loads.
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from src.records import RecordError
from src.training import TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    (cfg,) = HfArgumentParser(TrainConfig).parse_args_into_dataclasses(args=argv)
    try:
        out = train(cfg)
    except RecordError as err:
        print(f"train.py: bad training data: {err}", file=sys.stderr)
        return 2
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
