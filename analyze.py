"""Write a report (tables, figures, report.md) for one or more experiment folders.

    python analyze.py output/llama3/state_reset_sample_8_correct_4_max_8_orig_false_preiter_false
    python analyze.py output/tiny/vanilla output/tiny/brute_force output/tiny/state_reset --out output/tiny/report \\
        --ppl_backend transformers --max_ppl_records 300

Each folder is one strategy's run in the layout of the iteration scripts (iter_data/, iter_<i>/eval_data,
iter_<i>/inference_data, iter_0/model). Unfinished runs are reported as far as they go; report.md lists what is
missing. Open <out>/report.md.
"""

from __future__ import annotations

import logging
import sys

from transformers import HfArgumentParser

from src.analysis.report import AnalyzeConfig, analyze


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(AnalyzeConfig, description="GSI report: accuracy tables, tail narrowing, "
                                                         "sampling efficiency.")
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):  # folders first, as in the examples above
        args.insert(0, "--experiments")
    (cfg,) = parser.parse_args_into_dataclasses(args=args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = analyze(cfg)
    print(f"wrote {report.report_md} ({len(report.figures)} figures, {len(report.tables)} tables)")
    for note in report.notes:
        print(f"missing: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
