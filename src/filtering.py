"""Next-iteration training data from sampling results, and the process check behind ``--check_result``.

Usage (what ``generate_train_data.py`` wraps)::

    from src.filtering import FilterConfig, build_next_iteration, load_sampled
    sampled = load_sampled(["output/.../inference_data"])           # {dataset: results.json items}
    records, counts = build_next_iteration(sampled, FilterConfig(check_result=True, max_per_question=4))

By default the decisions are the original code's (docs/FIDELITY.md): every correct sample is kept, identical
texts included; ``--check_result`` drops a sample when one of its ``<<lhs=rhs>>`` annotations fails the
original's test; the added data (original, else previous iteration's) comes after the samples; records hold four
fields. Named options change that: ``dedupe``; ``check_mode="strict"``, this project's process check (for the
synthetic world also :func:`src.synthetic.check_synthetic_rationale`, the chain against the gold one step by
step; on the tiny model most "correct" 4-step samples reach the answer through a broken chain); ``merged_first``;
``record_strategy``. Both checks live in :mod:`src.grading.process`.

Every sample lands in exactly one bucket of the counts: ``wrong_answer`` (not among the correct samples),
``failed_check``, ``duplicate`` (the same rationale text already kept for that question), ``capped`` (over
``max_per_question``) or ``kept``; so ``kept`` always equals the number of sampled records written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from src.grading.process import check_annotations, check_annotations_original
from src.records import RecordError, load_records, read_json_or_jsonl, training_record
from src.registry import get_dataset

BUCKETS = ("kept", "wrong_answer", "failed_check", "duplicate", "capped")


@dataclass
class FilterConfig:
    """Defaults are the original code's decisions (docs/FIDELITY.md); each difference is a named option."""

    check_result: bool = field(default=False, metadata={"help": "check the calculator annotations"})
    max_per_question: int | None = field(default=None, metadata={"help": "keep at most this many per question"})
    check_mode: str = field(default="original", metadata={
        "help": "original: the original's check of each <<lhs=rhs>>; strict: this project's process check"})
    dedupe: bool = field(default=False, metadata={
        "help": "drop a sample whose text was already kept for the question (the original keeps duplicates)"})
    merged_first: bool = field(default=False, metadata={
        "help": "put the merged (original / previous) data before the samples (the original appends it after)"})
    record_strategy: bool = field(default=False, metadata={
        "help": "add each kept sample's strategy to its record (the original writes four fields)"})


def _zero() -> dict[str, int]:
    return dict.fromkeys(BUCKETS, 0)


