"""Write a report (tables, figures, report.md) for one or more experiment folders.

    python analyze.py output/llama3/state_reset_sample_8_correct_4_max_8_orig_false_preiter_false
    python analyze.py output/tiny/vanilla output/tiny/brute_force output/tiny/state_reset --out output/tiny/report \\
        --ppl_backend transformers --max_ppl_records 300

Each folder is one strategy's run in the layout of the iteration scripts (iter_data/, iter_<i>/eval_data,
iter_<i>/inference_data, iter_0/model). Unfinished runs are reported as far as they go; report.md lists what is
missing. A folder that does not exist is bad input: one line on stderr, exit status 2, nothing written
(src/cli.py). Open <out>/report.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from src.analysis.report import AnalyzeConfig, analyze
from src.cli import UsageError, check_output, check_range, output_lock, parse_args, run_cli


def report_dir(cfg: AnalyzeConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path(cfg.experiments[0]) / "report"


def check_analyze_args(cfg: AnalyzeConfig) -> None:
    for path in cfg.experiments:
        if not Path(path).is_dir():
            why = "a file, not a folder" if Path(path).exists() else "not found"
            raise UsageError(f"experiment folder {path}: {why}")
    if cfg.labels and len(cfg.labels) > len(cfg.experiments):
        raise UsageError(f"{len(cfg.labels)} --labels for {len(cfg.experiments)} experiment folders")
    if cfg.model and not Path(cfg.model).is_dir():
        raise UsageError(f"--model {cfg.model}: model folder not found")
    check_range("max_ppl_records", cfg.max_ppl_records, 0)
    check_range("batch_size", cfg.batch_size, 1)
    check_output("out", report_dir(cfg), "folder")


def run(argv: list[str] | None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):  # folders first, as in the examples above
        args.insert(0, "--experiments")
    (cfg,) = parse_args([AnalyzeConfig], args, "analyze.py",
                        description="GSI report: accuracy tables, tail narrowing, sampling efficiency.")
    check_analyze_args(cfg)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with output_lock(report_dir(cfg)):
        report = analyze(cfg)
    print(f"wrote {report.report_md} ({len(report.figures)} figures, {len(report.tables)} tables)")
    for note in report.notes:
        print(f"missing: {note}")


def main(argv: list[str] | None = None) -> int:
    return run_cli("analyze.py", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
