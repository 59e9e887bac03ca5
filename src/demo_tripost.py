"""``demo.py --experiment tripost``: TriPosT (issue 15 item 6) against an SFT control, from the demo's shared base.

    .venv/bin/python demo.py --experiment tripost --out_dir output/demo_shared --seeds 1 2 3 --arm_steps 100 \
        --torch_threads 1

1. attempts: the base answers the first ``n_questions`` pool questions (greedy, one attempt each);
2. edit: the process verifier (``src.synthetic.first_wrong_synthetic_step`` + the grader) marks each attempt's
   first wrong step, the scripted improver writes the gold steps from there, re-verified, at most 5 updates
   (``src.tripost.edit.run_edit``, the machinery behind ``edit_trajectories.py``);
3. data: one-step examples rebalanced with p = 1.5 (``src.tripost.data.build_tripost_data``); the control's data
   is the SAME questions' gold rationales. Neither arm gets the original data O (the one composition rule for
   both: TriPosT's official iterations train on the edited trajectories alone);
4. every arm continues from the base for ``arm_steps`` optimizer steps, once per seed; TriPosT with the feedback
   section weighted 1.5, the control with the plain loss;
5. every model (the base too) is evaluated with ``self_improve_rounds`` rounds of attempt -> own feedback ->
   updated attempt (``src.tripost.infer.evaluate_self_improve``, the machinery of ``eval.py
   --self_improve_rounds``) on the held-in and held-out tests: first-attempt and final accuracy, fixed/broken
   counts per level, Wilson intervals, seed spread, paired bootstrap TriPosT vs control.

Every stage lives under ``<out_dir>/tripost/`` (cached by its key like the demo's own stages); the summary is
``<out_dir>/tripost/summary.json``, recomputed from the files the stages wrote.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from src.demo_stats import paired_bootstrap_diff, seed_spread, verdict
from src.demo_summary import eval_block, stage_times, time_lines, verdict_block
from src.records import load_records, write_json

HELD_IN, HELD_OUT = "synthetic", "synthetic_heldout"
TESTS = {HELD_IN: "held_in", HELD_OUT: "held_out"}
ARMS = ("tripost", "control")
ROOT = "tripost"


@dataclass
class TripostDemoConfig:
    """TriPosT's fixed settings in the demo (the released defaults where the method has one)."""

    n_questions: int = field(default=400, metadata={
        "help": "pool questions the base attempts (capped by the pool size); the control trains on their gold"})
    max_updates: int = field(default=5, metadata={"help": "improver updates per trajectory at most (official 5)"})
    max_words: int = field(default=512, metadata={"help": "attempts over this many words are dropped (official)"})
    improve_ratio: float = field(default=1.5, metadata={
        "help": "p: ceil(n_improvement / p) non-improvement examples, as many gold ones (official 1.5)"})
    section_weight: float = field(default=1.5, metadata={
        "help": "loss weight from the first 'Feedback:' on in examples with an error (official 1.5)"})
    self_improve_rounds: int = field(default=2, metadata={
        "help": "evaluation: rounds of own feedback + update after the first attempt (eval.py's default)"})
    eval_max_new_tokens: int = field(default=300, metadata={
        "help": "evaluation: new tokens per generation (a round writes feedback AND an updated attempt: a k = 6 "
                "round is ~230 tokens of this tokenizer)"})
    eval_per_level: int = field(default=20, metadata={
        "help": "evaluation: the first N items of each level of each test (0 = all); a model that does not know "
                "the feedback format writes to the token limit in its round, so the full tests cost ~3x"})


# Per demo scale (``--scale``): the test preset keeps the self-improving evaluation of untrained models short (they
# write until the token limit in every round)
SCALES: dict[str, dict[str, Any]] = {"test": {"eval_max_new_tokens": 120, "eval_per_level": 0}}


def eval_records(records: list[dict], per_level: int) -> list[dict]:
    """The first ``per_level`` items of each level, in file order (all when 0)."""
    seen: dict[Any, int] = {}
    out = []
    for r in records:
        seen[r.get("level")] = seen.get(r.get("level"), 0) + 1
        if not per_level or seen[r.get("level")] <= per_level:
            out.append(r)
    return out


