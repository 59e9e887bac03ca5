"""The guided resampling loop: ``sample_num`` initial samples per query in one vLLM call, then up to
``max_resample_num`` rounds over the queries still below ``min_correct_num`` correct (one sample per query per
round, prompt built by the strategy), stopping early when no query is below.

    from src.engine import EngineConfig, build_llm
    from src.sampling import SamplingConfig, run_sampling, write_sampling_outputs
    llm = build_llm(EngineConfig("output/tiny-model"))
    run = run_sampling(llm, records, "gsm8k", SamplingConfig(strategy="state_reset"))
    write_sampling_outputs(run, "output/sampling/gsm8k")
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from src import prompts
from src.engine import generate, sampling_params
from src.records import write_json
from src.registry import get_dataset
from src.sampling.query import INITIAL, QueryState
from src.sampling.strategies import STRATEGIES, Request, StrategyContext, get_strategy
from src.sampling.teacher import TeacherError

log = logging.getLogger(__name__)

OUTPUT_FILES = ("results_before_resample.json", "results.json", "resample_results.json", "sampling_stats.json")


@dataclass
class SamplingConfig:
    strategy: str = field(default="vanilla", metadata={
        "help": "resampling strategy (set by the script you run): " + ", ".join(STRATEGIES)})
    mode: str = field(default="cot", metadata={"help": "cot: rationales; pot: programs run in a sandbox",
                                                "choices": ["cot", "pot"]})
    sample_num: int = field(default=8, metadata={"help": "initial samples per query (one vLLM call, n=sample_num)"})
    min_correct_num: int = field(default=4, metadata={
        "help": "resample a query while it has fewer correct samples than this"})
    max_resample_num: int = field(default=8, metadata={
        "help": "resampling rounds at most (one sample per query still below min_correct_num per round); "
                "0 = no resampling (vanilla); vanilla strategy with > 0 = brute force"})
    temperature: float = field(default=0.7, metadata={"help": "student sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "student nucleus sampling"})
    max_new_tokens: int = field(default=1024, metadata={"help": "new tokens per sample", "aliases": ["--max_length"]})
    pot_workers: int = field(default=2, metadata={"help": "PoT mode: sandbox worker processes grading programs"})
    grader: str = field(default="project", metadata={
        "help": "which grader decides a correct sample: project (this project's rules) or reference (the "
                "original code's decisions)", "choices": ["project", "reference"]})
    progress: bool = field(default=True, metadata={"help": "show a tqdm bar over the resampling rounds"})

    def __post_init__(self) -> None:
        get_strategy(self.strategy)
        if self.mode not in ("cot", "pot"):
            raise ValueError(f"mode must be cot or pot, got {self.mode!r}")
        if self.sample_num < 1 or self.min_correct_num < 0 or self.max_resample_num < 0:
            raise ValueError("need sample_num >= 1, min_correct_num >= 0, max_resample_num >= 0")


@dataclass
class SamplingRun:
    """A finished (or interrupted) sampling run; :func:`write_sampling_outputs` saves it."""

    dataset: str
    results: list[dict[str, Any]]  # results.json
    before_resample: list[dict[str, Any]]  # results_before_resample.json
    resample_results: list[dict[str, Any]]  # resample_results.json
    stats: dict[str, Any]  # sampling_stats.json


class SamplingAborted(RuntimeError):
    """The run stopped early (e.g. the teacher went away); ``.run`` holds every result gathered so far."""

    def __init__(self, message: str, run: SamplingRun):
        super().__init__(message)
        self.run = run


def _round_stats(queries: list[QueryState], cfg: SamplingConfig, round_: int, n_prompts: int, n_samples: int,
                 tokens_by_query: dict[int, int], wall: float, gen: float, prev: dict | None) -> dict[str, Any]:
    """One entry of ``sampling_stats.json``'s ``rounds``; ``tokens_by_query``: id(query) -> tokens it generated."""
    tokens = sum(tokens_by_query.values())
    counts = [q.n_correct for q in queries]
    covered = sum(c > 0 for c in counts)
    stats: dict[str, Any] = {
        "round": round_, "prompts": n_prompts, "samples": n_samples, "generated_tokens": tokens,
        "wall_seconds": round(wall, 4), "generate_seconds": round(gen, 4),
        "covered": covered, "coverage": covered / len(queries),
        "below_min_correct": sum(c < cfg.min_correct_num for c in counts),
        "correct_count_histogram": {str(k): v for k, v in sorted(Counter(counts).items())},
    }
    levels = [q.record.get("level") for q in queries]
    if all(lv is not None for lv in levels):
        by_level: dict[str, list[int]] = {}
        for lv, c in zip(levels, counts):
            by_level.setdefault(str(lv), []).append(c > 0)
        order = sorted(by_level, key=int)
        stats["coverage_by_level"] = {lv: sum(by_level[lv]) / len(by_level[lv]) for lv in order}
        # tokens per level: what "tokens spent per newly covered hard query" needs
        tok_level = Counter()
        for q in queries:
            tok_level[str(q.record["level"])] += tokens_by_query.get(id(q), 0)
        stats["generated_tokens_by_level"] = {lv: tok_level[lv] for lv in order}
    stats["cumulative_samples"] = (prev["cumulative_samples"] if prev else 0) + n_samples
    stats["cumulative_generated_tokens"] = (prev["cumulative_generated_tokens"] if prev else 0) + tokens
    return stats


