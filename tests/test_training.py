"""Training: real `accelerate launch` runs with DeepSpeed ZeRO-2 on CPU (1 and 2 processes), a SIGKILLed run that
resumes, the saved model in transformers and in vLLM, bad input, and the data pipeline (prompt, mask, grouping).

Three launches are shared by the module (~6 optimizer steps each on the tiny model): 1 process x accumulation 2,
2 processes x accumulation 1, and a run killed after its first checkpoint and launched again.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.training import (
    IGNORE_INDEX,
    TrainConfig,
    collate,
    length_grouped_batches,
    lr_at,
    random_batches,
    tokenize_examples,
    train,
)

REPO = Path(__file__).resolve().parents[1]
STEPS = 6
# 2 processes x accumulation 1 vs 1 process x accumulation 2: same micro-batches per step, so the only
# difference is the order of floating-point sums (gloo all-reduce vs local accumulation).
LOSS_TOLERANCE = 1e-4
RUN_ARGS = ["--batch_size", "4", "--learning_rate", "3e-3", "--warmup_step", "1", "--max_steps", str(STEPS),
            "--adam_beta2", "0.98", "--seed", "7", "--show_progress", "false", "--logging_step_freq", "1"]


def launch_cmd(n_proc: int, train_file: Path, base: Path, model_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "configs" / f"accelerate_cpu_zero2_{n_proc}proc.yaml"), "--main_process_port", "0",
            str(REPO / "train.py"), "--model_name_or_path", str(base), "--train_file", str(train_file),
            "--model_dir", str(model_dir), *RUN_ARGS, *extra]


def launch_env() -> dict[str, str]:
    # one thread per process: the machine's cores are shared; results do not depend on it
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def launch(n_proc: int, train_file: Path, base: Path, model_dir: Path, *extra: str) -> dict:
    proc = subprocess.run(launch_cmd(n_proc, train_file, base, model_dir, *extra), cwd=REPO, env=launch_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads((model_dir / "train_log.json").read_text())


@pytest.fixture(scope="module")
def train_file(tmp_path_factory, synthetic_dir) -> Path:
    from src.records import load_records, write_json

    records = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")[:96]
    return write_json(tmp_path_factory.mktemp("train_data") / "train.json", records)


@pytest.fixture(scope="module")
def run_1proc(tmp_path_factory, train_file, tiny_model_dir) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run_1proc")
    return out, launch(1, train_file, tiny_model_dir, out, "--gradient_accumulation_steps", "2",
                       "--saving_step_freq", "2", "--keep_num_ckpt", "2")


@pytest.fixture(scope="module")
def run_2proc(tmp_path_factory, train_file, tiny_model_dir) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run_2proc")
    return out, launch(2, train_file, tiny_model_dir, out, "--gradient_accumulation_steps", "1")


@pytest.fixture(scope="module")
def run_resumed(tmp_path_factory, train_file, tiny_model_dir) -> tuple[Path, dict]:
    """The 1-process run, SIGKILLed once its first checkpoint exists, then launched again unchanged."""
    out = tmp_path_factory.mktemp("run_resumed")
    cmd = launch_cmd(1, train_file, tiny_model_dir, out, "--gradient_accumulation_steps", "2",
                     "--saving_step_freq", "2", "--keep_num_ckpt", "2")
    proc = subprocess.Popen(cmd, cwd=REPO, env=launch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 400
    while not (out / "checkpoints" / "step_2" / "trainer_state.json").is_file():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint after 400 s"
        time.sleep(0.02)  # steps take well under a second: kill soon after the checkpoint appears
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its worker: a crash, no clean-up
    proc.wait()
    killed_log = json.loads((out / "train_log.json").read_text())
    assert not killed_log.get("finished") and not (out / "model").exists()
    return out, launch(1, train_file, tiny_model_dir, out, "--gradient_accumulation_steps", "2",
                       "--saving_step_freq", "2", "--keep_num_ckpt", "2")


def losses(log: dict) -> list[float]:
    return [e["loss"] for e in log["log"]]


# ----------------------------------------------------------------------------- launches

def test_loss_falls_with_deepspeed_zero2_one_process(run_1proc):
    _, log = run_1proc
    assert log["finished"] and [e["step"] for e in log["log"]] == list(range(1, STEPS + 1))
    first, last = losses(log)[0], losses(log)[-1]
    assert last < first - 0.5, losses(log)


def test_two_processes_match_one_process_with_twice_the_accumulation(run_1proc, run_2proc):
    (_, one), (_, two) = run_1proc, run_2proc
    assert one["run_shape"]["num_processes"] == 1 and two["run_shape"]["num_processes"] == 2
    assert one["run_shape"]["gradient_accumulation_steps"] == 2 and two["run_shape"]["gradient_accumulation_steps"] == 1
    assert one["run_shape"]["effective_batch_size"] == two["run_shape"]["effective_batch_size"] == 8
    assert [e["tokens"] for e in one["log"]] == [e["tokens"] for e in two["log"]]  # the same examples per step
    diffs = [abs(a - b) for a, b in zip(losses(one), losses(two), strict=True)]
    assert max(diffs) <= LOSS_TOLERANCE, (losses(one), losses(two))
    assert losses(two)[-1] < losses(two)[0] - 0.5


def test_logged_learning_rate_follows_the_schedule(run_1proc):
    _, log = run_1proc
    expected = [lr_at(s, STEPS, 1, 3e-3, "linear") for s in range(STEPS)]
    assert [e["lr"] for e in log["log"]] == pytest.approx(expected, rel=1e-6)


def test_checkpoints_are_kept_resumable_and_untied(run_1proc):
    out, _ = run_1proc
    ckpts = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["step_2", "step_4"]  # keep_num_ckpt 2; none after the last step
    for c in ckpts:
        assert (c / "trainer_state.json").is_file()
        assert json.loads((c / "hf_model" / "config.json").read_text())["tie_word_embeddings"] is False


def test_killed_run_resumes_to_the_same_steps_and_losses(run_resumed, run_1proc):
    (_, resumed), (_, reference) = run_resumed, run_1proc
    assert resumed["finished"] and resumed["resumed_from_step"] >= 2
    assert [e["step"] for e in resumed["log"]] == list(range(1, STEPS + 1))
    # same data position, optimizer and schedule state: the curve continues exactly as without the crash
    assert losses(resumed) == pytest.approx(losses(reference), abs=LOSS_TOLERANCE)


def test_saved_model_loads_in_transformers_untied_and_trained(run_1proc, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = run_1proc
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not model.config.tie_word_embeddings
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    assert not torch.equal(model.lm_head.weight, base.lm_head.weight)  # it trained
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.eos_token == "</s>" and len(tok) == model.config.vocab_size


def test_saved_model_reloads_in_vllm_and_matches_transformers(run_1proc, llm, trained_tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    from src.engine import reload_weights
    from src.prompts import student_prompt

    out, _ = run_1proc
    prompt = student_prompt("Mia has 7 apples. Then she buys 3 more apples. How many apples does Mia have now?")
    greedy = SamplingParams(temperature=0, max_tokens=12)
    before = llm.generate([prompt], greedy, use_tqdm=False)[0].outputs[0].token_ids
    try:
        reload_weights(llm, out / "model")
        got = list(llm.generate([prompt], greedy, use_tqdm=False)[0].outputs[0].token_ids)
    finally:
        reload_weights(llm, trained_tiny_model_dir)  # the session engine goes back to its own weights
    assert list(llm.generate([prompt], greedy, use_tqdm=False)[0].outputs[0].token_ids) == list(before)
    tok = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    ref_ids = ref[0, ids.shape[1]:].tolist()
    assert got == ref_ids[:len(got)] and len(got) >= min(len(ref_ids), 1)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("case", ["missing", "empty", "no_answer_cot"])
def test_bad_input_fails_before_the_model_loads(case, tmp_path):
    from src.records import RecordError

    data = tmp_path / "train.json"
    if case == "empty":
        data.write_text("[]")
    elif case == "no_answer_cot":
        data.write_text(json.dumps([{"item_id": "a_0", "question": "q", "answer_cot": "r", "answer_value": "1"},
                                    {"item_id": "a_1", "question": "q", "answer_value": "2"}]))
    # the model path does not exist: had the model been loaded first, the error would be an OSError
    cfg = TrainConfig(model_name_or_path=str(tmp_path / "no-model"), train_file=str(data),
                      model_dir=str(tmp_path / "out"))
    with pytest.raises(RecordError) as err:
        train(cfg)
    expected = {"missing": "file not found", "empty": "no records",
                "no_answer_cot": "record 1 (item_id=a_1): missing field 'answer_cot'"}[case]
    assert str(data) in str(err.value) and expected in str(err.value)
    assert not (tmp_path / "out").exists()


def test_cli_exits_nonzero_with_the_message_and_help_explains_every_flag(tmp_path, tiny_model_dir):
    data = tmp_path / "train.json"
    data.write_text(json.dumps([{"item_id": "a_0", "question": "q", "answer_value": "2"}]))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--model_name_or_path", str(tiny_model_dir),
                           "--train_file", str(data), "--model_dir", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "missing field 'answer_cot'" in proc.stderr and str(data) in proc.stderr
    assert not (tmp_path / "out").exists()
    helptext = subprocess.run([sys.executable, str(REPO / "train.py"), "--help"], capture_output=True, text=True,
                              env=env, timeout=120).stdout
    original = ["model_name_or_path", "tokenizer_name_or_path", "model_dir", "train_file", "batch_size", "n_epochs",
                "num_workers", "learning_rate", "weight_decay", "warmup_step", "clip_grad_norm",
                "logging_epoch_freq", "saving_epoch_freq", "logging_step_freq", "seed", "max_input_length",
                "gradient_accumulation_steps", "keep_num_ckpt", "wandb_log", "wandb_project", "wandb_run_name"]
    for flag in original:
        assert f"--{flag}" in helptext, flag
    assert "negative = 10% of the optimizer steps" in " ".join(helptext.split())


# ----------------------------------------------------------------------------- data pipeline

def test_training_prompt_is_the_sampling_prompt(tiny_model_dir, synthetic_dir):
    from transformers import AutoTokenizer

    from src.records import load_records
    from src.sampling.query import QueryState
    from src.sampling.strategies import StrategyContext, get_strategy

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    records = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")[:8]
    for rec, ex in zip(records, tokenize_examples(records, tok, 1024), strict=True):
        sampling_prompt = get_strategy("vanilla").prompt(QueryState(rec), StrategyContext())
        n_prompt = sum(label == IGNORE_INDEX for label in ex["labels"])
        assert ex["input_ids"][:n_prompt] == tok(sampling_prompt)["input_ids"]  # the tokens vLLM sees
        assert tok.decode(ex["input_ids"][n_prompt:]) == rec["answer_cot"] + tok.eos_token


def test_loss_covers_rationale_and_eos_only_and_truncates(tiny_model_dir, synthetic_dir):
    from transformers import AutoTokenizer

    from src.records import load_records

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    records = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")[:4]
    examples = tokenize_examples(records, tok, 1024)
    for ex in examples:
        labelled = [t for t, label in zip(ex["input_ids"], ex["labels"], strict=True) if label != IGNORE_INDEX]
        assert labelled[-1] == tok.eos_token_id and ex["labels"][-1] == tok.eos_token_id
        assert labelled == ex["labels"][-len(labelled):]  # labels are the tokens themselves (HF shifts them)
    batch = collate(examples, tok.pad_token_id)
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["labels"][pad] == IGNORE_INDEX).all()
    assert (batch["input_ids"][pad] == tok.pad_token_id).all()
    short = tokenize_examples(records, tok, 40)
    assert all(len(e["input_ids"]) == len(e["labels"]) == 40 for e in short)


def test_length_grouped_batches_cover_everything_once_and_waste_little_padding():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(20, 400) for _ in range(1000)]
    grouped = length_grouped_batches(lengths, 16, seed=1)
    assert sorted(i for b in grouped for i in b) == list(range(1000))
    assert grouped == length_grouped_batches(lengths, 16, seed=1) != length_grouped_batches(lengths, 16, seed=2)

    def padding(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(grouped) < 0.1 * padding(random_batches(1000, 16, seed=1))


def test_lr_schedule_warms_up_linearly_then_decays_to_zero():
    assert [lr_at(s, 10, 2, 1.0) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert lr_at(9, 10, 2, 1.0) == pytest.approx(1 / 8) and lr_at(10, 10, 2, 1.0) == 0.0
    assert lr_at(6, 10, 2, 1.0, "cosine") == pytest.approx(0.5) and lr_at(10, 10, 2, 1.0, "cosine") == 0.0
    assert math.isclose(lr_at(2, 10, 2, 1.0, "cosine"), 1.0)
