"""Supervised fine-tuning of a causal LM on one iteration's data, with accelerate (and DeepSpeed when launched so).

In-process (one process, plain accelerate; the tests and the demo)::

    from src.training import TrainConfig, train
    train(TrainConfig(model_name_or_path="output/tiny-model", train_file="data/synthetic/train/cot/synthetic.json",
                      model_dir="output/tiny-sft", batch_size=16, learning_rate=3e-3))

From the shell (``train.py`` is a thin wrapper; the paper's scripts call it exactly like this)::

    accelerate launch --config_file default_config_deepspeed_ga2.yaml train.py \\
        --model_name_or_path meta-llama/Meta-Llama-3-8B --train_file iter_data/gsm8k_iter_0.json \\
        --model_dir output/llama3/exp/iter_0 --batch_size 4 --learning_rate 1e-5
    accelerate launch --config_file configs/accelerate_cpu_zero2_2proc.yaml train.py ...   # CPU, 2 processes

Outputs under ``model_dir``: ``model/`` (Hugging Face model + tokenizer, untied so vLLM can reload it in place),
``train_log.json`` (per optimizer step: loss, lr, grad norm, tokens; wall time), ``checkpoints/step_<N>/``
(the last ``keep_num_ckpt`` resumable states; a rerun resumes from the newest one).

Data order: examples are grouped by length into micro-batches (little padding), the micro-batches are shuffled by
``seed + epoch``, and optimizer step ``s`` consumes global micro-batches ``s*ga*P .. (s+1)*ga*P - 1`` (process ``p``
takes every ``P``-th one). So the set of examples per optimizer step depends only on ``P * ga``: 2 processes with
accumulation 1 train on exactly the batches of 1 process with accumulation 2, and a resumed run continues where
the crashed one stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from src.prompts import training_pair
from src.records import RecordError, load_records, write_json

IGNORE_INDEX = -100  # label value ignored by the loss (prompt tokens and padding)
STATE_FILE = "trainer_state.json"  # written last into a checkpoint: its presence marks the checkpoint complete


@dataclass
class TrainConfig:
    # --- the original script's flags (same names, so the paper's shell scripts run unchanged) ---
    model_name_or_path: str = field(metadata={"help": "base model folder (HF format) to fine-tune"})
    train_file: str = field(metadata={"help": "JSON/JSONL list of records with question and answer_cot"})
    model_dir: str = field(metadata={"help": "output folder: model/, train_log.json, checkpoints/"})
    tokenizer_name_or_path: str | None = field(default=None, metadata={
        "help": "tokenizer folder (default: the model's)"})
    batch_size: int = field(default=4, metadata={"help": "micro-batch size per process"})
    n_epochs: int = field(default=1, metadata={"help": "passes over the training data"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_step: int = field(default=-1, metadata={
        "help": "linear warm-up steps; negative = 10%% of the optimizer steps"})
    clip_grad_norm: float = field(default=1.0, metadata={"help": "max gradient norm (0 = no clipping)"})
    logging_epoch_freq: int = field(default=1, metadata={"help": "print an epoch summary every N epochs"})
    saving_epoch_freq: int = field(default=1, metadata={
        "help": "save a resumable checkpoint every N epochs (not after the last one: model/ is the result)"})
    logging_step_freq: int = field(default=10, metadata={"help": "log to the tracker / console every N steps"})
    seed: int = field(default=42, metadata={"help": "seed of the data order and initialisation"})
    max_input_length: int = field(default=1024, metadata={"help": "truncate prompt + rationale to this many tokens"})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "micro-batches per optimizer step (a DeepSpeed config's value wins when launched with one)"})
    keep_num_ckpt: int = field(default=1, metadata={"help": "resumable checkpoints kept (0 = save none)"})
    wandb_log: bool = field(default=False, metadata={"help": "log to Weights & Biases (offline unless "
                                                             "WANDB_MODE says otherwise)"})
    wandb_project: str = field(default="gsi", metadata={"help": "W&B project"})
    wandb_run_name: str | None = field(default=None, metadata={"help": "W&B run name"})
    engine: str = field(default="python", metadata={
        "help": "the original's flag (its scripts pass 'nl'); accepted and unused, as in the original"})
    # --- additions (all optional) ---
    max_steps: int = field(default=-1, metadata={"help": "cap on optimizer steps (-1 = n_epochs of data)"})
    saving_step_freq: int = field(default=0, metadata={"help": "also save a checkpoint every N steps (0 = off)"})
    lr_scheduler: str = field(default="linear", metadata={"help": "linear | cosine decay after the warm-up"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto (bf16 where the GPU has it, fp32 on CPU; a launch config's value wins), bf16, no"})
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | wandb (wandb_log implies wandb)"})
    resume: bool = field(default=True, metadata={"help": "resume from the newest checkpoint under model_dir"})
    torch_dtype: str = field(default="auto", metadata={
        "help": "dtype the weights are loaded in: auto (bfloat16 under a DeepSpeed bf16 config, which keeps bf16 "
                "weights and fp32 master copies anyway; float32 otherwise, e.g. CPU or plain autocast), "
                "bfloat16, float16, float32"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in the backward pass: far less GPU memory for ~30%% more compute"})
    show_progress: bool = field(default=True, metadata={"help": "tqdm bar with loss and lr"})
    # tokenization (docs/FIDELITY.md): the llama3 scripts train as the original did (false / true)
    prompt_bos: bool = field(default=True, metadata={
        "help": "tokenize the prompt with the tokenizer's special tokens (BOS), as vLLM does at sampling; "
                "false: without them, as the original trained"})
    strip_text: bool = field(default=False, metadata={
        "help": "strip leading/trailing whitespace of question and rationale, as the original did"})
    # IWSI-w (src/iwsi.py): each sample's token losses multiplied by min(record[field], clip)
    sample_weight_field: str | None = field(default=None, metadata={
        "help": "record field holding a per-sample loss weight (IWSI-w: w_prime); records without it weigh 1"})
    sample_weight_clip: float | None = field(default=None, metadata={
        "help": "cap on the sample weight: min(weight, C) (IWSI-w: 2.0)"})
    # TriPosT weighted SL (src/tripost/data.py): token losses from the first "Feedback:" on weighted in examples
    # whose feedback reports an error
    section_weight: float = field(default=1.0, metadata={
        "help": "TriPosT: weight of the tokens from the first 'Feedback:' on in examples with an error (official "
                "1.5; 1 = plain loss); needs generate_train_data.py --format tripost data"})


# ----------------------------------------------------------------------------- schedule and data

def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float, kind: str = "linear") -> float:
    """Learning rate used for optimizer step ``step`` (0-based): linear warm-up, then linear or cosine to 0."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if kind == "cosine":
        return peak_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if kind == "linear":
        return peak_lr * max(0.0, 1.0 - progress)
    raise ValueError(f"unknown lr_scheduler {kind!r} (linear | cosine)")


