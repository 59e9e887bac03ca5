# shellcheck shell=bash
# TriPosT stages (sourced after _common.sh by scripts/*/cot_train_tripost.sh, never run; settings: src/profiles.py).
# Issue 15,
# src/tripost: iteration 0 trains on the original data; each later iteration samples the previous model's attempts
# on the pool, edits them into attempt -> feedback -> improvement trajectories (edit_trajectories.py, resumable
# window by window), builds balanced one-step examples (generate_train_data.py --format tripost) and trains from
# the previous model with the feedback section weighted; its evaluation lets the model revise its own answers
# (eval.py --self_improve_rounds).
set -euo pipefail

gsi_tripost_edit_stage() {  # gsi_tripost_edit_stage I: inference_data of iteration I -> trajectories
    local i=$1
    local dir="$EXP_DIR/iter_$i/trajectories"
    local -a teacher=()
    if [[ "$TRIPOST_VERIFIER" == teacher || "$TRIPOST_IMPROVER" == teacher ]]; then
        teacher=(--teacher_model "${TEACHER_MODEL:?a teacher verifier or improver needs TEACHER_MODEL}"
                 --teacher_base_url "$TEACHER_BASE_URL" --teacher_max_concurrency "$TEACHER_CONCURRENCY")
    fi
    # edit_stats.json is written last; the trajectories of finished windows survive a crash (rerun continues)
    STAGE_INPUTS=("$EXP_DIR/iter_$i/inference_data") STAGE_OUTPUTS=("$dir/edit_stats.json")
    STAGE_RESUMABLE=("$dir/trajectories.json" "$dir/edit_state.json")
    gsi_stage edit "$EXP_DIR/iter_$i" "$PYTHON" edit_trajectories.py \
        --cur_sampled_data_path "$EXP_DIR/iter_$i/inference_data" --output_path "$dir" \
        --verifier "$TRIPOST_VERIFIER" --improver "$TRIPOST_IMPROVER" --max_updates "$TRIPOST_MAX_UPDATES" \
        --window_size "$TRIPOST_WINDOW" "${teacher[@]}"
}

gsi_tripost_generate_stage() {  # gsi_tripost_generate_stage I: trajectories of iteration I -> iter_data of I+1
    local i=$1
    local next traj="$EXP_DIR/iter_$1/trajectories/trajectories.json"
    next="$(gsi_iter_data $((i + 1)))"
    STAGE_INPUTS=("$traj" "$EXP_DIR/iter_$i/trajectories/edit_stats.json")
    STAGE_OUTPUTS=("$next" "${next%.json}.counts.json") STAGE_RESUMABLE=()
    gsi_stage generate "$EXP_DIR/iter_$i" "$PYTHON" generate_train_data.py --format tripost \
        --cur_sampled_data_path "$traj" --next_iter_data_path "$next" --improve_ratio "$IMPROVE_RATIO"
}

# One TriPosT run: iteration 0 (SFT), then NUM_ITERS - 1 TriPosT iterations, each resumable stage by stage.
gsi_tripost_main() {
    gsi_log "TriPosT $EXP_DIR (verifier $TRIPOST_VERIFIER, improver $TRIPOST_IMPROVER, iterations" \
        "$START_ITER..$((NUM_ITERS - 1)); iteration 0 trains on the original data)"
    gsi_prepare_run
    if ((START_ITER == 0)); then gsi_data_stage; fi
    local i
    for ((i = START_ITER; i < NUM_ITERS; i++)); do
        ITER_DIR="$EXP_DIR/iter_$i" TRAIN_FILE="$(gsi_iter_data "$i")"
        if ((i == 0)); then
            gsi_train_stage
            gsi_eval_stage
        else  # continue from the previous model, the feedback section weighted; the model revises its answers
            (MODEL_PATH="$EXP_DIR/iter_$((i - 1))/model" N_EPOCHS="$TRIPOST_N_EPOCHS" \
                LEARNING_RATE="$TRIPOST_LEARNING_RATE" MAX_STEPS="$TRIPOST_MAX_STEPS" \
                TRAIN_EXTRA_ARGS="$TRAIN_EXTRA_ARGS --section_weight $SECTION_WEIGHT" && gsi_train_stage)
            (EVAL_EXTRA_ARGS="$EVAL_EXTRA_ARGS --self_improve_rounds $SELF_IMPROVE_ROUNDS" && gsi_eval_stage)
        fi
        if ((i + 1 < NUM_ITERS)); then
            gsi_sample_stage
            gsi_tripost_edit_stage "$i"
            gsi_tripost_generate_stage "$i"
        fi
    done
    if [[ "$DRY_RUN" != 1 ]]; then "$PYTHON" -m src.stages report "$EXP_DIR"; fi
}
