"""DPO stage of Self-Refine Instruction-Tuning (train_dpo.py over trl.DPOTrainer): the loss of a worked example
through TRL's own loss code, real `accelerate launch` runs with DeepSpeed ZeRO-2 on CPU (1 process x accumulation 2
vs 2 processes x accumulation 1), one epoch on pairs generated from the session engine's samples then reloaded
into that engine, and bad input (one line, exit 2, nothing written).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
LOSS_TOLERANCE = 1e-4  # same micro-batches per step; only the order of floating-point sums differs
STEPS = 4
RUN_ARGS = ["--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--max_steps", str(STEPS),
            "--seed", "7", "--disable_tqdm", "true"]


def run_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def dpo_cmd(base: Path, pairs: Path, out: Path, *extra: str, n_proc: int | None = None) -> list[str]:
    launcher = [] if n_proc is None else [
        "-m", "accelerate.commands.launch", "--config_file",
        str(REPO / "configs" / f"accelerate_cpu_zero2_{n_proc}proc.yaml"), "--main_process_port", "0"]
    return [sys.executable, *launcher, str(REPO / "train_dpo.py"), "--model_name_or_path", str(base),
            "--train_file", str(pairs), "--model_dir", str(out), *extra]


def run_dpo_cli(*args: str, n_proc: int | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(dpo_cmd(*args, n_proc=n_proc, **kw), cwd=REPO, env=run_env(), capture_output=True,
                          text=True, timeout=900)


def steps(out: Path) -> list[dict]:
    return json.loads((out / "train_log.json").read_text())["log"]


@pytest.fixture(scope="module")
def gold_pairs(tmp_path_factory, synthetic_dir) -> Path:
    """64 pairs: a question's gold rationale against another question's (wrong for this one)."""
    from src.prompts import student_prompt
    from src.records import load_records, write_json

    recs = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")[:64]
    pairs = [{"item_id": r["item_id"], "prompt": student_prompt(r["question"]), "chosen": r["answer_cot"],
              "rejected": recs[(i + 1) % len(recs)]["answer_cot"], "chosen_source": "demonstration",
              "rejected_source": "student"} for i, r in enumerate(recs)]
    return write_json(tmp_path_factory.mktemp("dpo_pairs") / "pairs.json", pairs)


# ----------------------------------------------------------------------------- the loss

class FixedLogProbs:
    """Stands in for the policy inside TRL's loss: per-sequence completion log-probs ``logps`` (batch = chosen rows,
    then rejected rows, as TRL builds it), put on the first completion token."""

    training = True

    def __init__(self, logps: list[float]):
        self.logps = logps

    def __call__(self, input_ids, labels=None, fused_lm_head=False, **_):
        import torch

        assert fused_lm_head and labels is not None  # TRL's fused path: log-probs of the labels only
        rows, width = input_ids.shape
        log_probs = torch.zeros(rows, width - 1)
        log_probs[:, 0] = torch.tensor(self.logps)
        zeros = torch.zeros(rows, width - 1)
        return SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def test_dpo_loss_of_the_worked_example_through_trl(tmp_path, tiny_model_dir, gold_pairs):
    """beta 0.1, policy (-10 chosen, -12 rejected), reference (-11, -11): -log sigmoid(0.1 * (1 - -1)) = 0.598."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    from src.dpo import dpo_config

    args = dpo_config(output_dir=str(tmp_path), per_device_train_batch_size=2, disable_tqdm=True)
    assert args.beta == 0.1 and args.loss_type == ["sigmoid"] and args.precompute_ref_log_probs and not args.bf16
    pairs = json.loads(gold_pairs.read_text())[:2]
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                         train_dataset=Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")}
                                                          for p in pairs]),
                         processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    inputs = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5, dtype=torch.long),
              "completion_mask": torch.tensor([[0, 0, 1, 1, 1]] * 2),
              "ref_chosen_logps": torch.tensor([-11.0]), "ref_rejected_logps": torch.tensor([-11.0])}
    trainer.model.train()  # TRL files the metrics under the policy's mode
    loss = trainer.compute_loss(FixedLogProbs([-10.0, -12.0]), inputs).item()
    assert loss == pytest.approx(0.598, abs=1e-3)
    assert loss == pytest.approx(-math.log(1 / (1 + math.exp(-0.2))), abs=1e-6)
    margins = trainer._metrics["train"]["rewards/margins"]
    assert margins[-1] == pytest.approx(0.2, abs=1e-6)  # beta * ((-10 - -11) - (-12 - -11))


# ----------------------------------------------------------------------------- launches