def warmup_steps_for(cfg: TrainConfig, total_steps: int) -> int:
    """``--warmup_step`` < 0 means 10% of the optimizer steps (the paper's setting)."""
    return int(0.1 * total_steps) if cfg.warmup_step < 0 else cfg.warmup_step


def validate_train_file(path: str | Path) -> list[dict]:
    """Load the training records or raise :class:`RecordError` naming file, record and field."""
    records = load_records(path, "train")
    for i, rec in enumerate(records):
        if not rec["answer_cot"].strip():
            raise RecordError(f"{path}: record {i} (item_id={rec['item_id']}): field 'answer_cot' is empty")
    return records


def tokenize_examples(records: list[dict], tokenizer, max_len: int, prompt_bos: bool = True,
                      strip_text: bool = False) -> list[dict[str, list[int]]]:
    """input_ids/labels per record; labels are IGNORE_INDEX on the prompt, the loss covers rationale + EOS.

    Prompt and completion are tokenized separately, so the completion starts at a token boundary as a generated
    answer does. ``prompt_bos``: the prompt gets the tokenizer's special tokens (BOS), exactly as vLLM tokenizes
    the sampling prompt; the original trained without them. ``strip_text``: strip question and rationale first,
    as the original did (docs/FIDELITY.md).
    """
    def text(value: str) -> str:
        return value.strip() if strip_text else value

    pairs = [training_pair(text(r["question"]), text(r["answer_cot"]), tokenizer.eos_token) for r in records]
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=prompt_bos)["input_ids"]
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    examples = []
    for p_ids, c_ids in zip(prompts, completions, strict=True):
        if not c_ids or c_ids[-1] != tokenizer.eos_token_id:  # the EOS string must map to the EOS id
            c_ids = [*c_ids, tokenizer.eos_token_id]
        ids = (p_ids + c_ids)[:max_len]
        labels = ([IGNORE_INDEX] * len(p_ids) + c_ids)[:max_len]
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, mega: int = 50) -> list[list[int]]:
    """Micro-batches of indices of similar length, in an order shuffled by ``seed``.

    Shuffle all indices, cut them into mega-batches of ``mega * batch_size``, sort each by length (longest
    first), cut into micro-batches, and shuffle the micro-batches: little padding, yet a random order.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    for start in range(0, len(order), mega * batch_size):
        chunk = sorted(order[start:start + mega * batch_size], key=lambda i: -lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """Plain shuffled micro-batches (the padding baseline of the benchmark)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[j:j + batch_size] for j in range(0, n, batch_size)]


