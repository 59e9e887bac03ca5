"""Perplexity of a rationale under a model, with vLLM prompt log-probs or with transformers.

    from src.analysis.perplexity import HfPerplexity, VllmPerplexity
    ppl = HfPerplexity("output/tiny/exp/iter_0/model")([("What is 2+3?", "2+3=5\\nThe answer is 5")])

Definition (both backends compute exactly this): the token ids are ``tok(student_prompt(question))`` (with the
tokenizer's special tokens, e.g. BOS) followed by ``tok(rationale, add_special_tokens=False)``, the way training
builds an example (``src.prompts.training_pair``) but without the EOS. The perplexity is
``exp(-mean log p(t_j | t_<j))`` over the rationale tokens only: how surprising the rationale is to the model
given the question. Tokenizing the two parts separately keeps the prompt/rationale boundary exact (a BPE merge
across it would blur which tokens are the rationale's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from src.prompts import student_prompt

Pair = tuple[str, str]  # (question, rationale)
PerplexityFn = Callable[[Sequence[Pair]], list[float]]


def pair_token_ids(tokenizer: Any, question: str, rationale: str, max_len: int | None = None) -> tuple[list[int], int]:
    """(token ids of prompt + rationale, number of prompt tokens); the rationale is cut to fit ``max_len``."""
    prompt_ids = list(tokenizer(student_prompt(question)).input_ids)
    rationale_ids = list(tokenizer(rationale, add_special_tokens=False).input_ids)
    ids = prompt_ids + rationale_ids
    if max_len is not None and len(ids) > max_len:
        ids = ids[:max_len]
    return ids, len(prompt_ids)


def perplexity_of(logprobs: Sequence[float]) -> float:
    """exp of the mean negative log-probability; NaN when there is no token to score."""
    if not logprobs:
        return math.nan
    return math.exp(-sum(logprobs) / len(logprobs))


class HfPerplexity:
    """Perplexities with a transformers model, in padded batches (right padding, attention mask)."""

    def __init__(self, model_dir: str | Path, batch_size: int = 16, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(self.device).eval()
        self.batch_size = batch_size
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None

    def __call__(self, pairs: Sequence[Pair]) -> list[float]:
        import torch

        encoded = [pair_token_ids(self.tokenizer, q, r, self.max_len) for q, r in pairs]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out: list[float] = []
        for start in range(0, len(encoded), self.batch_size):
            batch = encoded[start:start + self.batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (ids, _) in enumerate(batch):
                input_ids[i, :len(ids)] = torch.tensor(ids)
                mask[i, :len(ids)] = 1
            with torch.no_grad():
                logits = self.model(input_ids=input_ids.to(self.device),
                                    attention_mask=mask.to(self.device)).logits.float()
            # position j-1 predicts token j
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(
                -1, input_ids[:, 1:].to(self.device).unsqueeze(-1)).squeeze(-1).cpu()
            for i, (ids, n_prompt) in enumerate(batch):
                out.append(perplexity_of(logprobs[i, n_prompt - 1:len(ids) - 1].tolist()))
        return out


class VllmPerplexity:
    """Perplexities from vLLM prompt log-probs on an existing engine: ``SamplingParams(prompt_logprobs=0,
    max_tokens=1)`` returns the log-probability of every prompt token given the ones before it."""

    def __init__(self, llm: Any):
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        try:
            self.max_len: int | None = int(llm.llm_engine.model_config.max_model_len) - 1  # room for 1 new token
        except AttributeError:
            self.max_len = None

    def __call__(self, pairs: Sequence[Pair]) -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        encoded = [pair_token_ids(self.tokenizer, q, r, self.max_len) for q, r in pairs]
        params = SamplingParams(prompt_logprobs=0, max_tokens=1, temperature=0.0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in encoded], params,
                                    use_tqdm=False)
        result = []
        for (ids, n_prompt), output in zip(encoded, outputs):
            per_position = output.prompt_logprobs  # [None, {token_id: Logprob}, ...], one entry per prompt token
            result.append(perplexity_of([per_position[j][ids[j]].logprob for j in range(n_prompt, len(ids))]))
        return result
