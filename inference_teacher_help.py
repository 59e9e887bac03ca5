"""GSI sampling, interactive resampling: a teacher model critiques the latest wrong sample.

    python inference_teacher_help.py --model_name_or_path output/tiny-model \
        --inference_data_file data/synthetic/inference/cot/synthetic.json --dataset_name synthetic \
        --results_path output/sampling/teacher_help \
        --teacher_model teacher --teacher_base_url http://127.0.0.1:8000/v1

`--help` lists every flag; all logic lives in src/sampling (this file only names the strategy).
"""

import sys

from src.sampling.cli import main

if __name__ == "__main__":
    sys.exit(main("teacher_help"))
