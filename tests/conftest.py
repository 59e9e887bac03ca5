"""Session fixtures shared by the whole suite: one synthetic world, one tiny model, one vLLM engine.

The engine takes ~50 s to start on CPU, so every test that generates uses the same ``llm`` (tests that need
their own engine or server are few and say why).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GSI_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a hub during tests
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set GSI_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic world in the project's data layout (train/, inference/, test/)."""
    from src.synthetic import WorldConfig, write_world

    out = tmp_path_factory.mktemp("synthetic")
    write_world(WorldConfig(seed=0, n_train=600, n_pool=60, n_test_held_in=60, n_test_held_out=60), out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, synthetic_dir) -> Path:
    """The tiny Llama + tokenizer every test shares (random weights; built in a few seconds)."""
    from src.records import load_records
    from src.tiny import build_tiny_model

    records = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")
    records += load_records(synthetic_dir / "train" / "pot" / "synthetic.json")
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", records)


@pytest.fixture(scope="session")
def llm(trained_tiny_model_dir):
    """One real vLLM engine (CPU build here, CUDA on a cluster) for the whole session."""
    from src.engine import EngineConfig, build_llm

    engine = build_llm(EngineConfig(str(trained_tiny_model_dir), max_model_len=1024, seed=0))
    yield engine
    del engine


TRAINED_TINY_STEPS = 160  # ~1-2 min of CPU; see trained_tiny_model_dir for the accuracy it reaches


@pytest.fixture(scope="session")
def trained_tiny_model_dir(tmp_path_factory, synthetic_dir, tiny_model_dir) -> Path:
    """The tiny model fine-tuned in-process (src.training.train) on the synthetic CoT + PoT training data, so that
    greedy decoding solves a good share of 1-2-step problems; saved untied (vLLM can reload it in place)."""
    from src.records import load_records, write_json
    from src.training import TrainConfig, train

    out = tmp_path_factory.mktemp("trained_tiny")
    records = load_records(synthetic_dir / "train" / "cot" / "synthetic.json")
    records += load_records(synthetic_dir / "train" / "pot" / "synthetic.json")
    write_json(out / "train.json", records)
    # A 1M-parameter model needs a far higher rate than the paper's 1e-5 (which fits an 8B model).
    cfg = TrainConfig(model_name_or_path=str(tiny_model_dir), train_file=str(out / "train.json"),
                      model_dir=str(out / "run"), batch_size=16, n_epochs=100, max_steps=TRAINED_TINY_STEPS,
                      learning_rate=5e-3, lr_scheduler="cosine", warmup_step=TRAINED_TINY_STEPS // 10,
                      adam_beta2=0.98, keep_num_ckpt=0, seed=0, show_progress=False)
    return train(cfg)
