"""Sharded sampling and evaluation (src/shards.py): the real command lines write shard folders with manifests, the
merge writes what one run writes (items in pool order, bytes independent of which shard finished first) and
refuses missing, unfinished, duplicated, changed and foreign shards with one line, exit 2, nothing written.

The tests without ``llm`` drive the real CLIs in-process with a deterministic stand-in engine (a function of the
prompt alone, so one run and N merged shards must agree byte for byte); the ``llm`` tests do the same with the
suite's shared vLLM engine.

    .venv/bin/python -m pytest -x -q tests/test_shards.py -k "not engine"
"""

from __future__ import annotations

import json
import shutil
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

import eval as eval_cli
import src.engine
from src import shards
from src.records import load_records
from src.sampling.cli import main as sampling_main
from src.sampling.loop import OUTPUT_FILES

TIMING = ("wall_seconds", "generate_seconds", "engine_start_seconds", "seconds")


class PromptFunctionLLM:
    """Answers each prompt with a function of the prompt text alone (correct for about a third), like a greedy
    engine that is batch invariant; counts its calls."""

    def __init__(self, pool: list[dict]):
        self.golds = {r["question"]: r["answer_value"] for r in pool}
        self.prompts: list[str] = []

    def _answer(self, prompt: str, j: int) -> str:
        gold = next((g for q, g in self.golds.items() if q in prompt), "0")
        return gold if (zlib.crc32(prompt.encode()) + j) % 3 == 0 else str(int(gold) + 1)

    def generate(self, prompts, params, use_tqdm=False):
        self.prompts += prompts
        return [SimpleNamespace(outputs=[SimpleNamespace(text=f"Step.\nThe answer is {self._answer(p, j)}",
                                                         token_ids=[0] * (5 + j)) for j in range(params.n)])
                for p in prompts]

    def get_tokenizer(self):
        raise AssertionError("not needed by the strategies used here")


