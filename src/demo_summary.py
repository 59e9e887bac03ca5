"""The demo's ``summary.json`` and printed table, computed from the run's files only (never from memory), so a
rerun with every stage cached rebuilds the same summary and a test can recompute each number independently.

    from src.demo_summary import build_summary, format_table
    summary = build_summary(Path("output/demo"), cfg, timeline=[], wall_seconds=0.0)
    print(format_table(summary))

Files read (all under ``out_dir``): ``eval/<model>/{synthetic,synthetic_heldout}_res.json``,
``sampling/<strategy>/{results_before_resample,results,sampling_stats}.json``,
``arms/<arm>/data/train.counts.json``, ``arms/<arm>/seed<s>/train_log.json`` and every ``stage.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from src.demo_stats import accuracy_block, paired_bootstrap_diff, seed_spread, verdict

HELD_IN, HELD_OUT = "synthetic", "synthetic_heldout"
TEST_LABEL = {HELD_IN: "held_in", HELD_OUT: "held_out"}
PHASE_THRESHOLD = 0.4  # base's mean held-in accuracy over k = 2..4 (studies: .21 below, .59-.87 past it)
SAMPLED = ("state_reset", "answer_driven", "rationale_driven", "teacher_help", "brute_force")


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _levels(items: list[dict]) -> list[int]:
    return sorted({int(i["level"]) for i in items})


def eval_block(items: list[dict], hard: list[int]) -> dict:
    """Accuracy with Wilson interval: overall, hard levels, and per level."""
    out = {"all": accuracy_block([i["correct"] for i in items]),
           "hard": accuracy_block([i["correct"] for i in items if int(i["level"]) in hard]),
           "by_level": {}}
    for lv in _levels(items):
        out["by_level"][str(lv)] = accuracy_block([i["correct"] for i in items if int(i["level"]) == lv])
    return out


def _flags(items: list[dict], hard: list[int] | None = None) -> list[bool]:
    return [bool(i["correct"]) for i in items if hard is None or int(i["level"]) in hard]


def sampling_block(sdir: Path, hard: list[int]) -> dict:
    """Coverage by round and level, samples, tokens, and tokens per newly covered query (resampling rounds)."""
    stats = _read(sdir / "sampling_stats.json")
    before = _read(sdir / "results_before_resample.json")
    after = _read(sdir / "results.json")
    rounds = stats["rounds"]
    later = rounds[1:]
    unsolved = {i["item_id"] for i in before if not i["correct_pred"]}
    level_of = {i["item_id"]: str(i["level"]) for i in before}
    newly = {i["item_id"] for i in after if i["item_id"] in unsolved and i["correct_pred"]}
    tokens_by_level: dict[str, int] = {}
    for r in later:
        for lv, t in r.get("generated_tokens_by_level", {}).items():
            tokens_by_level[lv] = tokens_by_level.get(lv, 0) + t
    levels = sorted({level_of[i] for i in level_of}, key=int)
    by_level = {}
    for lv in levels:
        u = sum(1 for i in unsolved if level_of[i] == lv)
        n = sum(1 for i in newly if level_of[i] == lv)
        t = tokens_by_level.get(lv, 0)
        by_level[lv] = {"unsolved_after_initial": u, "newly_covered": n, "resample_tokens": t,
                        "tokens_per_newly_covered": t / n if n else None}
    hard_keys = [str(h) for h in hard]
    hard_unsolved = sum(by_level[lv]["unsolved_after_initial"] for lv in hard_keys if lv in by_level)
    hard_new = sum(by_level[lv]["newly_covered"] for lv in hard_keys if lv in by_level)
    resample_tokens = sum(r["generated_tokens"] for r in later)
    return {
        "strategy": stats["strategy"],
        "rounds_run": len(later),
        "token_budget": stats.get("token_budget"),
        "coverage_by_round": [{"round": r["round"], "coverage": r["coverage"],
                               "coverage_by_level": r.get("coverage_by_level", {}),
                               "cumulative_samples": r["cumulative_samples"],
                               "cumulative_generated_tokens": r["cumulative_generated_tokens"]} for r in rounds],
        "samples": rounds[-1]["cumulative_samples"],
        "generated_tokens": rounds[-1]["cumulative_generated_tokens"],
        "resample_samples": sum(r["prompts"] for r in later),
        "resample_tokens": resample_tokens,
        "unsolved_after_initial": len(unsolved),
        "newly_covered": len(newly),
        "tokens_per_newly_covered": resample_tokens / len(newly) if newly else None,
        "by_level": by_level,
        "hard": {"unsolved_after_initial": hard_unsolved, "newly_covered": hard_new,
                 "coverage_of_unsolved": hard_new / hard_unsolved if hard_unsolved else None,
                 "newly_covered_per_million_tokens": 1e6 * hard_new / resample_tokens if resample_tokens else None},
    }


def build_summary(out_dir: Path, cfg: Any, timeline: list[dict], wall_seconds: float) -> dict:
    """Everything the demo reports, recomputed from the files under ``out_dir``."""
    from dataclasses import asdict

    out_dir = Path(out_dir)
    hard = list(cfg.hard_levels)
    arms, flags = arm_blocks(out_dir, list(cfg.arms), list(cfg.seeds), hard)
    comparisons = _comparisons(cfg, arms, flags)
    return {"config": asdict(cfg), "base": _base_block(out_dir, hard), "sampling": _sampling_summary(out_dir, hard),
            "data": {arm: _data_block(out_dir, arm) for arm in cfg.arms}, "arms": arms,
            "comparisons": comparisons, "verdicts": _verdict_lines(comparisons),
            "iterations": iterations_block(out_dir, cfg, hard),
            "times": stage_times(out_dir, timeline, wall_seconds)}


def _base_block(out_dir: Path, hard: list[int]) -> dict[str, Any]:
    base = {TEST_LABEL[ds]: eval_block(_read(out_dir / "eval" / "base" / f"{ds}_res.json"), hard)
            for ds in (HELD_IN, HELD_OUT)}
    base_marker = _read(out_dir / "base" / "stage.json")
    # A base below its phase transition has (almost) nothing to self-improve from: say so loudly.
    mid = [base["held_in"]["by_level"][str(k)]["accuracy"] for k in (2, 3, 4) if str(k) in base["held_in"]["by_level"]]
    return {"eval": base, "train_seconds": base_marker["seconds"],
            # --base_steps 0: the base was trained elsewhere and copied in (its time is not counted)
            "copied_from": base_marker.get("copied_from"),
            "mean_accuracy_k2_4": sum(mid) / len(mid) if mid else None,
            "past_phase_transition": bool(mid) and sum(mid) / len(mid) >= PHASE_THRESHOLD}


def _sampling_summary(out_dir: Path, hard: list[int]) -> dict[str, Any]:
    initial_stats = _read(out_dir / "sampling" / "vanilla" / "sampling_stats.json")
    r0 = initial_stats["rounds"][0]
    sampling: dict[str, Any] = {"initial": {"samples": r0["cumulative_samples"],
                                            "generated_tokens": r0["cumulative_generated_tokens"],
                                            "coverage": r0["coverage"],
                                            "coverage_by_level": r0.get("coverage_by_level", {}),
                                            "n_queries": initial_stats["n_queries"]}}
    for name in SAMPLED:
        if (out_dir / "sampling" / name / "sampling_stats.json").is_file():
            sampling[name] = sampling_block(out_dir / "sampling" / name, hard)
    if "state_reset" in sampling and "brute_force" in sampling:
        sr, bf = sampling["state_reset"]["hard"], sampling["brute_force"]["hard"]
        a, b = sr["newly_covered_per_million_tokens"], bf["newly_covered_per_million_tokens"]
        sampling["hard_coverage_per_token_ratio"] = {
            "state_reset_per_million_tokens": a, "brute_force_per_million_tokens": b,
            "ratio": (a / b) if a is not None and b else None,
            "meets_2x": bool(a is not None and (not b or a >= 2 * b)),
            "definition": f"newly covered pool queries of levels {hard} that had no correct initial sample, per "
                          "million tokens generated in the resampling rounds (brute force spends at least state "
                          "reset's budget)"}
    return sampling


def _data_block(out_dir: Path, arm: str) -> dict[str, Any]:
    counts = _read(out_dir / "arms" / arm / "data" / "train.counts.json")
    records = _read(out_dir / "arms" / arm / "data" / "train.json")
    by_level: dict[str, int] = {}
    for r in records:
        by_level[str(r.get("level"))] = by_level.get(str(r.get("level")), 0) + 1
    return {"records": len(records), "original": counts["included"]["original"],
            "kept": counts["total"]["kept"], "wrong_answer": counts["total"]["wrong_answer"],
            "failed_check": counts["total"]["failed_check"], "duplicate": counts["total"]["duplicate"],
            "records_by_level": dict(sorted(by_level.items())), "by_strategy": counts["by_strategy"]}


def _hard_share(records: list[dict], hard: list[int]) -> dict[str, Any]:
    n = len(records)
    n_hard = sum(1 for r in records if int(r.get("level", 0)) in hard)
    return {"n": n, "hard": n_hard, "hard_share": n_hard / n if n else None}


def iterations_block(out_dir: Path, cfg: Any, hard: list[int]) -> dict[str, Any]:
    """Tail narrowing over iterations: per arm and iteration, the share of the kept (self-generated or gold)
    samples at the hard levels, and held-in / held-out accuracy over seeds (mean, min..max). References: the
    shares of O and of the pool."""
    from src.demo import FIXED, arm_dir, eval_name, original_file, pool_file

    out: dict[str, Any] = {"hard_levels": hard, "iterations": cfg.iterations,
                           "original": _hard_share(_read(original_file(out_dir)), hard),
                           "pool": _hard_share(_read(pool_file(out_dir)), hard),
                           "arms": {}}
    for arm in cfg.arms:
        rows = []
        for t in range(1, (1 if arm in FIXED else cfg.iterations) + 1):
            records = _read(arm_dir(out_dir, arm, t) / "data" / "train.json")
            row = {"iteration": t, "kept": _hard_share([r for r in records if "strategy" in r], hard)}
            for ds in (HELD_IN, HELD_OUT):
                accs = [accuracy_block(_flags(_read(out_dir / "eval" / eval_name(arm, t, s) / f"{ds}_res.json")))
                        ["accuracy"] for s in cfg.seeds]
                row[TEST_LABEL[ds]] = seed_spread(accs)
            rows.append(row)
        out["arms"][arm] = rows
    return out


def arm_blocks(out_dir: Path, arms_: list[str], seed_list: list[int], hard: list[int]) -> tuple[dict[str, Any], dict]:
    """Per arm (its evaluations in ``eval/<arm>_seed<s>/``): each seed's accuracies, then mean and spread over
    seeds; and the per-item flags, keyed (arm, test, "all" | "hard"), for the paired bootstraps."""
    arms: dict[str, Any] = {}
    flags: dict[tuple[str, str, str], list[list[bool]]] = {}
    for arm in arms_:
        seeds = {}
        for seed in seed_list:
            edir = out_dir / "eval" / f"{arm}_seed{seed}"
            block = {}
            for ds in (HELD_IN, HELD_OUT):
                items = _read(edir / f"{ds}_res.json")
                block[TEST_LABEL[ds]] = eval_block(items, hard)
                flags.setdefault((arm, TEST_LABEL[ds], "all"), []).append(_flags(items))
                flags.setdefault((arm, TEST_LABEL[ds], "hard"), []).append(_flags(items, hard))
            seeds[str(seed)] = block
        spread = {}
        for test in ("held_in", "held_out"):
            spread[test] = {"all": seed_spread([s[test]["all"]["accuracy"] for s in seeds.values()]),
                            "hard": seed_spread([s[test]["hard"]["accuracy"] for s in seeds.values()]),
                            "by_level": {lv: seed_spread([s[test]["by_level"][lv]["accuracy"] for s in seeds.values()])
                                         for lv in next(iter(seeds.values()))[test]["by_level"]}}
        arms[arm] = {"seeds": seeds, "over_seeds": spread}
    return arms, flags


GUIDED_ARMS = ("state_reset", "answer_driven", "rationale_driven", "teacher_help")
BASELINES = ("control", "vanilla", "gold")  # what every sampled arm is compared with


def compare(a: str, b: str, arms: dict[str, Any], flags: dict) -> dict[str, dict]:
    """Arm ``a`` minus arm ``b`` on each test and part: paired item bootstrap, seed means and the verdict."""
    entry = {}
    for test in ("held_in", "held_out"):
        for part in ("all", "hard"):
            d = paired_bootstrap_diff(flags[(a, test, part)], flags[(b, test, part)])
            sa, sb = arms[a]["over_seeds"][test][part], arms[b]["over_seeds"][test][part]
            d["verdict"] = verdict(d, sa, sb)
            d["seed_means"] = {a: sa["mean"], b: sb["mean"]}
            entry[f"{test}_{part}"] = d
    return entry


def verdict_lines(a: str, b: str, entry: dict[str, dict]) -> list[str]:
    """One printable line per test and part of :func:`compare`'s entry."""
    return [f"{a} {d['verdict']} {b} on {key.replace('_', ' ')}: {d['diff']:+.3f} (95% item interval "
            f"{d['ci95'][0]:+.3f}..{d['ci95'][1]:+.3f}; seed means {d['seed_means'][a]:.3f} vs "
            f"{d['seed_means'][b]:.3f})" for key, d in entry.items()]


