#!/usr/bin/env bash
# GSI answer-driven (CoT): resample with the gold answer appended to the question, up to 8 rounds.
# Embedded default: tiny Llama + synthetic world on CPU (built on first use), 4 iterations (MODE=pot: programs).
#   bash scripts/tiny/cot_train_answer_driven.sh
# Every setting is an environment variable (defaults: src/profiles.py); DRY_RUN=1 prints the settings and
# the stage commands only.
# Rerunning after a crash or kill -9 skips the finished stages.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/../..}/scripts/_common.sh" \
    PROFILE=tiny MODE=cot EXP_TAG=answer_driven STRATEGY=answer_driven MAX_RESAMPLE_NUM=8
gsi_main
