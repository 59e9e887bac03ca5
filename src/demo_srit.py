"""`demo.py --experiment srit`: Self-Refine Instruction-Tuning's phase 2 (DPO on the student's own graded samples)
against continued SFT on the same samples, on the demo's synthetic world (issue 14, item 5).

    .venv/bin/python demo.py --experiment srit --seeds 1 2 3 --torch_threads 1 --out_dir output/demo_shared

Design (see README "Self-Refine Instruction-Tuning (DPO)"):
1. phase 1 = the demo's shared base (``Runner.base()``): the tiny Llama trained on the original data O, whose gold
   rationales stand for the teacher's chain-of-thought demonstrations; it is not retrained here;
2. the base samples ``sample_num`` solutions per pool question (temperature ``temperature``), graded against the
   gold answer by the sampler;
3. from those samples: DPO pairs (``src.pairs`` through ``generate_train_data.py --format dpo``'s own function,
   ``SritConfig.pair_mode``) and the control's SFT data (O + the answer-correct samples, deduplicated);
4. per seed, both arms start from the base and take the same ``arm_steps`` optimizer steps with 16 sequences a
   step (the control: ``batch_size`` records; DPO: ``batch_size // 2`` pairs): control = ``src.training`` at
   ``arm_lr`` (the demo's recipe), DPO = ``src.dpo.run_dpo`` (TRL's DPOTrainer, the base as start point and
   frozen reference, same AdamW betas, warm-up and cosine schedule) at ``SritConfig.dpo_lr``;
5. every model (base included) is evaluated greedily on the held-in and held-out tests in the demo's one engine
   (the DPO checkpoint is saved untied, so the engine reloads it in place);
6. ``<out_dir>/srit/summary.json``: Wilson intervals and seed spread per arm, the paired item bootstrap of DPO
   minus control, the DPO trainer's reward margins and accuracies, pair counts, optimizer steps, stage times.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from src.demo import ARM_ADAM_BETAS, arm_warmup_steps
from src.demo_summary import (
    HELD_IN,
    HELD_OUT,
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

ARMS = ("control", "dpo")
REWARD_KEYS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")


@dataclass(frozen=True)
class SritConfig:
    """The experiment's fixed settings (the project's choices; the paper's are not public)."""

    pair_mode: str = field(default="self", metadata={
        "help": "src.pairs mode. self: a correct against a wrong sample of the base, so both arms see exactly the "
                "same samples and the only difference is DPO's use of the wrong ones (teacher/mixed would give the "
                "DPO arm the pool's gold rationales, which the control never sees)"})
    max_pairs_per_question: int = field(default=2, metadata={"help": "pairs per question at most (the scripts' K)"})
    beta: float = field(default=0.1, metadata={"help": "DPO beta (TRL's default, the scripts' value)"})
    dpo_lr: float = field(default=5e-4, metadata={
        "help": "DPO peak learning rate: the scripts' tiny-model value, fixed before any demo run (not tuned on a "
                "test set)"})
    control_with_original: bool = field(default=True, metadata={
        "help": "the control's data is O + the correct samples (phase 1's data kept, as the GSI demo's arms); "
                "False: the correct samples alone"})


SRIT = SritConfig()  # the run's settings (a test may replace it, e.g. with pair_mode "mixed" for an untrained base)


