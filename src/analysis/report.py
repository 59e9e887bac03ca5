"""The report: tables, tail-narrowing and sampling-efficiency figures, and one ``report.md`` embedding them.

    python analyze.py output/tiny/vanilla_exp output/tiny/state_reset_exp --out output/tiny/report

In-process (the demo passes what it holds, no folders needed)::

    from src.analysis import Arm, ReportInputs, build_report
    arm = Arm("state_reset", strategy="state_reset", original=train_records)
    arm.add_sampling(0, run.stats, run.results); arm.add_eval(0, "synthetic", items)
    build_report(ReportInputs([arm, ...], tokenizer=tok, perplexity=VllmPerplexity(llm)), "output/demo/report")
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.analysis.efficiency import efficiency_table, plot_coverage, plot_coverage_by_level, runs_by_key
from src.analysis.experiment import Arm, find_model_dir, load_experiment
from src.analysis.perplexity import PerplexityFn
from src.analysis.tables import Table, accuracy_table, arm_order
from src.analysis.tail import (
    ORIGINAL,
    CachedPerplexity,
    difficulty_kind,
    difficulty_values,
    plot_difficulty_by_strategy,
    plot_tail,
    summary_rows,
    tail_metrics,
)

log = logging.getLogger(__name__)

TAIL_HEADERS = ["strategy", "data", "metric", "n", "mean", "q25", "median", "q75", "q90", "tail share (%)"]


@dataclass
class ReportInputs:
    """Everything the report is drawn from; :func:`inputs_from_experiments` fills it from folders."""

    arms: list[Arm]
    title: str = "GSI report"
    tokenizer: Any = None  # the model's tokenizer: response lengths in tokens (skipped when None)
    perplexity: PerplexityFn | None = None  # scores (question, rationale) pairs (skipped when None)
    perplexity_model: str = ""  # which model the perplexities are under (shown in the report)
    max_ppl_records: int = 500  # per data set and iteration, a seeded sample (a forward pass each)
    seed: int = 0
    notes: list[str] = field(default_factory=list)  # report-wide notes (e.g. no model found)


@dataclass
class Report:
    out_dir: Path
    report_md: Path
    tables: dict[str, Path] = field(default_factory=dict)  # table name -> CSV
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # everything the report says is missing


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "arm"


def _unique_labels(arms: list[Arm]) -> None:
    """Two arms with the same label (two runs of one strategy) are told apart by their folders."""
    seen: dict[str, int] = {}
    for arm in arms:
        seen[arm.label] = seen.get(arm.label, 0) + 1
    for arm in arms:
        if seen[arm.label] > 1 and arm.source:
            arm.label = f"{arm.label} [{Path(arm.source).name}]"


def _section(md: list[str], notes: list[str], name: str, body: Callable[[], None]) -> None:
    """Run one section; an unexpected failure becomes a line in the report (and the log), not a traceback."""
    try:
        body()
    except Exception as err:  # noqa: BLE001 - the rest of the report is still worth writing
        log.exception("report section %s failed", name)
        msg = f"{name}: could not be drawn ({type(err).__name__}: {err})"
        notes.append(msg)
        md.append(f"\n**{msg}**\n")


@dataclass
class _Writer:
    """The report being written: its Markdown lines, its notes and the files it links."""

    inputs: ReportInputs
    arms: list[Arm]
    report: Report
    md: list[str]
    notes: list[str]

    @property
    def out(self) -> Path:
        return self.report.out_dir

    def add_table(self, table: Table, digits: int = 1) -> None:
        self.report.tables[table.name] = table.to_csv(self.out / f"{table.name}.csv")
        (self.out / f"{table.name}.md").write_text(table.to_markdown(digits) + "\n", encoding="utf-8")
        self.md.extend(["", table.to_markdown(digits), "", f"*{table.caption}* ([CSV]({table.name}.csv))", ""])

    def figure(self, path: Path | None, caption: str) -> None:
        if path is not None:
            self.report.figures.append(path)
            self.md.extend(["", f"![{caption}]({path.name})", "", f"*{caption}*", ""])

    def accuracy(self) -> None:
        if not any(a.accuracy for a in self.arms):
            self.md.append("No evaluation results found.")
            return
        self.add_table(accuracy_table(self.arms))

    def tail(self) -> None:
        inputs, out = self.inputs, self.out
        with_data = [a for a in self.arms if a.generated]
        if not with_data:
            self.md.append("No self-generated data found (no sampling results.json).")
            return
        original = next((a.original for a in self.arms if a.original), [])
        first_iter = min(min(a.generated) for a in with_data)
        kind = difficulty_kind([original] + [a.generated[first_iter] for a in with_data if first_iter in a.generated])
        series = {ORIGINAL: difficulty_values(original, kind)} if original else {}
        series.update({a.label: difficulty_values(a.generated[first_iter], kind)
                       for a in with_data if first_iter in a.generated})
        self.figure(plot_difficulty_by_strategy(kind, series, f"Difficulty: original data vs self-generated data of "
                                                f"iteration {first_iter}, per strategy",
                                                out / "tail_difficulty_by_strategy.png"),
                    f"Difficulty ({kind}) of the original data and of each strategy's self-generated data "
                    f"(iteration {first_iter}).")
        ppl = CachedPerplexity(inputs.perplexity) if inputs.perplexity is not None else None
        rows: list[list[Any]] = []
        for arm in with_data:
            sets: dict[str, list[dict]] = {ORIGINAL: arm.original} if arm.original else {}
            sets.update({f"iter {i}": recs for i, recs in sorted(arm.generated.items())})
            kind_a, metrics = tail_metrics(sets, inputs.tokenizer, ppl, inputs.max_ppl_records, inputs.seed)
            self.figure(plot_tail(arm.label, kind_a, metrics, out / f"tail_{slug(arm.label)}.png"),
                        f"{arm.label}: difficulty, response length and perplexity of the original data and of each "
                        f"iteration's self-generated data.")
            rows += summary_rows(arm.label, kind_a, metrics)
        self.add_table(Table("tail_summary", TAIL_HEADERS, rows,
                             "Summary of each distribution; perplexities on a seeded sample of at most "
                             f"{inputs.max_ppl_records} records per set."), digits=2)

    def efficiency(self) -> None:
        groups = runs_by_key(self.arms)
        if not groups:
            self.md.append("No sampling statistics found (no sampling_stats.json).")
            return
        for (it, dataset), runs in groups.items():
            name = f"iter{it}_{slug(dataset)}"
            self.figure(plot_coverage(runs, f"Coverage vs cost: {dataset}, iteration {it}",
                                      self.out / f"efficiency_{name}.png"),
                        f"Coverage against samples and generated tokens ({dataset}, iteration {it}).")
            self.figure(plot_coverage_by_level(runs, f"Coverage by level vs tokens: {dataset}, iteration {it}",
                                               self.out / f"efficiency_levels_{name}.png"),
                        f"Coverage of each level against generated tokens ({dataset}, iteration {it}).")
        self.add_table(efficiency_table(self.arms))


def _tail_intro(inputs: ReportInputs) -> list[str]:
    md = ["", "## 2. Tail narrowing: original data vs self-generated data", "",
          "Difficulty is the `level` field when every record has one, otherwise the number of reasoning steps "
          "(non-empty lines). Lengths are in the model's tokens. Perplexity is exp of the mean negative "
          "log-probability of the rationale tokens given the student prompt"
          + (f", under `{inputs.perplexity_model}`" if inputs.perplexity_model else "") + ". The tail share is "
          "the share of records at or beyond the original data's hardest level (90th percentile for step "
          "counts, lengths and perplexities): below the original's share means the tail narrowed.", ""]
    if inputs.tokenizer is None:
        md.append("Response lengths skipped: no tokenizer (no iteration-0 model found; pass `--model`).")
    if inputs.perplexity is None:
        md.append("Perplexities skipped: no iteration-0 model to score with (pass `--model`), or "
                  "`--ppl_backend none`.")
    return md


def build_report(inputs: ReportInputs, out_dir: str | Path) -> Report:
    """Write tables (Markdown + CSV), figures (PNG) and ``report.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arms = arm_order(inputs.arms)
    _unique_labels(arms)
    md: list[str] = [f"# {inputs.title}", "",
                     f"Written {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC from:", ""]
    md += [f"- **{a.label}**" + (f" (`{a.source}`)" if a.source else "") +
           (f", strategy `{a.strategy}`" if a.strategy else "") for a in arms] or ["- (no runs given)"]
    notes = list(inputs.notes) + [f"{a.label}: {n}" for a in arms for n in a.notes]
    md += ["", "## What is missing", ""]
    missing_at = len(md)  # filled in at the end: sections add their own notes
    w = _Writer(inputs, arms, Report(out, out / "report.md"), md, notes)

    md += ["", "## 1. Accuracy per iteration", ""]
    _section(md, notes, "accuracy table", w.accuracy)
    md += _tail_intro(inputs)
    _section(md, notes, "tail narrowing", w.tail)
    md += ["", "## 3. Sampling efficiency", ""]
    _section(md, notes, "sampling efficiency", w.efficiency)

    md[missing_at:missing_at] = [f"- {n}" for n in notes] or ["Nothing: every expected file was found."]
    w.report.notes = notes
    w.report.report_md.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    return w.report


