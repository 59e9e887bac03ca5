#!/usr/bin/env bash
# Vanilla self-improvement (PoT): 8 samples per query, no resampling.
# Llama-3-8B, the paper's settings: 4 iterations, each retraining from the base model; sample 8 per query.
#   MODEL_PATH=/models/Meta-Llama-3-8B bash scripts/llama3/pot_train_iter_original.sh
# Every setting is an environment variable (defaults: src/profiles.py); DRY_RUN=1 prints the settings and
# the stage commands only.
# Rerunning after a crash or kill -9 skips the finished stages.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/../..}/scripts/_common.sh" \
    PROFILE=llama3 MODE=pot EXP_TAG=iter_original STRATEGY=vanilla MAX_RESAMPLE_NUM=0
gsi_main
