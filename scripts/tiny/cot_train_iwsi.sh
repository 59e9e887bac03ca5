#!/usr/bin/env bash
# IWSI (CoT, arXiv 2408.09849): 15 vanilla samples per query at temperature 1.1, the majority-vote answer's samples
# (no gold labels), minus the 20% with the largest distribution-shift weight (scripts/_iwsi.sh, src/iwsi.py).
# No process check (CHECK_RESULT=false): the synthetic check compares with the gold rationale, a label.
# IWSI_VARIANT=iwsi_w weights the loss by min(w', 2) instead; IWSI_VARIANT=lmsi votes only.
# Embedded default: tiny Llama + synthetic world on CPU (built on first use), 4 iterations, full fine-tuning.
#   bash scripts/tiny/cot_train_iwsi.sh
# Every setting is an environment variable (defaults: src/profiles.py); DRY_RUN=1 prints the settings and
# the stage commands only. Rerunning after a crash or kill -9 skips the finished stages.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/../..}/scripts/_common.sh" \
    PROFILE=tiny MODE=cot IWSI_VARIANT=iwsi 'EXP_TAG={IWSI_VARIANT}' STRATEGY=vanilla MAX_RESAMPLE_NUM=0 SAMPLE_NUM=15 \
    TEMPERATURE=1.1 CHECK_RESULT=false
# shellcheck source=scripts/_iwsi.sh
source "$GSI_REPO/scripts/_iwsi.sh"
gsi_main
