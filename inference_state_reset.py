"""GSI sampling, state-reset resampling: the student continues a growing prefix of the gold rationale.

    python inference_state_reset.py --model_name_or_path output/tiny-model \
        --inference_data_file data/synthetic/inference/cot/synthetic.json --dataset_name synthetic \
        --results_path output/sampling/state_reset

`--help` lists every flag; all logic lives in src/sampling (this file only names the strategy).
"""

import sys

from src.sampling.cli import main

if __name__ == "__main__":
    sys.exit(main("state_reset"))
