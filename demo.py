"""`make demo`: the GSI experiment on the embedded default (synthetic world, tiny Llama, one vLLM engine, CPU).

    .venv/bin/python demo.py                    # default (3 seeds); a rerun reuses finished stages
    .venv/bin/python demo.py --scale large      # 4 seeds, every strategy, a bigger world (about 1-2 h)
    .venv/bin/python demo.py --iterations 3     # the default run, continued for two more iterations
    .venv/bin/python demo.py --experiment iwsi  # a seed method's controlled experiment (iwsi, srit, tripost)

Prints the results table at the end and writes ``<out_dir>/summary.json`` (see src/demo.py for the design).
Bad flags are one line on stderr and exit status 2 before anything starts (src/cli.py); the run holds
``<out_dir>.lock``, so a second demo on the same --out_dir is refused.
"""

from __future__ import annotations

import sys
from pathlib import Path

from src.cli import UsageError, check_output, check_range, output_lock, parse_args, run_cli
from src.demo import DemoConfig, apply_scale, config_fields, quiet_environment


def parse(argv: list[str]) -> DemoConfig:
    (cfg,) = parse_args([DemoConfig], argv, "demo.py")
    explicit = {a[2:].split("=")[0] for a in argv if a.startswith("--")} & set(config_fields())
    return apply_scale(cfg, explicit)


def check_demo_args(cfg: DemoConfig) -> None:
    for flag in ("n_original", "n_pool", "test_per_level", "arm_steps", "batch_size", "sample_num",
                 "max_new_tokens", "brute_force_max_rounds"):
        check_range(flag, getattr(cfg, flag), 1)
    for flag in ("base_steps", "max_resample_num", "torch_threads", "temperature", "base_lr", "arm_lr"):
        check_range(flag, getattr(cfg, flag), 0)
    check_range("min_correct_num", cfg.min_correct_num, 0, cfg.sample_num)
    check_range("iterations", cfg.iterations, 1)
    if cfg.iterations > 1 and "brute_force" in cfg.arms and "state_reset" not in cfg.arms:
        raise UsageError("--iterations > 1 with brute_force needs state_reset in --arms (brute force spends "
                         "state reset's resampling tokens of the same iteration)")
    if cfg.init_model_dir and not (Path(cfg.init_model_dir) / "config.json").is_file():
        raise UsageError(f"--init_model_dir {cfg.init_model_dir}: not a model folder (no config.json)")
    check_output("out_dir", cfg.out_dir, "folder")


def run(argv: list[str] | None) -> None:
    quiet_environment()
    cfg = parse(sys.argv[1:] if argv is None else argv)
    check_demo_args(cfg)
    import importlib

    from src.demo import EXPERIMENTS, Runner

    with output_lock(cfg.out_dir):
        summary = Runner(cfg).run()
    print(importlib.import_module(EXPERIMENTS[cfg.experiment]).format_table(summary))
    where = cfg.out_dir if cfg.experiment == "gsi" else f"{cfg.out_dir}/{cfg.experiment}"
    print(f"\nsummary: {where}/summary.json")


def main(argv: list[str] | None = None) -> int:
    return run_cli("demo.py", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
