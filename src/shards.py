"""Scale-out of sampling and evaluation: N independent runs (one engine each), then one merge.

    python inference_state_reset.py ... --results_path out/s --num_shards 4 --shard_index 0   # one per GPU
    python inference_state_reset.py ... --results_path out/s --num_shards 4 --shard_index 3
    python -m src.shards merge out/s            # out/s/results.json ... as one run writes them

Shard ``k`` of ``N`` takes the pool items with index ``i % N == k`` (strided: pools may be ordered by difficulty)
and writes its files into ``<results_path>/shard_<k>_of_<N>/`` (one subfolder per data set when several), then
``shard_manifest.json`` last: N, k, each pool file's sha256 and item ids, the seed, the settings that decide the
samples, library versions and the sha256 of every file it wrote. A shard deletes its old manifest when it starts,
so a folder without one is a shard that did not finish. ``--num_shards 1`` (the default) writes exactly what an
unsharded run writes, in the same place, and no manifest.

The merge refuses (one line, exit 2, nothing written) a missing, unfinished, duplicated or foreign shard (another
N, pool, seed, settings or version), and writes the files one run writes with items in pool order, so its output
depends only on the shard files, not on which shard finished first. Merged counters are sums over the shards,
timings are the slowest shard's (the shards run side by side); README "Scale-out" states what each field means
and the reproducibility contract.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.cli import UsageError, check_output, one_line_errors, output_lock, run_cli
from src.records import read_json_or_jsonl, sha256_file, write_json

MANIFEST = "shard_manifest.json"
SHARD_DIR = re.compile(r"shard_(\d+)_of_(\d+)")
SAMPLING, EVAL = "sampling", "eval"
SAMPLING_FILES = ("results_before_resample.json", "results.json", "resample_results.json", "sampling_stats.json")


@dataclass
class ShardArguments:
    num_shards: int = field(default=1, metadata={
        "help": "split the pool(s) over N independent runs, one engine each (1 = no sharding; merge the shards "
                "with python -m src.shards merge <results_path>)"})
    shard_index: int = field(default=0, metadata={
        "help": "this run's shard k: the items with pool index i %% num_shards == k, written to "
                "<results_path>/shard_<k>_of_<N>/"})

    def __post_init__(self) -> None:
        if self.num_shards < 1:
            raise ValueError(f"--num_shards must be >= 1, got {self.num_shards}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard_index must be between 0 and {self.num_shards - 1} (--num_shards "
                             f"{self.num_shards}), got {self.shard_index}")

    @property
    def sharded(self) -> bool:
        return self.num_shards > 1

    def folder(self, results_path: str | Path) -> Path:
        """Where this run writes: ``results_path`` itself when unsharded."""
        base = Path(results_path)
        return base / f"shard_{self.shard_index}_of_{self.num_shards}" if self.sharded else base

    def indices(self, n: int) -> range:
        return range(self.shard_index, n, self.num_shards)

    def select(self, records: list[dict]) -> list[dict]:
        return [records[i] for i in self.indices(len(records))]

    def check_pools(self, sizes: dict[str, int]) -> None:
        """Every shard must get at least one item of every pool (an empty run has no statistics)."""
        for name, n in sizes.items():
            if n < self.num_shards:
                raise UsageError(f"--num_shards {self.num_shards} is more than the {n} items of {name}; "
                                 "use at most as many shards as items")

    def start(self, folder: Path) -> None:
        """Drop an earlier manifest: from now until the new one is written, this shard counts as unfinished."""
        (folder / MANIFEST).unlink(missing_ok=True)


def _versions() -> dict[str, str]:
    """The libraries that decide the samples (module versions: the CPU build's distribution is not "vllm")."""
    import importlib

    out = {}
    for name in ("vllm", "torch", "transformers"):
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except ImportError:
            out[name] = "absent"
    return out


def _hardware() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()} visible"
    return f"cpu {platform.machine()} {platform.processor()}".strip()