def collate(examples: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad to the longest example of the micro-batch; padding is masked and ignored by the loss."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        mask[row, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if "sample_weight" in examples[0]:  # IWSI-w: travels with its sample through shuffling and accumulation
        batch["sample_weight"] = torch.tensor([e["sample_weight"] for e in examples], dtype=torch.float32)
    if "token_weight" in examples[0]:  # TriPosT: per-token weights aligned with labels (padding: 1, masked)
        batch["token_weight"] = torch.ones((len(examples), width), dtype=torch.float32)
        for row, e in enumerate(examples):
            batch["token_weight"][row, :len(e["token_weight"])] = torch.tensor(e["token_weight"])
    return batch


def micro_batch_loss(model, batch: dict[str, Any]):
    """The model's mean token loss; with sample weights, the same mean with each sample's tokens weighted."""
    weights = batch.get("sample_weight")
    if "token_weight" in batch:  # TriPosT weighted SL, times the sample weight when there is one
        from src.tripost.data import weighted_token_loss

        tokens = batch["token_weight"] if weights is None else batch["token_weight"] * weights[:, None]
        inputs = {k: v for k, v in batch.items() if k not in ("sample_weight", "token_weight", "labels")}
        return weighted_token_loss(model(**inputs).logits, batch["labels"], tokens)
    if weights is None:
        return model(**batch).loss
    from src.iwsi import weighted_lm_loss

    inputs = {k: v for k, v in batch.items() if k not in ("sample_weight", "labels")}
    return weighted_lm_loss(model(**inputs).logits, batch["labels"], weights)


def epoch_micro_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group: int) -> list[list[int]]:
    """This epoch's global micro-batches, repeated from the start up to a multiple of ``group`` (= P * ga) so
    that every optimizer step is full and every process takes the same number of micro-batches."""
    batches = length_grouped_batches(lengths, batch_size, seed + epoch)
    return batches + batches[:(-len(batches)) % group]


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_dirs(model_dir: Path) -> list[Path]:
    """Complete checkpoints (with their state file), oldest first."""
    root = model_dir / "checkpoints"
    found = [d for d in root.glob("step_*") if d.is_dir() and (d / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda d: int(d.name.split("_")[1]))


def untied_state_dict(model) -> dict:
    """The model's own tensors (no copy), except that a tensor sharing storage with an earlier one (a tied
    lm_head) is cloned: saved as shared, it would be dropped from the file, and the untied config would then
    load a random lm_head."""
    seen, out = set(), {}
    for name, tensor in model.state_dict().items():
        ptr = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out


def save_hf_model(accelerator, model, tokenizer, out_dir: Path) -> None:
    """Untied HF model + tokenizer (explicit lm_head: vLLM's in-place reload needs it), written via a temporary
    folder and a rename so that a reader never sees a half-written model."""
    ds_plugin = accelerator.state.deepspeed_plugin
    # ZeRO-3 shards the weights: gathering them is a collective every process joins. Otherwise every process
    # holds the full weights and only the main process touches them: accelerate's get_state_dict would copy
    # them to host memory on all 8 processes (8 x 16 GB for Llama-3-8B) for one writer.
    zero3 = ds_plugin is not None and ds_plugin.zero_stage == 3
    state_dict = accelerator.get_state_dict(model) if zero3 else None
    if accelerator.is_main_process:
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.config.tie_word_embeddings = False
        if state_dict is None:
            state_dict = untied_state_dict(unwrapped)
        unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    accelerator.wait_for_everyone()


def save_checkpoint(accelerator, model, tokenizer, model_dir: Path, state: dict, keep: int) -> None:
    """Resumable state (model, optimizer, scheduler, RNG via accelerate) + untied HF model + our trainer state,
    made visible by one rename; only the newest ``keep`` checkpoints stay."""
    final = model_dir / "checkpoints" / f"step_{state['step']}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    save_hf_model(accelerator, model, tokenizer, tmp / "hf_model")
    if accelerator.is_main_process:
        write_json(tmp / STATE_FILE, state)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoint_dirs(model_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- model loading

TORCH_DTYPES = ("auto", "bfloat16", "float16", "float32")


def load_dtype(cfg: TrainConfig, accelerator):
    """The dtype to load the weights in (``--torch_dtype``; see its help for ``auto``)."""
    import torch

    if cfg.torch_dtype != "auto":
        return getattr(torch, cfg.torch_dtype)
    ds_bf16 = accelerator.state.deepspeed_plugin is not None and accelerator.mixed_precision == "bf16"
    return torch.bfloat16 if ds_bf16 else torch.float32


def load_model(cfg: TrainConfig, accelerator):
    """The model to fine-tune, in :func:`load_dtype`, straight onto this process's GPU when there is one.

    transformers 5 always loads through the meta device (its old ``low_cpu_mem_usage=True`` is the only mode) and
    reads safetensors memory-mapped, so 8 processes loading Llama-3-8B in bf16 share the page cache instead of
    holding 8 x 32 GB fp32 copies in host memory.
    """
    from transformers import AutoModelForCausalLM

    on_gpu = accelerator.device.type == "cuda"
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, dtype=load_dtype(cfg, accelerator),
                                                 device_map={"": accelerator.device} if on_gpu else None)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # the KV cache is useless in training and clashes with recomputation
    return model


def make_optimizer(cfg: TrainConfig, model, accelerator):
    """AdamW; DeepSpeed's CPU Adam when the DeepSpeed config offloads the optimizer to the CPU (ZeRO-Offload
    refuses a torch optimizer there; configs/accelerate_gpu_zero2_offload.yaml)."""
    import torch

    kwargs = {"lr": cfg.learning_rate, "betas": (cfg.adam_beta1, cfg.adam_beta2), "eps": cfg.adam_epsilon,
              "weight_decay": cfg.weight_decay}
    ds_plugin = accelerator.state.deepspeed_plugin
    offload = ds_plugin.deepspeed_config.get("zero_optimization", {}).get("offload_optimizer", {}) \
        if ds_plugin is not None else {}
    if offload.get("device") == "cpu":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(model.parameters(), adamw_mode=True, **kwargs)
    return torch.optim.AdamW(model.parameters(), **kwargs)


# ----------------------------------------------------------------------------- the loop

def _make_accelerator(cfg: TrainConfig):
    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    launched = "ACCELERATE_MIXED_PRECISION" in os.environ  # accelerate launch: its config decides precision
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = None if launched else ("bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                                           else "no")
    log_with = "wandb" if cfg.wandb_log else (None if cfg.report_to == "none" else cfg.report_to)
    if log_with is not None:
        from accelerate.utils import is_tensorboard_available, is_wandb_available

        available = {"wandb": is_wandb_available, "tensorboard": is_tensorboard_available}
        if log_with not in available or not available[log_with]():
            raise ValueError(f"tracker {log_with!r} is not installed (pip install {log_with}) or not supported "
                             "(none | tensorboard | wandb)")
    if log_with == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")  # never needs a network unless the user asks for it
    # Without CUDA, torch.distributed needs the gloo backend for 2+ CPU processes (DeepSpeed included); a single
    # unlaunched process must get no backend at all, or accelerate believes it is distributed.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    kwargs = [InitProcessGroupKwargs(backend="gloo")] if distributed and not torch.cuda.is_available() else []
    # step_scheduler_with_optimizer=False: accelerate would otherwise step the schedule once per process.
    return Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps, mixed_precision=precision,
                       step_scheduler_with_optimizer=False, log_with=log_with,
                       project_dir=str(Path(cfg.model_dir) / "runs"), kwargs_handlers=kwargs)


def _check_records(cfg: TrainConfig) -> tuple[list[dict], list[float] | None]:
    """The training records and their IWSI-w weights; bad input fails here, before the model loads."""
    records = validate_train_file(cfg.train_file)
    from src.iwsi import sample_weights

    weights = sample_weights(records, cfg.sample_weight_field, cfg.sample_weight_clip, cfg.train_file)
    if cfg.section_weight != 1.0:  # TriPosT: every record needs its feedback section
        from src.tripost.data import check_section_records

        check_section_records(records, cfg.train_file, cfg.section_weight)
    if cfg.lr_scheduler not in ("linear", "cosine"):
        raise ValueError(f"--lr_scheduler must be linear or cosine, got {cfg.lr_scheduler!r}")
    if cfg.torch_dtype not in TORCH_DTYPES:
        raise ValueError(f"--torch_dtype must be one of {', '.join(TORCH_DTYPES)}, got {cfg.torch_dtype!r}")
    return records, weights


def _examples(cfg: TrainConfig, records: list[dict], weights: list[float] | None, tokenizer) -> list[dict]:
    """Tokenized examples with their per-sample (IWSI-w) and per-token (TriPosT) weights."""
    examples = tokenize_examples(records, tokenizer, cfg.max_input_length, cfg.prompt_bos, cfg.strip_text)
    for example, weight in zip(examples, weights or []):
        example["sample_weight"] = weight
    if cfg.section_weight != 1.0:
        from src.tripost.data import add_section_weights

        add_section_weights(examples, records, tokenizer, cfg.section_weight, cfg.strip_text)
    return examples


def _sync_deepspeed(cfg: TrainConfig, accelerator) -> None:
    """DeepSpeed reads batch size, clipping and accumulation from its own config: make it agree with ours."""
    ds_plugin = accelerator.state.deepspeed_plugin
    if ds_plugin is None:
        return
    ds_cfg = ds_plugin.deepspeed_config
    if isinstance(ds_cfg.get("gradient_accumulation_steps"), int):
        accelerator.gradient_accumulation_steps = ds_cfg["gradient_accumulation_steps"]
    ds_cfg["gradient_accumulation_steps"] = accelerator.gradient_accumulation_steps
    ds_cfg["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds_cfg["gradient_clipping"] = cfg.clip_grad_norm


@dataclass
class _Run:
    """One training run's moving parts and progress (what a checkpoint saves and a resume restores)."""

    cfg: TrainConfig
    accelerator: Any
    tokenizer: Any
    examples: list[dict]
    model_dir: Path
    run_shape: dict[str, Any]
    t_start: float
    step: int = 0
    log: list[dict] = field(default_factory=list)
    resumed_from: int | None = None
    t_loop: float = 0.0  # when the optimizer steps began (train_seconds excludes loading)

    def state(self) -> dict:
        return {"step": self.step, "run_shape": self.run_shape, "log": self.log, "resumed_from_step": self.resumed_from,
                "config": asdict(self.cfg), "wall_seconds": round(time.time() - self.t_start, 3)}

    def resume(self) -> None:
        """Continue from the latest complete checkpoint of the same run shape (``--resume``)."""
        ckpts = checkpoint_dirs(self.model_dir) if self.cfg.resume else []
        if not ckpts:
            return
        saved = json.loads((ckpts[-1] / STATE_FILE).read_text())
        if saved["run_shape"] != self.run_shape:
            raise RuntimeError(f"{ckpts[-1]}: checkpoint of a different run ({saved['run_shape']} vs "
                               f"{self.run_shape}); delete it or pass --resume false")
        self.accelerator.load_state(str(ckpts[-1]))
        self.step, self.log, self.resumed_from = saved["step"], saved["log"], saved["step"]
        self.accelerator.print(f"resuming from {ckpts[-1]} (step {self.step}/{self.run_shape['total_steps']})")


def _after_step(run: _Run, model, epoch: int, lr: float, step_loss: float) -> None:
    """Logging, the progress file and step/epoch checkpoints after one optimizer step."""
    cfg, accelerator, step = run.cfg, run.accelerator, run.step
    if cfg.logging_step_freq > 0 and step % cfg.logging_step_freq == 0:
        accelerator.log({"train/loss": step_loss, "train/lr": lr}, step=step)
    if accelerator.is_main_process:
        write_json(run.model_dir / "train_log.json", run.state())
    epoch_end = step % run.run_shape["steps_per_epoch"] == 0
    if epoch_end and cfg.logging_epoch_freq > 0 and (epoch + 1) % cfg.logging_epoch_freq == 0:
        epoch_losses = [e["loss"] for e in run.log if e["epoch"] == epoch]
        accelerator.print(f"epoch {epoch + 1}: mean loss {sum(epoch_losses) / len(epoch_losses):.4f}")
    want_ckpt = (cfg.saving_step_freq > 0 and step % cfg.saving_step_freq == 0) or (
        epoch_end and cfg.saving_epoch_freq > 0 and (epoch + 1) % cfg.saving_epoch_freq == 0)
    if want_ckpt and cfg.keep_num_ckpt > 0 and step < run.run_shape["total_steps"]:
        save_checkpoint(accelerator, model, run.tokenizer, run.model_dir, run.state(), cfg.keep_num_ckpt)


def _loop(run: _Run, model, optimizer, scheduler, lengths: list[int]) -> None:
    """The optimizer steps, epoch by epoch, from ``run.step`` (0, or the resumed step) to the total."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    cfg, accelerator = run.cfg, run.accelerator
    ga, n_proc, rank = accelerator.gradient_accumulation_steps, accelerator.num_processes, accelerator.process_index
    total_steps, steps_per_epoch = run.run_shape["total_steps"], run.run_shape["steps_per_epoch"]
    bar = tqdm(total=total_steps, initial=run.step, desc="train",
               disable=not (cfg.show_progress and accelerator.is_main_process))
    model.train()
    t_loop = run.t_loop = time.time()
    while run.step < total_steps:
        epoch, step_in_epoch = divmod(run.step, steps_per_epoch)
        batches = epoch_micro_batches(lengths, cfg.batch_size, cfg.seed, epoch, ga * n_proc)[rank::n_proc]
        batches = batches[step_in_epoch * ga:]  # resume: skip what the finished steps consumed
        loader = DataLoader(run.examples, batch_sampler=batches, num_workers=cfg.num_workers,
                            collate_fn=partial(collate, pad_id=run.tokenizer.pad_token_id))  # picklable for workers
        micro_losses, tokens = [], 0
        for batch in loader:
            with accelerator.accumulate(model):
                loss = micro_batch_loss(model, {k: v.to(accelerator.device) for k, v in batch.items()})
                accelerator.backward(loss)
                grad_norm = None
                if accelerator.sync_gradients and cfg.clip_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
                lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (logged, checked by tests)
                optimizer.step()
                if accelerator.sync_gradients:  # one schedule step per optimizer step, whatever P and ga
                    scheduler.step()
                optimizer.zero_grad()
            micro_losses.append(loss.detach())
            tokens += int((batch["labels"] != IGNORE_INDEX).sum())
            if not accelerator.sync_gradients:
                continue
            # one optimizer step done: mean micro-batch loss over accumulation and processes
            step_loss = accelerator.reduce(torch.stack(micro_losses).mean(), reduction="mean").item()
            step_tokens = int(accelerator.reduce(torch.tensor(tokens, device=accelerator.device), "sum").item())
            run.step += 1
            run.log.append({"step": run.step, "epoch": epoch, "loss": round(step_loss, 6), "lr": lr,
                            "grad_norm": None if grad_norm is None else round(float(grad_norm), 6),
                            "tokens": step_tokens, "elapsed_s": round(time.time() - t_loop, 3)})
            micro_losses, tokens = [], 0
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
            _after_step(run, model, epoch, lr, step_loss)
            if run.step >= total_steps:
                break
    bar.close()


def train(cfg: TrainConfig) -> Path:
    """Fine-tune ``cfg.model_name_or_path`` on ``cfg.train_file``; return ``cfg.model_dir/model``."""
    t_start = time.time()
    records, weights = _check_records(cfg)  # bad input fails here: before the model loads, nothing written

    import torch
    from accelerate.utils import set_seed
    from transformers import AutoTokenizer

    # A process group that exists already belongs to someone else (an in-process vLLM engine in the demo and the
    # tests): training must not destroy it at the end, or vLLM's own shutdown fails at interpreter exit.
    group_was_ours = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    accelerator = _make_accelerator(cfg)
    model_dir = Path(cfg.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_name_or_path or cfg.model_name_or_path)
    if tokenizer.pad_token_id is None:  # Llama-3 has no pad token; padding is masked, so EOS serves
        tokenizer.pad_token = tokenizer.eos_token
    examples = _examples(cfg, records, weights, tokenizer)
    lengths = [len(e["input_ids"]) for e in examples]

    _sync_deepspeed(cfg, accelerator)
    ga, n_proc = accelerator.gradient_accumulation_steps, accelerator.num_processes
    group = ga * n_proc
    steps_per_epoch = len(epoch_micro_batches(lengths, cfg.batch_size, cfg.seed, 0, group)) // group
    total_steps = steps_per_epoch * cfg.n_epochs
    if cfg.max_steps > 0:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = warmup_steps_for(cfg, total_steps)

    set_seed(cfg.seed)
    model = load_model(cfg, accelerator)
    optimizer = make_optimizer(cfg, model, accelerator)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, total_steps, warmup, 1.0, cfg.lr_scheduler))  # a multiplier of the peak
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    run_shape = {"batch_size": cfg.batch_size, "num_processes": n_proc, "gradient_accumulation_steps": ga,
                 "effective_batch_size": cfg.batch_size * group, "total_steps": total_steps,
                 "steps_per_epoch": steps_per_epoch, "warmup_steps": warmup, "n_examples": len(examples)}
    run = _Run(cfg, accelerator, tokenizer, examples, model_dir, run_shape, t_start)
    run.resume()
    if accelerator.is_main_process:
        model_dir.mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers(cfg.wandb_project, config=asdict(cfg),
                              init_kwargs={"wandb": {"name": cfg.wandb_run_name}} if cfg.wandb_log else {})
    _loop(run, model, optimizer, scheduler, lengths)

    out = model_dir / "model"
    save_hf_model(accelerator, model, tokenizer, out)
    if accelerator.is_main_process:
        final = run.state()
        final.update(finished=True, train_seconds=round(time.time() - run.t_loop, 3))
        write_json(model_dir / "train_log.json", final)
    for tracker in accelerator.trackers:  # what accelerator.end_training() does, minus a foreign group's teardown
        tracker.finish()
    if group_was_ours:
        accelerator.state.destroy_process_group()
    return out
