"""IWSI: the DS weight and selection on the issue's numbers, per-sample losses against a hand-written loop,
vote labels and the DS filter through generate_train_data.py, bad input, and IWSI-w sample weights in training."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generate_train_data import main as generate_main
from src.iwsi import (
    ds_weight,
    majority_index,
    pad_batch,
    per_sample_losses,
    select_lowest,
    span_examples,
    w_prime,
    weighted_lm_loss,
)
from src.records import RecordError, load_records, write_json

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- weights and selection
def test_w_prime_and_ds_weight_of_the_issue_example():
    w = w_prime([1, 2, 3], [1, 2, 4, 0.5])
    assert w == [2, 1, 0.5, 4]
    assert [ds_weight(x) for x in w] == [2, 1, 2, 4]
    assert [ds_weight(x, reference_clip=True) for x in w] == [2, 1, 2, 2]
    assert ds_weight(0.1, reference_clip=True) == 5  # 1/w' capped at 5


def test_keep_fraction_drops_the_largest_weights():
    weights = [0.3, 9.0, 1.2, 4.5, 1.0, 2.2, 7.1, 1.5, 3.3, 1.1]
    kept = select_lowest(weights, 0.8)
    assert len(kept) == 8
    assert sorted(set(range(10)) - set(kept)) == [1, 6]  # 9.0 and 7.1


def test_equal_weights_keep_exactly_floor_k_n_in_order():
    assert select_lowest([1.5] * 10, 0.8) == list(range(8))  # the official strict threshold would keep none
    assert len(select_lowest([1.0] * 100, 0.29)) == 29  # 0.29 * 100 is 28.999... in binary
    assert select_lowest([2.0, 1.0, 2.0, 1.0], 0.75) == [0, 1, 3]  # ties: the earlier 2.0 stays


@pytest.mark.parametrize("k", [0, -0.5, 1.01, float("nan")])
def test_keep_fraction_outside_0_1_is_refused(k):
    with pytest.raises(ValueError, match="keep_fraction"):
        select_lowest([1.0, 2.0], k)


@pytest.mark.parametrize("bad", [0.0, float("nan"), -1.0, float("inf")])
def test_zero_or_nan_sample_loss_is_named_by_item_id(bad):
    with pytest.raises(RecordError, match="item_id=q_7"):
        w_prime([1.0, 2.0], [1.0, bad], ["q_3", "q_7"])


# ----------------------------------------------------------------------------- vote
def test_majority_uses_the_graders_equivalence_and_ties_go_to_the_first_answer():
    assert majority_index(["4", "3", "3.0", "4.00", "7"], "gsm8k") == 0  # {4, 4.00} vs {3, 3.0}: tie, 4 first
    assert majority_index(["", "3", "1,000", "1000"], "gsm8k") == 2  # "1,000" == "1000" by the grader
    assert majority_index(["", "", ""], "gsm8k") is None


# ----------------------------------------------------------------------------- per-sample losses
@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), \
        AutoTokenizer.from_pretrained(tiny_model_dir)


def hand_loss(model, ids: list[int], labels: list[int]) -> float:
    """Mean -log p(token) over the scored positions of one unpadded sequence, written out."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    terms = [-logp[t - 1, labels[t]].item() for t in range(1, len(ids)) if labels[t] != -100]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("span", ["full", "rationale"])
def test_per_sample_losses_match_a_hand_loop_whatever_batch_and_padding(tiny, synthetic_dir, span):
    model, tok = tiny
    records = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")[:7]
    examples = span_examples(records, tok, span, 1024)
    expected = [hand_loss(model, e["input_ids"], e["labels"]) for e in examples]
    lengths = {len(e["input_ids"]) for e in examples}
    assert len(lengths) > 3  # real padding happens
    for batch_size in (1, 3, 7):
        for side in ("right", "left"):
            got = per_sample_losses(model, examples, tok.pad_token_id, batch_size, side)
            assert got == pytest.approx(expected, abs=1e-5), (batch_size, side)


def test_rationale_span_scores_exactly_the_training_labels(tiny, synthetic_dir):
    from src.training import tokenize_examples

    _, tok = tiny
    records = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")[:3]
    assert span_examples(records, tok, "rationale", 1024) == tokenize_examples(records, tok, 1024)
    full = span_examples(records, tok, "full", 1024)
    assert tok.decode(full[0]["input_ids"]) == f"Q: {records[0]['question']}\nA: {records[0]['answer_cot']}"


