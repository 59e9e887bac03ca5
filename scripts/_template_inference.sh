#!/usr/bin/env bash
# Sampling stage of one GSI iteration: sample SAMPLE_NUM solutions per query of TRAIN_DATASETS with the model
# ITER_DIR/model, then resample (STRATEGY) the queries below MIN_CORRECT_NUM correct, into ITER_DIR/inference_data.
# Driven by environment variables (defaults and every name in scripts/_common.sh), e.g.
#   STRATEGY=state_reset MODEL_PATH=models/Meta-Llama-3-8B ITER_DIR=output/sft bash scripts/_template_inference.sh
# Skipped when ITER_DIR/stages/sample.json says it already ran on the same inputs; a rerun clears the folder
# first, so a retried run never appends to or mixes with the results of a failed one.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/..}/scripts/_common.sh"
if [[ -n "${python_script:-}" ]]; then  # the original README's lower-case call (see gsi_original_inference)
    gsi_original_inference
else
    gsi_sample_stage
fi
