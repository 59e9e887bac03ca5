"""Build data/test, data/inference/{cot,pot} and data/train/{cot,pot}/mathinstruct.json from the Hugging Face Hub.

    python scripts/prepare_data.py --out_dir data
    python scripts/prepare_data.py --out_dir data --datasets gsm8k svamp --skip_mathinstruct

Needs network access to the Hub (or the data sets already in the local Hugging Face cache with
HF_DATASETS_OFFLINE=1). Without it, it says so in one line, exits with status 2 and writes nothing.
See src/prepare.py for the sources and the conversion of each.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import HfArgumentParser  # noqa: E402

from src.prepare import NeedsNetwork, PrepareConfig, prepare  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    (cfg,) = HfArgumentParser(PrepareConfig).parse_args_into_dataclasses(args=argv)
    try:
        written = prepare(cfg)
    except NeedsNetwork as err:
        print(f"prepare_data.py needs network access to the Hugging Face Hub to download the data sets "
              f"({err}); nothing was written.", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as err:
        print(f"prepare_data.py: {err}; nothing was written.", file=sys.stderr)
        return 1
    for path in written.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
