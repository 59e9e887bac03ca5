#!/usr/bin/env bash
# TriPosT (issue 15): the model learns to fix its own mistakes. Iteration 0 trains on the original data; then 3
# iterations of sample -> edit (process verifier, scripted improver) -> build (balanced one-step examples) ->
# train from the previous model (feedback section weighted 1.5) -> evaluate (own revisions, 2 rounds).
# Embedded default: tiny Llama + synthetic world on CPU (built on first use).
#   bash scripts/tiny/cot_train_tripost.sh
# Every setting is an environment variable (defaults: src/profiles.py; TriPosT's: TRIPOST_*, IMPROVE_RATIO,
# SECTION_WEIGHT, SELF_IMPROVE_ROUNDS); DRY_RUN=1 prints the settings and the stage commands only. Rerunning
# after a crash or kill -9 skips the finished stages, and an interrupted edit stage continues at its first
# unfinished window.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/../..}/scripts/_common.sh" \
    PROFILE=tiny MODE=cot EXP_TAG=tripost STRATEGY=vanilla MAX_RESAMPLE_NUM=0 NUM_ITERS=4 SAMPLE_NUM=4 \
    TRIPOST_MAX_STEPS=100
# shellcheck source=scripts/_tripost.sh
source "$GSI_REPO/scripts/_tripost.sh"
gsi_tripost_main