def test_weighted_loss_is_the_models_loss_at_weight_one_and_weights_each_sample(tiny, synthetic_dir):
    import torch

    from src.training import collate, tokenize_examples

    model, tok = tiny
    records = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")[:4]
    examples = tokenize_examples(records, tok, 1024)
    batch = collate(examples, tok.pad_token_id)
    with torch.no_grad():
        out = model(**batch)
    plain = weighted_lm_loss(out.logits, batch["labels"], torch.ones(4))
    assert plain.item() == pytest.approx(out.loss.item(), abs=1e-6)
    weights = [0.5, 2.0, 0.0, 1.0]
    n_tokens = [sum(x != -100 for x in e["labels"][1:]) for e in examples]
    per = [hand_loss(model, e["input_ids"], e["labels"]) for e in examples]
    expected = sum(w * n * loss for w, n, loss in zip(weights, n_tokens, per)) / sum(n_tokens)
    got = weighted_lm_loss(out.logits, batch["labels"], torch.tensor(weights)).item()
    assert got == pytest.approx(expected, abs=1e-5)


def test_pad_batch_positions_count_real_tokens():
    batch = pad_batch([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8], "labels": [8]}], 0, "left")
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]


# ----------------------------------------------------------------------------- generate_train_data.py
def _sampled(tmp_path: Path, synthetic_dir: Path, n: int = 6) -> Path:
    """Sampling results over pool questions: per item 4 samples, the first three reaching the gold answer
    written three ways, the last a wrong answer; the sampled rationales differ in length."""
    pool = load_records(synthetic_dir / "inference" / "cot" / "synthetic.json")[:n]
    train = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")
    items = []
    for k, rec in enumerate(pool):
        other = train[k]["answer_cot"]  # a fluent rationale of another question: shifted for this one
        pred = [rec["answer_cot"], rec["answer_cot"] + "\nSo it is.", other + f"\nThe answer is {rec['answer_value']}",
                "I do not know.\nThe answer is 999999"]
        values = [rec["answer_value"]] * 3 + ["999999"]
        items.append({**rec, "pred": pred, "pred_value": values, "correct_pred": pred[:3],
                      "correct_strategy": ["initial"] * 3})
    out = tmp_path / "inference_data"
    write_json(out / "results.json", items)
    write_json(out / "sampling_stats.json", {"dataset": "synthetic", "strategy": "vanilla", "sample_num": 4})
    return out


def _valid(tmp_path: Path, synthetic_dir: Path) -> Path:
    from src.iwsi import ValidSplitConfig, make_valid_split

    out = tmp_path / "valid.json"
    make_valid_split(ValidSplitConfig(train_file=str(synthetic_dir / "train" / "cot" / "synthetic.json"),
                                      out=str(out), exclude=[str(synthetic_dir / "inference" / "cot" /
                                                                 "synthetic.json")], fraction=0.01, seed=0))
    return out


def test_vote_keeps_the_majority_answer_even_when_it_is_wrong(tmp_path, synthetic_dir):
    sampled = _sampled(tmp_path, synthetic_dir, n=2)
    items = json.loads((sampled / "results.json").read_text())
    # item 1: the wrong answer wins the vote 3 to 1; its gold-reaching sample is dropped
    items[1]["pred"] = items[1]["pred"][:1] + [f"Guess {i}.\nThe answer is 5" for i in range(3)]
    items[1]["pred_value"] = [items[1]["answer_value"], "5", "5.0", "5"]
    write_json(sampled / "results.json", items)
    out = tmp_path / "d.json"
    assert generate_main(["--cur_sampled_data_path", str(sampled), "--next_iter_data_path", str(out),
                          "--correctness", "vote"]) == 0
    data = json.loads(out.read_text())
    assert [r["answer_cot"] for r in data] == items[0]["pred"][:3] + items[1]["pred"][1:]
    side = json.loads((tmp_path / "d.iwsi.json").read_text())
    assert side["vote"]["synthetic"] == {"questions": 2, "voted": 2, "vote_equals_gold": 1}
    assert side["counts"] == {"samples": 8, "after_answer_filter": 6, "after_ds_filter": 6}


