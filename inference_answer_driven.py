"""GSI sampling, answer-driven resampling: the gold answer is appended to the question.

    python inference_answer_driven.py --model_name_or_path output/tiny-model \
        --inference_data_file data/synthetic/inference/cot/synthetic.json --dataset_name synthetic \
        --results_path output/sampling/answer_driven

`--help` lists every flag; all logic lives in src/sampling (this file only names the strategy).
"""

import sys

from src.sampling.cli import main

if __name__ == "__main__":
    sys.exit(main("answer_driven"))
