"""GSI sampling, vanilla (--max_resample_num 0) or brute force (unguided resampling, --max_resample_num > 0).

    python inference.py --model_name_or_path output/tiny-model \
        --inference_data_file data/synthetic/inference/cot/synthetic.json --dataset_name synthetic \
        --results_path output/sampling/vanilla --max_resample_num 0

`--help` lists every flag; all logic lives in src/sampling (this file only names the strategy).
"""

import sys

from src.sampling.cli import main

if __name__ == "__main__":
    sys.exit(main("vanilla"))