@dataclass
class Counts:
    """Samples per bucket, in total, per data set and per strategy (the ``<stem>.counts.json`` file)."""

    total: dict[str, int] = field(default_factory=_zero)
    by_dataset: dict[str, dict[str, int]] = field(default_factory=dict)
    by_strategy: dict[str, dict[str, int]] = field(default_factory=dict)
    included: dict[str, int] = field(default_factory=lambda: {"original": 0, "pre_iter": 0})
    records_written: int = 0

    def add(self, bucket: str, dataset: str, strategy: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.total[bucket] += n
        self.by_dataset.setdefault(dataset, _zero())[bucket] += n
        self.by_strategy.setdefault(strategy, _zero())[bucket] += n

    def to_json(self) -> dict:
        return {"total": self.total, "by_dataset": self.by_dataset, "by_strategy": self.by_strategy,
                "included": self.included, "records_written": self.records_written}


@dataclass
class SampledSet:
    """One data set's sampling results (results.json items) and how its samples were generated."""

    dataset: str | None  # from sampling_stats.json or --dataset_name; None: not known (never guessed)
    items: list[dict]
    source: str  # the results.json path, for messages
    strategy: str | None = None  # from sampling_stats.json: which strategy produced the non-initial samples
    sample_num: int | None = None  # initial samples per query (the first sample_num entries of ``pred``)
    mode: str = "cot"  # from sampling_stats.json: cot rationales or pot programs (how a re-grade reads ``pred``)

    @property
    def label(self) -> str:
        """The name the counts use: the data set, or the results file when the data set is not known."""
        return self.dataset or self.source


def _wrong_by_strategy(item: dict, sset: SampledSet, strategies: list[str]) -> dict[str, int]:
    """Wrong samples of one query per strategy: initial = first sample_num of ``pred``, the rest resampled."""
    n_pred, n_correct = len(item["pred"]), len(item["correct_pred"])
    if sset.sample_num is None or sset.strategy is None:
        return {"unattributed": max(n_pred - n_correct, 0)}
    n_init = min(n_pred, sset.sample_num)
    init_correct = sum(1 for s in strategies if s == "initial")
    return {"initial": max(n_init - init_correct, 0),
            sset.strategy: max(n_pred - n_init - (n_correct - init_correct), 0)}


def _rejection(sample: str, item: dict, sset: SampledSet, cfg: FilterConfig) -> str | None:
    """Why ``--check_result`` drops ``sample`` (None: kept), in the configured mode."""
    from src.synthetic import check_synthetic_rationale

    if cfg.check_mode == "original":
        return check_annotations_original(sample)
    why = check_annotations(sample, item["question"])
    if why is None and sset.dataset is not None and get_dataset(sset.dataset).checks_gold_chain:
        why = check_synthetic_rationale(item["question"], item["answer_cot"], sample)
    return why


def build_next_iteration(sampled: Iterable[SampledSet], cfg: FilterConfig | None = None,
                         original: list[dict] | None = None,
                         pre_iter: list[dict] | None = None) -> tuple[list[dict], Counts]:
    """Train records from the correct samples (under the plain question) plus the merged earlier data.

    Order (fixed, so reruns are byte-identical): the kept samples in the order of ``sampled``, its items and
    samples, then ``original`` and ``pre_iter`` (before the samples with ``cfg.merged_first``). Each record holds
    item_id, question, answer_cot, answer_value (+ the item's ``level`` when it has one, + ``strategy`` with
    ``cfg.record_strategy``).
    """
    cfg = cfg or FilterConfig()
    if cfg.check_mode not in ("original", "strict"):
        raise ValueError(f"unknown check_mode {cfg.check_mode!r} (original | strict)")
    counts = Counts()
    merged: list[dict] = []
    for name, data in (("original", original), ("pre_iter", pre_iter)):
        if data:
            merged.extend(data)
            counts.included[name] = len(data)
    out: list[dict] = list(merged) if cfg.merged_first else []
    for sset in sampled:
        label = sset.label
        for item in sset.items:
            correct = item["correct_pred"]
            strategies = item.get("correct_strategy") or ["initial"] * len(correct)
            for name, n in _wrong_by_strategy(item, sset, strategies).items():
                counts.add("wrong_answer", label, name, n)
            seen: set[str] = set()
            kept = 0
            for sample, strategy in zip(correct, strategies):
                if cfg.check_result and _rejection(sample, item, sset, cfg) is not None:
                    counts.add("failed_check", label, strategy)
                    continue
                if cfg.dedupe and sample in seen:
                    counts.add("duplicate", label, strategy)
                    continue
                seen.add(sample)
                if cfg.max_per_question is not None and kept >= cfg.max_per_question:
                    counts.add("capped", label, strategy)
                    continue
                kept += 1
                counts.add("kept", label, strategy)
                out.append(training_record(item, sample, strategy if cfg.record_strategy else None))
    if not cfg.merged_first:
        out.extend(merged)
    counts.records_written = len(out)
    return out, counts


# ---------------------------------------------------------------------------------------------------------------
# Loading sampling results.
def _dataset_of(results_file: Path, stats: dict | None, given: str | None) -> str | None:
    """The data set of one results file: its sampling_stats.json's, else ``--dataset_name``'s, else None."""
    named = get_dataset(given).name if given else None
    if stats and isinstance(stats.get("dataset"), str):
        recorded = get_dataset(stats["dataset"]).name
        if named is not None and named != recorded:
            raise RecordError(f"{results_file}: --dataset_name {given} but its sampling_stats.json says "
                              f"{stats['dataset']}")
        return recorded
    return named


def results_files(path: str | Path) -> list[Path]:
    """The results.json files a ``--cur_sampled_data_path`` names: the file itself, or one per data set."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        if (path / "results.json").is_file():
            return [path / "results.json"]
        found = sorted(path.glob("*/results.json"))
        if found:
            return found
        raise RecordError(f"{path}: folder holds no results.json (nor <dataset>/results.json)")
    raise RecordError(f"{path}: file not found")


def load_sampled(paths: Iterable[str | Path], dataset_names: list[str] | None = None) -> list[SampledSet]:
    """Load and validate every sampling result named by ``paths`` (each a results.json or a folder of them).

    ``dataset_names``: one name for every path, or one per path, used where no sampling_stats.json names the
    data set (a results file of the original code); a data set is never guessed from folder or item ids.
    """
    paths = list(paths)
    names = list(dataset_names or [])
    if len(names) not in (0, 1, len(paths)):
        raise RecordError(f"{len(names)} --dataset_name for {len(paths)} --cur_sampled_data_path: give one name, "
                          f"or one per path")
    try:
        for name in names:
            get_dataset(name)
    except ValueError as err:
        raise RecordError(f"--dataset_name: {err}") from None
    sets = []
    for k, path in enumerate(paths):
        given = names[k] if len(names) == len(paths) and len(names) > 1 else (names[0] if names else None)
        for file in results_files(path):
            items = load_records(file, "sampling_result")
            for i, item in enumerate(items):
                strategies = item.get("correct_strategy")
                if strategies is not None and len(strategies) != len(item["correct_pred"]):
                    raise RecordError(f"{file}: record {i} (item_id={item['item_id']}): correct_strategy has "
                                      f"{len(strategies)} entries, correct_pred {len(item['correct_pred'])}")
                if not all(isinstance(s, str) for s in item["correct_pred"]):
                    raise RecordError(f"{file}: record {i} (item_id={item['item_id']}): correct_pred must hold "
                                      f"strings")
            stats_file = file.parent / "sampling_stats.json"
            stats = read_json_or_jsonl(stats_file) if stats_file.is_file() else None
            if stats is not None and not isinstance(stats, dict):
                raise RecordError(f"{stats_file}: expected a JSON object")
            sets.append(SampledSet(
                dataset=_dataset_of(file, stats, given), items=items, source=str(file),
                strategy=(stats or {}).get("strategy"), sample_num=(stats or {}).get("sample_num"),
                mode=(stats or {}).get("mode", "cot")))
    if not sets:
        raise RecordError("no sampling results given")
    return sets


# ---------------------------------------------------------------------------------------------------------------
# The generate_train_data.py command.
@dataclass
class GenerateConfig:
    """The original ``generate_train_data.py`` flags (its defaults and decisions), plus named options."""

    cur_sampled_data_path: list[str] = field(metadata={
        "help": "sampling results: results.json files, or folders holding one (or one per data set)"})
    next_iter_data_path: str = field(metadata={"help": "output: the next iteration's training data (JSON list)"})
    original_data_path: str | None = field(default=None, metadata={"help": "iteration-0 (original) data"})
    pre_iter_data_path: str | None = field(default=None, metadata={"help": "the previous iteration's data"})
    include_original_data: bool = field(default=False, metadata={"help": "add the original data"})
    include_pre_iter_data: bool = field(default=False, metadata={"help": "add the previous iteration's data"})
    check_result: bool = field(default=False, metadata={
        "help": "keep only samples whose calculator chain computes and holds together (process check)"})
    max_per_question: int | None = field(default=None, metadata={"help": "keep at most this many per question"})
    # the original's decisions are the defaults; each difference has its own name (docs/FIDELITY.md)
    check_mode: str = field(default="original", metadata={
        "help": "with --check_result: original (each <<lhs=rhs>>: str of lhs's value equals rhs, as the original "
                "decided, computed without eval) or strict (this project's process check: exact values, operands "
                "from the question, final answer = last result; the synthetic world's step check)",
        "choices": ["original", "strict"]})
    dedupe: bool = field(default=False, metadata={
        "help": "drop a sample whose text was already kept for its question (the original keeps duplicates)"})
    include_both: bool = field(default=False, metadata={
        "help": "with both include flags, add both (the original adds only the original data: its elif)"})
    merged_first: bool = field(default=False, metadata={
        "help": "put the added data before the samples (the original appends it after them)"})
    record_strategy: bool = field(default=False, metadata={
        "help": "add each kept sample's strategy to its record (the original writes four fields)"})
    dataset_name: list[str] | None = field(default=None, metadata={
        "help": "data set of results without a sampling_stats.json (one, or one per --cur_sampled_data_path); "
                "needed only by --check_mode strict; never guessed"})
    # --format dpo: preference pairs for Self-Refine Instruction-Tuning's DPO stage (src/pairs.py)
    format: str = field(default="sft", metadata={
        "help": "sft: next-iteration training data; dpo: preference pairs (src/pairs.py); tripost: one-step "
                "examples of edit_trajectories.py's trajectories (src/tripost)", "choices": ["sft", "dpo", "tripost"]})
    improve_ratio: float = field(default=1.5, metadata={
        "help": "tripost: sample ceil(n_improvement / p) non-improvement and as many gold examples (0: keep all)"})
    pair_mode: str = field(default="mixed", metadata={
        "help": "dpo: self (correct vs wrong student sample), teacher (gold demonstration vs wrong sample), "
                "mixed (self, or teacher when no student sample is correct)", "choices": ["self", "teacher", "mixed"]})
    max_pairs_per_question: int = field(default=2, metadata={"help": "dpo: at most this many pairs per question"})
    # IWSI (src/iwsi.py): vote labels and the distribution-shift filter
    correctness: str = field(default="label", metadata={
        "help": "label: a sample is correct when it reaches the gold answer; vote: when it reaches its question's "
                "majority answer (no gold labels)", "choices": ["label", "vote"]})
    grader: str | None = field(default=None, metadata={
        "help": "re-grade every sample (pred) with this grader and keep those it decides correct: project or "
                "reference (the original code's decisions); default: the results' correct_pred, as the original",
        "choices": ["project", "reference"]})
    ds_filter: bool = field(default=False, metadata={"help": "IWSI: drop the most distribution-shifted samples"})
    ds_valid: str | None = field(default=None, metadata={"help": "IWSI: labelled valid records (disjoint questions)"})
    ds_model: str | None = field(default=None, metadata={"help": "IWSI: the frozen pre-trained model scoring losses"})
    ds_policy_model: str | None = field(default=None, metadata={
        "help": "IWSI: the sampling model; its tokenizer must equal the DS model's"})
    keep_fraction: float = field(default=0.8, metadata={"help": "IWSI: keep floor(k*n) samples with the lowest DS"})
    ds_span: str = field(default="full", metadata={
        "help": "IWSI: full ('Q: ..\\nA: ..', the official code) or rationale (under the student prompt)",
        "choices": ["full", "rationale"]})
    ds_reference_clip: bool = field(default=False, metadata={
        "help": "IWSI: the official clipping (w' to [0, 2], 1/w' capped at 5)"})
    ds_batch_size: int = field(default=8, metadata={"help": "IWSI: sequences per forward pass"})
    ds_max_length: int = field(default=1024, metadata={"help": "IWSI: truncate scored sequences to this length"})


def regrade(sampled: list[SampledSet], grader: str) -> list[SampledSet]:
    """Every sample (``pred``) graded again with ``grader``; ``correct_pred``/``correct_strategy`` rebuilt from it.

    A sample's strategy follows its position (the first ``sample_num`` are the initial ones, the rest the run's
    strategy), as the counts read it. PoT programs run in the sandbox.
    """
    from src.grading import grade_batch

    out = []
    for sset in sampled:
        if sset.dataset is None:
            raise RecordError(f"{sset.source}: --grader needs the data set (no sampling_stats.json beside it): "
                              "give --dataset_name")
        flat = [(item, i, p) for item in sset.items for i, p in enumerate(item["pred"])]
        grades = grade_batch([p for _, _, p in flat], [item["answer_value"] for item, _, _ in flat], sset.dataset,
                             mode=sset.mode, options=[item.get("options") for item, _, _ in flat], grader=grader)
        correct: dict[int, list[tuple[int, str]]] = {}
        for (item, i, p), g in zip(flat, grades):
            if g.correct:
                correct.setdefault(id(item), []).append((i, p))
        n_init = sset.sample_num if sset.sample_num is not None else len(flat)
        items = []
        for item in sset.items:
            kept = correct.get(id(item), [])
            items.append({**item, "correct_pred": [p for _, p in kept],
                          "correct_strategy": ["initial" if i < n_init else (sset.strategy or "initial")
                                               for i, _ in kept]})
        out.append(replace(sset, items=items))
    return out


def counts_path(next_iter_data_path: str | Path) -> Path:
    """``<stem>.counts.json`` beside the data file."""
    path = Path(next_iter_data_path)
    return path.with_name(f"{path.stem}.counts.json")


def read_counts(next_iter_data_path: str | Path) -> dict:
    """The counts of a data file; RecordError when they belong to another version of it (an interrupted run)."""
    from src.records import read_summary

    return read_summary(counts_path(next_iter_data_path), next_iter_data_path)


def generate_next_iteration(cfg: GenerateConfig) -> Counts:
    """Load and validate every input, build the data, then write data + counts (nothing on bad input)."""
    from src.iwsi import IwsiStep
    from src.records import write_json_with_summary

    if cfg.format == "dpo":
        from src.pairs import generate_pairs

        return generate_pairs(cfg)
    if cfg.format == "tripost":
        from src.tripost.data import generate_tripost

        return generate_tripost(cfg)  # type: ignore[return-value]
    if cfg.max_per_question is not None and cfg.max_per_question < 1:
        raise RecordError(f"--max_per_question must be >= 1, got {cfg.max_per_question}")
    original = pre_iter = None
    if cfg.include_original_data:
        if not cfg.original_data_path:
            raise RecordError("--include_original_data needs --original_data_path")
        original = load_records(cfg.original_data_path, "train")
    # the original: if --include_original_data ... elif --include_pre_iter_data (one or the other)
    if cfg.include_pre_iter_data and (cfg.include_both or not cfg.include_original_data):
        if not cfg.pre_iter_data_path:
            raise RecordError("--include_pre_iter_data needs --pre_iter_data_path")
        pre_iter = load_records(cfg.pre_iter_data_path, "train")
    sampled = load_sampled(cfg.cur_sampled_data_path, cfg.dataset_name)
    if cfg.grader is not None:
        sampled = regrade(sampled, cfg.grader)
    if cfg.check_result and cfg.check_mode == "strict":
        unknown = [s.source for s in sampled if s.dataset is None]
        if unknown:
            raise RecordError(f"{unknown[0]}: --check_mode strict needs the data set (no sampling_stats.json "
                              f"beside it): give --dataset_name")
    iwsi = IwsiStep(cfg)  # IWSI: vote labels, DS filter and sidecar (src/iwsi.py); a no-op by default
    sampled = iwsi.prepare(sampled)
    fcfg = FilterConfig(check_result=cfg.check_result, max_per_question=cfg.max_per_question,
                        check_mode=cfg.check_mode, dedupe=cfg.dedupe, merged_first=cfg.merged_first,
                        record_strategy=cfg.record_strategy)
    records, counts = build_next_iteration(sampled, fcfg, original, pre_iter)
    records = iwsi.filter(records, counts)
    if not records:
        raise RecordError(f"{cfg.next_iter_data_path}: no training record survived "
                          f"(counts: {counts.total}); refusing to write an empty data file")
    # the counts carry the data's sha256 and are written last: a kill between the two is detected (read_counts);
    # the data file has the original's bytes (json.dump, indent 4, no final newline)
    write_json_with_summary(cfg.next_iter_data_path, records, counts_path(cfg.next_iter_data_path), counts.to_json(),
                            indent=4, final_newline=False)
    iwsi.write(cfg.next_iter_data_path)
    return counts