# ---------------------------------------------------------------------------------------------------------------
# From experiment folders (analyze.py)
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class AnalyzeConfig:
    experiments: list[str] = field(metadata={"help": "experiment folders (one per strategy), e.g. "
                                                     "output/<model>/<exp_name>"})
    out: str | None = field(default=None, metadata={"help": "report folder (default: <first experiment>/report)"})
    labels: list[str] | None = field(default=None, metadata={
        "help": "names shown for the experiments, same order (default: the strategy read from each run)"})
    model: str | None = field(default=None, metadata={
        "help": "iteration-0 model for token lengths and perplexities (default: <first experiment>/iter_0/model)"})
    ppl_backend: str = field(default="auto", metadata={
        "help": "perplexity backend: vllm (prompt log-probs), transformers, none; auto = vllm on a GPU, "
                "transformers on CPU", "choices": ["auto", "vllm", "transformers", "none"]})
    max_ppl_records: int = field(default=500, metadata={"help": "perplexities of at most this many records per "
                                                                "set (seeded sample)"})
    batch_size: int = field(default=16, metadata={"help": "transformers backend: records per forward pass"})
    seed: int = field(default=0, metadata={"help": "seed of the perplexity sample"})
    title: str = field(default="GSI report", metadata={"help": "report title"})


