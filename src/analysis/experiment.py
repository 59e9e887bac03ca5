"""Read what an experiment folder holds, tolerating unfinished runs (every gap becomes a note, not a traceback).

    from src.analysis.experiment import load_experiment
    arm = load_experiment("output/tiny/state_reset_sample_8_correct_4_max_8_orig_false_preiter_false")
    arm.accuracy[0]["synthetic"].accuracy, arm.notes

Layout (SPEC.md, written by the iteration scripts)::

    <exp>/iter_data/<name>_iter_<i>.json        training data of iteration i (i = 0: the original data)
    <exp>/iter_<i>/model/                       the trained checkpoint (possibly under model/model)
    <exp>/iter_<i>/eval_data/                   metrics.json + <dataset>_res.json
    <exp>/iter_<i>/inference_data/[<dataset>/]  results.json, sampling_stats.json, ...

Accuracy is recounted from ``<dataset>_res.json`` (the per-item ``correct`` flags) when the file is there, and
taken from ``metrics.json`` otherwise. The self-generated data of iteration i are the correct samples of its
sampling run (``correct_pred`` of ``results.json``), each carrying its query's ``level`` when the pool has one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.records import RecordError, read_json_or_jsonl
from src.sampling.strategies import ARM_ALIASES, BRUTE_FORCE, STRATEGIES, arm_of

_ITER_DIR = re.compile(r"^iter_(\d+)$")
_ITER_FILE = re.compile(r"^(?P<name>.+)_iter_(?P<i>\d+)\.json$")
KNOWN_STRATEGIES = (*(s for s in STRATEGIES if s != "vanilla"), BRUTE_FORCE, "vanilla")  # longest prefix first
CONTROL = "vanilla"  # 8 samples, no resampling: the paper's control


@dataclass
class Score:
    """Accuracy counts of one data set at one iteration."""

    n: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")


@dataclass
class Arm:
    """Everything the report needs about one strategy's run, whoever wrote it (iteration scripts or demo)."""

    label: str  # shown in tables and legends
    strategy: str = ""  # a KNOWN_STRATEGIES name when known
    accuracy: dict[int, dict[str, Score]] = field(default_factory=dict)  # iteration -> data set -> score
    generated: dict[int, list[dict]] = field(default_factory=dict)  # iteration -> self-generated records
    sampling_stats: dict[int, list[dict]] = field(default_factory=dict)  # iteration -> sampling_stats.json's
    original: list[dict] = field(default_factory=list)  # the original (iteration-0) training data
    model_dir: Path | None = None  # the iteration-0 model (perplexities, token counts)
    notes: list[str] = field(default_factory=list)  # what is missing or unreadable
    source: str = ""  # the folder it was read from
    control: bool | None = None  # the control arm; None: the vanilla strategy (no resampling) is the control

    def add_eval(self, iteration: int, dataset: str, items: list[dict]) -> Score:
        """Count one data set's evaluation items (``<dataset>_res.json`` / ``evaluate_dataset``'s first value)."""
        score = Score(len(items), sum(bool(it.get("correct")) for it in items))
        self.accuracy.setdefault(iteration, {})[dataset] = score
        return score

    def add_sampling(self, iteration: int, stats: dict, results: list[dict]) -> None:
        """Add one sampling run (``sampling_stats.json`` and ``results.json`` / a ``SamplingRun``'s fields)."""
        self.sampling_stats.setdefault(iteration, []).append(stats)
        self.generated.setdefault(iteration, []).extend(
            generated_records(results, str(stats.get("dataset", ""))))
        if not self.strategy:
            self.strategy = strategy_of_stats(stats)

    @property
    def is_control(self) -> bool:
        return self.control if self.control is not None else self.strategy == CONTROL

    @property
    def is_brute_force(self) -> bool:
        return self.strategy == BRUTE_FORCE


def strategy_of_stats(stats: dict) -> str:
    """Strategy name of a sampling run; the vanilla strategy with resampling rounds is brute force."""
    return arm_of(str(stats.get("strategy", "")), int(stats.get("max_resample_num", 0) or 0))


def strategy_of_name(folder: str) -> str:
    """Strategy from an experiment folder name (``state_reset_sample_8_...``); '' when it names none."""
    lowered = folder.lower()
    alias = next((arm for prefix, arm in ARM_ALIASES.items() if lowered.startswith(prefix)), "")
    if alias:
        return alias
    return next((s for s in KNOWN_STRATEGIES if lowered.startswith(s)), "")


def _read(path: Path, notes: list[str]) -> Any | None:
    try:
        return read_json_or_jsonl(path)
    except RecordError as err:
        notes.append(f"unreadable: {err}")
        return None


def generated_records(results: list[dict], dataset: str) -> list[dict]:
    """One record per correct sample of a sampling run (duplicates kept: how often the model solves a question
    is exactly what shifts the distribution)."""
    out = []
    for item in results:
        if not isinstance(item, dict):
            continue
        for response in item.get("correct_pred") or []:
            rec = {"item_id": item.get("item_id", ""), "question": item.get("question", ""),
                   "answer_cot": response, "dataset": dataset}
            if item.get("level") is not None:
                rec["level"] = item["level"]
            out.append(rec)
    return out


