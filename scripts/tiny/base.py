"""The tiny scripts' world and base model: the demo's own `world` and `base` stages (src/demo.py), so the tiny
iteration scripts start from the same base as `make demo` (trained from scratch on O past its phase transition),
with one recipe and one cache.

    python scripts/tiny/base.py                          # output/demo: the cache `make demo` uses
    python scripts/tiny/base.py --out_dir output/demo_large --scale large   # any demo.py flag (world and base)

A stage whose `stage.json` marker matches is skipped (the demo's keys: the world's settings and generator source;
the base's O and P hashes and training settings), so a base `make demo` built is reused as is, and a base built
here is reused by `make demo`. Prints `DATA_DIR=<out_dir>/world/data` and `MODEL_PATH=<out_dir>/base/model` on
stdout (the defaults of the tiny profile in scripts/_common.sh); the stages' progress goes to stderr. Bad flags:
one line on stderr, exit 2, nothing written (src/cli.py). Holds `<out_dir>.lock` like demo.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from demo import check_demo_args, parse  # noqa: E402  (demo.py's flags, presets and checks: one home)
from src.cli import output_lock, run_cli  # noqa: E402
from src.demo import Runner, quiet_environment  # noqa: E402

PROG = "scripts/tiny/base.py"


def build(argv: list[str]) -> tuple[Path, Path]:
    """Run (or find cached) the demo's world and base stages; return (data folder, base model folder)."""
    quiet_environment()
    cfg = parse(argv)
    check_demo_args(cfg)
    with output_lock(cfg.out_dir):
        runner = Runner(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
        runner.world()
        runner.base()
    # the layout, not the marker's paths: a copied cache folder names its own files
    return Path(cfg.out_dir) / "world" / "data", Path(cfg.out_dir) / "base" / "model"


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        data, model = build(sys.argv[1:] if argv is None else argv)
        print(f"DATA_DIR={data}\nMODEL_PATH={model}")

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