def write_manifest(folder: Path, kind: str, shard: ShardArguments, seed: int, settings: dict[str, Any],
                   pools: list[tuple[str, str | Path, list[dict]]], subdirs: dict[str, str]) -> Path | None:
    """Write ``shard_manifest.json`` after the shard's files (unsharded runs write none).

    ``pools``: (data set name, pool file, its records); ``subdirs``: data set -> the folder under ``folder``
    holding its files ("" for the shard folder itself).
    """
    if not shard.sharded:
        return None
    files = sorted(p for p in folder.rglob("*.json") if p.name != MANIFEST and not p.name.startswith("."))
    manifest = {
        "kind": kind, "num_shards": shard.num_shards, "shard_index": shard.shard_index, "seed": seed,
        "settings": settings, "versions": _versions(), "hardware": _hardware(),
        "datasets": [{"name": name, "pool_file": str(path), "pool_sha256": sha256_file(path),
                      "pool_items": len(records), "subdir": subdirs[name],
                      "item_ids": [r["item_id"] for r in shard.select(records)]} for name, path, records in pools],
        "files": {str(p.relative_to(folder)): sha256_file(p) for p in files},
    }
    return write_json(folder / MANIFEST, manifest)


# ---- the merge ------------------------------------------------------------------------------------------------
# What every shard of one run must agree on (the rest of a manifest names the shard itself).
RUN_KEYS = ("kind", "num_shards", "seed", "settings", "versions")


def _run_identity(manifest: dict) -> dict:
    ident = {k: manifest.get(k) for k in RUN_KEYS}
    ident["pools"] = [(d["name"], d["pool_sha256"], d["pool_items"], d["subdir"]) for d in manifest["datasets"]]
    return ident


def _load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise UsageError(f"{folder} has no {MANIFEST}: that shard did not finish; rerun it (same flags), then merge")
    manifest = read_json_or_jsonl(path)
    for rel, digest in manifest["files"].items():
        if not (folder / rel).is_file() or sha256_file(folder / rel) != digest:
            raise UsageError(f"{folder / rel} is missing or differs from its manifest (changed after the shard "
                             "finished); rerun that shard")
    return manifest


def _differing(a: dict, b: dict) -> str:
    keys = [k for k in a if a[k] != b.get(k)]
    if "settings" in keys:
        keys = [k for k in keys if k != "settings"] + [
            f"settings.{s}" for s in sorted(set(a["settings"]) | set(b["settings"]))
            if a["settings"].get(s) != b["settings"].get(s)]
    return ", ".join(keys)


