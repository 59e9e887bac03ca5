"""The original code's command lines run unchanged: every flag of its train.py / inference*.py accepted with its
defaults, its README's eval.py command (a real run on the tiny model) and its README's lower-case call of
scripts/_template_inference.sh (the command it runs goes through the real inference CLI up to the engine start)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def test_train_accepts_the_original_template_flags(tmp_path):
    # the original scripts/_template.sh call (its values), on a model that does not exist: parsed and checked
    # up to the model check, so every flag was accepted
    train_file = tmp_path / "train.json"
    train_file.write_text(json.dumps([{"item_id": "a", "question": "q", "answer_cot": "c", "answer_value": "1"}]))
    argv = ["--model_name_or_path", str(tmp_path / "no_model"), "--tokenizer_name_or_path", str(tmp_path / "no_model"),
            "--train_file", str(train_file), "--model_dir", str(tmp_path / "iter_0"), "--batch_size", "4",
            "--n_epochs", "1", "--num_workers", "8", "--learning_rate", "1e-5", "--weight_decay", "0",
            "--warmup_step", "-100", "--clip_grad_norm", "1", "--logging_epoch_freq", "1", "--saving_epoch_freq", "1",
            "--logging_step_freq", "10", "--seed", "42", "--max_input_length", "1024",
            "--gradient_accumulation_steps", "2", "--keep_num_ckpt", "0", "--wandb_log", "True", "--wandb_project",
            "self_improve", "--wandb_run_name", "exp", "--engine", "nl"]
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no_model" in proc.stderr and "unrecognized" not in proc.stderr, proc.stderr


def test_omitted_train_flags_take_the_originals_defaults():
    helptext = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True,
                              timeout=120).stdout
    expected = {"n_epochs": "40", "learning_rate": "2e-05", "weight_decay": "1e-06", "warmup_step": "0",
                "max_input_length": "700", "engine": "python", "batch_size": "4", "seed": "42"}
    for flag, value in expected.items():
        entry = re.search(rf"\n  --{flag} .*?(?=\n  -|\Z)", helptext, re.S)  # the flag's own help entry
        assert entry and f"(default: {value})" in " ".join(entry.group(0).split()), (flag, value)


def test_omitted_inference_flags_take_the_originals_defaults(tmp_path, monkeypatch):
    from src.sampling import cli
    from src.sampling.loop import SamplingConfig
    from src.training import TrainConfig

    seen = {}

    class Parsed(Exception):
        pass

    def capture(strategy, data, cfg, engine_cfg, teacher_cfg):
        seen["cfg"] = cfg
        raise Parsed

    monkeypatch.setattr(cli, "check_sampling_args", capture)
    with pytest.raises(Parsed):
        cli.main("state_reset", ["--model_name_or_path", "m", "--inference_data_file", "p.json", "--dataset_name",
                                 "gsm8k", "--results_path", str(tmp_path / "out")])
    cfg = seen["cfg"]
    assert (cfg.temperature, cfg.sample_num, cfg.min_correct_num, cfg.max_resample_num, cfg.max_new_tokens) == \
        (0.0, 10, 3, 20, 1024)
    # the in-process configs keep the paper's values
    assert TrainConfig("m", "f", "d").n_epochs == 1 and SamplingConfig().sample_num == 8


def test_readme_template_inference_call_runs_the_inference_cli(tmp_path, tiny_model_dir, shared_data, monkeypatch):
    """The README's call, with its lower-case variables, runs inference_state_reset.py with the original's
    flags; that command passes the real CLI's parsing and every check up to the engine start."""
    from src import engine
    from src.sampling import cli

    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(json.loads((shared_data / "inference" / "cot" / "gsm8k.json").read_text())[:3]))
    readme = {"python_script": "inference_state_reset.py", "model_path": str(tiny_model_dir),
              "results_path": "output/inference_data", "temperature": "0.7", "dataset_name": "gsm8k",
              "min_correct_num": "4", "device_num": "1", "sample_num": "8", "max_resample_num": "8",
              "max_length": "1024", "inference_data_file": str(pool), "mode": "cot",
              "log_file": "output/inference.log"}
    proc = subprocess.run(["bash", "./scripts/_template_inference.sh"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **readme, "DRY_RUN": "1"})
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("[dry-run] sample:")]
    argv = shlex.split(line.split(":", 1)[1])
    assert Path(argv[0]).name.startswith("python") and argv[1] == "inference_state_reset.py"
    assert argv[argv.index("--results_path") + 1] == "output/inference_data"

    class EngineReached(Exception):
        pass

    def forbidden(*args, **kwargs):
        raise EngineReached

    monkeypatch.setattr(engine, "build_llm", forbidden)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EngineReached):
        cli.main("state_reset", argv[2:])


def test_readme_eval_command_runs_unchanged(tmp_path, tiny_model_dir, shared_data):
    """python3 eval.py ... as in the original README (a tiny model and three GSM8K items substituted), from a
    checkout whose output/ is this test's folder."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("eval.py", "src"):
        (checkout / name).symlink_to(REPO / name)
    test = tmp_path / "gsm8k.json"
    test.write_text(json.dumps(json.loads((shared_data / "test" / "gsm8k.json").read_text())[:3]))
    variables = {"model_dir": str(tiny_model_dir), "dataset_name": "gsm8k", "numgpu": "1",
                 "eval_data_file": str(test), "max_length": "16", "mode": "cot"}
    command = """python3 eval.py \\
    --model_name_or_path ${model_dir} \\
    --results_path "output/eval_data" \\
    --temperature 0.0 \\
    --dataset_name ${dataset_name} \\
    --device_num ${numgpu} \\
    --eval_data_file  ${eval_data_file} \\
    --max_length ${max_length} \\
    --mode ${mode}"""
    env = {**os.environ, **variables, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", command], cwd=checkout, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    items = json.loads((checkout / "output" / "eval_data" / "gsm8k_res.json").read_text())
    assert [i["item_id"] for i in items] == [r["item_id"] for r in json.loads(test.read_text())]


@pytest.mark.parametrize(("script", "grader"), [("scripts/llama3/pot_train_uniform.sh", "reference"),
                                                ("scripts/tiny/cot_train_uniform.sh", "project")])
def test_profiles_grade_with_their_grader(script, grader, tmp_path):
    proc = subprocess.run(["bash", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DRY_RUN": "1", "NUM_ITERS": "1", "MODEL_PATH": "/m", "TINY_SETUP": "0",
                               "OUTPUT_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    stages = {ln.split(":", 1)[0]: shlex.split(ln.split(":", 1)[1]) for ln in proc.stdout.splitlines()
              if ln.startswith("[dry-run] ")}
    for stage in ("[dry-run] eval", "[dry-run] sample"):
        argv = stages[stage]
        assert argv[argv.index("--grader") + 1] == grader
