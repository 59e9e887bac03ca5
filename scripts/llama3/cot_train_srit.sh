#!/usr/bin/env bash
# Self-Refine Instruction-Tuning (CoT, arXiv 2405.00402): phase 1 (SFT on the teacher's demonstrations), then
# ROUNDS x phase 2: SAMPLE_NUM=8 student samples per pool question, graded, paired (PAIR_MODE=mixed: a correct
# against a wrong sample, the demonstration against a wrong one when none is correct), DPO (train_dpo.py, TRL),
# evaluation on the held-in and held-out sets (scripts/_srit.sh, src/pairs.py, src/dpo.py).
# Llama-3-8B student; the teacher's demonstrations come from TEACHER_PATH (e.g. Llama-3-70B-Instruct) sampled with
# vLLM on the pools, or from ORIGINAL_DATA when TEACHER_PATH is empty.
#   MODEL_PATH=/models/Meta-Llama-3-8B TEACHER_PATH=/models/Meta-Llama-3-70B-Instruct bash scripts/llama3/cot_train_srit.sh
#   ROUNDS=2 PAIR_MODE=self MODEL_PATH=/models/Meta-Llama-3-8B TEACHER_PATH=/models/Meta-Llama-3-70B-Instruct bash scripts/llama3/cot_train_srit.sh
# Every setting is an environment variable (defaults: src/profiles.py); DRY_RUN=1 prints the settings and
# the stage commands only. Rerunning after a crash or kill -9 skips the finished stages (phase 1 is shared with
# srit_phase1.sh: same experiment folder).
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/../..}/scripts/_common.sh" \
    PROFILE=llama3 MODE=cot EXP_TAG=srit STRATEGY=vanilla MAX_RESAMPLE_NUM=0 SAMPLE_NUM=8
# shellcheck source=scripts/_srit.sh
source "$GSI_REPO/scripts/_srit.sh"
gsi_srit_main
