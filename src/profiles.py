"""The shell scripts' settings: every default of ``scripts/*.sh``, per profile, in one place.

An iteration script names its recipe when it sources ``scripts/_common.sh``::

    source scripts/_common.sh PROFILE=llama3 MODE=cot EXP_TAG=state_reset STRATEGY=state_reset MAX_RESAMPLE_NUM=8

and ``_common.sh`` asks this module for every setting (``python -m src.profiles shell NAME=VALUE...``), which it
evaluates. A setting takes the first of: the environment (what the user set; an empty value counts as unset, as
bash's ``${NAME:=...}``), the script's recipe, the profile, the project default. Defaults and recipes may name
other settings (``{MODEL_PATH}``); the user's values are taken literally. Hyper-parameters that are also a stage's
flag default (``--sample_num``, ``--learning_rate``, ...) are read from that stage's dataclass, and the tiny
profile's training from the demo's recipe, so each is written once. The stage commands still pass every value:
an omitted flag takes the original code's default (src/fidelity.py).

    python -m src.profiles list [--profile tiny]     # every setting, its default and what it is for
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from decimal import Decimal
from pathlib import Path

from src.cli import UsageError, one_line_errors, run_cli
from src.filtering import GenerateConfig
from src.iwsi import ValidSplitConfig
from src.sampling.cli import SCRIPTS
from src.sampling.loop import SamplingConfig
from src.sampling.teacher import TeacherConfig
from src.training import TrainConfig
from src.tripost.edit import EditConfig

PROG = "python -m src.profiles"


class Settings(dict):
    """Resolved settings, name -> value; a missing name is resolved on first use (so defaults may name others)."""

    def __init__(self, profile_values: dict[str, Value], recipe: dict[str, str], env: dict[str, str]):
        super().__init__()
        self.given = {**recipe, **env}  # what the script or the user set (env wins)
        self.source: dict[str, str] = {}
        self._profile, self._recipe, self._env = profile_values, recipe, env
        self._resolving: list[str] = []

    def __missing__(self, name: str) -> str:
        if name not in SETTING_BY_NAME:
            raise KeyError(f"{name} is not a setting (src/profiles.py)")
        if name in self._resolving:
            raise RuntimeError(f"settings refer to each other: {' -> '.join(self._resolving + [name])}")
        self._resolving.append(name)
        try:
            value = self._value(name)
        finally:
            self._resolving.pop()
        self[name] = value
        return value

    def _value(self, name: str) -> str:
        if name in self._env:
            self.source[name] = "environment"
            return self._env[name]
        if name in self._recipe:
            self.source[name], value = "script", self._recipe[name]
        elif name in self._profile:
            self.source[name], value = f"profile {self['PROFILE']}", self._profile[name]
        else:
            self.source[name], value = "default", SETTING_BY_NAME[name].default
        return value(self) if callable(value) else value.format_map(self)


Value = str | Callable[[Settings], str]


@dataclass(frozen=True)
class Setting:
    name: str
    default: Value
    help: str
    choices: tuple[str, ...] = ()  # checked when the value is not empty


# ------------------------------------------------------------------------------------------------ values
def shell_value(value: object) -> str:
    """A Python default as the scripts write it: true/false, '' for None, floats short (1e-5, 0.7, 0)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        exact = Decimal(repr(value))
        plain, scientific = f"{exact:f}", f"{exact:e}"
        return scientific if len(scientific) < len(plain) else plain
    return str(value)


def flag_setting(name: str, cls: type, field_name: str, help: str) -> Setting:
    """A setting that mirrors a stage's flag: its default and choices are those of ``cls``'s field."""
    for f in fields(cls):
        if f.name == field_name:
            default = f.default if f.default is not MISSING else f.default_factory()
            return Setting(name, shell_value(default), help, tuple(f.metadata.get("choices", ())))
    raise KeyError(f"{cls.__name__} has no field {field_name}")