def _comparisons(cfg: Any, arms: dict[str, Any], flags: dict) -> dict[str, Any]:
    """Every sampled arm against control, vanilla and gold, and gold against control: paired bootstrap + verdict."""
    pairs = [(a, b) for a in (*GUIDED_ARMS, "brute_force", "vanilla") for b in BASELINES if a != b]
    pairs.append(("gold", "control"))
    return {f"{a}_vs_{b}": compare(a, b, arms, flags) for a, b in pairs if a in cfg.arms and b in cfg.arms}


def _verdict_lines(comparisons: dict) -> list[str]:
    """The GSI arms against each baseline, then vanilla and gold against the control."""
    order = [f"{a}_vs_{b}" for a in GUIDED_ARMS for b in BASELINES] + ["vanilla_vs_control", "gold_vs_control"]
    lines = []
    for name in order:
        if name in comparisons:
            lines += verdict_lines(*name.split("_vs_"), comparisons[name])
    return lines


def stage_times(out_dir: Path, timeline: list[dict], wall_seconds: float) -> dict:
    """Time per category when each stage was computed (from the markers) and this invocation's wall clock."""
    cat = {"base": 0.0, "training": 0.0, "engine_start": 0.0, "reload_weights": 0.0, "generation": 0.0,
           "grading_and_bookkeeping": 0.0, "data": 0.0, "world": 0.0}
    per_stage = {}
    for marker in sorted(out_dir.rglob("stage.json")):
        s = _read(marker)
        rel = str(marker.parent.relative_to(out_dir))
        per_stage[rel] = s["seconds"]
        name = s["stage"]
        if name == "base":
            cat["base"] += s["seconds"]
        elif name == "world":
            cat["world"] += s["seconds"]
        elif name.startswith("train ") or " train " in name:  # "iteration 2 train ..." too
            cat["training"] += s["seconds"]
        elif name.startswith("data ") or " data " in name:
            cat["data"] += s["seconds"]
        elif "generate_seconds" in s:
            # engine start and reloads ran inside this stage (the Runner stores them in its marker)
            engine = s.get("engine_start_seconds", 0.0) + s.get("reload_weights_seconds", 0.0)
            cat["engine_start"] += s.get("engine_start_seconds", 0.0)
            cat["reload_weights"] += s.get("reload_weights_seconds", 0.0)
            cat["generation"] += s["generate_seconds"]
            cat["grading_and_bookkeeping"] += max(0.0, s["seconds"] - s["generate_seconds"] - engine)
    return {"by_category_when_computed": {k: round(v, 1) for k, v in cat.items()},
            "sum_when_computed": round(sum(cat.values()), 1),
            "per_stage_when_computed": per_stage,
            "this_invocation": {"wall_seconds": round(wall_seconds, 1),
                                "cached_stages": sum(t.get("cached", False) for t in timeline),
                                "computed_stages": [t for t in timeline if not t.get("cached")]}}


