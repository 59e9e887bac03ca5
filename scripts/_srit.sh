# shellcheck shell=bash
# Self-Refine Instruction-Tuning stages (sourced after _common.sh by scripts/*/srit_phase1.sh and
# scripts/*/cot_train_srit.sh, never run; settings: src/profiles.py).
# arXiv 2405.00402 (Ranaldi and Freitas, EMNLP 2024):
#   phase 1  the student is instruction-tuned on a larger teacher's chain-of-thought demonstrations
#            (TEACHER_PATH sampled with vLLM on the pools, correct ones kept; empty TEACHER_PATH: the original
#            data ORIGINAL_DATA stands in for the teacher's demonstrations, as on the embedded default)
#   phase 2  the student samples SAMPLE_NUM solutions per pool question, graded against the gold answer, paired
#            (PAIR_MODE self | teacher | mixed, src/pairs.py) and trained with DPO (train_dpo.py, TRL), starting
#            from and referenced to the model that sampled; ROUNDS repeats phase 2 on the new model.
# Layout: $EXP_DIR/iter_0 = phase 1 (model, eval_data, inference_data = its samples), iter_<r> = DPO round r;
#   $EXP_DIR/iter_data/${DATA_NAME}_iter_0.json (demonstrations), iter_data/pairs_iter_<r>.json (+ .counts.json).
set -euo pipefail

gsi_srit_pairs() { echo "$EXP_DIR/iter_data/pairs_iter_$1.json"; }

# Phase 1 data: the teacher's correct demonstrations (or a copy of ORIGINAL_DATA) as iter_data/<name>_iter_0.json.
gsi_srit_demo_stage() {
    local demos teacher_dir="$EXP_DIR/teacher"
    demos="$(gsi_iter_data 0)"
    if [[ -z "$TEACHER_PATH" ]]; then gsi_data_stage; return; fi
    local -a names files
    gsi_data_files pool "$TRAIN_DATASETS"
    STAGE_INPUTS=("$TEACHER_PATH" "${files[@]}") STAGE_OUTPUTS=("$teacher_dir/inference_data") STAGE_RESUMABLE=()
    gsi_stage teacher_sample "$teacher_dir" "$PYTHON" inference.py --model_name_or_path "$TEACHER_PATH" \
        --inference_data_file "${files[@]}" --dataset_name "${names[@]}" \
        --results_path "$teacher_dir/inference_data" --sample_num "$TEACHER_SAMPLE_NUM" --min_correct_num 1 \
        --max_resample_num 0 --temperature "$TEMPERATURE" --max_length "$MAX_LENGTH" --device_num "$DEVICE_NUM" \
        --mode "$MODE" --seed "$SEED" --max_model_len "$MAX_MODEL_LEN" --pot_workers "$POT_WORKERS" --progress false
    STAGE_INPUTS=("$teacher_dir/inference_data") STAGE_OUTPUTS=("$demos" "${demos%.json}.counts.json")
    gsi_stage teacher_demos "$teacher_dir" "$PYTHON" generate_train_data.py \
        --cur_sampled_data_path "$teacher_dir/inference_data" --next_iter_data_path "$demos" \
        --check_result "$CHECK_RESULT" --dedupe true --max_per_question "$TEACHER_KEEP"
}

# Preference pairs from the samples of iteration I's model (for round I+1).
gsi_srit_pairs_stage() {
    local i=$1 pairs
    pairs="$(gsi_srit_pairs $((i + 1)))"
    STAGE_INPUTS=("$EXP_DIR/iter_$i/inference_data") STAGE_OUTPUTS=("$pairs" "${pairs%.json}.counts.json")
    STAGE_RESUMABLE=()
    gsi_stage pairs "$EXP_DIR/iter_$i" "$PYTHON" generate_train_data.py --format dpo \
        --cur_sampled_data_path "$EXP_DIR/iter_$i/inference_data" --next_iter_data_path "$pairs" \
        --pair_mode "$PAIR_MODE" --max_pairs_per_question "$MAX_PAIRS"
}

# DPO round R: iter_<R-1>/model (start point and frozen reference) on pairs_iter_<R> -> iter_<R>/model.
gsi_srit_dpo_stage() {
    local r=$1 start="$EXP_DIR/iter_$(($1 - 1))/model" out="$EXP_DIR/iter_$1" pairs ga=${DPO_DS_GRAD_ACC:-$DPO_GRAD_ACC}
    pairs="$(gsi_srit_pairs "$r")"
    local -a launch=(--main_process_port "$MAIN_PROCESS_PORT")
    if [[ -n "$TRAIN_PROCS" ]]; then launch+=(--num_processes "$TRAIN_PROCS"); fi
    if [[ -n "$DPO_DS_GRAD_ACC" ]]; then launch+=(--gradient_accumulation_steps "$DPO_DS_GRAD_ACC"); fi
    STAGE_INPUTS=("$start" "$pairs") STAGE_OUTPUTS=("$out/model" "$out/train_log.json") STAGE_RESUMABLE=()
    # shellcheck disable=SC2086
    gsi_stage dpo "$out" "$ACCELERATE" launch --config_file "$ACCELERATE_CONFIG" "${launch[@]}" train_dpo.py \
        --model_name_or_path "$start" --train_file "$pairs" --model_dir "$out" --beta "$DPO_BETA" \
        --learning_rate "$DPO_LR" --per_device_train_batch_size "$DPO_BATCH" --gradient_accumulation_steps "$ga" \
        --num_train_epochs "$DPO_EPOCHS" --max_length "$MAX_INPUT_LENGTH" --seed "$SEED" \
        --gradient_checkpointing "$GRADIENT_CHECKPOINTING" --torch_dtype "$TORCH_DTYPE" --disable_tqdm true \
        $DPO_EXTRA_ARGS
}

# Phase 1: demonstrations, instruction tuning of MODEL_PATH on them (train.py), evaluation.
gsi_srit_phase1() {
    gsi_log "SRIT phase 1 in $EXP_DIR (teacher: ${TEACHER_PATH:-the original data $ORIGINAL_DATA})"
    gsi_prepare_run
    gsi_srit_demo_stage
    ITER_DIR="$EXP_DIR/iter_0" TRAIN_FILE="$(gsi_iter_data 0)"
    gsi_train_stage
    gsi_eval_stage
}

# Phase 1, then ROUNDS x (student samples -> pairs -> DPO -> evaluation).
gsi_srit_main() {
    gsi_srit_phase1
    local r
    for ((r = 1; r <= ROUNDS; r++)); do
        ITER_DIR="$EXP_DIR/iter_$((r - 1))"
        gsi_sample_stage
        gsi_srit_pairs_stage $((r - 1))
        gsi_srit_dpo_stage "$r"
        ITER_DIR="$EXP_DIR/iter_$r"
        gsi_eval_stage
    done
    if [[ "$DRY_RUN" != 1 ]]; then "$PYTHON" -m src.stages report "$EXP_DIR"; fi
}