@pytest.fixture()
def pool_file(synthetic_dir, tmp_path) -> Path:
    records = load_records(synthetic_dir / "inference" / "cot" / "synthetic.json")[:11]
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    """The CLIs check for a model folder; the stand-in engine never reads it."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture()
def fake_engine(monkeypatch, pool_file):
    engine = PromptFunctionLLM(load_records(pool_file))
    monkeypatch.setattr(src.engine, "build_llm", lambda cfg: engine)
    return engine


def sample(pool_file: Path, model_dir: Path, out: Path, *extra: str, strategy: str = "answer_driven") -> int:
    return sampling_main(strategy, [
        "--model_name_or_path", str(model_dir), "--inference_data_file", str(pool_file), "--dataset_name",
        "synthetic", "--results_path", str(out), "--sample_num", "2", "--min_correct_num", "2",
        "--max_resample_num", "3", "--max_length", "32", "--temperature", "0.7", "--no_progress", *extra])


def sample_shards(pool_file, model_dir, out, n, order=None, *extra):
    for k in order if order is not None else range(n):
        assert sample(pool_file, model_dir, out, "--num_shards", str(n), "--shard_index", str(k), *extra) == 0


def without_timing(obj):
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING and k != "shards"}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def merge_status(root: Path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = shards.main(["merge", str(root), *extra])
    return rc, capsys.readouterr().err


# ---- sampling: shards, manifest, merge ------------------------------------------------------------------------
def test_one_shard_writes_todays_files_and_three_merged_shards_match_it(pool_file, model_dir, fake_engine,
                                                                         tmp_path):
    one, three = tmp_path / "one", tmp_path / "three"
    assert sample(pool_file, model_dir, one, "--num_shards", "1", "--shard_index", "0") == 0
    assert sorted(files_of(one)) == sorted(OUTPUT_FILES)  # no shard folder, no manifest
    sample_shards(pool_file, model_dir, three, 3, [2, 0, 1])
    manifest = json.loads((three / "shard_1_of_3" / shards.MANIFEST).read_text())
    pool = load_records(pool_file)
    assert manifest["datasets"][0]["item_ids"] == [r["item_id"] for r in pool[1::3]]
    assert manifest["datasets"][0]["pool_sha256"] == shards.sha256_file(pool_file)
    assert (manifest["num_shards"], manifest["shard_index"], manifest["seed"]) == (3, 1, 42)
    assert set(manifest["files"]) == set(OUTPUT_FILES)
    assert shards.main(["merge", str(three)]) == 0
    for name in OUTPUT_FILES[:3]:  # items: byte for byte what one run wrote
        assert (three / name).read_bytes() == (one / name).read_bytes(), name
    merged = json.loads((three / "sampling_stats.json").read_text())
    single = json.loads((one / "sampling_stats.json").read_text())
    assert without_timing(merged) == without_timing(single)  # counts, coverage, histograms, per level, per round
    assert merged["shards"]["num_shards"] == 3
    assert [r["item_id"] for r in json.loads((three / "results.json").read_text())] == [r["item_id"] for r in pool]


def test_merge_bytes_do_not_depend_on_which_shard_finished_first(pool_file, model_dir, fake_engine, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    sample_shards(pool_file, model_dir, a, 2, [1, 0])  # shard 1 finished first
    b.mkdir()
    for k in (0, 1):  # the same shard files, shard 0's written first
        shutil.copytree(a / f"shard_{k}_of_2", b / f"shard_{k}_of_2")
    assert shards.main(["merge", str(a), "--out", str(tmp_path / "ma")]) == 0
    assert shards.main(["merge", str(b), "--out", str(tmp_path / "mb")]) == 0
    assert files_of(tmp_path / "ma") == files_of(tmp_path / "mb")


def test_a_rerun_shard_reproduces_its_items(pool_file, model_dir, fake_engine, tmp_path):
    sample_shards(pool_file, model_dir, tmp_path, 2)
    before = files_of(tmp_path / "shard_0_of_2")
    assert sample(pool_file, model_dir, tmp_path, "--num_shards", "2", "--shard_index", "0") == 0
    after = files_of(tmp_path / "shard_0_of_2")
    assert all(after[name] == before[name] for name in OUTPUT_FILES[:3])  # the stats carry new timings


def test_rerunning_one_shard_runs_only_its_items(pool_file, model_dir, fake_engine, tmp_path):
    sample_shards(pool_file, model_dir, tmp_path / "s", 3)
    fake_engine.prompts.clear()
    (tmp_path / "s" / "shard_2_of_3" / shards.MANIFEST).unlink()  # shard 2 failed
    assert sample(pool_file, model_dir, tmp_path / "s", "--num_shards", "3", "--shard_index", "2") == 0
    pool = load_records(pool_file)
    asked = {r["item_id"] for r in pool if any(r["question"] in p for p in fake_engine.prompts)}
    assert asked == {r["item_id"] for r in pool[2::3]}


@pytest.fixture()
def two_shards(pool_file, model_dir, fake_engine, tmp_path) -> Path:
    root = tmp_path / "s"
    sample_shards(pool_file, model_dir, root, 2)
    return root


def refuse(root: Path, capsys, pattern: str) -> None:
    rc, err = merge_status(root, capsys)
    assert rc == 2 and err.count("\n") == 1 and pattern in err, err
    assert not (root / "results.json").exists() and not (root / "sampling_stats.json").exists()


def test_merge_refuses_a_missing_shard(two_shards, capsys):
    shutil.rmtree(two_shards / "shard_1_of_2")
    refuse(two_shards, capsys, "shard(s) 1 of 2 missing")


def test_merge_refuses_an_unfinished_shard(two_shards, capsys):
    (two_shards / "shard_0_of_2" / shards.MANIFEST).unlink()  # what a shard that died leaves behind
    refuse(two_shards, capsys, "did not finish")


def test_merge_refuses_a_file_changed_after_the_shard_finished(two_shards, capsys):
    (two_shards / "shard_1_of_2" / "results.json").write_text("[]\n")
    refuse(two_shards, capsys, "differs from its manifest")


def test_merge_refuses_a_duplicated_shard(two_shards, capsys):
    shutil.copytree(two_shards / "shard_0_of_2", two_shards / "shard_0_of_2_copy")  # ignored: not a shard name
    shutil.rmtree(two_shards / "shard_1_of_2")
    shutil.copytree(two_shards / "shard_0_of_2", two_shards / "shard_1_of_2")  # shard 0 copied over shard 1
    refuse(two_shards, capsys, "manifest says shard 0 of 2")


def test_merge_refuses_an_item_in_two_shards(two_shards, capsys):
    path = two_shards / "shard_1_of_2" / shards.MANIFEST
    manifest = json.loads(path.read_text())
    other = json.loads((two_shards / "shard_0_of_2" / shards.MANIFEST).read_text())
    manifest["datasets"][0]["item_ids"][0] = other["datasets"][0]["item_ids"][0]
    path.write_text(json.dumps(manifest))
    refuse(two_shards, capsys, "is in two shards")


def test_merge_refuses_a_shard_with_another_seed(two_shards, pool_file, model_dir, capsys):
    assert sample(pool_file, model_dir, two_shards, "--num_shards", "2", "--shard_index", "1", "--seed", "7") == 0
    refuse(two_shards, capsys, "different seed, settings.engine.seed")


def test_merge_refuses_a_shard_of_another_pool(two_shards, pool_file, model_dir, capsys):
    records = load_records(pool_file)
    pool_file.write_text(json.dumps(records[::-1]))
    assert sample(pool_file, model_dir, two_shards, "--num_shards", "2", "--shard_index", "1") == 0
    refuse(two_shards, capsys, "different pools")


def test_merge_refuses_a_shard_of_another_count(two_shards, pool_file, model_dir, capsys):
    assert sample(pool_file, model_dir, two_shards, "--num_shards", "3", "--shard_index", "2") == 0
    refuse(two_shards, capsys, "different num_shards")


@pytest.mark.parametrize("flags, message", [
    (["--num_shards", "0"], "--num_shards must be >= 1"),
    (["--num_shards", "2", "--shard_index", "2"], "--shard_index must be between 0 and 1"),
    (["--num_shards", "2", "--shard_index", "-1"], "--shard_index must be between 0 and 1"),
    (["--num_shards", "12", "--shard_index", "0"], "more than the 11 items"),
])
def test_bad_shard_flags_exit_2_before_the_engine(pool_file, model_dir, tmp_path, monkeypatch, capsys, flags,
                                                   message):
    def forbidden(cfg):
        raise AssertionError("engine started")

    monkeypatch.setattr(src.engine, "build_llm", forbidden)
    capsys.readouterr()
    assert sample(pool_file, model_dir, tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("inference_answer_driven.py: error: ") and message in err and err.count("\n") == 1
    capsys.readouterr()
    assert eval_cli.main(["--model_name_or_path", str(model_dir), "--results_path", str(tmp_path / "out"),
                          "--dataset_name", "synthetic", "--eval_data_file", str(pool_file), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---- evaluation ------------------------------------------------------------------------------------------------
def evaluate(test_file: Path, model_dir: Path, out: Path, *extra: str) -> int:
    return eval_cli.main(["--model_name_or_path", str(model_dir), "--results_path", str(out), "--dataset_name",
                          "synthetic", "--eval_data_file", str(test_file), "--max_length", "32", *extra])


def test_eval_shards_merge_to_the_single_run(pool_file, model_dir, fake_engine, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert evaluate(pool_file, model_dir, one) == 0
    for k in (1, 0):
        assert evaluate(pool_file, model_dir, two, "--num_shards", "2", "--shard_index", str(k)) == 0
    assert shards.main(["merge", str(two)]) == 0
    for name in ("synthetic_res.json", "grader_disagreements.json"):
        assert (two / name).read_bytes() == (one / name).read_bytes()
    merged, single = (json.loads((d / "metrics.json").read_text()) for d in (two, one))
    assert without_timing(merged) == without_timing(single)
    assert merged["shards"]["num_shards"] == 2


# ---- the real engine -------------------------------------------------------------------------------------------
def test_engine_one_shard_is_todays_output_and_two_shards_merge_in_pool_order(llm, synthetic_dir, tmp_path,
                                                                               monkeypatch):
    """Greedy (the CPU engine takes no per-request seed): the shards' samples equal the single run's."""
    from src.sampling import SamplingConfig, run_sampling, write_sampling_outputs

    pool = load_records(synthetic_dir / "inference" / "cot" / "synthetic.json")[:6]
    pool_file = tmp_path / "pool.json"
    pool_file.write_text(json.dumps(pool))
    monkeypatch.setattr(src.engine, "build_llm", lambda cfg: llm)
    model = llm.llm_engine.model_config.model
    flags = ["--temperature", "0", "--max_length", "24", "--sample_num", "1", "--min_correct_num", "1",
             "--max_resample_num", "1"]
    cfg = SamplingConfig(strategy="vanilla", temperature=0.0, max_new_tokens=24, sample_num=1, min_correct_num=1,
                         max_resample_num=1, progress=False)
    write_sampling_outputs(run_sampling(llm, pool, "synthetic", cfg), tmp_path / "today")
    assert sample(pool_file, model, tmp_path / "one", *flags, strategy="vanilla") == 0
    for k in (1, 0):
        assert sample(pool_file, model, tmp_path / "two", *flags, "--num_shards", "2", "--shard_index", str(k),
                      strategy="vanilla") == 0
    assert shards.main(["merge", str(tmp_path / "two")]) == 0
    for name in OUTPUT_FILES[:3]:
        today = (tmp_path / "today" / name).read_bytes()
        assert (tmp_path / "one" / name).read_bytes() == today
        assert (tmp_path / "two" / name).read_bytes() == today
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert [r["item_id"] for r in results] == [r["item_id"] for r in pool]


def test_engine_eval_two_shards_merge_to_the_single_run(llm, synthetic_dir, tmp_path, monkeypatch):
    test = load_records(synthetic_dir / "test" / "synthetic.json", "test")[:6]
    test_file = tmp_path / "test.json"
    test_file.write_text(json.dumps(test))
    monkeypatch.setattr(src.engine, "build_llm", lambda cfg: llm)
    model = Path(llm.llm_engine.model_config.model)
    assert evaluate(test_file, model, tmp_path / "one") == 0
    for k in (0, 1):
        assert evaluate(test_file, model, tmp_path / "two", "--num_shards", "2", "--shard_index", str(k)) == 0
    assert shards.main(["merge", str(tmp_path / "two")]) == 0
    name = "synthetic_res.json"
    assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_engine_two_real_shards_side_by_side_then_merge_and_a_rerun_reproduces_one(tiny_model_dir, synthetic_dir,
                                                                                   tmp_path):
    """The launcher on CPU: two engines at once, each pinned to its own core, then the merge; rerunning shard 1
    alone reproduces its files byte for byte (same N, seed, settings, machine, vLLM)."""
    import os
    import subprocess

    pool = load_records(synthetic_dir / "inference" / "cot" / "synthetic.json")[:8]
    pool_file = tmp_path / "pool.json"
    pool_file.write_text(json.dumps(pool))
    out = tmp_path / "out"
    flags = ["inference_rationale_driven.py", "--model_name_or_path", str(tiny_model_dir), "--inference_data_file",
             str(pool_file), "--dataset_name", "synthetic", "--results_path", str(out), "--sample_num", "2",
             "--min_correct_num", "1", "--max_resample_num", "1", "--temperature", "0.7", "--max_length", "16",
             "--max_model_len", "512", "--cpu_kvcache_gib", "1", "--no_progress"]
    env = {**os.environ, "NUM_SHARDS": "2", "SHARDS_PER_NODE": "2", "CPU_BINDS": "0|1", "PYTHON": sys.executable}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(["bash", "scripts/cluster/sample_shards.sh", *flags], cwd=shards_repo(), env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "VLLM_CPU_OMP_THREADS_BIND=0" in proc.stderr and "VLLM_CPU_OMP_THREADS_BIND=1" in proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert [r["item_id"] for r in results] == [r["item_id"] for r in pool]  # every item once, in pool order
    assert all(len(r["pred"]) >= 2 for r in results)
    first = files_of(out / "shard_1_of_2")
    proc = subprocess.run(["bash", "scripts/cluster/sample_shards.sh", *flags], cwd=shards_repo(),
                          env={**env, "SHARD_INDEX": "1"}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = files_of(out / "shard_1_of_2")
    assert all(again[name] == first[name] for name in OUTPUT_FILES[:3])


def shards_repo() -> Path:
    return Path(__file__).resolve().parents[1]


def test_iteration_script_with_num_shards_samples_through_the_launcher_and_merges(tmp_path):
    import os
    import shlex
    import subprocess

    env = {**os.environ, "DRY_RUN": "1", "NUM_ITERS": "1", "NUM_SHARDS": "4", "SHARDS_PER_NODE": "2",
           "OUTPUT_DIR": str(tmp_path)}
    proc = subprocess.run(["bash", "scripts/tiny/cot_train_state_reset.sh"], cwd=shards_repo(), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("[dry-run] sample:"))
    words = shlex.split(line.split(":", 1)[1])
    launcher = words.index("scripts/cluster/sample_shards.sh")
    settings = dict(w.split("=", 1) for w in words[1:launcher - 1])
    iter_dir = Path(settings["MERGE_OUT"]).parent
    assert settings["NUM_SHARDS"] == "4" and settings["SHARDS_PER_NODE"] == "2" and settings["SKIP_FINISHED"] == "1"
    assert settings["MERGE_OUT"] == str(iter_dir / "inference_data")  # what the data stage reads
    assert words[words.index("--results_path") + 1] == str(iter_dir / "inference_shards")
    assert "--num_shards" not in words  # the launcher adds each shard's own flags