def test_ds_filter_writes_weights_and_sidecar_and_reruns_identically(tmp_path, synthetic_dir, tiny_model_dir):
    sampled = _sampled(tmp_path, synthetic_dir)
    valid = _valid(tmp_path, synthetic_dir)
    args = ["--cur_sampled_data_path", str(sampled), "--correctness", "vote", "--ds_filter",
            "--ds_valid", str(valid), "--ds_model", str(tiny_model_dir), "--ds_policy_model", str(tiny_model_dir),
            "--keep_fraction", "0.8", "--ds_batch_size", "5"]
    out = tmp_path / "a" / "d.json"
    assert generate_main([*args, "--next_iter_data_path", str(out)]) == 0
    data = json.loads(out.read_text())
    side = json.loads((tmp_path / "a" / "d.iwsi.json").read_text())
    ds = side["ds_filter"]
    assert ds["before"] == 18 and ds["after"] == len(data) == math.floor(0.8 * 18)
    assert len(ds["dropped_item_ids"]) == 4 and ds["n_valid"] == 6
    assert all(r["ds_weight"] == max(r["w_prime"], 1 / r["w_prime"]) for r in data)
    assert max(r["ds_weight"] for r in data) == ds["threshold"]
    assert sorted(r["ds_weight"] for r in data) == sorted(ds["ds_weights"])[:14]  # the 14 lowest of the 18
    assert side["counts"] == {"samples": 24, "after_answer_filter": 18, "after_ds_filter": 14}
    again = tmp_path / "b" / "d.json"
    assert generate_main([*args, "--next_iter_data_path", str(again)]) == 0
    for name in ("d.json", "d.counts.json", "d.iwsi.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_ds_filter_leaves_merged_original_data_alone(tmp_path, synthetic_dir, tiny_model_dir):
    sampled = _sampled(tmp_path, synthetic_dir, n=2)
    original = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")[100:103]
    orig_file = write_json(tmp_path / "orig.json", original)
    out = tmp_path / "d.json"
    assert generate_main(["--cur_sampled_data_path", str(sampled), "--next_iter_data_path", str(out),
                          "--original_data_path", str(orig_file), "--include_original_data", "true",
                          "--ds_filter", "--ds_valid", str(_valid(tmp_path, synthetic_dir)),
                          "--ds_model", str(tiny_model_dir), "--keep_fraction", "0.5"]) == 0
    data = json.loads(out.read_text())
    merged = [r for r in data if "w_prime" not in r]
    assert [r["item_id"] for r in merged] == [r["item_id"] for r in original]
    side = json.loads((tmp_path / "d.iwsi.json").read_text())
    assert side["counts"] == {"samples": 8, "after_answer_filter": 6, "after_ds_filter": 3}
    assert len(data) == 6 and json.loads((tmp_path / "d.counts.json").read_text())["records_written"] == 6


def _bad_cases(tmp_path: Path, synthetic_dir: Path, tiny_model_dir: Path) -> dict[str, tuple[list[str], str]]:
    empty = write_json(tmp_path / "empty.json", [])
    pool = load_records(synthetic_dir / "inference" / "cot" / "synthetic.json")[:2]
    overlapping = write_json(tmp_path / "overlap.json", pool)
    other_tok = tmp_path / "other_tok"
    shutil.copytree(tiny_model_dir, other_tok)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(other_tok)
    tok.add_tokens(["<extra_token>"])
    tok.save_pretrained(other_tok)
    return {
        "missing_valid": (["--ds_valid", str(tmp_path / "nowhere.json")], "nowhere.json"),
        "empty_valid": (["--ds_valid", str(empty)], "no records"),
        "overlap": (["--ds_valid", str(overlapping)], "disjoint"),
        "k_zero": (["--keep_fraction", "0"], "keep_fraction"),
        "k_above_one": (["--keep_fraction", "1.5"], "keep_fraction"),
        "tokenizer": (["--ds_policy_model", str(other_tok)], "tokenizer differs"),
        "truncated_span": (["--ds_span", "rationale", "--ds_max_length", "8"], "item_id=synthetic_pool_"),
    }


CASES = ["missing_valid", "empty_valid", "overlap", "k_zero", "k_above_one", "tokenizer", "truncated_span"]


@pytest.mark.parametrize("case", CASES)
def test_bad_ds_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, synthetic_dir, tiny_model_dir):
    sampled = _sampled(tmp_path, synthetic_dir, n=2)
    valid = _valid(tmp_path, synthetic_dir)
    extra, needle = _bad_cases(tmp_path, synthetic_dir, tiny_model_dir)[case]
    out = tmp_path / "out" / "d.json"
    base = ["--cur_sampled_data_path", str(sampled), "--next_iter_data_path", str(out), "--ds_filter",
            "--ds_valid", str(valid), "--ds_model", str(tiny_model_dir), "--ds_policy_model", str(tiny_model_dir)]
    proc = subprocess.run([sys.executable, "generate_train_data.py", *base, *extra], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    if case != "truncated_span":  # the one case found after the model loaded (its loading bar precedes)
        assert len(lines) == 1, lines
    assert lines[-1].startswith("generate_train_data.py: error:") and needle in lines[-1], lines
    assert "Traceback" not in proc.stderr
    assert not [p.name for p in (tmp_path / "out").glob("*") if not p.name.endswith(".lock")]


def test_valid_split_is_small_seeded_and_disjoint_from_the_pool(tmp_path, synthetic_dir):
    valid = load_records(_valid(tmp_path, synthetic_dir))
    pool_q = {r["question"] for r in load_records(synthetic_dir / "inference" / "cot" / "synthetic.json")}
    assert len(valid) == 6 and not pool_q & {r["question"] for r in valid}
    assert load_records(_valid(tmp_path, synthetic_dir)) == valid


# ----------------------------------------------------------------------------- IWSI-w in training
def test_sample_weights_clip_default_and_bad_values():
    from src.iwsi import sample_weights

    recs = [{"item_id": "a", "w_prime": 4.0}, {"item_id": "b", "w_prime": 0.5}, {"item_id": "c"}]
    assert sample_weights(recs, "w_prime", 2.0, "f") == [2.0, 0.5, 1.0]
    assert sample_weights(recs, None, None, "f") is None
    with pytest.raises(RecordError, match="item_id=x"):
        sample_weights([{"item_id": "x", "w_prime": float("nan")}], "w_prime", None, "f")
    with pytest.raises(ValueError, match="needs --sample_weight_field"):
        sample_weights(recs, None, 2.0, "f")


def test_iwsi_w_under_deepspeed_zero2_and_accumulation_scales_every_sample(tmp_path, synthetic_dir, tiny_model_dir):
    """Every w' = 3, clipped to C = 2: each micro-batch loss is exactly twice the plain one, and AdamW after
    gradient clipping is blind to that scale, so each logged step loss of a ZeRO-2 run with accumulation 2 is
    twice that of the same unweighted run (trained in-process without DeepSpeed) at every step."""
    import os

    from src.training import TrainConfig, train

    records = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")[:32]
    plain = write_json(tmp_path / "plain.json", records)
    weighted = write_json(tmp_path / "weighted.json", [{**r, "w_prime": 3.0} for r in records])
    common = {"batch_size": 4, "gradient_accumulation_steps": 2, "learning_rate": 3e-3, "warmup_step": 1,
              "max_steps": 3, "seed": 7, "keep_num_ckpt": 0, "show_progress": False}
    train(TrainConfig(model_name_or_path=str(tiny_model_dir), train_file=str(plain),
                      model_dir=str(tmp_path / "plain"), **common))
    flags = [x for k, v in common.items() for x in (f"--{k}", str(v))]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate_cpu_zero2_1proc.yaml"), "--main_process_port", "0",
           str(REPO / "train.py"), "--model_name_or_path", str(tiny_model_dir), "--train_file", str(weighted),
           "--model_dir", str(tmp_path / "weighted"), *flags,
           "--sample_weight_field", "w_prime", "--sample_weight_clip", "2.0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    base = json.loads((tmp_path / "plain" / "train_log.json").read_text())["log"]
    got = json.loads((tmp_path / "weighted" / "train_log.json").read_text())["log"]
    assert len(got) == len(base) == 3
    for g, b in zip(got, base):
        assert g["loss"] == pytest.approx(2 * b["loss"], rel=1e-4), (g, b)


# ----------------------------------------------------------------------------- iteration scripts
def _dry_run(script: str, tmp_path: Path, **env: str) -> dict[str, str]:
    import os

    run_env = {**os.environ, "DRY_RUN": "1", "NUM_ITERS": "1", "OUTPUT_DIR": str(tmp_path), **env}
    proc = subprocess.run(["bash", str(REPO / "scripts" / script)], cwd=REPO, env=run_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.split(":")[0].removeprefix("[dry-run] "): line for line in proc.stdout.splitlines()
            if line.startswith("[dry-run]")}


@pytest.mark.parametrize("script", ["tiny/cot_train_iwsi.sh", "llama3/cot_train_iwsi.sh", "llama3/pot_train_iwsi.sh"])
def test_iwsi_scripts_vote_filter_and_weight(script, tmp_path):
    stages = _dry_run(script, tmp_path)
    assert "--sample_num 15" in stages["sample"] and "--temperature 1.1" in stages["sample"]
    assert "--max_resample_num 0" in stages["sample"] and "inference.py" in stages["sample"]
    assert "--fraction 0.05" in stages["valid"] and "--exclude" in stages["valid"]
    gen = stages["generate"]
    assert "--correctness vote" in gen and "--ds_filter true" in gen and "--keep_fraction 0.8" in gen
    assert "--check_result false" in gen  # the synthetic process check would read the gold rationale
    assert "--sample_weight_field" not in stages["train"]
    weighted = _dry_run(script, tmp_path, IWSI_VARIANT="iwsi_w")
    assert "--keep_fraction 1" in weighted["generate"]
    assert "--sample_weight_field w_prime --sample_weight_clip 2.0" in weighted["train"]
    lmsi = _dry_run(script, tmp_path, IWSI_VARIANT="lmsi")
    assert "--correctness vote" in lmsi["generate"] and "--ds_filter" not in lmsi["generate"]
    assert "valid" not in lmsi
