#!/usr/bin/env bash
# Self-Refine Instruction-Tuning, phase 1 only (arXiv 2405.00402): instruction-tune the student on the teacher's
# chain-of-thought demonstrations (train.py), then evaluate it. scripts/tiny/cot_train_srit.sh continues with DPO.
# Embedded default: tiny Llama + synthetic world on CPU (built on first use); the original data stands in for the
# teacher's demonstrations (no larger teacher exists for the tiny model).
#   bash scripts/tiny/srit_phase1.sh
# Every setting is an environment variable (defaults: src/profiles.py); DRY_RUN=1 prints the settings and
# the stage commands only. Rerunning after a crash or kill -9 skips the finished stages.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/../..}/scripts/_common.sh" \
    PROFILE=tiny MODE=cot EXP_TAG=srit STRATEGY=vanilla MAX_RESAMPLE_NUM=0
# shellcheck source=scripts/_srit.sh
source "$GSI_REPO/scripts/_srit.sh"
gsi_srit_phase1
