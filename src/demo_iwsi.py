"""`demo.py --experiment iwsi`: IWSI (arXiv 2408.09849) against its controls on the demo's shared world and base.

    .venv/bin/python demo.py --experiment iwsi --out_dir output/demo_shared --seeds 1 2 3 --torch_threads 1

From the shared base (trained past its phase transition; cached by the GSI demo's ``base`` stage):
1. valid set: 5% of O (labelled), drawn by :func:`src.iwsi.make_valid_split`, disjoint from the pool P;
2. candidates: ``sample_num`` samples per pool query at ``temperature`` from the base (one initial round, no
   resampling); every arm selects from these SAME candidates;
3. data, each arm = O + its kept samples (answer filter + duplicates dropped; no process check, which reads the
   gold chain and would not be label-free):
   - lmsi: samples reaching the majority-vote answer (:func:`src.iwsi.vote_sampled`; no labels);
   - iwsi: lmsi's samples, then the floor(k * n) with the lowest DS weight, losses scored by the trained base;
   - iwsi_w: lmsi's samples, each sample's loss weighted by min(w', C) in training (O's records weigh 1);
   - label: samples reaching the gold answer (the sampling run's own grading);
4. every arm continues from the base for ``arm_steps`` optimizer steps, once per seed, and is evaluated greedily
   on the held-in and held-out tests;
5. ``<out_dir>/iwsi/summary.json`` (and ``figure.png``): per arm Wilson intervals and seed spread, paired item
   bootstrap of iwsi and iwsi_w against lmsi and label, the voted answers' accuracy against gold, loss
   histograms (valid, before and after the DS filter) and the label-correct share per DS bin.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from src.demo import HELD_IN, HELD_OUT, Runner, _file_sha
from src.demo_summary import (
    PHASE_THRESHOLD,
    TEST_LABEL,
    accuracy_table,
    arm_blocks,
    compare,
    eval_block,
    time_lines,
    verdict_block,
    verdict_lines,
)
from src.records import load_records, write_json

ARMS = ("lmsi", "iwsi", "iwsi_w", "label")
COMPARISONS = (("iwsi", "lmsi"), ("iwsi", "label"), ("iwsi_w", "lmsi"), ("iwsi_w", "label"), ("lmsi", "label"))
DS_BINS = ((1.0, 1.1), (1.1, 1.3), (1.3, 1.5), (1.5, 2.0), (2.0, math.inf))  # the bins of the DS weight


@dataclass
class IwsiDemoConfig:
    """The method's fixed settings in this experiment (the paper's, except where the help says why not)."""

    # 8, not the paper's 15: with 15 on the 1,000-query pool (~1.2M tokens) a run did not fit its time on the
    # shared 2-core machine (README, IWSI)
    sample_num: int = field(default=8, metadata={"help": "candidates per pool query m (the paper's 15)"})
    temperature: float = field(default=1.1, metadata={"help": "candidate sampling temperature (the paper's 1.1)"})
    keep_fraction: float = field(default=0.8, metadata={"help": "IWSI's k: keep floor(k * n) lowest-DS samples"})
    weight_clip: float = field(default=2.0, metadata={"help": "IWSI-w's C: sample weight min(w', C)"})
    span: str = field(default="full", metadata={"help": "scored text: full 'Q: ..\\nA: ..' (the official code)"})
    valid_fraction: float = field(default=0.05, metadata={"help": "valid set: this share of O (the paper's <= 5%)"})
    valid_seed: int = field(default=42, metadata={"help": "seed of the valid draw"})
    ds_batch_size: int = field(default=32, metadata={"help": "sequences per forward pass when scoring losses"})


def _paths(runner: Runner) -> dict[str, Path]:
    return {"original": runner.original_file, "pool": runner.pool_file,
            "base": runner.out / "base" / "model", "root": runner.out / "iwsi"}


# ----------------------------------------------------------------------------------------------------- stages
def _valid_stage(runner: Runner, ic: IwsiDemoConfig) -> dict:
    from src.iwsi import ValidSplitConfig, make_valid_split

    p = _paths(runner)
    key = {"world": runner.world_key, "fraction": ic.valid_fraction, "seed": ic.valid_seed}

    def run(st) -> dict:
        valid = make_valid_split(ValidSplitConfig(train_file=str(p["original"]), out=str(st.dir / "valid.json"),
                                                  exclude=[str(p["pool"])], fraction=ic.valid_fraction,
                                                  seed=ic.valid_seed))
        return {"records": len(valid)}

    return runner.stage("iwsi valid set", "iwsi/valid", key, run)


def _sampling_stage(runner: Runner, ic: IwsiDemoConfig) -> dict:
    from src.sampling import SamplingConfig, run_sampling, write_sampling_outputs

    c, p = runner.cfg, _paths(runner)
    key = {"base": runner.base_key, "sample_num": ic.sample_num, "temperature": ic.temperature,
           "max_new_tokens": c.max_new_tokens, "engine_seed": c.engine_seed}

    def run(st) -> dict:
        scfg = SamplingConfig(strategy="vanilla", sample_num=ic.sample_num, min_correct_num=0, max_resample_num=0,
                              temperature=ic.temperature, max_new_tokens=c.max_new_tokens, progress=c.progress)
        res = run_sampling(runner.engine(p["base"]), load_records(p["pool"]), HELD_IN, scfg)
        write_sampling_outputs(res, st.dir)
        r0 = res.stats["rounds"][0]
        return {"generate_seconds": r0["generate_seconds"], "wall_seconds": r0["wall_seconds"],
                "samples": r0["samples"], "generated_tokens": r0["generated_tokens"]}

    return runner.stage("iwsi sampling", "iwsi/sampling", key, run)


def _sampled_set(runner: Runner):
    from src.filtering import SampledSet

    d = _paths(runner)["root"] / "sampling"
    stats = json.loads((d / "sampling_stats.json").read_text())
    return SampledSet(HELD_IN, json.loads((d / "results.json").read_text()), str(d / "results.json"),
                      stats["strategy"], stats["sample_num"])


def _filter_cfg():
    from src.filtering import FilterConfig

    # answer + duplicates only: the strict process check compares with the gold chain (not label-free)
    return FilterConfig(check_result=False, dedupe=True, merged_first=True)


def build_arm_data(runner: Runner, ic: IwsiDemoConfig, out_dir: Path) -> dict:
    """Every arm's train file (O + kept samples) and ``ds.json`` (per vote-kept sample: loss, w', DS weight,
    kept by the DS filter, label-correct); returns the counts."""
    import torch

    from src.filtering import build_next_iteration
    from src.iwsi import DSFilter, apply_ds_filter, prepare_ds_filter, select_lowest, vote_sampled

    p = _paths(runner)
    if runner.cfg.torch_threads > 0:
        torch.set_num_threads(runner.cfg.torch_threads)
    original = load_records(p["original"])
    sset = _sampled_set(runner)
    label_records, label_counts = build_next_iteration([sset], _filter_cfg(), original=original)
    vote_summary: dict[str, Any] = {}
    voted = vote_sampled([sset], vote_summary)
    lmsi_records, lmsi_counts = build_next_iteration(voted, _filter_cfg(), original=original)
    samples = lmsi_records[len(original):]
    # DS weights of every vote-kept sample, scored with the trained base (k = 1 keeps them all, in order)
    ds_cfg = DSFilter(str(p["root"] / "valid" / "valid.json"), str(p["base"]), keep_fraction=1.0, span=ic.span,
                      policy_model=str(p["base"]), batch_size=ic.ds_batch_size)
    valid, tok = prepare_ds_filter(ds_cfg, voted)
    ds_summary: dict[str, Any] = {}
    scored = apply_ds_filter(ds_cfg, tok, valid, samples, ds_summary)
    kept = select_lowest([r["ds_weight"] for r in scored], ic.keep_fraction)
    arms = {"lmsi": lmsi_records, "iwsi": original + [scored[i] for i in kept], "iwsi_w": original + scored,
            "label": label_records}
    for arm, records in arms.items():
        write_json(out_dir / f"{arm}.json", records)
    gold = {it["item_id"]: set(it["correct_pred"]) for it in sset.items}
    keep = set(kept)
    per_sample = [{"item_id": r["item_id"], "level": r.get("level"), "loss": loss, "w_prime": r["w_prime"],
                   "ds_weight": r["ds_weight"], "kept": i in keep,
                   "label_correct": r["answer_cot"] in gold[r["item_id"]]}
                  for i, (r, loss) in enumerate(zip(scored, ds_summary["ds_filter"]["sample_losses"]))]
    voted_correct = _voted_correct_by_level(voted[0].items, gold)
    write_json(out_dir / "ds.json", {"valid_losses": ds_summary["ds_filter"]["valid_losses"],
                                     "valid_mean_loss": ds_summary["ds_filter"]["valid_mean_loss"],
                                     "threshold": max((scored[i]["ds_weight"] for i in kept), default=None),
                                     "samples": per_sample})
    counts = {"original": len(original), "candidates": sum(len(it["pred"]) for it in sset.items),
              "label_kept": label_counts.total["kept"], "label_duplicates": label_counts.total["duplicate"],
              "vote_kept": lmsi_counts.total["kept"], "vote_duplicates": lmsi_counts.total["duplicate"],
              "ds_kept": len(kept), "vote": vote_summary["vote"][HELD_IN], "voted_correct": voted_correct,
              "records": {arm: len(r) for arm, r in arms.items()}}
    write_json(out_dir / "counts.json", counts)
    return counts


def _voted_correct_by_level(voted_items: list[dict], gold: dict[str, set[str]]) -> dict[str, list[int]]:
    """{level: [questions, voted, voted answer equals gold]}: a vote is right when its samples are gold-correct
    (every sample of the voted class reaches the voted answer, so one decides for all)."""
    out: dict[str, list[int]] = {}
    for it in voted_items:
        row = out.setdefault(str(it.get("level")), [0, 0, 0])
        row[0] += 1
        if it["correct_pred"]:
            row[1] += 1
            row[2] += int(it["correct_pred"][0] in gold[it["item_id"]])
    return dict(sorted(out.items()))


def _data_stage(runner: Runner, ic: IwsiDemoConfig) -> dict:
    root = _paths(runner)["root"]
    key = {"sampling": json.loads((root / "sampling" / "stage.json").read_text())["key"],
           "valid": json.loads((root / "valid" / "stage.json").read_text())["key"], "base": runner.base_key,
           "k": ic.keep_fraction, "span": ic.span}
    return runner.stage("iwsi data (vote, DS scores, filters)", "iwsi/data", key,
                        lambda st: build_arm_data(runner, ic, st.dir))


def _train_and_eval(runner: Runner, ic: IwsiDemoConfig, arm: str, seed: int) -> None:
    c, p = runner.cfg, _paths(runner)
    train_file = p["root"] / "data" / f"{arm}.json"
    extra = {"sample_weight_field": "w_prime", "sample_weight_clip": ic.weight_clip} if arm == "iwsi_w" else None
    key = {"base": runner.base_key, "data": _file_sha(train_file), "steps": c.arm_steps, "lr": c.arm_lr,
           "seed": seed, "batch": c.batch_size, "extra": extra}

    def run(st) -> dict:
        model = runner.train(p["base"], train_file, st.dir, c.arm_steps, c.arm_lr, seed, extra)
        log = json.loads((st.dir / "train_log.json").read_text())
        return {"model": str(model), "optimizer_steps": _steps_of(log)}

    runner.stage(f"iwsi train {arm} seed {seed}", f"iwsi/arms/{arm}/seed{seed}", key, run)
    runner.evaluate(f"iwsi_{arm}_seed{seed}", p["root"] / "arms" / arm / f"seed{seed}" / "model", key)


def _steps_of(log: dict) -> int | None:
    """The optimizer steps a train_log.json reports."""
    return log.get("step")


def run_experiment(runner: Runner) -> dict:
    """Every stage (cached where done), then ``<out_dir>/iwsi/summary.json`` and ``figure.png``."""
    t0 = time.perf_counter()
    ic = IwsiDemoConfig()
    p = _paths(runner)
    runner.evaluate("iwsi_base", p["base"], runner.base_key)
    _valid_stage(runner, ic)
    _sampling_stage(runner, ic)
    _data_stage(runner, ic)
    for seed in runner.cfg.seeds:  # seed-major: a cut-short run still has one full seed of every arm
        for arm in ARMS:
            _train_and_eval(runner, ic, arm, seed)
    summary = build_summary(runner.out, runner.cfg, ic, runner.timeline, time.perf_counter() - t0)
    try:
        summary["figure_png"] = str(write_figure(summary, p["root"] / "figure.png"))
    except ImportError as err:  # matplotlib is optional: the data stays in the summary
        summary["figure_png"] = None
        summary["figure_error"] = str(err)
    write_json(p["root"] / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------------- summary
def build_summary(out: Path, cfg: Any, ic: IwsiDemoConfig, timeline: list[dict], wall_seconds: float) -> dict:
    """Everything reported, recomputed from the run's files."""
    hard = list(cfg.hard_levels)
    root = out / "iwsi"
    blocks, flags = arm_blocks(out, [f"iwsi_{a}" for a in ARMS], list(cfg.seeds), hard)
    arms = {a: blocks[f"iwsi_{a}"] for a in ARMS}
    flags = {(k[0][len("iwsi_"):], *k[1:]): v for k, v in flags.items()}
    comparisons = {f"{a}_vs_{b}": compare(a, b, arms, flags) for a, b in COMPARISONS}
    counts = json.loads((root / "data" / "counts.json").read_text())
    ds = json.loads((root / "data" / "ds.json").read_text())
    base = {TEST_LABEL[t]: eval_block(json.loads((out / "eval" / "iwsi_base" / f"{t}_res.json").read_text()), hard)
            for t in (HELD_IN, HELD_OUT)}
    mid = [base["held_in"]["by_level"][k]["accuracy"] for k in ("2", "3", "4") if k in base["held_in"]["by_level"]]
    steps = {a: [json.loads((root / "arms" / a / f"seed{s}" / "stage.json").read_text()).get("optimizer_steps")
                 for s in cfg.seeds] for a in ARMS}
    return {"config": asdict(cfg), "iwsi": asdict(ic),
            "base": {"eval": base, "mean_accuracy_k2_4": sum(mid) / len(mid) if mid else None,
                     "past_phase_transition": bool(mid) and sum(mid) / len(mid) >= PHASE_THRESHOLD},
            "data": _data_block(counts, ds), "vote_accuracy": _vote_block(counts), "figure": figure_data(ds),
            "arms": arms, "optimizer_steps": steps, "comparisons": comparisons,
            "verdicts": [x for n, e in comparisons.items() for x in verdict_lines(*n.split("_vs_"), e)],
            "times": _times(out, wall_seconds, timeline)}