def verdict_block(summary: dict, heading: str = "Verdicts") -> list[str]:
    """The verdicts of an experiment's table under one explanation of how they are decided."""
    return [f"\n{heading} (paired item bootstrap over seed-averaged scores; 'beats' also needs every seed above "
            "every seed)"] + ["  " + v for v in summary["verdicts"]]


def time_lines(times: dict) -> list[str]:
    """The table's last line: time per category when computed (see stage_times) and this invocation's."""
    now = times["this_invocation"]
    return ["\nTime (s) when computed: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                   times["by_category_when_computed"].items() if v)
            + f"; sum {times['sum_when_computed']:.0f}; this invocation {now['wall_seconds']:.0f}"
            + f" ({now['cached_stages']} stages cached)"]


# ------------------------------------------------------------------------------------------------ the table
def _pct(x: float | None) -> str:
    return "  -  " if x is None else f"{100 * x:5.1f}"


def _iterations_table(it: dict) -> list[str]:
    """Per arm and iteration: hard-level share of the kept samples, held-in and held-out seed-mean accuracy."""
    hard = ",".join(map(str, it["hard_levels"]))
    lines = [f"\nTail over iterations: share (%) of kept samples at levels {hard} "
             f"(O {_pct(it['original']['hard_share'])}, pool {_pct(it['pool']['hard_share'])}); "
             "accuracy (%) = seed mean, held-in / held-out"]
    head = f"{'arm':<18}{'iter':>5}{'kept':>8}{'hard %':>8}{'held-in':>9}{'held-out':>9}"
    lines += [head, "-" * len(head)]
    for arm, rows in it["arms"].items():
        for r in rows:
            lines.append(f"{arm:<18}{r['iteration']:>5}{r['kept']['n']:>8}{_pct(r['kept']['hard_share']):>8}"
                         f"{_pct(r['held_in']['mean']):>9}{_pct(r['held_out']['mean']):>9}")
    return lines


