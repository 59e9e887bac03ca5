"""Tiny-model factory: a digits-split byte-level BPE tokenizer trained on the synthetic corpus and a small
Llama saved in Hugging Face format, loadable by transformers and vLLM without any hub access.

Usage: ``python -m src.tiny --out_dir output/tiny-model --corpus data/synthetic/train/cot/synthetic.json``

Checkpoints are saved with untied embeddings (an explicit ``lm_head``): vLLM's in-place weight reload
(``collective_rpc("reload_weights")``) silently produces garbage for tied checkpoints.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]
# A minimal chat template so `vllm` can serve the tiny model on its chat endpoint (the interactive teacher).
CHAT_TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}### assistant:\n{% endif %}"
)


@dataclass
class TinyModelConfig:
    vocab_size: int = 512  # 256 byte symbols + merges + specials
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4  # head_dim = 32: vLLM's CPU attention needs head_dim >= 32
    intermediate_size: int = 384
    max_position_embeddings: int = 1024
    seed: int = 0


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Train a byte-level BPE whose pre-tokenizer splits every digit, wrapped as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def corpus_texts(records: list[dict]) -> list[str]:
    from src.prompts import student_prompt

    return [student_prompt(r["question"]) + r["answer_cot"] for r in records]


def build_tiny_model(out_dir: str | Path, records: list[dict], cfg: TinyModelConfig | None = None) -> Path:
    """Create tokenizer + randomly initialised small Llama under ``out_dir`` (HF format, float32, untied)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = cfg or TinyModelConfig()
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(corpus_texts(records), cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    save_untied(model, tokenizer, out_dir)
    (out_dir / "tiny_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return out_dir


def save_untied(model, tokenizer, out_dir: str | Path) -> None:
    """Save model + tokenizer with an explicit lm_head (see module docstring)."""
    model.config.tie_word_embeddings = False
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def main(argv: list[str] | None = None) -> int:
    from src.cli import check_input_file, check_output, one_line_errors, run_cli
    from src.records import load_records

    prog = "python -m src.tiny"
    ap = one_line_errors(argparse.ArgumentParser(
        prog=prog, description="Build the tiny tokenizer + Llama used by the demo and the tests."), prog)
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--corpus", required=True, help="JSON training file whose question+answer_cot train the BPE")
    for name, default in asdict(TinyModelConfig()).items():
        ap.add_argument(f"--{name}", type=int, default=default)

    def body() -> None:
        args = ap.parse_args(argv)
        corpus = load_records(check_input_file("corpus", args.corpus), "train")
        check_output("out_dir", args.out_dir, "folder")
        cfg = TinyModelConfig(**{k: getattr(args, k) for k in TinyModelConfig.__dataclass_fields__})
        print(build_tiny_model(args.out_dir, corpus, cfg))

    return run_cli(prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
