#!/usr/bin/env bash
# TriPosT (issue 15): the model learns to fix its own mistakes. Llama-3-8B: iteration 0 trains on the original
# data (the paper's SFT settings); then 3 iterations of sample -> edit -> build -> train -> evaluate with the
# official released settings: each iteration continues from the previous model, 4 epochs, learning rate 1e-6,
# feedback section weight 1.5, improve ratio 1.5, at most 5 updates per trajectory.
#   MODEL_PATH=/models/Meta-Llama-3-8B bash scripts/llama3/cot_train_tripost.sh
#   TRIPOST_VERIFIER=teacher TRIPOST_IMPROVER=teacher TEACHER_BASE_URL=http://host:8000/v1 bash ...   # a teacher
# Every setting is an environment variable (defaults: src/profiles.py); DRY_RUN=1 prints the settings and
# the stage commands only.
# Rerunning after a crash or kill -9 skips the finished stages; an interrupted edit stage continues at its first
# unfinished window.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/../..}/scripts/_common.sh" \
    PROFILE=llama3 MODE=cot EXP_TAG=tripost STRATEGY=vanilla MAX_RESAMPLE_NUM=0 NUM_ITERS=4 TRIPOST_N_EPOCHS=4 \
    TRIPOST_LEARNING_RATE=1e-6
# shellcheck source=scripts/_tripost.sh
source "$GSI_REPO/scripts/_tripost.sh"
gsi_tripost_main