def accuracy_table(base_eval: dict, arms: dict[str, Any], hard: list[int], title: str = "Accuracy") -> list[str]:
    """Printable accuracy by level on both tests: the base, every arm and seed with Wilson intervals, and each
    arm's mean (min..max) over seeds (``arms`` as :func:`arm_blocks` returns them)."""
    lines = []
    for test in ("held_in", "held_out"):
        levels = list(base_eval[test]["by_level"])
        head = f"{'arm':<18}{'seed':>5} " + " ".join(f"{'k' + lv:>5}" for lv in levels) + \
            f"  {'all [95% CI]':>20}  {'hard k' + ','.join(map(str, hard)) + ' [95% CI]':>22}"
        lines += [f"\n{title} (%), {test.replace('_', '-')} test ({base_eval[test]['by_level'][levels[0]]['n']} "
                  "items per level)", head, "-" * len(head)]

        def row(label: str, seed: str, block: dict, levels: list[str] = levels) -> str:
            a, h = block["all"], block["hard"]
            return (f"{label:<18}{seed:>5} " + " ".join(_pct(block["by_level"][lv]["accuracy"]) for lv in levels)
                    + f"  {_pct(a['accuracy'])} [{_pct(a['ci95'][0])},{_pct(a['ci95'][1])}]"
                    + f"  {_pct(h['accuracy'])} [{_pct(h['ci95'][0])},{_pct(h['ci95'][1])}]")

        lines.append(row("base", "-", base_eval[test]))
        for arm, info in arms.items():
            for seed, block in info["seeds"].items():
                lines.append(row(arm, seed, block[test]))
            sp = info["over_seeds"][test]
            lines.append(f"{'  mean (min..max)':<18}{'':>5} "
                         + " ".join(_pct(sp["by_level"][lv]["mean"]) for lv in levels)
                         + f"  {_pct(sp['all']['mean'])} ({_pct(sp['all']['min'])}..{_pct(sp['all']['max'])})"
                         + f"  {_pct(sp['hard']['mean'])} ({_pct(sp['hard']['min'])}..{_pct(sp['hard']['max'])})")
    return lines