def tensor_parallel_size(n_gpus: int) -> int:
    """The largest power of two <= n_gpus (at least 1): Llama-3's 8 KV heads must divide evenly."""
    size = 1
    while size * 2 <= n_gpus:
        size *= 2
    return size


def detected_gpu_ids() -> str:
    """This job's GPUs: CUDA_VISIBLE_DEVICES (SLURM sets it for --gpus), else SLURM_GPUS_ON_NODE, else
    nvidia-smi; on a machine with none of them (a login node: DRY_RUN) the paper's 8 are assumed."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if visible:
        return visible.replace(",", " ")
    on_node = os.environ.get("SLURM_GPUS_ON_NODE", "")
    if on_node.isdigit():
        return " ".join(str(i) for i in range(int(on_node)))
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        listing = None
    if listing is not None and listing.returncode == 0:
        count = sum(line.startswith("GPU") for line in listing.stdout.splitlines())
        return " ".join(str(i) for i in range(count))
    return " ".join(str(i) for i in range(8))


def _count(ids: str) -> int:
    return len(ids.replace(",", " ").split())


def _gpu_split(s: Settings, part: int) -> str:
    """A teacher served here for teacher_help takes the upper half of the GPUs, the student's sampling the lower."""
    if not (s["TEACHER_SERVE_PATH"] and s["STRATEGY"] == "teacher_help" and s["GPU_IDS"] and int(s["NUM_GPUS"]) > 1):
        return ""
    ids, half = s["GPU_IDS"].split(), int(s["NUM_GPUS"]) // 2
    return ",".join(ids[:half] if part == 0 else ids[half:])


def _tiny_setup(s: Settings) -> str:
    """Build the demo's world and base unless a model or data folder was given (tests inject a small model)."""
    return "0" if s.given.get("MODEL_PATH") or s.given.get("DATA_DIR") else "1"


