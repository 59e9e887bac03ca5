#!/usr/bin/env bash
# Training stage of one GSI iteration: fine-tune MODEL_PATH on TRAIN_FILE into ITER_DIR/model with
#   accelerate launch --config_file ${ACCELERATE_CONFIG:-default_config_deepspeed_ga2.yaml} train.py ...
# Driven by environment variables (defaults and every name in scripts/_common.sh), e.g.
#   MODEL_PATH=models/Meta-Llama-3-8B TRAIN_FILE=data/train/cot/mathinstruct.json ITER_DIR=output/sft \
#       bash scripts/_template.sh
# Skipped when ITER_DIR/stages/train.json says it already ran on the same inputs; a rerun after a failure
# starts from a cleared ITER_DIR/model (and resumes the trainer's own checkpoints when the inputs are the same).
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/..}/scripts/_common.sh"
gsi_train_stage
