"""Greedy evaluation of a model on one or more test sets with one vLLM engine load.

    python eval.py --model_name_or_path output/tiny/model --results_path output/tiny/eval_data --mode cot \
        --dataset_name synthetic synthetic_heldout \
        --eval_data_file data/synthetic/test/synthetic.json data/synthetic/test/synthetic_heldout.json

Writes ``<dataset>_res.json`` per data set and ``metrics.json`` (accuracy per data set and per level, counts,
generated tokens, seconds, engine start-up seconds). ``--help`` lists every flag; the logic is in
src/evaluation.py.
"""

import sys

from transformers import HfArgumentParser

from src.evaluation import EvalConfig, run_eval
from src.records import RecordError


def main(argv: list[str] | None = None) -> None:
    (cfg,) = HfArgumentParser(EvalConfig).parse_args_into_dataclasses(args=argv)
    try:
        run_eval(cfg)
    except RecordError as err:  # bad input: one clear line naming the file, nothing written
        sys.exit(f"eval.py: error: {err}")


if __name__ == "__main__":
    main()