def load_arms(cfg: AnalyzeConfig) -> list[Arm]:
    labels = cfg.labels or []
    arms = []
    for i, path in enumerate(cfg.experiments):
        arm = load_experiment(path)
        arm.label = labels[i] if i < len(labels) else (arm.strategy or Path(path).name)
        arms.append(arm)
    return arms


def _scorer(model_dir: Path, backend: str, batch_size: int) -> PerplexityFn:
    import torch

    if backend == "auto":
        backend = "vllm" if torch.cuda.is_available() else "transformers"
    if backend == "vllm":
        import json

        from src.analysis.perplexity import VllmPerplexity
        from src.engine import EngineConfig, build_llm

        positions = json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings", 4096)
        return VllmPerplexity(build_llm(EngineConfig(str(model_dir), max_model_len=min(int(positions), 4096))))
    from src.analysis.perplexity import HfPerplexity

    return HfPerplexity(model_dir, batch_size=batch_size)


def inputs_from_experiments(cfg: AnalyzeConfig) -> ReportInputs:
    arms = load_arms(cfg)
    inputs = ReportInputs(arms, title=cfg.title, max_ppl_records=cfg.max_ppl_records, seed=cfg.seed)
    model_dir = find_model_dir(Path(cfg.model)) if cfg.model else next((a.model_dir for a in arms if a.model_dir),
                                                                         None)
    if cfg.model and model_dir is None:
        inputs.notes.append(f"--model {cfg.model}: not a model folder (no config.json)")
    if model_dir is None:
        inputs.notes.append("no iteration-0 model: response lengths and perplexities skipped")
        return inputs
    from transformers import AutoTokenizer

    inputs.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if cfg.ppl_backend != "none":
        inputs.perplexity = _scorer(model_dir, cfg.ppl_backend, cfg.batch_size)
        inputs.perplexity_model = str(model_dir)
    return inputs


def analyze(cfg: AnalyzeConfig) -> Report:
    """Load the experiment folders, then write the report (what ``analyze.py`` runs)."""
    if not cfg.experiments:
        raise ValueError("give at least one experiment folder")
    out = Path(cfg.out) if cfg.out else Path(cfg.experiments[0]) / "report"
    return build_report(inputs_from_experiments(cfg), out)
