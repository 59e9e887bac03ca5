#!/usr/bin/env bash
# GSI interactive (CoT): resample after a teacher's critique (TEACHER_MODEL at TEACHER_BASE_URL), up to 8 rounds.
# Llama-3-8B, the paper's settings: 4 iterations, each retraining from the base model; sample 8 per query.
#   MODEL_PATH=/models/Meta-Llama-3-8B bash scripts/llama3/cot_train_teacher_help.sh
# Every setting is an environment variable (defaults: src/profiles.py); DRY_RUN=1 prints the settings and
# the stage commands only.
# Rerunning after a crash or kill -9 skips the finished stages.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/../..}/scripts/_common.sh" \
    PROFILE=llama3 MODE=cot EXP_TAG=teacher_help STRATEGY=teacher_help MAX_RESAMPLE_NUM=8
gsi_main
