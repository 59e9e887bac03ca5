"""Training throughput: length-grouped micro-batches vs random micro-batches padded to the batch maximum.

    .venv/bin/python benchmarks/training.py                      # builds a synthetic world + the tiny model
    .venv/bin/python benchmarks/training.py --model_name_or_path output/tiny-model --train_file data/.../x.json

Both orders cover the same examples, and their steps alternate (grouped, random, grouped, ...) in one process so
that a shared, busy machine slows both alike. Each step is forward + backward + AdamW step; tokens/s counts real
(non-pad) tokens. The last line printed is one JSON object:
``{"grouped_tokens_per_s", "padded_tokens_per_s", "ratio", ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.records import load_records  # noqa: E402
from src.training import collate, length_grouped_batches, random_batches, tokenize_examples  # noqa: E402


def build_default(workdir: Path) -> tuple[Path, Path]:
    """A synthetic world and the tiny model in ``workdir`` (a few seconds)."""
    from src.synthetic import WorldConfig, write_world
    from src.tiny import build_tiny_model

    write_world(WorldConfig(seed=0, n_train=600, n_pool=10, n_test_held_in=10, n_test_held_out=10), workdir / "data")
    train_file = workdir / "data" / "train" / "cot" / "synthetic.json"
    return build_tiny_model(workdir / "model", load_records(train_file)), train_file


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_name_or_path", default=None, help="HF model folder (default: build the tiny model)")
    ap.add_argument("--train_file", default=None, help="training records (default: the synthetic CoT data)")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--n_batches", type=int, default=16, help="timed micro-batches per order")
    ap.add_argument("--max_input_length", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    model_path, train_file = args.model_name_or_path, args.train_file
    if model_path is None or train_file is None:
        model_path, train_file = build_default(Path(tmp.name))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    examples = tokenize_examples(load_records(train_file), tok, args.max_input_length)
    n = min(len(examples), args.n_batches * args.batch_size)
    examples = examples[:n]  # both orders train on exactly these examples
    lengths = [len(e["input_ids"]) for e in examples]
    orders = {"grouped": length_grouped_batches(lengths, args.batch_size, args.seed),
              "padded": random_batches(n, args.batch_size, args.seed)}

    def step(batch_ids: list[int]) -> tuple[int, int, float]:
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in batch_ids], tok.pad_token_id).items()}
        start = time.perf_counter()
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return int(batch["attention_mask"].sum()), batch["input_ids"].numel(), time.perf_counter() - start

    for ids in orders["grouped"][:2]:  # warm-up (allocator, kernels)
        step(ids)
    totals = {name: [0, 0, 0.0] for name in orders}
    for pair in zip(orders["grouped"], orders["padded"], strict=False):
        for name, ids in zip(orders, pair, strict=True):
            real, padded, seconds = step(ids)
            totals[name][0] += real
            totals[name][1] += padded
            totals[name][2] += seconds
    result = {
        "grouped_tokens_per_s": round(totals["grouped"][0] / totals["grouped"][2], 1),
        "padded_tokens_per_s": round(totals["padded"][0] / totals["padded"][2], 1),
    }
    result["ratio"] = round(result["grouped_tokens_per_s"] / result["padded_tokens_per_s"], 3)
    result.update(device=device, batch_size=args.batch_size, n_examples=n, real_tokens=totals["grouped"][0],
                  grouped_padding_frac=round(1 - totals["grouped"][0] / totals["grouped"][1], 3),
                  padded_padding_frac=round(1 - totals["padded"][0] / totals["padded"][1], 3))
    tmp.cleanup()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