def format_table(summary: dict) -> str:
    cfg = summary["config"]
    hard = cfg["hard_levels"]
    lines = accuracy_table(summary["base"]["eval"], summary["arms"], hard)
    s = summary["sampling"]
    lines.append(f"\nSampling on the pool ({s['initial']['n_queries']} queries), coverage (%) by level")
    levels = list(s["initial"]["coverage_by_level"])
    head = f"{'strategy':<18}{'rounds':>7}{'tokens':>11} " + " ".join(f"{'k' + lv:>5}" for lv in levels) + \
        f"{'new hard':>10}{'tok/new':>9}"
    lines += [head, "-" * len(head)]
    lines.append(f"{'initial (vanilla)':<18}{0:>7}{s['initial']['generated_tokens']:>11} "
                 + " ".join(_pct(s["initial"]["coverage_by_level"][lv]) for lv in levels))
    for name in SAMPLED:
        if name not in s:
            continue
        b = s[name]
        cov = b["coverage_by_round"][-1]["coverage_by_level"]
        tpn = b["tokens_per_newly_covered"]
        lines.append(f"{name:<18}{b['rounds_run']:>7}{b['generated_tokens']:>11} "
                     + " ".join(_pct(cov.get(lv)) for lv in levels)
                     + f"{b['hard']['newly_covered']:>5}/{b['hard']['unsolved_after_initial']:<4}"
                     + f"{'-' if tpn is None else f'{tpn:.0f}':>9}")
    if "hard_coverage_per_token_ratio" in s:
        r = s["hard_coverage_per_token_ratio"]
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        lines.append(f"hard-tail coverage per token, state reset / brute force: {ratio} (target >= 2x)")
    lines.append("\nKept and dropped samples per arm's data (O + kept samples)")
    head = f"{'arm':<18}{'records':>8}{'kept':>7}{'wrong':>7}{'process':>8}{'dup':>6}"
    lines += [head, "-" * len(head)]
    for arm, d in summary["data"].items():
        lines.append(f"{arm:<18}{d['records']:>8}{d['kept']:>7}{d['wrong_answer']:>7}{d['failed_check']:>8}"
                     f"{d['duplicate']:>6}")
    lines += _iterations_table(summary["iterations"])
    lines += verdict_block(summary)
    if not summary["base"]["past_phase_transition"]:
        lines.append(f"\nWARNING: the base's mean held-in accuracy over k = 2..4 is "
                     f"{summary['base']['mean_accuracy_k2_4']:.2f} < {PHASE_THRESHOLD}: it is below its phase "
                     "transition and the comparison above says little. Train it longer (--base_steps).")
    lines += time_lines(summary["times"])
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- markdown (README)
def _cell(block: dict) -> str:
    lo, hi = block["ci95"]
    return f"{100 * block['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _spread_cell(sp: dict) -> str:
    return f"**{100 * sp['mean']:.1f}** ({100 * sp['min']:.1f}..{100 * sp['max']:.1f})"


