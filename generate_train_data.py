"""Build the next iteration's training data from the correct samples of a sampling run.

    python generate_train_data.py \
        --cur_sampled_data_path output/tiny/exp/iter_0/inference_data \
        --next_iter_data_path output/tiny/exp/iter_data/synthetic_iter_1.json --check_result

Each ``--cur_sampled_data_path`` is a results.json or a folder holding one per data set. Samples are stored
under the plain question; ``--check_result`` keeps only samples whose calculator chain computes and holds
together. Counts per data set and strategy are printed and saved as ``<stem>.counts.json`` beside the data.
The logic is in src/filtering.py.
"""

import json
import sys

from transformers import HfArgumentParser

from src.filtering import GenerateConfig, counts_path, generate_next_iteration
from src.records import RecordError


def main(argv: list[str] | None = None) -> None:
    (cfg,) = HfArgumentParser(GenerateConfig).parse_args_into_dataclasses(args=argv)
    try:
        counts = generate_next_iteration(cfg)
    except RecordError as err:  # bad input: one clear line naming the file, nothing written
        sys.exit(f"generate_train_data.py: error: {err}")
    print(json.dumps(counts.to_json(), indent=2))
    print(f"wrote {counts.records_written} records to {cfg.next_iter_data_path} "
          f"(counts: {counts_path(cfg.next_iter_data_path)})")


if __name__ == "__main__":
    main()
