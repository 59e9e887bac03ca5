"""Build the next iteration's training data from the correct samples of a sampling run.

    python generate_train_data.py \
        --cur_sampled_data_path output/tiny/exp/iter_0/inference_data \
        --next_iter_data_path output/tiny/exp/iter_data/synthetic_iter_1.json --check_result

Each ``--cur_sampled_data_path`` is a results.json or a folder holding one per data set. Samples are stored
under the plain question; ``--check_result`` keeps only samples whose calculator chain computes and holds
together. Counts per data set and strategy are printed and saved as ``<stem>.counts.json`` beside the data,
with the data file's sha256 (``src.filtering.read_counts`` refuses counts of another version of the data).
The logic is in src/filtering.py. Bad input, including an output path that is one of the input files, is one
line on stderr and exit status 2 with nothing written (src/cli.py); the run holds ``<next_iter_data_path>.lock``.
"""

from __future__ import annotations

import json
import sys

from src.cli import check_input_file, check_output, output_lock, parse_args, run_cli
from src.filtering import GenerateConfig, counts_path, generate_next_iteration, results_files


def check_generate_args(cfg: GenerateConfig) -> None:
    """The inputs exist, and neither output (data, counts) is one of them: a rerun must never eat its input."""
    inputs = [file for path in cfg.cur_sampled_data_path for file in results_files(path)]
    for flag in ("original_data_path", "pre_iter_data_path"):
        if getattr(cfg, flag):
            inputs.append(check_input_file(flag, getattr(cfg, flag)))
    check_output("next_iter_data_path", cfg.next_iter_data_path, "file", inputs=inputs)
    check_output("next_iter_data_path", counts_path(cfg.next_iter_data_path), "file", inputs=inputs)


def run(argv: list[str] | None) -> None:
    (cfg,) = parse_args([GenerateConfig], argv, "generate_train_data.py")
    check_generate_args(cfg)
    with output_lock(cfg.next_iter_data_path):
        counts = generate_next_iteration(cfg)
    print(json.dumps(counts.to_json(), indent=2))
    print(f"wrote {counts.records_written} records to {cfg.next_iter_data_path} "
          f"(counts: {counts_path(cfg.next_iter_data_path)})")


def main(argv: list[str] | None = None) -> int:
    return run_cli("generate_train_data.py", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