# ------------------------------------------------------------------------------------------------ profiles
def _profiles() -> dict[str, dict[str, Value]]:
    """Each profile's values that differ from the project defaults (below)."""
    from src.demo import ARM_ADAM_BETAS, DemoConfig, arm_warmup_steps

    demo = DemoConfig()
    llama3: dict[str, Value] = {  # SPEC.md: Llama-3-8B on 8 GPUs, DeepSpeed ZeRO-2, global batch 64
        "MODEL_PATH": "models/Meta-Llama-3-8B", "MODEL_NAME": "llama3-8b",
        "GPU_IDS": lambda s: detected_gpu_ids(), "NUM_GPUS": lambda s: str(_count(s["GPU_IDS"])),
        "DEVICE_NUM": lambda s: str(tensor_parallel_size(int(s["NUM_GPUS"]))), "TRAIN_PROCS": "{NUM_GPUS}",
        "GLOBAL_BATCH": "64",
        # 80 GB fits a 4 x 1024-token micro-batch with 128k-vocabulary logits only with activations recomputed; a
        # resumable checkpoint every 250 steps (~10-15 min on 8 x 80 GB)
        "GRADIENT_CHECKPOINTING": "true", "SAVING_STEP_FREQ": "250", "POT_WORKERS": "8",
        # tokenize training examples as the original did; the original's correct/incorrect decisions
        "TRAIN_TOKENIZE_ARGS": "--prompt_bos false --strip_text true", "GRADER": "reference",
        "TEACHER_MODEL": "Meta-Llama-3-70B-Instruct",
    }
    tiny: dict[str, Value] = {  # 1M-parameter Llama + synthetic world on 2 CPU cores (ZeRO-2, 2 processes, gloo)
        "TINY_SETUP": _tiny_setup, "MODEL_PATH": "{TINY_BASE_DIR}/base/model", "MODEL_NAME": "tiny",
        "DATA_DIR": "{TINY_BASE_DIR}/world/data", "DATA_NAME": "synthetic", "TRAIN_DATASETS": "synthetic",
        "EVAL_DATASETS": "synthetic synthetic_heldout", "ORIGINAL_DATA": "{DATA_DIR}/train/{MODE}/synthetic.json",
        "DEVICE_NUM": "1", "MAX_LENGTH": "256", "MAX_MODEL_LEN": "1024", "CHECK_RESULT": "true",
        # this project's filter, not the original's (docs/FIDELITY.md): strict process check, no duplicates
        "FILTER_ARGS": "--check_mode strict --dedupe --merged_first --record_strategy",
        "ACCELERATE_CONFIG": "configs/accelerate_cpu_zero2_2proc.yaml",
        # every iteration retrains the base as the demo trains its arms: same steps, rate, schedule and
        # sequences per step (half on each of the 2 processes)
        "BATCH_SIZE": str(demo.batch_size // 2), "LEARNING_RATE": shell_value(demo.arm_lr),
        "LR_SCHEDULER": "cosine", "N_EPOCHS": "100", "MAX_STEPS": str(demo.arm_steps),
        "WARMUP_STEP": str(arm_warmup_steps(demo.arm_steps)), "KEEP_NUM_CKPT": "0",
        "TRAIN_EXTRA_ARGS": f"--adam_beta2 {shell_value(ARM_ADAM_BETAS[1])}",
        # a stand-in teacher served locally (exercises the machinery; a 1M-parameter model cannot critique)
        "TEACHER_MODEL": "tiny-teacher", "TEACHER_SERVE_PATH": "{MODEL_PATH}", "TEACHER_PORT": "8011",
        "TEACHER_SERVE_ARGS": "--enforce-eager",  # on a CPU: starts in ~20 s instead of ~60 (graph compilation)
        "DPO_LR": "5e-4", "DPO_BATCH": "8",
    }
    return {"llama3": llama3, "tiny": tiny}


# ------------------------------------------------------------------------------------------------ settings
def _train(name: str, field_name: str, help: str) -> Setting:
    return flag_setting(name, TrainConfig, field_name, help)


def _sampling(name: str, field_name: str, help: str) -> Setting:
    return flag_setting(name, SamplingConfig, field_name, help)


def _generate(name: str, field_name: str, help: str) -> Setting:
    return flag_setting(name, GenerateConfig, field_name, help)


def _experiment_settings() -> tuple[Setting, ...]:
    """What the run is: profile, strategy, model, folders, iterations."""
    S = Setting
    return (
        # --- the experiment
        S("PROFILE", "llama3", "llama3: the paper's cluster run; tiny: the embedded default on a CPU",
          choices=("llama3", "tiny")),
        S("STRATEGY", "state_reset", "the sampling strategy (inference_<STRATEGY>.py; vanilla: inference.py)",
          choices=tuple(SCRIPTS)),
        S("EXP_TAG", "{STRATEGY}", "first word of EXP_NAME (iter_original, uniform, state_reset, ...)"),
        _sampling("MODE", "mode", "cot: rationales; pot: programs"),
        S("MODEL_PATH", "models/Meta-Llama-3-8B", "the base model; every iteration retrains from it"),
        S("MODEL_NAME", lambda s: Path(s["MODEL_PATH"]).name, "the model's name in MODEL_TAG"),
        S("MODEL_TAG", "{MODEL_NAME}_{MODE}", "the <model> folder under OUTPUT_DIR"),
        S("OUTPUT_DIR", "output", "where experiments are written"),
        S("DATA_DIR", "data", "the data folder (test/, train/<mode>/, inference/<mode>/)"),
        S("DATA_NAME", "train", "iter_data/<DATA_NAME>_iter_<i>.json"),
        S("NUM_ITERS", "4", "iterations; each retrains from MODEL_PATH on that iteration's data"),
        S("START_ITER", "0", "first iteration to run"),
        _train("SEED", "seed", "seed of training, sampling and evaluation"),
        S("EXP_NAME", "{EXP_TAG}_sample_{SAMPLE_NUM}_correct_{MIN_CORRECT_NUM}_max_{MAX_RESAMPLE_NUM}"
                      "_orig_{INCLUDE_ORIGINAL}_preiter_{INCLUDE_PRE_ITER}",
          "the experiment's folder name (the original's names; other settings are not in it: changing one reruns "
          "the stages whose command it changes, so set EXP_NAME to keep both runs)"),
        S("EXP_DIR", "{OUTPUT_DIR}/{MODEL_TAG}/{EXP_NAME}", "the experiment's folder"),
        S("TINY_SETUP", "0", "1: build the demo's world and base in TINY_BASE_DIR first (tiny: unless MODEL_PATH "
                             "or DATA_DIR is given)", choices=("0", "1")),
        S("TINY_BASE_DIR", "{OUTPUT_DIR}/demo", "tiny: the demo's world and base, shared with `make demo`"),
        S("TINY_BASE_ARGS", "", "tiny: more demo.py flags for the world and base (scripts/tiny/base.py)"),
    )


def _sampling_settings() -> tuple[Setting, ...]:
    """The sampling stage, its GPUs and the teacher."""
    S = Setting
    return (
        # --- sampling
        S("TRAIN_DATASETS", "gsm8k math aqua", "held-in sampling pools: $DATA_DIR/inference/$MODE/<file>.json"),
        _sampling("SAMPLE_NUM", "sample_num", "initial samples per query"),
        _sampling("MIN_CORRECT_NUM", "min_correct_num", "resample a query while it has fewer correct samples"),
        _sampling("MAX_RESAMPLE_NUM", "max_resample_num", "resampling rounds at most"),
        _sampling("TEMPERATURE", "temperature", "student sampling temperature"),
        _sampling("MAX_LENGTH", "max_new_tokens", "new tokens per sample / evaluation response"),
        S("MAX_MODEL_LEN", "4096", "prompt + response tokens per sequence in vLLM"),
        S("GPU_IDS", "", "this job's GPUs (llama3: CUDA_VISIBLE_DEVICES, SLURM_GPUS_ON_NODE or nvidia-smi)"),
        S("NUM_GPUS", "0", "how many GPU_IDS"),
        S("DEVICE_NUM", "8", "tensor-parallel GPUs of the vLLM stages (llama3: from NUM_GPUS)"),
        _sampling("GRADER", "grader", "project | reference: the grader of eval.py and inference*.py"),
        _sampling("POT_WORKERS", "pot_workers", "PoT: sandbox processes running the sampled programs"),
        S("NUM_SHARDS", "1", ">1: sampling as NUM_SHARDS engines, merged (scripts/cluster/sample_shards.sh)"),
        S("SHARDS_PER_NODE", "", "shards side by side on a node (empty: its GPUs / DEVICE_NUM)"),
        S("SHARD_NODES", "1", ">1: spread the shards over this many nodes of the allocation (srun)"),
        # --- the teacher (teacher_help; TriPosT's teacher verifier or improver)
        S("TEACHER_MODEL", "", "the teacher's model name as served at TEACHER_BASE_URL"),
        S("TEACHER_SERVE_PATH", "", "if set, serve this model folder here for the sampling stage"),
        S("TEACHER_PORT", "8000", "port of the teacher served here"),
        S("TEACHER_BASE_URL", "http://127.0.0.1:{TEACHER_PORT}/v1", "set it for a teacher on another node"),
        flag_setting("TEACHER_CONCURRENCY", TeacherConfig, "teacher_max_concurrency",
                     "teacher requests in flight at once"),
        S("TEACHER_PREFLIGHT", "1", "1: check the teacher's name and port before the first stage"),
        S("SAMPLE_GPUS", lambda s: _gpu_split(s, 0), "the student's sampling GPUs beside a teacher served here "
                                                     "(comma list; default: the lower half)"),
        S("TEACHER_GPUS", lambda s: _gpu_split(s, 1), "the GPUs of a teacher served here (default: the upper half)"),
        S("TEACHER_TP", lambda s: str(tensor_parallel_size(_count(s["TEACHER_GPUS"]))),
          "the served teacher's tensor-parallel size"),
        S("TEACHER_GPU_MEM", "0.9", "the served teacher's --gpu-memory-utilization"),
        S("TEACHER_SERVE_ARGS", "", "more vLLM api_server flags for the teacher served here, word-split"),
    )


def _training_settings() -> tuple[Setting, ...]:
    """Evaluation, the next iteration's data, training and the machinery."""
    S = Setting
    return (
        # --- evaluation and the next iteration's data
        S("EVAL_DATASETS", "gsm8k math aqua mathqa svamp theoremqa", "the test sets of every evaluation"),
        S("EVAL_EXTRA_ARGS", "", "more eval.py flags, word-split"),
        S("ORIGINAL_DATA", "{DATA_DIR}/train/{MODE}/mathinstruct.json", "iteration-0 data"),
        _generate("INCLUDE_ORIGINAL", "include_original_data", "add the original data to every iteration's"),
        _generate("INCLUDE_PRE_ITER", "include_pre_iter_data", "add the previous iteration's data"),
        _generate("CHECK_RESULT", "check_result", "keep only samples whose <<...>> annotations hold"),
        S("MAX_PER_QUESTION", "", "keep at most this many samples per question (empty: no cap)"),
        S("FILTER_ARGS", "", "more generate_train_data.py flags, word-split (empty: the original's filter)"),
        # --- training (train.py flags)
        S("ACCELERATE_CONFIG", "default_config_deepspeed_ga2.yaml", "accelerate launch --config_file"),
        _train("BATCH_SIZE", "batch_size", "micro-batch per process"),
        _train("GRAD_ACC", "gradient_accumulation_steps", "accumulation (a DeepSpeed config's value wins)"),
        _train("LEARNING_RATE", "learning_rate", "peak learning rate"),
        _train("WEIGHT_DECAY", "weight_decay", "the paper's 0 (train.py alone defaults to the original's 1e-6)"),
        _train("N_EPOCHS", "n_epochs", "epochs per iteration"),
        _train("MAX_STEPS", "max_steps", "cap on optimizer steps (-1: the epochs)"),
        _train("WARMUP_STEP", "warmup_step", "warm-up steps (-1: 10% of the steps)"),
        _train("LR_SCHEDULER", "lr_scheduler", "linear | cosine"),
        _train("MAX_INPUT_LENGTH", "max_input_length", "tokens per training example"),
        _train("KEEP_NUM_CKPT", "keep_num_ckpt", "resumable checkpoints kept"),
        _train("SAVING_STEP_FREQ", "saving_step_freq", "a resumable checkpoint every N steps (0: per epoch only)"),
        _train("GRADIENT_CHECKPOINTING", "gradient_checkpointing", "recompute activations (less GPU memory)"),
        _train("TORCH_DTYPE", "torch_dtype", "dtype the weights load in (auto: bf16 under DeepSpeed bf16)"),
        S("TRAIN_PROCS", "", "training processes (empty: ACCELERATE_CONFIG's num_processes)"),
        S("GLOBAL_BATCH", "", "set: DeepSpeed accumulation = GLOBAL_BATCH / (BATCH_SIZE x TRAIN_PROCS)"),
        S("MAIN_PROCESS_PORT", "0", "torch.distributed rendezvous port; 0: a free one (shared nodes)"),
        S("TRAIN_EXTRA_ARGS", "", "more train.py flags, word-split (e.g. --adam_beta2 0.98)"),
        S("TRAIN_TOKENIZE_ARGS", "", "train.py tokenization flags (docs/FIDELITY.md); empty: BOS, no strip"),
        # --- machinery
        S("DRY_RUN", "0", "1: print the settings and each stage's command instead of running it",
          choices=("0", "1")),
        S("STAGE_RETRIES", "0", "reruns of a failed stage (outputs cleared first: nothing duplicated)"),
    )


def _method_settings() -> tuple[Setting, ...]:
    """The settings of the three methods' scripts (scripts/_iwsi.sh, _srit.sh, _tripost.sh)."""
    S = Setting
    return (
        # --- IWSI (arXiv 2408.09849)
        S("IWSI_VARIANT", "", "iwsi: drop the most shifted samples; iwsi_w: weight them; lmsi: vote only",
          choices=("iwsi", "iwsi_w", "lmsi")),
        _generate("KEEP_FRACTION", "keep_fraction", "k: keep floor(k * n) lowest-DS samples"),
        _generate("DS_SPAN", "ds_span", "full: 'Q: ..\\nA: ..' (the official code); rationale: under the "
                                        "student prompt"),
        _generate("DS_REFERENCE_CLIP", "ds_reference_clip", "true: the official clipping of w'"),
        S("DS_MODEL", "{MODEL_PATH}", "the frozen pre-trained model scoring w'"),
        S("IWSI_CLIP", "2.0", "iwsi_w: C in min(w', C)"),
        flag_setting("VALID_FRACTION", ValidSplitConfig, "fraction", "share of VALID_SOURCE in the valid set"),
        S("VALID_SOURCE", "{ORIGINAL_DATA}", "labelled data the valid set is drawn from"),
        # --- Self-Refine Instruction-Tuning (arXiv 2405.00402)
        S("TEACHER_PATH", "", "teacher model sampled for the demonstrations (empty: ORIGINAL_DATA)"),
        S("TEACHER_SAMPLE_NUM", "4", "teacher samples per pool question"),
        S("TEACHER_KEEP", "1", "demonstrations kept per question"),
        S("ROUNDS", "1", "DPO rounds (phase 2 repeated on the newest model)"),
        _generate("PAIR_MODE", "pair_mode", "self | teacher | mixed"),
        _generate("MAX_PAIRS", "max_pairs_per_question", "pairs per question"),
        S("DPO_BETA", "0.1", "DPO beta"),
        S("DPO_EPOCHS", "1", "DPO epochs"),
        S("DPO_LR", "5e-7", "DPO learning rate"),
        S("DPO_BATCH", "4", "DPO micro-batch per process"),
        S("DPO_GRAD_ACC", "1", "DPO accumulation (with GLOBAL_BATCH set: the one keeping it)"),
        S("DPO_EXTRA_ARGS", "", "more train_dpo.py (trl.DPOConfig) flags, word-split"),
        # --- TriPosT
        flag_setting("TRIPOST_VERIFIER", EditConfig, "verifier", "process | teacher (TEACHER_MODEL, temperature 0)"),
        flag_setting("TRIPOST_IMPROVER", EditConfig, "improver", "scripted | teacher (temperature 0.7)"),
        flag_setting("TRIPOST_MAX_UPDATES", EditConfig, "max_updates", "updates per trajectory (official: 5)"),
        S("TRIPOST_WINDOW", "64", "questions per resumable window of the edit stage"),
        _generate("IMPROVE_RATIO", "improve_ratio", "p: ceil(n_improvement / p) non-improvement and as many "
                                                    "gold examples"),
        S("SECTION_WEIGHT", "1.5", "weight of the tokens from the first 'Feedback:' on (official 1.5)"),
        S("SELF_IMPROVE_ROUNDS", "2", "evaluation: rounds of own feedback and revision"),
        S("TRIPOST_N_EPOCHS", "{N_EPOCHS}", "epochs of the TriPosT iterations"),
        S("TRIPOST_LEARNING_RATE", "{LEARNING_RATE}", "learning rate of the TriPosT iterations"),
        S("TRIPOST_MAX_STEPS", "{MAX_STEPS}", "step cap of the TriPosT iterations"),
    )


def _settings() -> tuple[Setting, ...]:
    return _experiment_settings() + _sampling_settings() + _training_settings() + _method_settings()


SETTINGS: tuple[Setting, ...] = _settings()
SETTING_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
PROFILES: dict[str, dict[str, Value]] = _profiles()


# ------------------------------------------------------------------------------------------------ resolution
def _whole(s: Settings, name: str) -> int:
    try:
        return int(s[name])
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got {s[name]!r}") from None


def resolve(recipe: dict[str, str], env: dict[str, str] | None = None) -> Settings:
    """Every setting: ``env`` (default: os.environ) over the script's ``recipe`` over the profile and defaults."""
    unknown = sorted(set(recipe) - set(SETTING_BY_NAME))
    if unknown:
        raise UsageError(f"the script sets {', '.join(unknown)}, which src/profiles.py does not know")
    env = {k: v for k, v in (os.environ if env is None else env).items() if k in SETTING_BY_NAME and v}
    profile = env.get("PROFILE") or recipe.get("PROFILE") or str(SETTING_BY_NAME["PROFILE"].default)
    if profile not in PROFILES:
        raise UsageError(f"unknown PROFILE {profile!r} ({' or '.join(PROFILES)})")
    s = Settings(PROFILES[profile], recipe, env)
    for setting in SETTINGS:
        value = s[setting.name]
        if setting.choices and value and value not in setting.choices:
            raise UsageError(f"unknown {setting.name} {value!r} ({', '.join(setting.choices)})")
    _check_tiny_setup(s)
    return s


def _check_tiny_setup(s: Settings) -> None:
    if s["TINY_SETUP"] != "1":
        return
    if s["PROFILE"] != "tiny":
        raise UsageError("TINY_SETUP=1 needs PROFILE=tiny")
    if s["MODEL_PATH"] != f"{s['TINY_BASE_DIR']}/base/model" or s["DATA_DIR"] != f"{s['TINY_BASE_DIR']}/world/data":
        raise UsageError(f"TINY_SETUP=1 builds the base in TINY_BASE_DIR={s['TINY_BASE_DIR']}, but MODEL_PATH or "
                         "DATA_DIR points elsewhere: set TINY_BASE_DIR, or TINY_SETUP=0 to use MODEL_PATH and "
                         "DATA_DIR as they are")


def _global_batch_accumulation(s: Settings, batch_setting: str) -> str:
    """DeepSpeed's accumulation keeping GLOBAL_BATCH on TRAIN_PROCS processes (rounded up); '' when unset."""
    if not s["GLOBAL_BATCH"]:
        return ""
    per_step = _whole(s, batch_setting) * (_whole(s, "TRAIN_PROCS") if s["TRAIN_PROCS"] else 1)
    return str(-(-_whole(s, "GLOBAL_BATCH") // per_step))


def derived(s: Settings) -> dict[str, str]:
    """Values the stages compute from the settings (not settings themselves: nobody sets them)."""
    served_teacher = s["STRATEGY"] == "teacher_help" and s["TEACHER_SERVE_PATH"] and s["SAMPLE_GPUS"]
    return {
        "INFERENCE_SCRIPT": SCRIPTS[s["STRATEGY"]],
        # the student's sampling engine on SAMPLE_GPUS when a teacher is served on the others
        "SAMPLE_DEVICE_NUM": str(tensor_parallel_size(_count(s["SAMPLE_GPUS"]))) if served_teacher
        else s["DEVICE_NUM"],
        "DS_GRAD_ACC": _global_batch_accumulation(s, "BATCH_SIZE"),
        "DPO_DS_GRAD_ACC": _global_batch_accumulation(s, "DPO_BATCH"),
    }


# ------------------------------------------------------------------------------------------------ display
def _load_dtype(s: Settings) -> str:
    """What train.py --torch_dtype auto resolves to under ACCELERATE_CONFIG (src.training.load_dtype)."""
    config = s["ACCELERATE_CONFIG"]
    if s["TORCH_DTYPE"] != "auto":
        return s["TORCH_DTYPE"]
    try:
        lines = Path(config).read_text().splitlines()
    except OSError:
        lines = []
    def has(prefix: str) -> bool:
        return any(line.startswith(prefix) for line in lines)

    if has("distributed_type: DEEPSPEED") and has("mixed_precision: bf16"):
        return f"auto = bfloat16 (DeepSpeed bf16 in {config})"
    return f"auto = float32 ({config} has no DeepSpeed bf16)"


def _teacher_line(s: Settings) -> str:
    if s["STRATEGY"] != "teacher_help":
        return "not used"
    line = f"'{s['TEACHER_MODEL']}' at {s['TEACHER_BASE_URL']}, {s['TEACHER_CONCURRENCY']} requests in flight"
    if s["TEACHER_SERVE_PATH"]:
        line += (f"; served here from {s['TEACHER_SERVE_PATH']} on GPUs {s['TEACHER_GPUS'] or 'all'} (tensor "
                 f"parallel {s['TEACHER_TP']}, memory {s['TEACHER_GPU_MEM']}), student sampling on GPUs "
                 f"{s['SAMPLE_GPUS'] or 'all'}")
    return line


def hardware_summary(s: Settings) -> list[str]:
    """The hardware-dependent settings, "name: value" (DRY_RUN prints them; a run logs them)."""
    multiprocessing = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") or \
        "unset: vLLM default (src/engine.py: in-process on CPU only)"
    accumulation = _global_batch_accumulation(s, "BATCH_SIZE")
    return [
        f"gpus: {s['NUM_GPUS'] or 0} ({s['GPU_IDS'] or 'none'})",
        f"vllm tensor parallel (DEVICE_NUM): {s['DEVICE_NUM']}",
        f"vllm multiprocessing: {multiprocessing}", "vllm dtype: auto",
        f"train processes: {s['TRAIN_PROCS'] or 'from the config'} ({s['ACCELERATE_CONFIG']})",
        f"train main_process_port: {s['MAIN_PROCESS_PORT']} (0: a free port)",
        "deepspeed accumulation: " + (f"{accumulation} (global batch {s['GLOBAL_BATCH']})" if accumulation
                                      else "from the config"),
        f"train load dtype: {_load_dtype(s)}",
        f"gradient checkpointing: {s['GRADIENT_CHECKPOINTING']}",
        f"step checkpoints: every {s['SAVING_STEP_FREQ']} steps (0: off), newest {s['KEEP_NUM_CKPT']} kept",
        f"pot workers: {s['POT_WORKERS']}", f"teacher: {_teacher_line(s)}",
    ]


def shell_assignments(s: Settings) -> str:
    """Bash assignments of every setting, the derived values, GSI_SUMMARY and GSI_SETTING_LINES."""
    values = {**{setting.name: s[setting.name] for setting in SETTINGS}, **derived(s),
              "GSI_SUMMARY": "\n".join(hardware_summary(s)),
              "GSI_SETTING_LINES": "\n".join(f"{setting.name}={s[setting.name]}  ({s.source[setting.name]})"
                                             for setting in SETTINGS)}
    return "\n".join(f"{name}={shlex.quote(value)}" for name, value in values.items())


def settings_table(profile: str) -> str:
    """Every setting with its default under ``profile`` (this machine's GPUs) and what it is for."""
    s = resolve({"PROFILE": profile}, env={})
    width = max(len(setting.name) for setting in SETTINGS)
    return "\n".join(f"{setting.name:<{width}}  {s[setting.name]!r:<28}  {setting.help}" for setting in SETTINGS)


# ------------------------------------------------------------------------------------------------ command line
def _recipe(assignments: list[str]) -> dict[str, str]:
    recipe = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"expected NAME=VALUE, got {item!r}")
        recipe[name] = value
    return recipe


def main(argv: list[str] | None = None) -> int:
    ap = one_line_errors(argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0]), PROG)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sh = sub.add_parser("shell", help="bash assignments of every setting (scripts/_common.sh evaluates them)")
    sh.add_argument("recipe", nargs="*", metavar="NAME=VALUE", help="the script's own settings")
    ls = sub.add_parser("list", help="every setting, its default and what it is for")
    ls.add_argument("--profile", default="llama3", choices=list(PROFILES))
    args = ap.parse_args(argv)

    def body() -> None:
        print(shell_assignments(resolve(_recipe(args.recipe))) if args.cmd == "shell" else
              settings_table(args.profile))

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