def _data_block(counts: dict, ds: dict) -> dict:
    samples = ds["samples"]
    kept = [s for s in samples if s["kept"]]

    def share(xs: list[dict]) -> float | None:
        return sum(s["label_correct"] for s in xs) / len(xs) if xs else None

    return {"candidates": counts["candidates"], "original": counts["original"], "records": counts["records"],
            "samples": {"label": counts["label_kept"], "lmsi": counts["vote_kept"], "iwsi": counts["ds_kept"],
                        "iwsi_w": counts["vote_kept"]},
            "duplicates_dropped": {"label": counts["label_duplicates"], "vote": counts["vote_duplicates"]},
            # how many of each arm's samples reach the gold answer (label's are all correct by construction)
            "label_correct_share": {"lmsi": share(samples), "iwsi": share(kept),
                                    "dropped_by_ds": share([s for s in samples if not s["kept"]]), "label": 1.0},
            "valid_mean_loss": ds["valid_mean_loss"], "ds_threshold": ds["threshold"]}


def _vote_block(counts: dict) -> dict:
    v = counts["vote"]
    by_level = {lv: {"questions": q, "voted": n, "vote_equals_gold": c, "accuracy": c / q if q else None}
                for lv, (q, n, c) in counts["voted_correct"].items()}
    return {"questions": v["questions"], "voted": v["voted"], "vote_equals_gold": v["vote_equals_gold"],
            "accuracy": v["vote_equals_gold"] / v["questions"] if v["questions"] else None,
            "accuracy_of_voted": v["vote_equals_gold"] / v["voted"] if v["voted"] else None, "by_level": by_level}


