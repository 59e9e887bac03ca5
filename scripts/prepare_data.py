"""Build data/test, data/inference/{cot,pot} and data/train/{cot,pot}/mathinstruct.json: the paper's files or the Hub's.

    python scripts/prepare_data.py --out_dir data                           # the paper's data (--source gsi)
    python scripts/prepare_data.py --out_dir data --mirror /copy/of/original/data   # the same, from a local copy
    python scripts/prepare_data.py --source hf --out_dir data --datasets gsm8k svamp --skip_mathinstruct

--source gsi downloads the original repository's data files at commit 77ba9ed and refuses any whose git blob id
differs. --source hf needs network access to the Hub (or the data sets already in the local Hugging Face cache
with HF_DATASETS_OFFLINE=1). Without it, it says so in one line, exits with status 2 and writes nothing; so does
any bad flag (src/cli.py). See src/prepare.py for the sources and the conversion of each.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.cli import UsageError, check_output, check_range, fail, output_lock, parse_args, run_cli  # noqa: E402
from src.prepare import SOURCES, PrepareConfig, Refused, prepare  # noqa: E402

PROG = "prepare_data.py"


def check_prepare_args(cfg: PrepareConfig) -> None:
    unknown = [d for d in cfg.datasets if d not in SOURCES]
    if unknown:
        raise UsageError(f"--datasets: unknown {' '.join(unknown)}; known: {' '.join(SOURCES)}")
    for name in ("gsm8k", "math", "aqua"):
        check_range(f"{name}_pool", cfg.pool_size(name), 0)
    check_output("out_dir", cfg.out_dir, "folder")


def run(argv: list[str] | None) -> int:
    (cfg,) = parse_args([PrepareConfig], argv, PROG)
    check_prepare_args(cfg)
    try:
        with output_lock(cfg.out_dir):
            written = prepare(cfg)
    except Refused as err:  # no network, or a file that is not the original's: one line, exit 2
        raise UsageError(f"{err}; nothing was written") from None
    except (RuntimeError, ValueError) as err:  # a source that did not convert: the run started, so status 1
        fail(PROG, f"{err}; nothing was written")
        return 1
    for path in written.values():
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