@pytest.fixture(scope="module")
def run_1proc(tmp_path_factory, tiny_model_dir, gold_pairs) -> Path:
    out = tmp_path_factory.mktemp("dpo_1proc")
    proc = run_dpo_cli(tiny_model_dir, gold_pairs, out, *RUN_ARGS, "--gradient_accumulation_steps", "2", n_proc=1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out


@pytest.fixture(scope="module")
def run_2proc(tmp_path_factory, tiny_model_dir, gold_pairs) -> Path:
    out = tmp_path_factory.mktemp("dpo_2proc")
    proc = run_dpo_cli(tiny_model_dir, gold_pairs, out, *RUN_ARGS, "--gradient_accumulation_steps", "1", n_proc=2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out


def test_two_processes_match_one_process_with_twice_the_accumulation(run_1proc, run_2proc):
    one, two = (json.loads((o / "train_log.json").read_text()) for o in (run_1proc, run_2proc))
    assert one["run_shape"]["num_processes"] == 1 and two["run_shape"]["num_processes"] == 2
    assert one["run_shape"]["effective_batch_size"] == two["run_shape"]["effective_batch_size"] == 8
    assert [e["step"] for e in one["log"]] == [e["step"] for e in two["log"]] == list(range(1, STEPS + 1))
    assert one["log"][0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 1
    for key in ("loss", "rewards/margins", "rewards/chosen", "num_tokens"):
        a, b = [e[key] for e in one["log"]], [e[key] for e in two["log"]]
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= LOSS_TOLERANCE, (key, a, b)
    assert len({e["loss"] for e in one["log"]}) > 1  # the policy moved: equal losses are not trivially equal


def test_saved_checkpoint_is_untied_and_keeps_the_tokenizer(run_1proc, tiny_model_dir):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    model = run_1proc / "model"
    config = json.loads((model / "config.json").read_text())
    weights = load_file(model / "model.safetensors")
    assert config["tie_word_embeddings"] is False and "lm_head.weight" in weights
    assert AutoTokenizer.from_pretrained(model).get_vocab() == AutoTokenizer.from_pretrained(tiny_model_dir).get_vocab()
    assert sorted(p.name for p in run_1proc.iterdir()) == ["model", "train_log.json"]  # no leftovers


# ----------------------------------------------------------------------------- generated pairs, vLLM

@pytest.fixture(scope="module")
def generated_pairs(tmp_path_factory, llm, synthetic_dir) -> Path:
    """Pairs from the session engine's own samples: 8 per pool question, graded, paired (mixed mode)."""
    from generate_train_data import main as generate_main
    from src.records import load_records
    from src.sampling import SamplingConfig, run_sampling, write_sampling_outputs

    tmp = tmp_path_factory.mktemp("srit")
    pool = load_records(synthetic_dir / "inference" / "cot" / "synthetic.json")[:32]
    run = run_sampling(llm, pool, "synthetic", SamplingConfig(strategy="vanilla", sample_num=8, max_resample_num=0,
                                                              temperature=1.0, max_new_tokens=160, progress=False))
    write_sampling_outputs(run, tmp / "sampled")
    generate_main(["--cur_sampled_data_path", str(tmp / "sampled"), "--next_iter_data_path", str(tmp / "pairs.json"),
                   "--format", "dpo", "--pair_mode", "mixed", "--max_pairs_per_question", "2"])
    return tmp / "pairs.json"


def test_one_epoch_on_generated_pairs_gives_a_positive_margin_and_reloads_in_vllm(
        generated_pairs, trained_tiny_model_dir, llm, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    from src.engine import reload_weights
    from src.prompts import student_prompt

    pairs = json.loads(generated_pairs.read_text())
    assert len(pairs) >= 16 and all(p["chosen"] != p["rejected"] for p in pairs)
    out = tmp_path / "dpo"
    proc = run_dpo_cli(trained_tiny_model_dir, generated_pairs, out, "--per_device_train_batch_size", "8",
                       "--learning_rate", "5e-4", "--num_train_epochs", "1", "--seed", "0", "--disable_tqdm", "true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    log = steps(out)
    # each step's margin is measured on pairs the policy has not trained on yet (one epoch): single steps are noisy
    # (measured: mean 0.07 over 8 steps, two of them negative), their mean is the claim
    margins = [e["rewards/margins"] for e in log]
    assert len(margins) >= 4 and sum(margins) / len(margins) > 0, margins

    prompt = student_prompt(pairs[0]["prompt"].split("### Question:\n")[1].split("\n\n###")[0])
    assert prompt == pairs[0]["prompt"]  # the pair's prompt is the sampling prompt
    greedy = SamplingParams(temperature=0, max_tokens=16)
    try:
        reload_weights(llm, out / "model")
        got = list(llm.generate([prompt], greedy, use_tqdm=False)[0].outputs[0].token_ids)
    finally:
        reload_weights(llm, trained_tiny_model_dir)  # the session engine goes back to its own weights
    tok = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    ref_ids = ref[0, ids.shape[1]:].tolist()
    assert got and got == ref_ids[:len(got)]


# ----------------------------------------------------------------------------- bad input

def _bad_pairs(case: str, tmp: Path, gold_pairs: Path) -> Path:
    pairs = json.loads(gold_pairs.read_text())[:4]
    if case == "missing_column":
        del pairs[2]["rejected"]
    elif case == "empty_chosen":
        pairs[1]["chosen"] = "  \n"
    elif case == "empty_rejected":
        pairs[3]["rejected"] = ""
    elif case == "prompt_fills_max_length":
        pass  # every prompt is longer than --max_length 8
    path = tmp / "pairs.json"
    path.write_text(json.dumps(pairs))
    return path


@pytest.mark.parametrize("case, message", [
    ("missing_column", "record 2 (item_id="),
    ("empty_chosen", "field 'chosen' is empty"),
    ("empty_rejected", "field 'rejected' is empty"),
    ("prompt_fills_max_length", "no pair left after filtering"),
    ("reference_tokenizer_differs", "tokenizer differs from the policy's"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, message, tmp_path, tiny_model_dir, gold_pairs):
    extra = []
    pairs = _bad_pairs(case, tmp_path, gold_pairs)
    if case == "prompt_fills_max_length":
        extra = ["--max_length", "8"]
    if case == "reference_tokenizer_differs":
        from transformers import AutoTokenizer

        ref = tmp_path / "ref"
        shutil.copytree(tiny_model_dir, ref)
        tok = AutoTokenizer.from_pretrained(tiny_model_dir)
        tok.add_tokens(["<extra_step>"])
        tok.save_pretrained(ref)
        extra = ["--ref_model_name_or_path", str(ref)]
    out = tmp_path / "out"
    proc = run_dpo_cli(tiny_model_dir, pairs, out, *extra)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("train_dpo.py: error: ") and message in lines[0], lines
    if case == "missing_column":
        assert "missing field 'rejected'" in lines[0] and str(pairs) in lines[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- scripts

@pytest.mark.parametrize("profile", ["tiny", "llama3"])
def test_srit_script_commands_are_accepted_by_the_real_parsers(profile, tmp_path):
    """DRY_RUN prints every stage; the pairs and DPO commands (one per round) must parse as they are written."""
    import shlex

    from trl import DPOConfig

    from src.cli import parse_args
    from src.dpo import DPORunConfig, dpo_defaults
    from src.filtering import GenerateConfig

    env = {**run_env(), "DRY_RUN": "1", "ROUNDS": "2", "OUTPUT_DIR": str(tmp_path), "MODEL_PATH": "/models/base",
           "TEACHER_PATH": "/models/teacher" if profile == "llama3" else ""}
    proc = subprocess.run(["bash", str(REPO / "scripts" / profile / "cot_train_srit.sh")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = {}
    for line in proc.stdout.splitlines():
        if line.startswith("[dry-run] "):
            name, _, cmd = line[len("[dry-run] "):].partition(": ")
            commands.setdefault(name, []).append(shlex.split(cmd))
    assert len(commands["pairs"]) == len(commands["dpo"]) == 2 and len(commands["eval"]) == 3
    assert ("teacher_sample" in commands) == (profile == "llama3")
    for i, cmd in enumerate(commands["pairs"]):
        (cfg,) = parse_args([GenerateConfig], cmd[cmd.index("generate_train_data.py") + 1:], "generate_train_data.py")
        assert cfg.format == "dpo" and cfg.pair_mode == "mixed" and cfg.next_iter_data_path.endswith(f"_{i + 1}.json")
    for r, cmd in enumerate(commands["dpo"], start=1):
        run, args = parse_args([DPORunConfig, DPOConfig], cmd[cmd.index("train_dpo.py") + 1:], "train_dpo.py",
                               defaults=dpo_defaults())
        assert run.model_name_or_path.endswith(f"iter_{r - 1}/model") and run.model_dir.endswith(f"iter_{r}")
        assert args.beta == 0.1 and args.num_train_epochs == 1 and args.precompute_ref_log_probs