def figure_data(ds: dict, n_bins: int = 30) -> dict:
    """Loss histograms on shared edges (valid, generated before / after the DS filter) and, per DS bin, the
    vote-kept samples, how many the filter kept and the share that reaches the gold answer."""
    import numpy as np

    samples = ds["samples"]
    groups = {"valid": ds["valid_losses"], "generated_before": [s["loss"] for s in samples],
              "generated_after": [s["loss"] for s in samples if s["kept"]]}
    edges = np.histogram_bin_edges(np.concatenate([np.asarray(v, dtype=float) for v in groups.values()]), n_bins)
    hist = {k: np.histogram(np.asarray(v, dtype=float), edges)[0].tolist() for k, v in groups.items()}
    bins = []
    for lo, hi in DS_BINS:
        inside = [s for s in samples if lo <= s["ds_weight"] < hi]
        n = len(inside)
        correct = sum(s["label_correct"] for s in inside)
        bins.append({"bin": f"[{lo:g},{'inf' if math.isinf(hi) else f'{hi:g}'})", "n": n,
                     "kept_by_ds": sum(s["kept"] for s in inside), "label_correct": correct,
                     "label_correct_share": correct / n if n else None})
    return {"loss_histograms": {"edges": [float(e) for e in edges], **hist},
            "loss_means": {k: float(np.mean(v)) if len(v) else None for k, v in groups.items()},
            "ds_bins": bins}


