"""The shell scripts: syntax, the paper's settings and layout of the Llama-3 scripts, their commands accepted by the
real command-line parsers, and the Llama-3 script's data, eval, sampling and generate commands actually run with
the tiny model and synthetic data substituted through environment variables (a typo in a cluster script fails
here)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import HfArgumentParser

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
TAGS = ("iter_original", "uniform", "answer_driven", "rationale_driven", "teacher_help", "state_reset")
LLAMA3 = [SCRIPTS / "llama3" / f"{mode}_train_{tag}.sh" for mode in ("cot", "pot") for tag in TAGS]
TINY = [SCRIPTS / "tiny" / f"cot_train_{tag}.sh" for tag in TAGS]
ALL = sorted(SCRIPTS.glob("*.sh")) + sorted(SCRIPTS.glob("*/*.sh"))


IWSI = [SCRIPTS / "llama3" / "cot_train_iwsi.sh", SCRIPTS / "llama3" / "pot_train_iwsi.sh",
        SCRIPTS / "tiny" / "cot_train_iwsi.sh"]  # the IWSI method (scripts/_iwsi.sh; tests/test_iwsi.py)
SRIT = [SCRIPTS / "llama3" / "cot_train_srit.sh", SCRIPTS / "llama3" / "srit_phase1.sh",
        SCRIPTS / "tiny" / "cot_train_srit.sh", SCRIPTS / "tiny" / "srit_phase1.sh"]  # scripts/_srit.sh; test_dpo.py
TRIPOST = [SCRIPTS / "llama3" / "cot_train_tripost.sh", SCRIPTS / "tiny" / "cot_train_tripost.sh"]  # test_tripost.py


def test_the_original_script_names_exist_and_nothing_else():
    assert sorted(SCRIPTS.glob("llama3/*.sh")) == sorted(LLAMA3 + IWSI[:2] + SRIT[:2] + TRIPOST[:1])
    assert sorted(SCRIPTS.glob("tiny/*.sh")) == sorted(TINY + IWSI[2:] + SRIT[2:] + TRIPOST[1:])
    assert {p.name for p in SCRIPTS.glob("*.sh")} == {"_common.sh", "_template.sh", "_template_inference.sh",
                                                      "_iwsi.sh", "_srit.sh", "_tripost.sh"}


@pytest.mark.parametrize("script", ALL, ids=lambda p: str(p.relative_to(SCRIPTS)))
def test_bash_syntax(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if script.name != "_common.sh":
        assert "set -euo pipefail" in script.read_text()


def recipe_and_shape(path: Path) -> tuple[list[str], tuple[str, ...]]:
    """The NAME=VALUE words a script gives `source _common.sh`, and its code lines without them."""
    code = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    joined = "\n".join(code).replace(" \\\n", " ")  # continuation lines joined
    lines = joined.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("source ") and "/_common.sh" in line)
    command, words = lines[i].split('_common.sh"', 1)
    return shlex.split(words), tuple(lines[:i] + [command + '_common.sh"'] + lines[i + 1:])


def test_iteration_scripts_differ_only_in_their_settings_line():
    shapes = set()
    for script in LLAMA3 + TINY:
        recipe, shape = recipe_and_shape(script)
        assert recipe[0].startswith("PROFILE=") and all("=" in word for word in recipe), script
        shapes.add(shape)
    assert len(shapes) == 1, "iteration scripts must share everything but their settings"


# ---------------------------------------------------------------------------------------------------------------
PAPER_NODE = {"GPU_IDS": "0 1 2 3 4 5 6 7"}  # the paper's 8 GPUs, whatever this machine has


def dry_run_output(script: Path, cwd: Path | None = None, **env: str) -> str:
    """The script's DRY_RUN=1 output (settings, preflight and stage lines)."""
    # the in-process test engine sets VLLM_ENABLE_V1_MULTIPROCESSING for this process: a user's shell has not
    base = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    proc = subprocess.run(["bash", str(script)], env={**base, "DRY_RUN": "1", **PAPER_NODE, **env},
                          capture_output=True, text=True, timeout=120, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def settings(output: str) -> dict[str, str]:
    """The "[settings] name: value" lines of a dry run."""
    return dict(line[len("[settings] "):].split(": ", 1) for line in output.splitlines()
                if line.startswith("[settings] "))


def dry_run(script: Path, **env: str) -> list[tuple[str, list[str]]]:
    """(stage, argv) of every stage the script would run, in order."""
    stages = []
    for line in dry_run_output(script, **env).splitlines():
        if line.startswith("[dry-run] "):
            name, command = line[len("[dry-run] "):].split(":", 1)
            stages.append((name, shlex.split(command)))
    return stages


def flags(argv: list[str], flag: str) -> list[str]:
    """The values after ``flag`` up to the next flag."""
    i = argv.index(flag)
    out = []
    for value in argv[i + 1:]:
        if value.startswith("--"):
            break
        out.append(value)
    return out


def parse(argv: list[str]):
    """Parse a stage's arguments with the real parser of the program it runs (unknown flags fail)."""
    from src.engine import EngineConfig
    from src.evaluation import EvalConfig
    from src.filtering import GenerateConfig
    from src.sampling.cli import DataArguments
    from src.sampling.loop import SamplingConfig
    from src.sampling.teacher import TeacherConfig
    from src.training import TrainConfig

    program = next(Path(a).name for a in argv if a.endswith(".py"))
    args = argv[[Path(a).name for a in argv].index(program) + 1:]
    if program == "train.py":
        types = [TrainConfig]
    elif program == "eval.py":
        types = [EvalConfig]
    elif program == "generate_train_data.py":
        types = [GenerateConfig]
    else:
        types = [DataArguments, SamplingConfig, EngineConfig]
        if program == "inference_teacher_help.py":
            types.append(TeacherConfig)
    return program, HfArgumentParser(types).parse_args_into_dataclasses(args=args)


# The paper's settings as SPEC.md states them: what src/profiles.py and the stages' dataclasses must reproduce
# (written from the spec, not read from the code under test)
PAPER_TRAIN = {"batch_size": 4, "learning_rate": 1e-5, "n_epochs": 1, "max_input_length": 1024, "seed": 42}
PAPER_SAMPLING = {"sample_num": 8, "min_correct_num": 4, "temperature": 0.7, "max_new_tokens": 1024}
MAX_RESAMPLE = {"iter_original": 0, "answer_driven": 8, "rationale_driven": 8, "teacher_help": 8, "state_reset": 8}
SCRIPT_OF = {"iter_original": "inference.py", "uniform": "inference.py"}


@pytest.mark.parametrize("script", LLAMA3, ids=lambda p: p.name)
def test_llama3_scripts_use_the_papers_settings_and_layout(script, tmp_path):
    mode, tag = script.stem.split("_train_")
    max_resample = MAX_RESAMPLE.get(tag, 128 if mode == "cot" else 32)
    stages = dry_run(script, MODEL_PATH="/models/Meta-Llama-3-8B", OUTPUT_DIR=str(tmp_path), DATA_DIR="data")
    exp = tmp_path / f"llama3-8b_{mode}" / f"{tag}_sample_8_correct_4_max_{max_resample}_orig_false_preiter_false"
    assert [s for s, _ in stages] == ["data"] + ["train", "eval", "sample", "generate"] * 4  # 4 iterations
    assert stages[0][1][1:] == [f"data/train/{mode}/mathinstruct.json", str(exp / "iter_data" / "train_iter_0.json")]
    for i in range(4):
        train, ev, sample, gen = (argv for _, argv in stages[1 + 4 * i: 5 + 4 * i])
        it = exp / f"iter_{i}"
        assert train[1:4] == ["launch", "--config_file", "default_config_deepspeed_ga2.yaml"]
        _, (tcfg,) = parse(train)
        # every iteration retrains from the base model on that iteration's data (SPEC.md)
        assert tcfg.model_name_or_path == "/models/Meta-Llama-3-8B" and tcfg.model_dir == str(it)
        assert tcfg.train_file == str(exp / "iter_data" / f"train_iter_{i}.json")
        assert {k: getattr(tcfg, k) for k in PAPER_TRAIN} == PAPER_TRAIN
        _, (ecfg,) = parse(ev)
        assert ecfg.model_name_or_path == str(it / "model") and ecfg.results_path == str(it / "eval_data")
        assert ecfg.dataset_name == ["gsm8k", "math", "aqua", "mathqa", "svamp", "theoremqa"]
        assert ecfg.eval_data_file == [f"data/test/{n}.json" for n in
                                       ("gsm8k", "math", "aqua_rat", "mathqa", "svamp", "theoremqa")]
        assert (ecfg.temperature, ecfg.mode, ecfg.device_num, ecfg.max_length) == (0, mode, 8, 1024)
        program, (data, scfg, engine, *teacher) = parse(sample)
        assert program == SCRIPT_OF.get(tag, f"inference_{tag}.py")
        assert data.dataset_name == ["gsm8k", "math", "aqua"] and data.results_path == str(it / "inference_data")
        assert data.inference_data_file == [f"data/inference/{mode}/{n}.json" for n in ("gsm8k", "math", "aqua_rat")]
        assert {k: getattr(scfg, k) for k in PAPER_SAMPLING} == PAPER_SAMPLING
        assert (scfg.max_resample_num, scfg.mode) == (max_resample, mode)
        assert engine.model_name_or_path == str(it / "model") and engine.device_num == 8
        assert bool(teacher) == (tag == "teacher_help")
        _, (gcfg,) = parse(gen)
        assert gcfg.cur_sampled_data_path == [str(it / "inference_data")]
        assert gcfg.next_iter_data_path == str(exp / "iter_data" / f"train_iter_{i + 1}.json")
        assert (gcfg.include_original_data, gcfg.include_pre_iter_data) == (False, False)


@pytest.mark.parametrize("script", TINY, ids=lambda p: p.name)
def test_tiny_scripts_start_from_the_demos_base_and_parse(script, tmp_path):
    from src.demo import DemoConfig

    base_dir = tmp_path / "demo"
    stages = dry_run(script, OUTPUT_DIR=str(tmp_path), TINY_BASE_DIR=str(base_dir))
    assert [s for s, _ in stages] == ["base", "data"] + ["train", "eval", "sample", "generate"] * 4
    # the demo's own world and base stages (scripts/tiny/base.py), cached in TINY_BASE_DIR
    assert stages[0][1][1:] == ["scripts/tiny/base.py", "--out_dir", str(base_dir)]
    assert stages[1][1][1] == str(base_dir / "world" / "data" / "train" / "cot" / "synthetic.json")  # O
    train = stages[2][1]
    assert train[1:4] == ["launch", "--config_file", "configs/accelerate_cpu_zero2_2proc.yaml"]
    assert (REPO / train[3]).is_file()
    for _, argv in stages[2:]:
        parse(argv)
    _, (tcfg,) = parse(train)
    # every iteration retrains the demo's base as the demo trains its arms: same steps, rate and sequences per step
    demo = DemoConfig()
    assert tcfg.model_name_or_path == str(base_dir / "base" / "model")
    assert (tcfg.max_steps, tcfg.learning_rate, tcfg.batch_size * 2, tcfg.warmup_step, tcfg.lr_scheduler,
            tcfg.adam_beta2) == (demo.arm_steps, demo.arm_lr, demo.batch_size, demo.arm_steps // 20, "cosine", 0.98)
    _, (ecfg,) = parse(stages[3][1])
    assert ecfg.eval_data_file == [str(base_dir / "world" / "data" / "test" / f"{n}.json")
                                   for n in ("synthetic", "synthetic_heldout")]
    _, (gcfg,) = parse(stages[5][1])
    assert gcfg.check_result  # the embedded default keeps only samples whose chain holds


def test_tiny_setup_only_without_a_given_model_or_data(tmp_path):
    """A MODEL_PATH or DATA_DIR given is used as it is (tests inject a small model); TINY_SETUP=1 would build the
    base elsewhere, in TINY_BASE_DIR, so it refuses them."""
    script = SCRIPTS / "tiny" / "cot_train_state_reset.sh"
    for given in ({"MODEL_PATH": str(tmp_path / "m")}, {"DATA_DIR": str(tmp_path / "w")}):
        stages = dry_run(script, OUTPUT_DIR=str(tmp_path), **given)
        assert stages[0][0] == "data"  # no base stage
        if "MODEL_PATH" in given:
            assert flags(stages[1][1], "--model_name_or_path") == [given["MODEL_PATH"]]
        env = {**os.environ, "DRY_RUN": "1", "OUTPUT_DIR": str(tmp_path), "TINY_SETUP": "1", **given}
        proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "TINY_SETUP=0" in proc.stderr and "[dry-run]" not in proc.stdout


SMALL_BASE = ["--n_original", "40", "--n_pool", "8", "--test_per_level", "2", "--base_steps", "2",
              "--batch_size", "4", "--progress", "false"]


def test_tiny_setup_runs_the_demos_world_and_base_stages_once(tmp_path):
    """The tiny script's setup for real (a 2-step base): the demo's stages and markers; a rerun finds them cached."""
    env = {**os.environ, "OUTPUT_DIR": str(tmp_path), "NUM_ITERS": "0", "TINY_BASE_ARGS": " ".join(SMALL_BASE)}
    first = subprocess.run(["bash", str(SCRIPTS / "tiny" / "cot_train_state_reset.sh")], env=env, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    base_dir = tmp_path / "demo"
    assert f"MODEL_PATH={base_dir / 'base' / 'model'}" in first.stderr and "[run] base" in first.stderr
    for stage in ("world", "base"):
        assert json.loads((base_dir / stage / "stage.json").read_text())["stage"] == stage
    assert (base_dir / "base" / "model" / "config.json").is_file()
    exp = tmp_path / "tiny_cot" / "state_reset_sample_8_correct_4_max_8_orig_false_preiter_false"
    assert (exp / "iter_data" / "synthetic_iter_0.json").read_bytes() == \
        (base_dir / "world" / "data" / "train" / "cot" / "synthetic.json").read_bytes()
    weights = (base_dir / "base" / "model" / "model.safetensors").stat().st_mtime_ns
    again = subprocess.run([sys.executable, "scripts/tiny/base.py", "--out_dir", str(base_dir), *SMALL_BASE],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[cached] world" in again.stderr and "[cached] base" in again.stderr
    assert again.stdout.splitlines() == [f"DATA_DIR={base_dir / 'world' / 'data'}",
                                         f"MODEL_PATH={base_dir / 'base' / 'model'}"]
    assert (base_dir / "base" / "model" / "model.safetensors").stat().st_mtime_ns == weights


def test_tiny_base_bad_flag_is_one_line_and_writes_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/tiny/base.py", "--out_dir", str(tmp_path / "d"),
                           "--base_steps", "-1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["scripts/tiny/base.py: error: --base_steps must be >= 0, got -1"]
    assert not (tmp_path / "d").exists()


def test_override_of_every_setting_reaches_the_commands(tmp_path):
    stages = dry_run(LLAMA3[-1], MODEL_PATH="/m/base", OUTPUT_DIR=str(tmp_path), NUM_ITERS="1", SAMPLE_NUM="3",
                     MIN_CORRECT_NUM="2", MAX_RESAMPLE_NUM="5", TEMPERATURE="0.9", INCLUDE_ORIGINAL="true",
                     INCLUDE_PRE_ITER="true", CHECK_RESULT="true", MAX_PER_QUESTION="4", LEARNING_RATE="2e-5",
                     EXP_NAME="custom", MODEL_NAME="m")
    argv = dict(stages)
    assert flags(argv["sample"], "--sample_num") == ["3"] and flags(argv["sample"], "--temperature") == ["0.9"]
    assert flags(argv["sample"], "--max_resample_num") == ["5"]
    assert flags(argv["train"], "--learning_rate") == ["2e-5"]
    _, (gcfg,) = parse(argv["generate"])
    assert gcfg.include_original_data and gcfg.include_pre_iter_data and gcfg.check_result
    assert gcfg.max_per_question == 4
    assert gcfg.next_iter_data_path == str(tmp_path / "m_pot" / "custom" / "iter_data" / "train_iter_1.json")


def test_llama3_commands_run_with_the_tiny_model_and_synthetic_data(tmp_path, synthetic_dir,
                                                                    trained_tiny_model_dir):
    """The cluster script's own data, eval, sampling and generate commands, run for real on this machine."""
    env = {"MODEL_PATH": str(trained_tiny_model_dir), "DATA_DIR": str(synthetic_dir), "OUTPUT_DIR": str(tmp_path),
           "NUM_ITERS": "1", "TRAIN_DATASETS": "synthetic", "EVAL_DATASETS": "synthetic synthetic_heldout",
           "ORIGINAL_DATA": str(synthetic_dir / "train" / "cot" / "synthetic.json"), "DATA_NAME": "synthetic",
           "DEVICE_NUM": "1", "MAX_MODEL_LEN": "1024", "MAX_LENGTH": "96", "SAMPLE_NUM": "2", "MIN_CORRECT_NUM": "2",
           "MAX_RESAMPLE_NUM": "1", "CHECK_RESULT": "true", "INCLUDE_ORIGINAL": "true", "SEED": "0"}
    stages = dict(dry_run(SCRIPTS / "llama3" / "cot_train_state_reset.sh", **env))
    exp = tmp_path / "llama3-8b_cot" / "state_reset_sample_2_correct_2_max_1_orig_true_preiter_false"
    it = exp / "iter_0"

    def run(stage: str) -> None:
        proc = subprocess.run(stages[stage], cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, f"{stage}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"

    (exp / "iter_data").mkdir(parents=True)  # src.stages creates output folders before a stage runs
    run("data")
    assert (exp / "iter_data" / "synthetic_iter_0.json").read_bytes() == Path(env["ORIGINAL_DATA"]).read_bytes()
    shutil.copytree(trained_tiny_model_dir, it / "model")  # stands in for the train stage's output
    run("eval")
    metrics = json.loads((it / "eval_data" / "metrics.json").read_text())
    assert {n: m["n"] for n, m in metrics["datasets"].items()} == {"synthetic": 60, "synthetic_heldout": 60}
    run("sample")
    stats = json.loads((it / "inference_data" / "sampling_stats.json").read_text())
    assert stats["strategy"] == "state_reset" and stats["n_queries"] == 60
    run("generate")
    data = json.loads((exp / "iter_data" / "synthetic_iter_1.json").read_text())
    counts = json.loads((exp / "iter_data" / "synthetic_iter_1.counts.json").read_text())
    assert counts["total"]["kept"] == len(data) - counts["included"]["original"]
    assert counts["included"]["original"] == len(json.loads(Path(env["ORIGINAL_DATA"]).read_text()))


# ---------------------------------------------------------------------------------------------------------------
# Cluster: sbatch's spooled copy, the GPU allocation, the GPU settings of every Llama-3 script.
def test_a_spooled_copy_runs_with_gsi_repo(tmp_path):
    """sbatch runs a copy of the script from its spool folder: _common.sh is found through GSI_REPO."""
    spool = tmp_path / "slurmd" / "job42"
    spool.mkdir(parents=True)
    script = spool / "slurm_script"
    shutil.copy(SCRIPTS / "llama3" / "cot_train_state_reset.sh", script)
    env = {"MODEL_PATH": "/models/Meta-Llama-3-8B", "OUTPUT_DIR": str(tmp_path / "out"), "NUM_ITERS": "1"}
    stages = [line.split(":", 1)[0] for line in
              dry_run_output(script, cwd=spool, GSI_REPO=str(REPO), **env).splitlines()
              if line.startswith("[dry-run] ")]
    assert stages == ["[dry-run] data", "[dry-run] train", "[dry-run] eval", "[dry-run] sample",
                      "[dry-run] generate"]
    without = subprocess.run(["bash", str(script)], cwd=spool, capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in {**os.environ, "DRY_RUN": "1", **env}.items() if k != "GSI_REPO"})
    assert without.returncode != 0 and "_common.sh" in without.stderr  # why GSI_REPO is needed


@pytest.mark.parametrize("script", LLAMA3, ids=lambda p: p.name)
def test_llama3_dry_run_shows_the_gpu_settings(script, tmp_path):
    out = dry_run_output(script, MODEL_PATH="/m", OUTPUT_DIR=str(tmp_path))
    shown = settings(out)
    assert shown["vllm multiprocessing"].startswith("unset: vLLM default")
    assert shown["train main_process_port"].startswith("0 ") and shown["gpus"].startswith("8 ")
    assert shown["gradient checkpointing"] == "true"
    assert shown["train load dtype"].startswith("auto = bfloat16")
    assert shown["step checkpoints"].startswith("every 250 steps")
    train = dict(dry_run(script, MODEL_PATH="/m", OUTPUT_DIR=str(tmp_path)))["train"]
    assert flags(train, "--main_process_port") == ["0"] and flags(train, "--num_processes") == ["8"]
    _, (tcfg,) = parse(train)
    assert tcfg.gradient_checkpointing and tcfg.torch_dtype == "auto" and tcfg.saving_step_freq == 250
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in " ".join(" ".join(argv) for _, argv in dry_run(script))


@pytest.mark.parametrize(("allocation", "procs", "tensor_parallel", "accumulation"), [
    ({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 4, 4, 4),
    ({"CUDA_VISIBLE_DEVICES": "2,3,4,5,6,7"}, 6, 4, 3),  # 64 / (4 x 6) rounded up; tensor parallel a power of 2
    ({"SLURM_GPUS_ON_NODE": "2"}, 2, 2, 8),
])
def test_gpu_count_comes_from_the_allocation(allocation, procs, tensor_parallel, accumulation, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE")}
    env["PATH"] = "/usr/bin:/bin"  # no nvidia-smi: only the allocation's variables count
    proc = subprocess.run(["bash", str(SCRIPTS / "llama3" / "pot_train_state_reset.sh")], capture_output=True,
                          text=True, timeout=120, env={**env, **allocation, "DRY_RUN": "1", "NUM_ITERS": "1",
                                                       "MODEL_PATH": "/m", "OUTPUT_DIR": str(tmp_path),
                                                       "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    stages = {line.split(":", 1)[0][len("[dry-run] "):]: shlex.split(line.split(":", 1)[1])
              for line in proc.stdout.splitlines() if line.startswith("[dry-run] ")}
    assert flags(stages["train"], "--num_processes") == [str(procs)]
    assert flags(stages["train"], "--gradient_accumulation_steps")[0] == str(accumulation)  # accelerate's flag
    assert flags(stages["eval"], "--device_num") == [str(tensor_parallel)]
    assert flags(stages["sample"], "--device_num") == [str(tensor_parallel)]


def test_teacher_settings_port_and_colocated_split(tmp_path):
    out = dry_run_output(SCRIPTS / "llama3" / "cot_train_teacher_help.sh", MODEL_PATH="/m", NUM_ITERS="1",
                         OUTPUT_DIR=str(tmp_path), TEACHER_PORT="9123", TEACHER_CONCURRENCY="64", POT_WORKERS="12",
                         TEACHER_SERVE_PATH="/models/Meta-Llama-3-70B-Instruct")
    teacher = settings(out)["teacher"]
    assert "'Meta-Llama-3-70B-Instruct' at http://127.0.0.1:9123/v1, 64 requests in flight" in teacher
    assert "GPUs 4,5,6,7 (tensor parallel 4, memory 0.9), student sampling on GPUs 0,1,2,3" in teacher
    sample = dict(dry_run(SCRIPTS / "llama3" / "cot_train_teacher_help.sh", MODEL_PATH="/m", NUM_ITERS="1",
                          OUTPUT_DIR=str(tmp_path), TEACHER_PORT="9123", TEACHER_CONCURRENCY="64",
                          POT_WORKERS="12", TEACHER_SERVE_PATH="/models/Meta-Llama-3-70B-Instruct"))["sample"]
    assert sample[:2] == ["env", "CUDA_VISIBLE_DEVICES=0,1,2,3"] and flags(sample, "--device_num") == ["4"]
    _, (data, scfg, engine, tcfg) = parse(sample)
    assert tcfg.teacher_base_url == "http://127.0.0.1:9123/v1" and tcfg.teacher_max_concurrency == 64
    assert scfg.pot_workers == 12
    # a teacher on another node: checked before the first stage (name and port)
    remote = dry_run_output(SCRIPTS / "llama3" / "cot_train_teacher_help.sh", MODEL_PATH="/m", NUM_ITERS="1",
                            OUTPUT_DIR=str(tmp_path), TEACHER_BASE_URL="http://gpu07:8000/v1")
    lines = remote.splitlines()
    preflight = next(i for i, line in enumerate(lines) if line.startswith("[preflight] "))
    assert preflight < next(i for i, line in enumerate(lines) if line.startswith("[dry-run] data"))
    assert "--teacher_base_url http://gpu07:8000/v1" in lines[preflight]
