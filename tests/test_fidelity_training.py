"""Training tokenization switches: BOS on the prompt (this project, as vLLM samples) or not (the original), and
stripping of question and rationale (the original); the llama3 profile trains as the original, tiny as before."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from src.training import IGNORE_INDEX, TrainConfig, tokenize_examples

REPO = Path(__file__).resolve().parents[1]
RECORD = {"item_id": "x_0", "question": "  Tom has 3 apples and buys 4. How many?\n",
          "answer_cot": "\n3 + 4 = 7\nThe answer is 7  \n", "answer_value": "7"}
PROMPT = ("Below is a math problem, please give a step-by-step answer.\n\n### Question:\n{q}\n\n"
          "### Your step-by-step answer:\n")


def _split(ex: dict) -> tuple[list[int], list[int]]:
    n = sum(label == IGNORE_INDEX for label in ex["labels"])
    return ex["input_ids"][:n], ex["input_ids"][n:]


def test_prompt_bos_and_strip_switches(tiny_model_dir):
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # a BOS-adding tokenizer, as Llama-3's is (<|begin_of_text|> first): the tiny one adds no special token
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{tok.bos_token} $A", pair=f"{tok.bos_token} $A $B",
                                                       special_tokens=[(tok.bos_token, tok.bos_token_id)])
    assert tok("x")["input_ids"][0] == tok.bos_token_id
    (ours,) = tokenize_examples([RECORD], tok, 1024)
    prompt, completion = _split(ours)
    assert prompt == tok(PROMPT.format(q=RECORD["question"]))["input_ids"] and prompt[0] == tok.bos_token_id
    assert tok.decode(completion) == RECORD["answer_cot"] + tok.eos_token

    (original,) = tokenize_examples([RECORD], tok, 1024, prompt_bos=False, strip_text=True)
    prompt, completion = _split(original)
    q, cot = RECORD["question"].strip(), RECORD["answer_cot"].strip()
    assert prompt == tok(PROMPT.format(q=q), add_special_tokens=False)["input_ids"]
    assert tok.bos_token_id not in prompt
    assert completion == tok(cot, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def _train_flags(script: str, **env: str) -> TrainConfig:
    from transformers import HfArgumentParser

    proc = subprocess.run(["bash", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DRY_RUN": "1", "NUM_ITERS": "1", **env})
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("[dry-run] train:"))
    argv = shlex.split(line.split(":", 1)[1])
    (cfg,) = HfArgumentParser(TrainConfig).parse_args_into_dataclasses(args=argv[argv.index("train.py") + 1:])
    return cfg


def test_llama3_profile_tokenizes_as_the_original_and_tiny_as_before(tmp_path):
    llama = _train_flags("scripts/llama3/cot_train_state_reset.sh", MODEL_PATH="/m", OUTPUT_DIR=str(tmp_path))
    assert (llama.prompt_bos, llama.strip_text) == (False, True)
    tiny = _train_flags("scripts/tiny/cot_train_state_reset.sh", OUTPUT_DIR=str(tmp_path), TINY_SETUP="0")
    assert (tiny.prompt_bos, tiny.strip_text) == (True, False)