def _times(out: Path, wall_seconds: float, timeline: list[dict]) -> dict:
    """Seconds per stage of this experiment when computed (from the markers) and this invocation's wall clock."""
    markers = sorted((out / "iwsi").rglob("stage.json")) + sorted((out / "eval").glob("iwsi_*/stage.json"))
    per_stage = {str(m.parent.relative_to(out)): json.loads(m.read_text())["seconds"] for m in markers}
    cat = {"sampling": 0.0, "data_and_ds_scoring": 0.0, "training": 0.0, "evaluation": 0.0, "other": 0.0}
    for rel, sec in per_stage.items():
        name = ("training" if "/arms/" in rel else "evaluation" if rel.startswith("eval/") else
                "sampling" if rel.endswith("sampling") else "data_and_ds_scoring" if rel.endswith("data") else "other")
        cat[name] += sec
    return {"by_category_when_computed": {k: round(v, 1) for k, v in cat.items()},
            "sum_when_computed": round(sum(cat.values()), 1), "per_stage_when_computed": per_stage,
            "this_invocation": {"wall_seconds": round(wall_seconds, 1),
                                "cached_stages": sum(t.get("cached", False) for t in timeline)}}


# ----------------------------------------------------------------------------------------------------- outputs
def write_figure(summary: dict, path: Path) -> Path:
    """Two panels: loss histograms (valid, generated before / after the DS filter); label-correct share per DS bin."""
    from src.analysis.figures import pyplot, save_figure

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    f = summary["figure"]
    h = f["loss_histograms"]
    edges = h["edges"]
    width = edges[1] - edges[0]
    for name, color in (("valid", "tab:green"), ("generated_before", "tab:gray"), ("generated_after", "tab:blue")):
        total = sum(h[name]) or 1
        ax1.stairs([c / total for c in h[name]], edges, label=f"{name.replace('_', ' ')} (n={sum(h[name])})",
                   color=color, fill=name == "generated_before", alpha=0.5 if name == "generated_before" else 1)
    ax1.set_xlabel("mean token loss under the base")
    ax1.set_ylabel(f"share per bin (width {width:.2f})")
    ax1.legend()
    labels = [b["bin"] for b in f["ds_bins"]]
    shares = [b["label_correct_share"] or 0.0 for b in f["ds_bins"]]
    ax2.bar(labels, shares, color="tab:blue")
    for i, b in enumerate(f["ds_bins"]):
        ax2.text(i, shares[i], f"n={b['n']}", ha="center", va="bottom", fontsize=8)
    ax2.set_ylim(0, 1.08)
    ax2.set_xlabel("DS weight bin (vote-kept samples)")
    ax2.set_ylabel("share reaching the gold answer")
    return save_figure(fig, path, "IWSI on the demo world: losses and label-correct share by DS weight")