def collect_shards(root: Path) -> list[tuple[Path, dict]]:
    """The finished shards under ``root`` in shard order; refuses missing, duplicated and foreign ones."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and SHARD_DIR.fullmatch(p.name)) \
        if root.is_dir() else []
    if not folders:
        raise UsageError(f"{root}: no shard_<k>_of_<N> folders to merge")
    shards = [(f, _load_manifest(f)) for f in folders]
    first_folder, first = shards[0]
    ident = _run_identity(first)
    for folder, manifest in shards[1:]:
        other = _run_identity(manifest)
        if other != ident:
            raise UsageError(f"{folder} is foreign to {first_folder}: different {_differing(ident, other)}; "
                             "remove the shards of the other run")
    n = first["num_shards"]
    by_index: dict[int, Path] = {}
    for folder, manifest in shards:
        k = manifest["shard_index"]
        if folder.name != f"shard_{k}_of_{n}":
            raise UsageError(f"{folder}: its manifest says shard {k} of {n}; a moved or copied shard folder")
        if k in by_index:
            raise UsageError(f"shard {k} of {n} appears twice: {by_index[k]} and {folder}")
        by_index[k] = folder
    missing = sorted(set(range(n)) - set(by_index))
    if missing:
        raise UsageError(f"{root}: shard(s) {', '.join(map(str, missing))} of {n} missing; run them, then merge")
    _check_items(shards)
    return sorted(shards, key=lambda s: s[1]["shard_index"])


def _check_items(shards: list[tuple[Path, dict]]) -> None:
    """Each item of each pool in exactly one shard, the one its index says."""
    n = shards[0][1]["num_shards"]
    for d, dataset in enumerate(shards[0][1]["datasets"]):
        seen: dict[str, Path] = {}
        for folder, manifest in shards:
            ids = manifest["datasets"][d]["item_ids"]
            expected = len(range(manifest["shard_index"], dataset["pool_items"], n))
            if len(ids) != expected:
                raise UsageError(f"{folder}: {len(ids)} items of {dataset['name']}, expected {expected}")
            for item_id in ids:
                if item_id in seen:
                    raise UsageError(f"item {item_id} of {dataset['name']} is in two shards: {seen[item_id]} "
                                     f"and {folder}")
                seen[item_id] = folder


def pool_order(shards: list[tuple[Path, dict]], d: int) -> dict[str, int]:
    """item_id -> pool index for data set number ``d`` (shard k's j-th item sits at k + j * N)."""
    n = shards[0][1]["num_shards"]
    return {item_id: manifest["shard_index"] + j * n
            for _, manifest in shards for j, item_id in enumerate(manifest["datasets"][d]["item_ids"])}


def _by_pool(items: list[dict], order: dict[str, int]) -> list[dict]:
    return sorted(items, key=lambda item: order[item["item_id"]])  # stable: a query's own items keep their order


def _read(path: Path) -> Any:
    return read_json_or_jsonl(path)


def _max(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


# ---- sampling ---------------------------------------------------------------------------------------------------
def _merge_round(r: int, parts: list[tuple[dict, list[dict]]], n_queries: int) -> dict[str, Any]:
    """Round ``r`` of the merged ``sampling_stats.json``: a shard that already stopped adds no prompts and keeps
    its last state (the round a single run would have seen it in)."""
    own = [stats["rounds"][r] for stats, _ in parts if r < len(stats["rounds"])]
    last = [stats["rounds"][min(r, len(stats["rounds"]) - 1)] for stats, _ in parts]
    covered = sum(x["covered"] for x in last)
    hist: Counter = Counter()
    for x in last:
        hist.update({int(k): v for k, v in x["correct_count_histogram"].items()})
    out: dict[str, Any] = {
        "round": r, "prompts": sum(x["prompts"] for x in own), "samples": sum(x["samples"] for x in own),
        "generated_tokens": sum(x["generated_tokens"] for x in own),
        "wall_seconds": _max([x["wall_seconds"] for x in own]),
        "generate_seconds": _max([x["generate_seconds"] for x in own]),
        "covered": covered, "coverage": covered / n_queries,
        "below_min_correct": sum(x["below_min_correct"] for x in last),
        "correct_count_histogram": {str(k): v for k, v in sorted(hist.items())},
    }
    if all("coverage_by_level" in x for x in last):
        level_n: Counter = Counter()
        level_covered: Counter = Counter()
        level_tokens: Counter = Counter()
        for (_, results), x in zip(parts, last):
            counts = Counter(str(item["level"]) for item in results)
            level_n.update(counts)
            level_covered.update({lv: round(c * counts[lv]) for lv, c in x["coverage_by_level"].items()})
        for x in own:
            level_tokens.update(x["generated_tokens_by_level"])
        order = sorted(level_n, key=int)
        out["coverage_by_level"] = {lv: level_covered[lv] / level_n[lv] for lv in order}
        out["generated_tokens_by_level"] = {lv: level_tokens[lv] for lv in order}
    out["cumulative_samples"] = sum(x["cumulative_samples"] for x in last)
    out["cumulative_generated_tokens"] = sum(x["cumulative_generated_tokens"] for x in last)
    return out


def merge_sampling_stats(parts: list[tuple[dict, list[dict]]], num_shards: int) -> dict[str, Any]:
    """``parts``: (sampling_stats.json, results.json) of each shard, in shard order."""
    stats = dict(parts[0][0])
    n_queries = sum(s["n_queries"] for s, _ in parts)
    stats["n_queries"] = n_queries
    stats["engine_start_seconds"] = _max([s["engine_start_seconds"] for s, _ in parts])
    n_rounds = max(len(s["rounds"]) for s, _ in parts)
    stats["rounds"] = [_merge_round(r, parts, n_queries) for r in range(n_rounds)]
    stats["shards"] = {"num_shards": num_shards, "rounds_per_shard": [len(s["rounds"]) - 1 for s, _ in parts],
                       "engine_start_seconds": [s["engine_start_seconds"] for s, _ in parts]}
    return stats


def merged_sampling(shards: list[tuple[Path, dict]]) -> dict[str, Any]:
    """relative path -> merged content, for every data set of a sharded sampling run."""
    out: dict[str, Any] = {}
    n = shards[0][1]["num_shards"]
    for d, dataset in enumerate(shards[0][1]["datasets"]):
        order, sub = pool_order(shards, d), dataset["subdir"]
        folders = [folder / sub for folder, _ in shards]
        for name in SAMPLING_FILES[:3]:
            out[str(Path(sub) / name)] = _by_pool([x for f in folders for x in _read(f / name)], order)
        parts = [(_read(f / SAMPLING_FILES[3]), _read(f / "results.json")) for f in folders]
        out[str(Path(sub) / SAMPLING_FILES[3])] = merge_sampling_stats(parts, n)
    return out


# ---- evaluation ---------------------------------------------------------------------------------------------
def merged_eval(shards: list[tuple[Path, dict]]) -> dict[str, Any]:
    """relative path -> merged content: ``<dataset>_res.json``, ``grader_disagreements.json``, ``metrics.json``."""
    from src.evaluation import DISAGREEMENTS_FILE, METRICS_FILE, RES_SUFFIX, grader_disagreements, item_metrics

    metrics = [_read(folder / METRICS_FILE) for folder, _ in shards]
    merged = {k: v for k, v in metrics[0].items() if k != "datasets"}
    merged["engine_start_seconds"] = _max([m["engine_start_seconds"] for m in metrics])
    merged["seconds"] = _max([m["seconds"] for m in metrics])
    results: dict[str, tuple[list[dict], dict]] = {}
    for d, dataset in enumerate(shards[0][1]["datasets"]):
        name = dataset["name"]
        items = _by_pool([x for folder, _ in shards for x in _read(folder / f"{name}{RES_SUFFIX}")],
                         pool_order(shards, d))
        parts = [m["datasets"][name] for m in metrics]
        summary = item_metrics(items, parts[0]["grader"])
        results[name] = (items, {
            **{k: summary[k] for k in ("n", "correct", "accuracy", "grader", "accuracy_by_grader")},
            "generated_tokens": sum(p["generated_tokens"] for p in parts),
            "seconds": _max([p["seconds"] for p in parts]),
            "generate_seconds": _max([p["generate_seconds"] for p in parts]), "by_level": summary["by_level"]})
    merged["datasets"] = {name: m for name, (_, m) in results.items()}
    merged["shards"] = {"num_shards": shards[0][1]["num_shards"],
                        "engine_start_seconds": [m["engine_start_seconds"] for m in metrics]}
    out: dict[str, Any] = {f"{name}{RES_SUFFIX}": items for name, (items, _) in results.items()}
    out[DISAGREEMENTS_FILE] = grader_disagreements(results)
    out[METRICS_FILE] = merged
    return out


def merge(root: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Merge the finished shards under ``root`` into ``out`` (default ``root``); nothing is written on refusal."""
    root = Path(root)
    out = Path(out) if out is not None else root
    check_output("out", out, "folder")
    shards = collect_shards(root)
    contents = merged_sampling(shards) if shards[0][1]["kind"] == SAMPLING else merged_eval(shards)
    with output_lock(out):
        return {rel: write_json(out / rel, obj) for rel, obj in contents.items()}


def main(argv: list[str] | None = None) -> int:
    prog = "python -m src.shards"
    parser = one_line_errors(argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0]), prog)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="merge <DIR>/shard_<k>_of_<N>/ into the files one run writes")
    m.add_argument("dir", help="the --results_path the shards were given")
    m.add_argument("--out", default=None, help="folder for the merged files (default: DIR)")
    one_line_errors(m, prog)

    def body() -> int:
        args = parser.parse_args(argv)
        written = merge(args.dir, args.out)
        print(f"merged {len(written)} files into {args.out or args.dir}")
        return 0

    return run_cli(prog, body)


if __name__ == "__main__":
    sys.exit(main())