def _grade(responses: list[str], queries: list[QueryState], dataset: str, mode: str, executor: Any,
           grader: str = "project"):
    from src.grading import grade_batch

    return grade_batch(responses, [q.record["answer_value"] for q in queries], dataset, mode=mode,
                       executor=executor, options=[q.record.get("options") for q in queries], grader=grader)


def _snapshot(queries: list[QueryState], with_history: bool) -> list[dict[str, Any]]:
    return [q.result(with_history) for q in queries]


@dataclass
class _RunState:
    """The mutable state of one run: the queries, the rounds counted so far and the saved initial round."""

    dataset: str
    strategy_name: str
    cfg: SamplingConfig
    queries: list[QueryState]
    stats: dict[str, Any]
    before: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return self.stats["rounds"]

    def finish(self) -> SamplingRun:
        return SamplingRun(self.dataset, _snapshot(self.queries, self.strategy_name == "teacher_help"), self.before,
                           [item for q in self.queries for item in q.training_items()], self.stats)

    def record_round(self, round_: int, n_prompts: int, n_samples: int, tokens: dict[int, int], wall: float,
                     gen: float) -> dict[str, Any]:
        r = _round_stats(self.queries, self.cfg, round_, n_prompts, n_samples, tokens, wall, gen,
                         self.rounds[-1] if self.rounds else None)
        self.rounds.append(r)
        log.info("%s %s round %d: %d prompts, coverage %.3f (%d/%d), below %d: %d, histogram %s, samples %d",
                 self.dataset, self.strategy_name, round_, n_prompts, r["coverage"], r["covered"],
                 len(self.queries), self.cfg.min_correct_num, r["below_min_correct"],
                 r["correct_count_histogram"], r["cumulative_samples"])
        return r


def _initial_round(llm, run: _RunState, executor: Any) -> None:
    """Round 0: n=sample_num completions per prompt in ONE call (prefix caching shares the prompt's KV)."""
    cfg, queries = run.cfg, run.queries
    start = time.perf_counter()
    gen = generate(llm, [prompts.student_prompt(q.question) for q in queries],
                   sampling_params(cfg.sample_num, cfg.temperature, cfg.top_p, cfg.max_new_tokens))
    flat_q = [q for q, texts in zip(queries, gen.texts) for _ in texts]
    flat_r = [t for texts in gen.texts for t in texts]
    for q, resp, g in zip(flat_q, flat_r, _grade(flat_r, flat_q, run.dataset, cfg.mode, executor, cfg.grader)):
        q.add(resp, g.pred_value, g.correct, INITIAL, 0)
    run.record_round(0, len(queries), len(flat_r), {id(q): t for q, t in zip(queries, gen.tokens)},
                     time.perf_counter() - start, gen.seconds)
    run.before = _snapshot(queries, False)


