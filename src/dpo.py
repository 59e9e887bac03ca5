"""Phase 2 of Self-Refine Instruction-Tuning: DPO on the student's preference pairs, with TRL's ``DPOTrainer``.

In-process (plain accelerate, one process)::

    from src.dpo import DPORunConfig, dpo_config, run_dpo
    run = DPORunConfig(model_name_or_path="output/srit/phase1/model", train_file="pairs.json",
                       model_dir="output/srit/dpo")
    run_dpo(run, dpo_config(per_device_train_batch_size=8, learning_rate=5e-7))

From the shell (``train_dpo.py`` is a thin wrapper; every ``trl.DPOConfig`` flag is accepted)::

    accelerate launch --config_file configs/accelerate_cpu_zero2_2proc.yaml train_dpo.py \\
        --model_name_or_path output/srit/phase1/model --train_file pairs.json --model_dir output/srit/dpo

The phase-1 checkpoint is both the start point and the frozen reference: ``precompute_ref_log_probs`` scores every
pair with it once before training, so no second model stays in memory (``--ref_model_name_or_path`` names another
reference; its tokenizer must be the policy's). The loss is TRL's (``loss_type=["sigmoid"]``: the DPO loss
``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` over summed completion log-probs).

Outputs under ``model_dir``: ``model/`` (untied HF model + tokenizer, saved by :func:`src.training.save_hf_model`,
so vLLM loads it and ``src.engine.reload_weights`` swaps it in place) and ``train_log.json`` (per optimizer step:
loss, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``, lr, ...).
Bad input (missing column, empty text, a reference tokenizer that differs, no pair left after the length filter)
raises before any model loads, and nothing is written.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.cli import UsageError
from src.pairs import load_pairs
from src.records import RecordError, write_json


@dataclass
class DPORunConfig:
    """The project's flags; TRL's own (beta, learning_rate, per_device_train_batch_size, ...) come from DPOConfig."""

    model_name_or_path: str = field(metadata={
        "help": "phase-1 checkpoint (HF folder): start point of DPO and, by default, its frozen reference"})
    train_file: str = field(metadata={
        "help": "preference pairs (JSON list of {item_id, prompt, chosen, rejected}; generate_train_data.py "
                "--format dpo)"})
    model_dir: str = field(metadata={"help": "output folder: model/ (untied HF checkpoint) and train_log.json"})
    ref_model_name_or_path: str | None = field(default=None, metadata={
        "help": "frozen reference model (default: --model_name_or_path); its tokenizer must be the policy's"})
    torch_dtype: str = field(default="auto", metadata={
        "help": "dtype the weights are loaded in: auto (bfloat16 under DeepSpeed with --bf16, as train.py: 8 processes "
                "share one bf16 copy in host memory; else float32), float32, bfloat16",
        "choices": ["auto", "float32", "bfloat16"]})


def dpo_defaults() -> dict[str, Any]:
    """The project's defaults for ``trl.DPOConfig`` (any flag on the command line wins)."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "bf16": cuda and torch.cuda.is_bf16_supported(),  # TRL defaults to bf16 even on CPU
        "precompute_ref_log_probs": True,  # the reference is scored once; no second model in memory
        "gradient_checkpointing": False,  # TRL's default True only pays off for large models
        "logging_steps": 1, "save_strategy": "no", "report_to": "none", "num_train_epochs": 1.0,
        # 2+ CPU processes (DeepSpeed included) need gloo; a single unlaunched process must get no backend at all
        "ddp_backend": "gloo" if not cuda and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        "output_dir": "output/dpo",  # replaced by --model_dir; the trainer saves nothing there
    }


def dpo_config(**overrides: Any):
    """A ``trl.DPOConfig`` with :func:`dpo_defaults` and ``overrides`` (the in-process entry point)."""
    from trl import DPOConfig

    return DPOConfig(**{**dpo_defaults(), **overrides})


def _tokenizer(path: str, what: str):
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise UsageError(f"{what} {path}: folder not found")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise UsageError(f"{what} {path}: no usable tokenizer ({str(err).splitlines()[0]})") from None


def check_reference_tokenizer(policy_tok, ref_path: str) -> None:
    """The reference must tokenize exactly like the policy: DPO compares their log-probs of the same token ids."""
    ref_tok = _tokenizer(ref_path, "--ref_model_name_or_path")
    specials = ("bos_token", "eos_token", "pad_token", "unk_token")
    diff = [s for s in specials if getattr(policy_tok, s) != getattr(ref_tok, s)]
    if policy_tok.get_vocab() != ref_tok.get_vocab():
        diff.insert(0, f"vocabulary ({len(policy_tok)} vs {len(ref_tok)} tokens)")
    if diff:
        raise UsageError(f"--ref_model_name_or_path {ref_path}: its tokenizer differs from the policy's "
                         f"({', '.join(diff)})")


