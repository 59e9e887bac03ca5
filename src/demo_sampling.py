"""Resampling rounds that continue from an existing initial round, so every strategy of the demo starts from the
SAME ``sample_num`` initial samples per query (and the initial round, the costliest one, runs once).

``src.sampling.run_sampling`` always draws its own initial round; the demo instead runs it once as the vanilla
arm and continues it here with each strategy of ``src.sampling.strategies`` (the same prompts, the same query
state, the same grading), optionally until a generated-token budget is spent (brute force gets the budget
state reset used). The outputs have the format of ``src.sampling.write_sampling_outputs`` and add per-level
token counts, which tokens-per-newly-covered-query needs.

    initial = run_sampling(llm, pool, "synthetic", SamplingConfig(max_resample_num=0))
    sr = continue_sampling(llm, initial, "synthetic", SamplingConfig(strategy="state_reset"))
    write_sampling_outputs(sr, "output/demo/sampling/state_reset")
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict
from typing import Any

from src.datasets import get_dataset
from src.sampling import QueryState, SamplingConfig, SamplingRun, get_strategy
from src.sampling.query import INITIAL
from src.sampling.strategies import StrategyContext

_RESULT_FIELDS = ("pred", "pred_value", "correct_pred", "correct_strategy", "history")


def queries_from_results(items: list[dict]) -> list[QueryState]:
    """Rebuild per-query state (round 0 samples) from ``results_before_resample.json`` items."""
    queries = []
    for item in items:
        q = QueryState({k: v for k, v in item.items() if k not in _RESULT_FIELDS})
        correct = set(item["correct_pred"])  # identical texts grade identically, so membership is exact
        for response, value in zip(item["pred"], item["pred_value"]):
            q.add(response, value, response in correct, INITIAL, 0)
        queries.append(q)
    return queries


def round_stats(queries: list[QueryState], min_correct: int, round_: int, n_prompts: int, tokens: int,
                tokens_by_level: dict[str, int], wall: float, gen: float, prev: dict | None) -> dict[str, Any]:
    """One entry of ``sampling_stats.json``'s ``rounds`` (the contract's fields plus ``generated_tokens_by_level``)."""
    counts = [q.n_correct for q in queries]
    covered = sum(c > 0 for c in counts)
    by_level: dict[str, list[bool]] = {}
    for q, c in zip(queries, counts):
        by_level.setdefault(str(q.record.get("level")), []).append(c > 0)
    return {
        "round": round_, "prompts": n_prompts, "samples": n_prompts if round_ else sum(len(q.samples) for q in
                                                                                      queries),
        "generated_tokens": tokens, "generated_tokens_by_level": tokens_by_level,
        "wall_seconds": round(wall, 4), "generate_seconds": round(gen, 4),
        "covered": covered, "coverage": covered / len(queries),
        "below_min_correct": sum(c < min_correct for c in counts),
        "correct_count_histogram": {str(k): v for k, v in sorted(Counter(counts).items())},
        "coverage_by_level": {lv: sum(v) / len(v) for lv, v in sorted(by_level.items())},
        "cumulative_samples": (prev["cumulative_samples"] if prev else 0) + (
            n_prompts if round_ else sum(len(q.samples) for q in queries)),
        "cumulative_generated_tokens": (prev["cumulative_generated_tokens"] if prev else 0) + tokens,
    }


def continue_sampling(llm, initial: SamplingRun, dataset: str, cfg: SamplingConfig,
                      token_budget: int | None = None) -> SamplingRun:
    """Resample ``initial``'s queries that are below ``cfg.min_correct_num`` with ``cfg.strategy``.

    Stops after ``cfg.max_resample_num`` rounds, when no query is below, or (``token_budget``) after the round in
    which the resampling rounds' generated tokens reach the budget (so the budgeted run spends at least it).
    """
    from src.engine import sampling_params
    from src.grading import grade_batch

    spec = get_dataset(dataset)
    strategy = get_strategy(cfg.strategy)
    if strategy.name == "teacher_help":
        raise ValueError("the demo has no teacher server; interactive sampling stays out of it")
    queries = queries_from_results(initial.before_resample)
    ctx = StrategyContext(reset_cut=spec.reset_cut, tokenizer=llm.get_tokenizer())
    round0 = dict(initial.stats["rounds"][0])
    rounds: list[dict[str, Any]] = [round0]
    params = sampling_params(1, cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    spent = 0
    for round_ in range(1, cfg.max_resample_num + 1):
        active = [q for q in queries if q.n_correct < cfg.min_correct_num]
        if not active or (token_budget is not None and spent >= token_budget):
            break
        start = time.perf_counter()
        ctx.round = round_
        requests = strategy.requests(active, ctx)
        t_gen = time.perf_counter()
        outputs = llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        gen_seconds = time.perf_counter() - t_gen
        responses = [r.prefix + out.outputs[0].text for r, out in zip(requests, outputs)]
        tokens_by_level: Counter[str] = Counter()
        for r, out in zip(requests, outputs):
            tokens_by_level[str(r.query.record.get("level"))] += len(out.outputs[0].token_ids)
        grades = grade_batch(responses, [r.query.record["answer_value"] for r in requests], spec.name,
                             mode=cfg.mode)
        for req, resp, g in zip(requests, responses, grades):
            req.query.add(resp, g.pred_value, g.correct, req.strategy, round_)
        tokens = sum(tokens_by_level.values())
        spent += tokens
        rounds.append(round_stats(queries, cfg.min_correct_num, round_, len(requests), tokens,
                                  dict(sorted(tokens_by_level.items())), time.perf_counter() - start, gen_seconds,
                                  rounds[-1]))
    stats = {**initial.stats, "strategy": strategy.name, "max_resample_num": cfg.max_resample_num,
             "min_correct_num": cfg.min_correct_num, "config": asdict(cfg), "token_budget": token_budget,
             "rounds": rounds}
    return SamplingRun(dataset, [q.result() for q in queries], initial.before_resample,
                       [item for q in queries for item in q.training_items()], stats)
