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


def _one_engine_per_process() -> None:
    """A second in-process vLLM engine is refused: deleting one tears down vLLM's process-wide parallel state,
    which breaks every later test that uses the shared engine (a failure far from its cause). Tests pass the
    session ``llm`` instead, or run the command in a subprocess."""
    import src.engine

    build = src.engine.build_llm
    built: list[str] = []

    def build_once(cfg):
        if built:
            raise RuntimeError(f"a second vLLM engine in the test process (the first was built on {built[0]}): "
                               "use the session `llm` fixture or run the command in a subprocess")
        built.append(cfg.model_name_or_path)
        return build(cfg)

    src.engine.build_llm = build_once


_one_engine_per_process()


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


TRAINED_TINY_STEPS = 160  # ~3-4.5 min of CPU time measured (10 min wall on the loaded machine); loss 6.2 -> ~1.1
TRAINED_TINY_CACHE = REPO / ".cache" / "trained_tiny"  # git-ignored; GSI_NO_FIXTURE_CACHE=1 turns it off


@pytest.fixture(scope="session")
def trained_tiny_model_dir(tmp_path_factory, synthetic_dir, tiny_model_dir) -> Path:
    """The tiny model fine-tuned in-process (src.training.train) on the synthetic CoT + PoT training data; saved
    untied (vLLM can reload it in place). 160 steps teach the rationale format, not the arithmetic: greedy answers
    to 45 level-1/2 synthetic questions were 0 correct, 20 reached "The answer is" within 80 tokens (measured);
    the phase transition to correct arithmetic needs ~1-2k steps (demo.py trains its base for 2000).

    CPU training is deterministic, so the result is cached under .cache/trained_tiny/<hash of every input: base
    weights, tokenizer, data, config, training code>; a rerun with any input changed trains again."""
    import hashlib
    import json
    import shutil
    from dataclasses import asdict

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
    digest = hashlib.sha256(json.dumps({k: v for k, v in asdict(cfg).items()
                                        if k not in ("model_name_or_path", "train_file", "model_dir")}).encode())
    for f in [out / "train.json", *sorted(tiny_model_dir.iterdir()), REPO / "src" / "training.py",
              REPO / "src" / "prompts.py"]:
        if f.is_file():
            digest.update(f.name.encode() + f.read_bytes())
    cached = TRAINED_TINY_CACHE / digest.hexdigest()[:20]
    use_cache = os.environ.get("GSI_NO_FIXTURE_CACHE") != "1"
    if use_cache and (cached / "config.json").is_file():
        return cached
    model = train(cfg)
    if not use_cache:
        return model
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    shutil.copytree(model, tmp)
    try:
        os.replace(tmp, cached)
    except OSError:  # another session cached it meanwhile: same inputs, same model
        shutil.rmtree(tmp, ignore_errors=True)
    return cached if (cached / "config.json").is_file() else model
