#!/usr/bin/env bash
# IWSI (CoT, arXiv 2408.09849): 15 vanilla samples per query at temperature 1.1 (the paper's m and T), the
# majority-vote answer's samples (no gold labels), minus the 20% with the largest distribution-shift weight under
# the pre-trained model (scripts/_iwsi.sh, src/iwsi.py). IWSI_VARIANT=iwsi_w weights the loss by min(w', 2)
# instead; IWSI_VARIANT=lmsi votes only.
# Fine-tuning: the paper trains LoRA adapters (the official code: r 64, lr 3e-4, cosine, weight decay 0.1); this
# project has no LoRA path, so this runs its default full fine-tuning (lr 1e-5, DeepSpeed ZeRO-2): compare with
# the paper's numbers with that in mind.
#   MODEL_PATH=/models/Meta-Llama-3-8B bash scripts/llama3/cot_train_iwsi.sh
# Every setting is an environment variable (defaults: src/profiles.py); DRY_RUN=1 prints the settings and
# the stage commands only. Rerunning after a crash or kill -9 skips the finished stages.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "${GSI_REPO:-$(dirname "${BASH_SOURCE[0]}")/../..}/scripts/_common.sh" \
    PROFILE=llama3 MODE=cot IWSI_VARIANT=iwsi 'EXP_TAG={IWSI_VARIANT}' STRATEGY=vanilla MAX_RESAMPLE_NUM=0 \
    SAMPLE_NUM=15 TEMPERATURE=1.1 CHECK_RESULT=false
# shellcheck source=scripts/_iwsi.sh
source "$GSI_REPO/scripts/_iwsi.sh"
gsi_main