def _pct(x: float | None) -> str:
    return "  -  " if x is None else f"{100 * x:5.1f}"


def format_table(summary: dict) -> str:
    hard = summary["config"]["hard_levels"]
    lines = accuracy_table(summary["base"]["eval"], summary["arms"], hard, title="IWSI: accuracy")
    d, v = summary["data"], summary["vote_accuracy"]
    lines.append(f"\nCandidates {d['candidates']} (m = {summary['iwsi']['sample_num']} at T = "
                 f"{summary['iwsi']['temperature']}); samples kept: " + ", ".join(f"{a} {n}" for a, n in
                                                                                d["samples"].items()))
    lines.append("Label-correct share of the kept samples: " + ", ".join(
        f"{a} {_pct(x)}" for a, x in d["label_correct_share"].items()))
    lines.append(f"Voted answer = gold: {v['vote_equals_gold']}/{v['questions']} questions ({_pct(v['accuracy'])}%); "
                 "by level " + ", ".join(f"k{lv} {_pct(b['accuracy'])}" for lv, b in v["by_level"].items()))
    lines.append("DS bins (vote-kept samples): " + "; ".join(
        f"{b['bin']} n={b['n']} kept={b['kept_by_ds']} correct {_pct(b['label_correct_share'])}%"
        for b in summary["figure"]["ds_bins"]))
    lines += verdict_block(summary, "Comparisons")
    if not summary["base"]["past_phase_transition"]:
        lines.append("\nWARNING: the base is below its phase transition (k2-4 mean held-in accuracy "
                     f"{summary['base']['mean_accuracy_k2_4']:.2f} < {PHASE_THRESHOLD}): the comparison says little.")
    lines += time_lines(summary["times"])
    return "\n".join(lines)