def filter_pairs(pairs: list[dict], tokenizer, max_length: int | None, source: str) -> list[dict]:
    """Drop pairs whose prompt alone fills ``max_length`` (TRL would drop them: no completion token is left)."""
    if max_length is not None:
        lengths = tokenizer([p["prompt"] for p in pairs])["input_ids"]
        pairs = [p for p, ids in zip(pairs, lengths, strict=True) if len(ids) < max_length]
    if not pairs:
        raise RecordError(f"{source}: no pair left after filtering (every prompt fills --max_length {max_length})")
    return pairs


def prepare(run: DPORunConfig, args) -> tuple[list[dict], Any]:
    """Every check that needs no model: pairs, tokenizers, length filter. Returns (pairs, policy tokenizer)."""
    import torch

    pairs = load_pairs(run.train_file)
    tokenizer = _tokenizer(run.model_name_or_path, "--model_name_or_path")
    if run.ref_model_name_or_path and Path(run.ref_model_name_or_path) != Path(run.model_name_or_path):
        check_reference_tokenizer(tokenizer, run.ref_model_name_or_path)
    if args.bf16 and not torch.cuda.is_available():
        raise UsageError("--bf16 true needs a GPU (CPU runs are fp32)")
    return filter_pairs(pairs, tokenizer, args.max_length, run.train_file), tokenizer


def load_dtype(run: DPORunConfig, args):
    """``--torch_dtype`` resolved (the rule of src.training.load_dtype, read before the trainer's accelerator exists:
    accelerate launch exports ACCELERATE_USE_DEEPSPEED)."""
    import torch

    if run.torch_dtype != "auto":
        return getattr(torch, run.torch_dtype)
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return torch.bfloat16 if deepspeed and args.bf16 else torch.float32


def _step_log(history: list[dict]) -> list[dict]:
    """The per-step entries of the trainer's log history (the last entry is the run summary)."""
    return [e for e in history if "loss" in e and "step" in e]


def _shared_dataset(pairs: list[dict], data_dir: Path):
    """The pairs as an on-disk data set that every process opens: TRL caches the precomputed reference log-probs
    beside the data set's files, and an in-memory one would put them in a temporary folder of process 0 only."""
    from accelerate import PartialState
    from datasets import Dataset, load_from_disk

    state = PartialState()
    if state.is_main_process:
        shutil.rmtree(data_dir, ignore_errors=True)
        Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]).save_to_disk(data_dir)
    state.wait_for_everyone()
    return load_from_disk(str(data_dir))


def run_dpo(run: DPORunConfig, args) -> Path:
    """Train ``run.model_name_or_path`` on the pairs with DPO; return ``run.model_dir/model``."""
    t_start = time.time()
    pairs, tokenizer = prepare(run, args)  # bad input fails here: no model loaded, nothing written

    from transformers import AutoModelForCausalLM
    from trl import DPOTrainer

    from src.training import save_hf_model

    model_dir = Path(run.model_dir)
    args.output_dir = str(model_dir)  # the trainer saves nothing there (save_strategy "no")
    dtype = load_dtype(run, args)
    model = AutoModelForCausalLM.from_pretrained(run.model_name_or_path, dtype=dtype)
    ref_model = None
    if run.ref_model_name_or_path and Path(run.ref_model_name_or_path) != Path(run.model_name_or_path):
        ref_model = AutoModelForCausalLM.from_pretrained(run.ref_model_name_or_path, dtype=dtype)
    data = _shared_dataset(pairs, model_dir / "dpo_data")
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=data, processing_class=tokenizer)
    if args.precompute_ref_log_probs:
        trainer.ref_model = None  # its log-probs are in the data set now
    result = trainer.train()
    out = model_dir / "model"
    save_hf_model(trainer.accelerator, trainer.model_wrapped, tokenizer, out)
    if trainer.accelerator.is_main_process:
        shutil.rmtree(model_dir / "dpo_data", ignore_errors=True)
        acc = trainer.accelerator
        write_json(model_dir / "train_log.json", {
            "finished": True, "log": _step_log(trainer.state.log_history), "train_metrics": result.metrics,
            "run_shape": {"num_processes": acc.num_processes, "gradient_accumulation_steps":
                          args.gradient_accumulation_steps, "batch_size": args.per_device_train_batch_size,
                          "effective_batch_size": args.per_device_train_batch_size * acc.num_processes
                          * args.gradient_accumulation_steps, "n_pairs": len(pairs),
                          "total_steps": trainer.state.max_steps},
            "config": {"run": vars(run), "beta": args.beta, "loss_type": list(args.loss_type),
                       "learning_rate": args.learning_rate, "seed": args.seed, "max_length": args.max_length,
                       "precompute_ref_log_probs": args.precompute_ref_log_probs, "bf16": args.bf16,
                       "load_dtype": str(dtype)},
            "wall_seconds": round(time.time() - t_start, 3)})
    return out