def _resample_round(llm, run: _RunState, strategy, ctx: StrategyContext, round_: int, active: list[QueryState],
                    executor: Any) -> int:
    """One guided (or unguided) round over the ``active`` queries; returns the tokens it generated."""
    cfg = run.cfg
    start = time.perf_counter()
    ctx.round = round_
    try:
        requests: list[Request] = strategy.requests(active, ctx)
    except TeacherError as err:
        run.stats["aborted"] = f"round {round_}: {err}"
        raise SamplingAborted(f"{run.dataset}: teacher failed in resampling round {round_}: {err}. "
                              f"Results of rounds 0..{round_ - 1} are kept.", run.finish()) from err
    gen = generate(llm, [r.prompt for r in requests],
                   sampling_params(1, cfg.temperature, cfg.top_p, cfg.max_new_tokens))
    responses = [r.prefix + texts[0] for r, texts in zip(requests, gen.texts)]
    grades = _grade(responses, [r.query for r in requests], run.dataset, cfg.mode, executor, cfg.grader)
    for req, resp, g in zip(requests, responses, grades):
        req.query.add(resp, g.pred_value, g.correct, req.strategy, round_)
        if req.exchange is not None:
            req.query.history.append({**req.exchange, "revision": resp, "pred_value": g.pred_value,
                                      "correct": g.correct})
    run.record_round(round_, len(requests), len(responses), {id(r.query): t for r, t in zip(requests, gen.tokens)},
                     time.perf_counter() - start, gen.seconds)
    return gen.generated_tokens


def run_sampling(llm, records: list[dict], dataset: str, cfg: SamplingConfig, teacher=None,
                 engine_start_seconds: float | None = None, initial: SamplingRun | None = None,
                 token_budget: int | None = None) -> SamplingRun:
    """Sample, grade and resample ``records`` (a pool in the train schema) with ``cfg.strategy``.

    ``teacher``: a :class:`src.sampling.teacher.TeacherClient` (teacher_help only). ``initial``: start from that
    run's initial samples instead of drawing new ones (``records`` is then ignored), so several strategies can
    share one initial round. ``token_budget``: also stop once the resampling rounds generated at least this many
    tokens. Raises :class:`SamplingAborted` (with the results so far) when the teacher fails for good.
    """
    from src.grading import PotExecutor

    spec = get_dataset(dataset)
    strategy = get_strategy(cfg.strategy)
    if initial is not None:
        queries = [QueryState.from_result(item) for item in initial.before_resample]
    else:
        queries = [QueryState(dict(r)) for r in records]
    ctx = StrategyContext(reset_cut=spec.reset_cut, teacher=teacher,
                          tokenizer=llm.get_tokenizer() if strategy.name == "state_reset" else None)
    stats: dict[str, Any] = {
        "dataset": dataset, "strategy": strategy.name, "mode": cfg.mode, "sample_num": cfg.sample_num,
        "min_correct_num": cfg.min_correct_num, "max_resample_num": cfg.max_resample_num,
        "n_queries": len(queries), "engine_start_seconds": engine_start_seconds, "config": asdict(cfg),
        "token_budget": token_budget, "rounds": [],
    }
    run = _RunState(dataset, strategy.name, cfg, queries, stats)
    # PoT programs run in one sandbox pool for the whole run (starting a pool per round would cost seconds).
    pool = PotExecutor(workers=cfg.pot_workers) if cfg.mode == "pot" else contextlib.nullcontext()
    with pool as executor:
        if initial is not None:
            run.rounds.append(dict(initial.stats["rounds"][0]))
            run.before = initial.before_resample
        else:
            _initial_round(llm, run, executor)
        spent = 0  # tokens generated by the resampling rounds
        with tqdm(total=cfg.max_resample_num, desc=f"{dataset} {strategy.name}", disable=not cfg.progress,
                  unit="round") as bar:
            for round_ in range(1, cfg.max_resample_num + 1):
                active = [q for q in queries if q.n_correct < cfg.min_correct_num]
                if not active or (token_budget is not None and spent >= token_budget):
                    break  # every query has min_correct_num correct samples, or the budget is spent
                spent += _resample_round(llm, run, strategy, ctx, round_, active, executor)
                bar.update(1)
                bar.set_postfix(coverage=f"{run.rounds[-1]['coverage']:.3f}", below=run.rounds[-1]["below_min_correct"])
    return run.finish()


def write_sampling_outputs(run: SamplingRun, results_path: str | Path) -> dict[str, Path]:
    """Write the four output files into ``results_path``, each replaced atomically (never appended)."""
    out = Path(results_path)
    payload = dict(zip(OUTPUT_FILES, (run.before_resample, run.results, run.resample_results, run.stats)))
    return {name: write_json(out / name, obj) for name, obj in payload.items()}
