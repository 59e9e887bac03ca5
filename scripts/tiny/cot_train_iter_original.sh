#!/usr/bin/env bash
# Vanilla self-improvement (CoT): 8 samples per query, no resampling.
# Embedded default: tiny Llama + synthetic world on CPU (built on first use), 4 iterations (MODE=pot: programs).
#   bash scripts/tiny/cot_train_iter_original.sh
# Every setting is an environment variable (defaults: src/profiles.py); DRY_RUN=1 prints the settings and
# the stage commands only.
# Rerunning after a crash or kill -9 skips the finished stages.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/../..}/scripts/_common.sh" \
    PROFILE=tiny MODE=cot EXP_TAG=iter_original STRATEGY=vanilla MAX_RESAMPLE_NUM=0
gsi_main