def _read(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _stage_key(runner, rel: str) -> str:
    return _read(runner.out / rel / "stage.json")["key"]


# ----------------------------------------------------------------------------------------------------- stages
def attempts_stage(runner, tc: TripostDemoConfig) -> dict:
    """The base's greedy attempt at each of the first ``n_questions`` pool questions (a sampling results.json)."""
    from src.sampling import SamplingConfig, run_sampling, write_sampling_outputs

    c = runner.cfg
    key = {"base": runner.base_key, "world": runner.world_key, "n_questions": tc.n_questions,
           "max_new_tokens": c.max_new_tokens, "engine_seed": c.engine_seed}

    def run(st) -> dict:
        pool = load_records(runner.pool_file)
        scfg = SamplingConfig(strategy="vanilla", sample_num=1, min_correct_num=0, max_resample_num=0,
                              temperature=0.0, max_new_tokens=c.max_new_tokens, progress=c.progress)
        res = run_sampling(runner.engine(runner.out / "base" / "model"), pool[:tc.n_questions], HELD_IN, scfg)
        write_sampling_outputs(res, st.dir)
        r0 = res.stats["rounds"][0]
        return {"questions": len(res.results), "coverage": r0["coverage"],
                "generate_seconds": r0["generate_seconds"]}

    return runner.stage("tripost attempts", f"{ROOT}/attempts", key, run)


def edit_stage(runner, tc: TripostDemoConfig) -> dict:
    """Process verifier + scripted improver on every attempt (src.tripost.edit, as edit_trajectories.py)."""
    from src.tripost.edit import EditConfig, run_edit

    key = {"attempts": _stage_key(runner, f"{ROOT}/attempts"), "max_updates": tc.max_updates,
           "max_words": tc.max_words}

    def run(st) -> dict:
        ecfg = EditConfig(cur_sampled_data_path=[str(runner.out / ROOT / "attempts")], output_path=str(st.dir),
                          verifier="process", improver="scripted", max_updates=tc.max_updates,
                          max_words=tc.max_words, window_size=256)
        stats = run_edit(ecfg)
        return {"status": stats["status"], "kept": stats["kept"]}

    return runner.stage("data tripost edit", f"{ROOT}/edit", key, run)


def data_stage(runner, tc: TripostDemoConfig) -> dict:
    """TriPosT's rebalanced examples and the control's gold rationales of the same questions."""
    from src.tripost.data import build_tripost_data, load_trajectories

    key = {"edit": _stage_key(runner, f"{ROOT}/edit"), "improve_ratio": tc.improve_ratio}

    def run(st) -> dict:
        trajectories = load_trajectories([str(runner.out / ROOT / "edit")])
        records, counts = build_tripost_data(trajectories, tc.improve_ratio)
        pool = load_records(runner.pool_file)
        asked = {t["item_id"] for t in trajectories}
        gold = [r for r in pool if r["item_id"] in asked]
        write_json(st.dir / "tripost" / "train.json", records)
        write_json(st.dir / "tripost" / "train.counts.json", counts)
        write_json(st.dir / "control" / "train.json", gold)
        return {"tripost_records": len(records), "control_records": len(gold)}

    return runner.stage("data tripost examples", f"{ROOT}/data", key, run)


def train_stage(runner, tc: TripostDemoConfig, arm: str, seed: int) -> tuple[Path, dict]:
    """One arm, one seed: from the base, ``arm_steps`` steps; TriPosT's feedback section weighted."""
    c = runner.cfg
    weight = tc.section_weight if arm == "tripost" else 1.0
    key = {"base": runner.base_key, "data": _stage_key(runner, f"{ROOT}/data"), "arm": arm, "steps": c.arm_steps,
           "lr": c.arm_lr, "seed": seed, "batch": c.batch_size, "section_weight": weight}
    rel = f"{ROOT}/arms/{arm}/seed{seed}"

    def run(st) -> dict:
        model = runner.train(runner.out / "base" / "model", runner.out / ROOT / "data" / arm / "train.json",
                             st.dir, c.arm_steps, c.arm_lr, seed,
                             extra={"section_weight": weight} if weight != 1.0 else None)
        return {"model": str(model)}

    runner.stage(f"train tripost/{arm} seed {seed}", rel, key, run)
    return runner.out / rel / "model", key


def eval_stage(runner, tc: TripostDemoConfig, name: str, model_dir: Path, model_key: Any) -> dict:
    """Self-improving evaluation (first attempt, own feedback, updates) on the held-in and held-out tests."""
    from src.tripost.infer import evaluate_self_improve

    data = runner.out / "world" / "data"
    key = {"model": model_key, "world": runner.world_key, "rounds": tc.self_improve_rounds,
           "max_new_tokens": tc.eval_max_new_tokens, "per_level": tc.eval_per_level}

    def run(st) -> dict:
        llm = runner.engine(model_dir)
        out: dict[str, Any] = {"model": str(model_dir), "datasets": {}}
        for ds in TESTS:
            records = eval_records(load_records(data / "test" / f"{ds}.json", "test"), tc.eval_per_level)
            items, metrics = evaluate_self_improve(llm, records, ds, "cot", tc.eval_max_new_tokens, 0.0,
                                                   rounds=tc.self_improve_rounds)
            write_json(st.dir / f"{ds}_res.json", items)
            out["datasets"][ds] = metrics
        write_json(st.dir / "metrics.json", out)
        return {"generate_seconds": sum(m["generate_seconds"] for m in out["datasets"].values())}

    return runner.stage(f"eval tripost/{name}", f"{ROOT}/eval/{name}", key, run)


def run_experiment(runner, tc: TripostDemoConfig | None = None) -> dict:
    """Every stage (cached ones skipped), then the summary written to ``<out_dir>/tripost/summary.json``."""
    tc = tc or TripostDemoConfig(**SCALES.get(runner.cfg.scale, {}))
    tc = TripostDemoConfig(**{**asdict(tc), "n_questions": min(tc.n_questions, runner.cfg.n_pool)})
    t0 = time.perf_counter()
    base = runner.out / "base" / "model"
    eval_stage(runner, tc, "base", base, runner.base_key)
    attempts_stage(runner, tc)
    edit_stage(runner, tc)
    data_stage(runner, tc)
    for seed in runner.cfg.seeds:  # seed-major: a cut-short run still has one full seed of both arms
        for arm in ARMS:
            model, key = train_stage(runner, tc, arm, seed)
            eval_stage(runner, tc, f"{arm}_seed{seed}", model, key)
    summary = build_summary(runner.out, runner.cfg, tc, runner.timeline, time.perf_counter() - t0)
    write_json(runner.out / ROOT / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------------- summary
def _first(items: list[dict]) -> list[dict]:
    """The items scored by their first attempt instead of their final one."""
    return [{**i, "correct": i["first_attempt_correct"]} for i in items]


def model_block(edir: Path, hard: list[int]) -> tuple[dict, dict]:
    """(per test: first-attempt and final accuracy blocks, self-improvement counts; per-item flags)."""
    metrics = _read(edir / "metrics.json")["datasets"]
    block, flags = {}, {}
    for ds, test in TESTS.items():
        items = _read(edir / f"{ds}_res.json")
        si = metrics[ds]["self_improve"]
        block[test] = {"first": eval_block(_first(items), hard), "final": eval_block(items, hard),
                       "fixed": si["fixed"], "broken": si["broken"], "updated": si["updated"],
                       "by_level": si["by_level"]}
        for when, scored in (("first", _first(items)), ("final", items)):
            flags[(test, when, "all")] = [bool(i["correct"]) for i in scored]
            flags[(test, when, "hard")] = [bool(i["correct"]) for i in scored if int(i["level"]) in hard]
    return block, flags


def _over_seeds(seeds: dict[str, dict]) -> dict:
    out: dict[str, Any] = {}
    for test in TESTS.values():
        blocks = [s[test] for s in seeds.values()]
        out[test] = {when: {"all": seed_spread([b[when]["all"]["accuracy"] for b in blocks]),
                            "hard": seed_spread([b[when]["hard"]["accuracy"] for b in blocks]),
                            "by_level": {lv: seed_spread([b[when]["by_level"][lv]["accuracy"] for b in blocks])
                                         for lv in blocks[0][when]["by_level"]}}
                     for when in ("first", "final")}
        levels = blocks[0]["by_level"]
        out[test]["fixed_broken_by_level"] = {
            lv: {k: sum(b["by_level"][lv][k] for b in blocks) for k in ("n", "first_correct", "correct", "fixed",
                                                                        "broken")} for lv in levels}
        out[test]["fixed"] = sum(b["fixed"] for b in blocks)
        out[test]["broken"] = sum(b["broken"] for b in blocks)
    return out


def _compare(flags: dict, spreads: dict, a: str, b: str, a_when: str, b_when: str) -> dict:
    """Paired item bootstrap of arm ``a`` (scored at ``a_when``) minus ``b`` (at ``b_when``), both tests."""
    out = {}
    for test in TESTS.values():
        for part in ("all", "hard"):
            d = paired_bootstrap_diff(flags[a][(test, a_when, part)], flags[b][(test, b_when, part)])
            sa, sb = spreads[a][test][a_when][part], spreads[b][test][b_when][part]
            d["verdict"] = verdict(d, sa, sb)
            d["seed_means"] = {f"{a} {a_when}": sa["mean"], f"{b} {b_when}": sb["mean"]}
            out[f"{test}_{part}"] = d
    return out


def _data_block(out: Path) -> dict:
    counts = _read(out / ROOT / "data" / "tripost" / "train.counts.json")
    records = _read(out / ROOT / "data" / "tripost" / "train.json")
    trajectories = _read(out / ROOT / "edit" / "trajectories.json")
    by_level: dict[str, dict[str, int]] = {}
    for t in trajectories:
        row = by_level.setdefault(str(t.get("level")), {})
        row[t["status"]] = row.get(t["status"], 0) + 1
    kinds: dict[str, dict[str, int]] = {}
    for r in records:
        row = kinds.setdefault(r["kind"], {})
        row[str(r.get("level"))] = row.get(str(r.get("level")), 0) + 1
    return {"edit": _read(out / ROOT / "edit" / "edit_stats.json")["status"],
            "edit_by_level": dict(sorted(by_level.items())), "examples": counts,
            "examples_by_kind_and_level": {k: dict(sorted(v.items())) for k, v in kinds.items()},
            "tripost_records": len(records),
            "control_records": len(_read(out / ROOT / "data" / "control" / "train.json"))}


def build_summary(out: Path, cfg: Any, tc: TripostDemoConfig, timeline: list[dict], wall: float) -> dict:
    """Everything the experiment reports, recomputed from the files under ``<out>/tripost``."""
    out = Path(out)
    hard = list(cfg.hard_levels)
    base, _ = model_block(out / ROOT / "eval" / "base", hard)
    arms: dict[str, Any] = {}
    flags: dict[str, dict] = {}
    for arm in ARMS:
        seeds, per_seed = {}, []
        for seed in cfg.seeds:
            seeds[str(seed)], f = model_block(out / ROOT / "eval" / f"{arm}_seed{seed}", hard)
            per_seed.append(f)
        flags[arm] = {k: [f[k] for f in per_seed] for k in per_seed[0]}
        steps = [_read(out / ROOT / "arms" / arm / f"seed{s}" / "train_log.json")["step"] for s in cfg.seeds]
        arms[arm] = {"seeds": seeds, "over_seeds": _over_seeds(seeds), "optimizer_steps": steps}
    spreads = {arm: arms[arm]["over_seeds"] for arm in ARMS}
    comparisons = {"tripost_final_vs_control_final": _compare(flags, spreads, "tripost", "control", "final", "final"),
                   "tripost_first_vs_control_first": _compare(flags, spreads, "tripost", "control", "first", "first"),
                   "tripost_final_vs_tripost_first": _compare(flags, spreads, "tripost", "tripost", "final", "first")}
    lines = []
    for entry in comparisons.values():
        for key, d in entry.items():
            (la, ma), (lb, mb) = d["seed_means"].items()
            lines.append(f"{la} {d['verdict']} {lb} on {key.replace('_', ' ')}: {d['diff']:+.3f} (95% item "
                         f"interval {d['ci95'][0]:+.3f}..{d['ci95'][1]:+.3f}; seed means {ma:.3f} vs {mb:.3f})")
    return {"config": {**asdict(cfg), "tripost": asdict(tc),
                       "composition": "TriPosT: its rebalanced examples; control: the gold rationales of the same "
                                      "questions; neither arm includes the original data O"},
            "base": base, "data": _data_block(out), "arms": arms, "comparisons": comparisons, "verdicts": lines,
            "times": stage_times(out / ROOT, timeline, wall)}


# ------------------------------------------------------------------------------------------------------ table
def _pct(x: float | None) -> str:
    return "  -  " if x is None else f"{100 * x:5.1f}"


def _acc(b: dict) -> str:
    return f"{_pct(b['accuracy'])} [{_pct(b['ci95'][0])},{_pct(b['ci95'][1])}]"


def _accuracy_lines(summary: dict, test: str) -> list[str]:
    hard = ",".join(map(str, summary["config"]["hard_levels"]))
    head = (f"{'model':<10}{'seed':>5}  {'first [95% CI]':>20}  {'final [95% CI]':>20}  {'hard first':>10}"
            f"  {'hard final':>10}{'fixed':>7}{'broken':>7}{'updated':>8}")
    lines = [f"\nTriPosT: accuracy (%), {test.replace('_', '-')} test, first attempt vs after "
             f"{summary['config']['tripost']['self_improve_rounds']} self-improvement rounds (hard = k {hard})",
             head, "-" * len(head)]

    def row(label: str, seed: str, b: dict) -> str:
        return (f"{label:<10}{seed:>5}  {_acc(b['first']['all'])}  {_acc(b['final']['all'])}  "
                f"{_pct(b['first']['hard']['accuracy']):>10}  {_pct(b['final']['hard']['accuracy']):>10}"
                f"{b['fixed']:>7}{b['broken']:>7}{b['updated']:>8}")

    lines.append(row("base", "-", summary["base"][test]))
    for arm, info in summary["arms"].items():
        for seed, block in info["seeds"].items():
            lines.append(row(arm, seed, block[test]))
        sp = info["over_seeds"][test]
        lines.append(f"{'  mean':<10}{'':>5}  " + "  ".join(
            f"{_pct(sp[w]['all']['mean'])} ({_pct(sp[w]['all']['min'])}..{_pct(sp[w]['all']['max'])})"
            for w in ("first", "final")) + f"  {_pct(sp['first']['hard']['mean']):>10}"
            f"  {_pct(sp['final']['hard']['mean']):>10}{sp['fixed']:>7}{sp['broken']:>7}")
    return lines


def _level_lines(summary: dict, test: str) -> list[str]:
    arms = summary["arms"]
    head = f"{'k':>3}" + "".join(f"  {arm + ': first -> final  fixed/broken':>36}" for arm in arms)
    lines = [f"\nPer level, {test.replace('_', '-')}: accuracy (%, seed mean) first attempt -> final; fixed/broken "
             "items summed over seeds", head, "-" * len(head)]
    for lv in arms["tripost"]["over_seeds"][test]["fixed_broken_by_level"]:
        row = f"{lv:>3}"
        for info in arms.values():
            sp = info["over_seeds"][test]
            fb = sp["fixed_broken_by_level"][lv]
            row += (f"  {_pct(sp['first']['by_level'][lv]['mean']):>19} -> {_pct(sp['final']['by_level'][lv]['mean'])}"
                    f"  {fb['fixed']:>5}/{fb['broken']:<5}")
        lines.append(row.rstrip())
    return lines


def format_table(summary: dict) -> str:
    lines: list[str] = []
    for test in TESTS.values():
        lines += _accuracy_lines(summary, test) + _level_lines(summary, test)
    d = summary["data"]
    ex = d["examples"]
    lines.append(f"\nEdited attempts (process verifier + scripted improver): {d['edit']}")
    lines.append(f"TriPosT examples: {ex['improvement']} improvement, {ex['non_improvement']} of "
                 f"{ex['non_improvement_available']} non-improvement, {ex['gold']} gold (p = {ex['improve_ratio']}); "
                 f"control: {d['control_records']} gold rationales; optimizer steps "
                 f"{summary['arms']['tripost']['optimizer_steps']} vs {summary['arms']['control']['optimizer_steps']}")
    lines += verdict_block(summary) + time_lines(summary["times"])
    return "\n".join(lines)

