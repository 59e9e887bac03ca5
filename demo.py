"""`make demo`: the GSI experiment on the embedded default (synthetic world, tiny Llama, one vLLM engine, CPU).

    .venv/bin/python demo.py                      # default (~20 min on 2 CPU cores); a rerun reuses finished stages
    .venv/bin/python demo.py --scale large        # 4 seeds, all cheap strategies, a bigger world (about 1-2 h)
    .venv/bin/python demo.py --seeds 1 2 3 --out_dir output/demo_3seeds

Prints the results table at the end and writes ``<out_dir>/summary.json`` (see src/demo.py for the design).
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from src.demo import DemoConfig, apply_scale, config_fields, quiet_environment


def parse(argv: list[str]) -> DemoConfig:
    (cfg,) = HfArgumentParser(DemoConfig).parse_args_into_dataclasses(args=argv)
    explicit = {a[2:].split("=")[0] for a in argv if a.startswith("--")} & set(config_fields())
    return apply_scale(cfg, explicit)


def main(argv: list[str] | None = None) -> None:
    quiet_environment()
    cfg = parse(sys.argv[1:] if argv is None else argv)
    from src.demo import Runner
    from src.demo_summary import format_table

    summary = Runner(cfg).run()
    print(format_table(summary))
    print(f"\nsummary: {cfg.out_dir}/summary.json")


if __name__ == "__main__":
    main()