def find_model_dir(path: Path) -> Path | None:
    """A Hugging Face model folder at ``path`` or one level below (training saves to ``<model_dir>/model``)."""
    for candidate in (path, path / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _load_eval(folder: Path, iteration: int, notes: list[str]) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    if not folder.is_dir():
        notes.append(f"iter_{iteration}: no evaluation results ({folder.name}/ missing)")
        return scores
    metrics_files = sorted(folder.rglob("metrics.json"))
    res_files = sorted(folder.rglob("*_res.json"))
    if not metrics_files and not res_files:
        notes.append(f"iter_{iteration}: evaluation not finished (no metrics.json or *_res.json in {folder})")
        return scores
    if not metrics_files:
        notes.append(f"iter_{iteration}: evaluation not finished (no metrics.json); counted the *_res.json found")
    from_metrics: dict[str, Score] = {}
    for mfile in metrics_files:
        metrics = _read(mfile, notes)
        if isinstance(metrics, dict):
            for name, m in (metrics.get("datasets") or {}).items():
                if isinstance(m, dict) and "n" in m and "correct" in m:
                    from_metrics[name] = Score(int(m["n"]), int(m["correct"]))
    for rfile in res_files:
        name = rfile.name[:-len("_res.json")]
        items = _read(rfile, notes)
        if isinstance(items, list) and items:
            scores[name] = Score(len(items), sum(bool(it.get("correct")) for it in items if isinstance(it, dict)))
    for name, score in from_metrics.items():
        if name not in scores:
            notes.append(f"iter_{iteration}: {name}_res.json missing; accuracy taken from metrics.json")
            scores[name] = score
    return scores


def _load_sampling(folder: Path, iteration: int, notes: list[str]) -> tuple[list[dict], list[dict]]:
    stats_list: list[dict] = []
    generated: list[dict] = []
    if not folder.is_dir():
        notes.append(f"iter_{iteration}: no sampling results ({folder.name}/ missing)")
        return stats_list, generated
    stats_files = sorted(folder.rglob("sampling_stats.json"))
    if not stats_files:
        notes.append(f"iter_{iteration}: sampling not finished (no sampling_stats.json in {folder})")
    for sfile in stats_files:
        stats = _read(sfile, notes)
        if not isinstance(stats, dict) or not stats.get("rounds"):
            notes.append(f"iter_{iteration}: {sfile} has no rounds")
            continue
        stats_list.append(stats)
        results_file = sfile.parent / "results.json"
        if results_file.is_file():
            results = _read(results_file, notes)
            if isinstance(results, list):
                generated += generated_records(results, str(stats.get("dataset", sfile.parent.name)))
        else:
            notes.append(f"iter_{iteration}: {results_file} missing (no self-generated data for "
                         f"{stats.get('dataset', '?')})")
    return stats_list, generated


def load_experiment(path: str | Path, label: str | None = None) -> Arm:
    """Read one experiment folder; anything missing or unreadable is listed in ``Arm.notes``."""
    path = Path(path)
    arm = Arm(label=label or path.name, source=str(path))
    if not path.is_dir():
        arm.notes.append(f"{path}: folder not found")
        return arm
    iter_dirs = {int(m.group(1)): p for p in path.iterdir() if p.is_dir() and (m := _ITER_DIR.match(p.name))}
    data_dir = path / "iter_data"
    if not iter_dirs and not data_dir.is_dir():
        arm.notes.append(f"{path}: no iter_<i>/ folders and no iter_data/: not an experiment folder")
        return arm
    # iteration-0 training data is the original data
    originals = sorted(p for p in data_dir.glob("*_iter_0.json")) if data_dir.is_dir() else []
    for ofile in originals:
        records = _read(ofile, arm.notes)
        if isinstance(records, list):
            arm.original += [r for r in records if isinstance(r, dict)]
    if not originals:
        arm.notes.append(f"original data missing (no {data_dir.name}/<name>_iter_0.json)")
    if iter_dirs:
        expected = set(range(max(iter_dirs) + 1))
        for gap in sorted(expected - set(iter_dirs)):
            arm.notes.append(f"iter_{gap}/ missing")
    strategies: set[str] = set()
    for i, folder in sorted(iter_dirs.items()):
        if i == 0:
            arm.model_dir = find_model_dir(folder / "model")
            if arm.model_dir is None:
                arm.notes.append("iter_0: no trained model (iter_0/model/config.json missing): "
                                 "perplexities need --model")
        scores = _load_eval(folder / "eval_data", i, arm.notes)
        if scores:
            arm.accuracy[i] = scores
        stats, generated = _load_sampling(folder / "inference_data", i, arm.notes)
        if stats:
            arm.sampling_stats[i] = stats
            strategies |= {strategy_of_stats(s) for s in stats}
        if generated:
            arm.generated[i] = generated
    arm.strategy = next(iter(strategies)) if len(strategies) == 1 else strategy_of_name(path.name)
    if len(strategies) > 1:
        arm.notes.append(f"sampling runs of several strategies in one folder: {sorted(strategies)}")
    return arm