def _read(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _dir(runner, *parts: str) -> Path:
    return runner.out.joinpath("srit", *parts)


# ----------------------------------------------------------------------------------------------------- stages
def sample_stage(runner) -> dict:
    """``sample_num`` plain samples per pool question from the base (one round, no resampling)."""
    from src.sampling import run_sampling, write_sampling_outputs

    c = runner.cfg
    key = {"base": runner.base_key, "sample_num": c.sample_num, "temperature": c.temperature,
           "max_new_tokens": c.max_new_tokens, "engine_seed": c.engine_seed}

    def run(st) -> dict:
        pool = load_records(runner.pool_file)
        res = run_sampling(runner.engine(runner.out / "base" / "model"), pool, HELD_IN,
                           runner.sampling_cfg("vanilla", 0))
        write_sampling_outputs(res, st.dir)
        r0 = res.stats["rounds"][0]
        return {"generate_seconds": r0["generate_seconds"], "wall_seconds": r0["wall_seconds"]}

    return runner.stage("srit sampling", "srit/sampling", key, run)


def pairs_stage(runner, s: SritConfig, sampling_key: str) -> dict:
    """DPO pairs from the base's samples with ``generate_train_data.py --format dpo``'s function."""
    from src.filtering import GenerateConfig
    from src.pairs import generate_pairs

    key = {"sampling": sampling_key, "pair_mode": s.pair_mode, "max_pairs": s.max_pairs_per_question}

    def run(st) -> dict:
        counts = generate_pairs(GenerateConfig(
            cur_sampled_data_path=[str(_dir(runner, "sampling"))], next_iter_data_path=str(st.dir / "pairs.json"),
            format="dpo", pair_mode=s.pair_mode, max_pairs_per_question=s.max_pairs_per_question))
        return {"pairs": counts.pairs}

    return runner.stage("srit pairs", "srit/pairs", key, run)


def control_data_stage(runner, s: SritConfig, sampling_key: str) -> dict:
    """O + the base's answer-correct samples (the pairs' notion of correct: the sampler's grade), deduplicated."""
    from src.filtering import FilterConfig, build_next_iteration, load_sampled

    key = {"sampling": sampling_key, "world": runner.world_key, "with_original": s.control_with_original}

    def run(st) -> dict:
        original = load_records(runner.original_file)
        sampled = load_sampled([_dir(runner, "sampling")])
        records, counts = build_next_iteration(sampled, FilterConfig(dedupe=True, merged_first=True),
                                               original=original if s.control_with_original else None)
        write_json(st.dir / "train.json", records)
        write_json(st.dir / "train.counts.json", counts.to_json())
        return {"records": len(records)}

    return runner.stage("srit data control", "srit/arms/control/data", key, run)


def train_control(runner, data_key: str, seed: int) -> tuple[Path, Any]:
    c = runner.cfg
    key = {"base": runner.base_key, "data": data_key, "steps": c.arm_steps, "lr": c.arm_lr, "seed": seed,
           "batch": c.batch_size}

    def run(st) -> dict:
        model = runner.train(runner.out / "base" / "model", _dir(runner, "arms", "control", "data", "train.json"),
                             st.dir, c.arm_steps, c.arm_lr, seed)
        return {"model": str(model)}

    runner.stage(f"srit train control seed {seed}", f"srit/arms/control/seed{seed}", key, run)
    return _dir(runner, "arms", "control", f"seed{seed}", "model"), key


def dpo_args(runner, s: SritConfig, seed: int):
    """TRL's DPOConfig for one DPO arm: the control's step count, sequences per step and optimizer shape."""
    from src.dpo import dpo_config

    c = runner.cfg
    return dpo_config(beta=s.beta, loss_type=["sigmoid"], learning_rate=s.dpo_lr, max_steps=c.arm_steps,
                      per_device_train_batch_size=max(1, c.batch_size // 2), lr_scheduler_type="cosine",
                      warmup_steps=arm_warmup_steps(c.arm_steps), adam_beta1=ARM_ADAM_BETAS[0],
                      adam_beta2=ARM_ADAM_BETAS[1], weight_decay=0.0,
                      max_grad_norm=1.0, seed=seed, max_length=1024, disable_tqdm=not c.progress)


def train_dpo(runner, s: SritConfig, pairs_key: str, seed: int) -> tuple[Path, Any]:
    c = runner.cfg
    key = {"base": runner.base_key, "pairs": pairs_key, "steps": c.arm_steps, "lr": s.dpo_lr, "beta": s.beta,
           "seed": seed, "pairs_per_step": max(1, c.batch_size // 2)}

    def run(st) -> dict:
        import torch

        from src.dpo import DPORunConfig, run_dpo

        if c.torch_threads > 0:
            torch.set_num_threads(c.torch_threads)
        base = runner.out / "base" / "model"
        model = run_dpo(DPORunConfig(model_name_or_path=str(base), train_file=str(_dir(runner, "pairs", "pairs.json")),
                                     model_dir=str(st.dir)), dpo_args(runner, s, seed))
        return {"model": str(model), "steps": len(_read(st.dir / "train_log.json")["log"])}

    runner.stage(f"srit train dpo seed {seed}", f"srit/arms/dpo/seed{seed}", key, run)
    return _dir(runner, "arms", "dpo", f"seed{seed}", "model"), key


def run_experiment(runner) -> dict:
    """Phase 1 = the shared base; samples, pairs, control data; per seed both arms and their evaluations."""
    t0 = time.perf_counter()
    s = SRIT
    runner.evaluate("srit_base", runner.out / "base" / "model", runner.base_key)
    sampling_key = sample_stage(runner)["key"]
    pairs_key = pairs_stage(runner, s, sampling_key)["key"]
    data_key = control_data_stage(runner, s, sampling_key)["key"]
    for seed in runner.cfg.seeds:  # seed-major: a cut-short run still has whole seeds of both arms
        model, key = train_control(runner, data_key, seed)
        runner.evaluate(f"srit_control_seed{seed}", model, key)
        model, key = train_dpo(runner, s, pairs_key, seed)
        runner.evaluate(f"srit_dpo_seed{seed}", model, key)
    summary = build_summary(runner.out, runner.cfg, s, runner.timeline, time.perf_counter() - t0)
    write_json(_dir(runner, "summary.json"), summary)
    return summary


# ---------------------------------------------------------------------------------------------------- summary
def build_summary(out: Path, cfg: Any, s: SritConfig, timeline: list[dict], wall_seconds: float) -> dict:
    """Everything the experiment reports, recomputed from its files under ``out``."""
    hard = list(cfg.hard_levels)
    base = {TEST_LABEL[ds]: eval_block(_read(out / "eval" / "srit_base" / f"{ds}_res.json"), hard)
            for ds in (HELD_IN, HELD_OUT)}
    blocks, flags = arm_blocks(out, [f"srit_{a}" for a in ARMS], list(cfg.seeds), hard)
    arms = {a: blocks[f"srit_{a}"] for a in ARMS}
    flags = {(k[0][len("srit_"):], *k[1:]): v for k, v in flags.items()}
    comparison = compare("dpo", "control", arms, flags)
    lines = verdict_lines("dpo", "control", comparison)
    return {"config": asdict(cfg), "srit": asdict(s),
            "phase1": "the demo's shared base: trained on O, whose gold rationales are the teacher's demonstrations",
            "base": base, "sampling": _sampling_block(out), "pairs": _pairs_block(out),
            "control_data": _read(out / "srit" / "arms" / "control" / "data" / "train.counts.json"),
            "arms": arms, "comparisons": {"dpo_vs_control": comparison}, "verdicts": lines,
            "dpo_training": _dpo_block(out, cfg.seeds), "optimizer_steps": _steps_block(out, cfg),
            "times": _times(out, timeline, wall_seconds)}


def _sampling_block(out: Path) -> dict:
    stats = _read(out / "srit" / "sampling" / "sampling_stats.json")
    items = _read(out / "srit" / "sampling" / "results.json")
    r0 = stats["rounds"][0]
    n_samples = sum(len(i["pred"]) for i in items)
    n_correct = sum(len(i["correct_pred"]) for i in items)
    return {"n_queries": stats["n_queries"], "sample_num": stats["sample_num"], "samples": n_samples,
            "correct_samples": n_correct, "generated_tokens": r0["cumulative_generated_tokens"],
            "coverage": r0["coverage"], "coverage_by_level": r0.get("coverage_by_level", {})}


def _pairs_block(out: Path) -> dict:
    pairs = _read(out / "srit" / "pairs" / "pairs.json")
    level = {i["item_id"]: str(i["level"]) for i in _read(out / "srit" / "sampling" / "results.json")}
    by_level: dict[str, int] = {}
    for p in pairs:
        by_level[level[p["item_id"]]] = by_level.get(level[p["item_id"]], 0) + 1
    return {**_read(out / "srit" / "pairs" / "pairs.counts.json"),
            "questions_with_pair": len({p["item_id"] for p in pairs}),
            "pairs_by_level": dict(sorted(by_level.items(), key=lambda kv: int(kv[0])))}


def _dpo_block(out: Path, seeds: list[int]) -> dict:
    """Per seed: the trainer's first and last logged step, and means over the first and last tenth of the steps
    (single steps see 8 pairs and are noisy)."""
    per_seed = {}
    for seed in seeds:
        log = _read(out / "srit" / "arms" / "dpo" / f"seed{seed}" / "train_log.json")["log"]
        tenth = max(1, len(log) // 10)

        def mean(entries: list[dict], key: str) -> float:
            return sum(e[key] for e in entries) / len(entries)

        per_seed[str(seed)] = {"steps": len(log), "first": {k: log[0][k] for k in REWARD_KEYS},
                               "last": {k: log[-1][k] for k in REWARD_KEYS},
                               "mean_first_tenth": {k: mean(log[:tenth], k) for k in REWARD_KEYS},
                               "mean_last_tenth": {k: mean(log[-tenth:], k) for k in REWARD_KEYS},
                               "steps_averaged": tenth}
    return per_seed


def _steps_block(out: Path, cfg: Any) -> dict:
    """Optimizer steps each arm took (train logs), and whether they are equal, as the design requires."""
    arm_dir = out / "srit" / "arms"
    control = {str(s): _read(arm_dir / "control" / f"seed{s}" / "train_log.json")["step"] for s in cfg.seeds}
    dpo = {str(s): len(_read(arm_dir / "dpo" / f"seed{s}" / "train_log.json")["log"]) for s in cfg.seeds}
    return {"control": control, "dpo": dpo, "planned": cfg.arm_steps,
            "equal": set(control.values()) == set(dpo.values()) == {cfg.arm_steps}}


def _times(out: Path, timeline: list[dict], wall_seconds: float) -> dict:
    """Seconds per category when each of this experiment's stages was computed (their markers), and this run's."""
    cat = dict.fromkeys(("sampling", "pairs_and_data", "train_control", "train_dpo", "evaluation",
                         "engine_start", "reload_weights"), 0.0)
    per_stage = {}
    markers = sorted((out / "srit").rglob("stage.json")) + sorted((out / "eval").glob("srit_*/stage.json"))
    for marker in markers:
        m = _read(marker)
        per_stage[str(marker.parent.relative_to(out))] = m["seconds"]
        engine = m.get("engine_start_seconds", 0.0) + m.get("reload_weights_seconds", 0.0)
        cat["engine_start"] += m.get("engine_start_seconds", 0.0)
        cat["reload_weights"] += m.get("reload_weights_seconds", 0.0)
        name = m["stage"]
        group = ("train_control" if name.startswith("srit train control") else
                 "train_dpo" if name.startswith("srit train dpo") else
                 "sampling" if name == "srit sampling" else "evaluation" if name.startswith("eval ") else
                 "pairs_and_data")
        cat[group] += max(0.0, m["seconds"] - engine)
    return {"by_category_when_computed": {k: round(v, 1) for k, v in cat.items()},
            "sum_when_computed": round(sum(cat.values()), 1), "per_stage_when_computed": per_stage,
            "this_invocation": {"wall_seconds": round(wall_seconds, 1),
                                "cached_stages": sum(t.get("cached", False) for t in timeline)}}


# ------------------------------------------------------------------------------------------------- the table
def format_table(summary: dict) -> str:
    lines = accuracy_table(summary["base"], summary["arms"], summary["config"]["hard_levels"],
                           title="SRIT (base = phase 1): accuracy")
    p, smp = summary["pairs"], summary["sampling"]
    lines.append(f"\nSamples: {smp['samples']} ({smp['correct_samples']} correct) on {smp['n_queries']} pool "
                 f"questions; pairs ({summary['srit']['pair_mode']}): {p['pairs']} from {p['questions_with_pair']} "
                 f"questions, by level {p['pairs_by_level']}; no pair: {p['questions_without_pair']}")
    lines.append(f"Control data: {summary['control_data']['records_written']} records "
                 f"({summary['control_data']['total']['kept']} correct samples + "
                 f"{summary['control_data']['included']['original']} of O)")
    steps = summary["optimizer_steps"]
    lines.append(f"Optimizer steps: control {steps['control']}, dpo {steps['dpo']} (equal: {steps['equal']})")
    lines.append("\nDPO trainer, per seed: reward margin and accuracy, first -> last step "
                 "(mean of the first -> last tenth)")
    for seed, d in summary["dpo_training"].items():
        f, la, mf, ml = d["first"], d["last"], d["mean_first_tenth"], d["mean_last_tenth"]
        lines.append(f"  seed {seed}: margin {f['rewards/margins']:+.3f} -> {la['rewards/margins']:+.3f} "
                     f"({mf['rewards/margins']:+.3f} -> {ml['rewards/margins']:+.3f}); accuracy "
                     f"{f['rewards/accuracies']:.2f} -> {la['rewards/accuracies']:.2f} "
                     f"({mf['rewards/accuracies']:.2f} -> {ml['rewards/accuracies']:.2f})")
    lines += verdict_block(summary) + time_lines(summary["times"])
    return "\n".join(lines)
