"""The original scripts' command-line defaults, applied by this project's command lines when a flag is omitted.

A command written for the original code (Yiwen-Ding/Guided-Self-Improvement at 77ba9ed) then means the same here:
``python train.py --model_name_or_path M --tokenizer_name_or_path M --model_dir D --train_file F`` trains 40
epochs at 2e-5 as the original's ``train.py`` did. The in-process configs (:class:`src.training.TrainConfig`,
:class:`src.sampling.loop.SamplingConfig`) keep the paper's values, and the scripts pass every value explicitly,
as the original's scripts do. Deliberate exceptions, listed in docs/FIDELITY.md: ``--device_num`` (the original:
8 GPUs; here 1, the machine decides), ``--teacher_model`` (no default: it must name the served teacher),
``--num_workers``, ``--logging_step_freq`` and ``--saving_epoch_freq`` (loader and logging machinery).
"""

from __future__ import annotations

from typing import Any

# train.py: the original's HfArgumentParser dataclass defaults that differ from TrainConfig's
TRAIN_DEFAULTS: dict[str, Any] = {
    "n_epochs": 40, "learning_rate": 2e-5, "weight_decay": 1e-6, "warmup_step": 0, "max_input_length": 700,
    "wandb_project": "tmp_anvfupsadfn", "wandb_run_name": "default_run_name", "engine": "python",
}

# inference*.py: the original's argparse defaults that differ from SamplingConfig's
SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": 0.0, "sample_num": 10, "min_correct_num": 3, "max_resample_num": 20,
}