SHORT_VERDICT = {"beats": "**beats**", "is worse than": "**worse**", "is not distinguishable from": "~"}


def format_markdown(summary: dict) -> str:
    """The README's tables of a run: every arm and seed with Wilson intervals and the seed spread, the paired
    differences with their verdicts, and the tail over iterations (written as ``summary.md`` beside the JSON)."""
    hard = ",".join(map(str, summary["config"]["hard_levels"]))
    parts = ("held_in", "all"), ("held_in", "hard"), ("held_out", "all"), ("held_out", "hard")
    head = ["arm", "seed"] + [f"{t.replace('_', '-')} {'all' if p == 'all' else 'k' + hard}" for t, p in parts]
    lines = ["Accuracy (%), Wilson 95% intervals per seed; mean (min..max) over seeds", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = summary["base"]["eval"]
    lines.append("| base | - | " + " | ".join(_cell(base[t][p]) for t, p in parts) + " |")
    for arm, info in summary["arms"].items():
        for seed, block in info["seeds"].items():
            lines.append(f"| {arm} | {seed} | " + " | ".join(_cell(block[t][p]) for t, p in parts) + " |")
        lines.append(f"| {arm} | mean | " + " | ".join(_spread_cell(info["over_seeds"][t][p]) for t, p in parts)
                     + " |")
    lines += ["", "Paired differences (points; paired item bootstrap of seed-averaged scores, 95% interval) and "
              "verdicts", "", "| comparison | " + " | ".join(head[2:]) + " |", "|---|" + "---|" * 4]
    for name, entry in summary["comparisons"].items():
        cells = []
        for t, p in parts:
            d = entry[f"{t}_{p}"]
            word = SHORT_VERDICT.get(d["verdict"], d["verdict"])
            cells.append(f"{100 * d['diff']:+.1f} ({100 * d['ci95'][0]:+.1f}..{100 * d['ci95'][1]:+.1f}) {word}")
        lines.append(f"| {name.replace('_vs_', ' vs ')} | " + " | ".join(cells) + " |")
    it = summary["iterations"]
    lines += ["", f"Tail over iterations: kept samples and their share at levels {hard} (O "
              f"{_pct(it['original']['hard_share']).strip()}%, pool {_pct(it['pool']['hard_share']).strip()}%); "
              "accuracy = seed mean (min..max)", "",
              "| arm | iteration | kept | hard share (%) | held-in | held-out |", "|---|---|---|---|---|---|"]
    for arm, rows in it["arms"].items():
        for r in rows:
            lines.append(f"| {arm} | {r['iteration']} | {r['kept']['n']} | {_pct(r['kept']['hard_share']).strip()} | "
                         f"{_spread_cell(r['held_in'])} | {_spread_cell(r['held_out'])} |")
    return "\n".join(lines) + "\n"
