# shellcheck shell=bash
# Shared logic of every GSI shell script (sourced, never run). The calling script names its own settings as it
# sources this file (`source _common.sh PROFILE=tiny STRATEGY=state_reset ...`); every default is in
# src/profiles.py, and every setting can be overridden from the environment:
#
#   NUM_ITERS=1 SAMPLE_NUM=4 bash scripts/tiny/cot_train_state_reset.sh
#   DRY_RUN=1 bash scripts/llama3/cot_train_state_reset.sh     # print the settings and every stage's command
#   GSI_REPO=$PWD sbatch --gpus-per-node=8 scripts/llama3/cot_train_state_reset.sh   # SLURM runs a spooled copy
#
# Each stage runs through `python -m src.stages run`, which skips it when its marker says it finished with the
# same inputs, otherwise clears its partial outputs, runs it, and records inputs/outputs (sha256), wall time and
# vLLM engine start-up time. Rerunning a script after a crash or kill -9 therefore redoes only what is missing.
#
# Layout (the original scripts'):
#   $OUTPUT_DIR/$MODEL_TAG/$EXP_NAME/iter_data/${DATA_NAME}_iter_<i>.json     training data of iteration i
#   $OUTPUT_DIR/$MODEL_TAG/$EXP_NAME/iter_<i>/{model,eval_data,inference_data} + logs/<stage>.log + stages/

# The repository: GSI_REPO when set (sbatch runs a spooled copy of the script, far from the repository), else
# the folder above this file.
GSI_REPO="${GSI_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export GSI_REPO
cd "$GSI_REPO"  # relative paths in settings are relative to the repository root
export PYTHONPATH="$GSI_REPO${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
# VLLM_ENABLE_V1_MULTIPROCESSING is left alone: src/engine.py runs vLLM's engine core in the calling process on
# CPU (same-seed runs sample the same texts there, so a resumed run reproduces an uninterrupted one) and keeps
# vLLM's separate engine-core process on GPUs. Export it as 0 for bit-reproducible sampling on GPUs too.

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$GSI_REPO/.venv/bin/python" ]]; then PYTHON="$GSI_REPO/.venv/bin/python"; else PYTHON=python; fi
fi
if [[ -z "${ACCELERATE:-}" ]]; then
    ACCELERATE="$(dirname "$PYTHON")/accelerate"
    [[ -x "$ACCELERATE" ]] || ACCELERATE=accelerate
fi

# ------------------------------------------------------------------------------------------------ settings
# Every default lives in src/profiles.py (`python -m src.profiles list --profile tiny` lists them with what they
# are for). The script's own settings (the NAME=VALUE words after `source _common.sh`; a template passes none)
# and the environment go to it; it answers with one assignment per setting, evaluated here. Precedence: the
# environment, then the script's words, then the profile, then the project default. A bad value (unknown PROFILE,
# STRATEGY, MODE, ...) stops here with one line, before any stage.
gsi_resolved="$("$PYTHON" -m src.profiles shell "$@")" || exit 2
eval "$gsi_resolved"
unset gsi_resolved

# The stages run as functions of this shell (the templates too, when gsi_main calls them): nothing is exported
# but what a child process reads from its environment (GSI_REPO, PYTHONPATH above; each command gets its flags).

# ------------------------------------------------------------------------------------------------ helpers
gsi_log() { printf '[gsi %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# gsi_show LABEL COMMAND...: one line on stdout, "LABEL" and the command shell-quoted (what DRY_RUN prints)
gsi_show() {
    printf '%s' "$1"
    printf ' %q' "${@:2}"
    printf '\n'
}

# gsi_stage NAME STAGE_DIR COMMAND...   (inputs/outputs in the arrays STAGE_INPUTS, STAGE_OUTPUTS,
# STAGE_RESUMABLE). Marker: STAGE_DIR/stages/NAME.json; log: STAGE_DIR/logs/NAME.log.
gsi_stage() {
    local name=$1 stage_dir=$2
    shift 2
    if [[ "$DRY_RUN" == 1 ]]; then
        gsi_show "[dry-run] $name:" "$@"
        return 0
    fi
    "$PYTHON" -m src.stages run --stage "$name" --root "$EXP_DIR" --retries "$STAGE_RETRIES" \
        --marker "$stage_dir/stages/$name.json" --log "$stage_dir/logs/$name.log" \
        --inputs "${STAGE_INPUTS[@]}" --outputs "${STAGE_OUTPUTS[@]}" \
        --resumable "${STAGE_RESUMABLE[@]}" -- "$@"
}

# gsi_lookup test|pool NAMES: sets GSI_FILES_test / GSI_FILES_pool, the test or pool file of each data set name
# (one path per line; file names come from src/registry.py), once per script run. Unknown name: exit.
gsi_lookup() {
    local var="GSI_FILES_$1" listing
    if [[ -z "${!var:-}" ]]; then
        # shellcheck disable=SC2086
        listing="$("$PYTHON" -m src.stages files "$1" --data_dir "$DATA_DIR" --mode "$MODE" $2)" || exit 2
        printf -v "$var" '%s' "$listing"
    fi
}

# gsi_data_files test|pool NAMES: fills the caller's arrays `names` (the words of NAMES) and `files` (their test or
# pool files, in the same order). The caller declares both local.
gsi_data_files() {
    local var="GSI_FILES_$1"
    read -r -a names <<< "$2"
    gsi_lookup "$1" "$2"
    mapfile -t files <<< "${!var}"
}

gsi_iter_data() { echo "$EXP_DIR/iter_data/${DATA_NAME}_iter_$1.json"; }

# ------------------------------------------------------------------------------------------------ stages
# Iteration 0 trains on a copy of the original data (kept beside the later iterations' data).
gsi_data_stage() {
    STAGE_INPUTS=("$ORIGINAL_DATA") STAGE_OUTPUTS=("$(gsi_iter_data 0)") STAGE_RESUMABLE=()
    gsi_stage data "$EXP_DIR/iter_0" cp "$ORIGINAL_DATA" "$(gsi_iter_data 0)"
}

# Training stage: see scripts/_template.sh (TRAIN_FILE, ITER_DIR and the training settings).
gsi_train_stage() {
    : "${TRAIN_FILE:?}" "${ITER_DIR:?}"
    STAGE_INPUTS=("$MODEL_PATH" "$TRAIN_FILE") STAGE_OUTPUTS=("$ITER_DIR/model")
    # the trainer resumes from its own checkpoints when the same inputs are retrained after a crash
    STAGE_RESUMABLE=("$ITER_DIR/checkpoints" "$ITER_DIR/train_log.json")
    local -a launch=(--main_process_port "$MAIN_PROCESS_PORT")
    if [[ -n "$TRAIN_PROCS" ]]; then launch+=(--num_processes "$TRAIN_PROCS"); fi
    if [[ -n "$DS_GRAD_ACC" ]]; then launch+=(--gradient_accumulation_steps "$DS_GRAD_ACC"); fi
    # shellcheck disable=SC2086
    gsi_stage train "$ITER_DIR" "$ACCELERATE" launch --config_file "$ACCELERATE_CONFIG" "${launch[@]}" train.py \
        --model_name_or_path "$MODEL_PATH" --train_file "$TRAIN_FILE" --model_dir "$ITER_DIR" \
        --batch_size "$BATCH_SIZE" --gradient_accumulation_steps "$GRAD_ACC" --learning_rate "$LEARNING_RATE" \
        --weight_decay "$WEIGHT_DECAY" \
        --n_epochs "$N_EPOCHS" --max_steps "$MAX_STEPS" --warmup_step "$WARMUP_STEP" \
        --lr_scheduler "$LR_SCHEDULER" --max_input_length "$MAX_INPUT_LENGTH" --keep_num_ckpt "$KEEP_NUM_CKPT" \
        --saving_step_freq "$SAVING_STEP_FREQ" --gradient_checkpointing "$GRADIENT_CHECKPOINTING" \
        --torch_dtype "$TORCH_DTYPE" --seed "$SEED" --show_progress false $TRAIN_TOKENIZE_ARGS $TRAIN_EXTRA_ARGS
}

gsi_eval_stage() {
    : "${ITER_DIR:?}"
    local -a names files
    gsi_data_files test "$EVAL_DATASETS"
    STAGE_INPUTS=("$ITER_DIR/model" "${files[@]}") STAGE_OUTPUTS=("$ITER_DIR/eval_data") STAGE_RESUMABLE=()
    # shellcheck disable=SC2086
    gsi_stage eval "$ITER_DIR" "$PYTHON" eval.py --model_name_or_path "$ITER_DIR/model" \
        --results_path "$ITER_DIR/eval_data" --dataset_name "${names[@]}" --eval_data_file "${files[@]}" \
        --temperature 0 --device_num "$DEVICE_NUM" --max_length "$MAX_LENGTH" --mode "$MODE" --seed "$SEED" \
        --max_model_len "$MAX_MODEL_LEN" --pot_workers "$POT_WORKERS" --grader "$GRADER" $EVAL_EXTRA_ARGS
}

# Sampling stage: see scripts/_template_inference.sh (ITER_DIR and the sampling settings).
gsi_sample_stage() {
    : "${ITER_DIR:?}"
    local -a names files teacher=() gpus=()
    gsi_data_files pool "$TRAIN_DATASETS"
    if [[ "$STRATEGY" == teacher_help ]]; then
        teacher=(--teacher_model "${TEACHER_MODEL:?teacher_help needs TEACHER_MODEL}"
                 --teacher_base_url "$TEACHER_BASE_URL" --teacher_max_concurrency "$TEACHER_CONCURRENCY")
        if [[ -n "$TEACHER_SERVE_PATH" && -n "$SAMPLE_GPUS" ]]; then  # the teacher holds the other GPUs
            gpus=(env "CUDA_VISIBLE_DEVICES=$SAMPLE_GPUS")
        fi
    fi
    STAGE_INPUTS=("$ITER_DIR/model" "${files[@]}") STAGE_OUTPUTS=("$ITER_DIR/inference_data") STAGE_RESUMABLE=()
    local results="$ITER_DIR/inference_data"
    local -a shard_launch=()
    if ((NUM_SHARDS > 1)); then  # finished shards survive a rerun of the stage; merged into inference_data
        results="$ITER_DIR/inference_shards" STAGE_RESUMABLE=("$ITER_DIR/inference_shards")
        shard_launch=(env "PYTHON=$PYTHON" "NUM_SHARDS=$NUM_SHARDS" "GPUS_PER_SHARD=$SAMPLE_DEVICE_NUM"
                      "SRUN_NODES=$SHARD_NODES"
                      SKIP_FINISHED=1 "MERGE_OUT=$ITER_DIR/inference_data" bash scripts/cluster/sample_shards.sh)
        if [[ -n "$SHARDS_PER_NODE" ]]; then shard_launch=("${shard_launch[@]:0:1}" "SHARDS_PER_NODE=$SHARDS_PER_NODE"
                                                          "${shard_launch[@]:1}"); fi
    fi
    if [[ "$STRATEGY" == teacher_help && -n "$TEACHER_SERVE_PATH" && "$DRY_RUN" != 1 ]] && ! "$PYTHON" -m \
            src.stages done --root "$EXP_DIR" --marker "$ITER_DIR/stages/sample.json" \
            --inputs "${STAGE_INPUTS[@]}" --outputs "${STAGE_OUTPUTS[@]}" > /dev/null; then
        gsi_teacher_up
    fi
    gsi_stage sample "$ITER_DIR" "${gpus[@]}" "${shard_launch[@]}" "$PYTHON" "$INFERENCE_SCRIPT" \
        --model_name_or_path "$ITER_DIR/model" --inference_data_file "${files[@]}" --dataset_name "${names[@]}" \
        --results_path "$results" --sample_num "$SAMPLE_NUM" \
        --min_correct_num "$MIN_CORRECT_NUM" --max_resample_num "$MAX_RESAMPLE_NUM" \
        --temperature "$TEMPERATURE" --max_length "$MAX_LENGTH" --device_num "$SAMPLE_DEVICE_NUM" --mode "$MODE" \
        --seed "$SEED" --max_model_len "$MAX_MODEL_LEN" --pot_workers "$POT_WORKERS" --progress false \
        --grader "$GRADER" \
        "${teacher[@]}"
    gsi_teacher_down
}

# The original README's call of the sampling template, with its lower-case variables:
#   python_script="inference_state_reset.py" model_path=M results_path=R temperature=0.7 dataset_name=gsm8k \
#   min_correct_num=4 device_num=8 sample_num=8 max_resample_num=8 max_length=1024 inference_data_file=F \
#   mode=cot log_file=L [teacher_model=T] bash ./scripts/_template_inference.sh
# runs that script once with the original's flags, its output appended to log_file (the original retried a failed
# run up to 10 times, appending to its result files; here results are replaced, so a rerun is the retry).
gsi_original_inference() {
    local -a teacher=()
    if [[ -n "${teacher_model:-}" ]]; then teacher=(--teacher_model "$teacher_model"); fi
    local -a cmd=("$PYTHON" "${python_script:?}" --model_name_or_path "${model_path:?}"
        --results_path "${results_path:?}" --temperature "${temperature:?}" --dataset_name "${dataset_name:?}"
        --min_correct_num "${min_correct_num:?}" --device_num "${device_num:?}" --sample_num "${sample_num:?}"
        --max_resample_num "${max_resample_num:?}" --max_length "${max_length:?}"
        --inference_data_file "${inference_data_file:?}" --mode "${mode:-cot}" "${teacher[@]}")
    if [[ "$DRY_RUN" == 1 ]]; then
        gsi_show "[dry-run] sample:" "${cmd[@]}"
        return 0
    fi
    mkdir -p "$(dirname "${log_file:?}")"
    "${cmd[@]}" >> "$log_file" 2>&1
}

gsi_generate_stage() {  # gsi_generate_stage I: inference_data of iteration I -> iter_data of I+1
    local i=$1
    local next prev
    next="$(gsi_iter_data $((i + 1)))"
    prev="$(gsi_iter_data "$i")"
    local -a extra=()
    STAGE_INPUTS=("$EXP_DIR/iter_$i/inference_data")
    if [[ "$INCLUDE_ORIGINAL" == true ]]; then STAGE_INPUTS+=("$ORIGINAL_DATA"); fi
    if [[ "$INCLUDE_PRE_ITER" == true ]]; then STAGE_INPUTS+=("$prev"); fi
    if [[ -n "$MAX_PER_QUESTION" ]]; then extra=(--max_per_question "$MAX_PER_QUESTION"); fi
    # shellcheck disable=SC2206
    extra+=($FILTER_ARGS)
    STAGE_OUTPUTS=("$next" "${next%.json}.counts.json") STAGE_RESUMABLE=()
    # a method's own flags, inputs and outputs (scripts/_iwsi.sh): it may extend extra, STAGE_INPUTS, STAGE_OUTPUTS
    if declare -F gsi_generate_hook > /dev/null; then gsi_generate_hook "$i" "$next"; fi
    gsi_stage generate "$EXP_DIR/iter_$i" "$PYTHON" generate_train_data.py \
        --original_data_path "$ORIGINAL_DATA" --pre_iter_data_path "$prev" \
        --cur_sampled_data_path "$EXP_DIR/iter_$i/inference_data" --next_iter_data_path "$next" \
        --include_original_data "$INCLUDE_ORIGINAL" --include_pre_iter_data "$INCLUDE_PRE_ITER" \
        --check_result "$CHECK_RESULT" "${extra[@]}"
}

# ------------------------------------------------------------------------------------------------ teacher
# teacher_help with TEACHER_SERVE_PATH: serve that model on TEACHER_PORT while the sampling stage runs.
GSI_TEACHER_PID=""
gsi_teacher_up() {
    local log="$EXP_DIR/teacher_server.log"
    mkdir -p "$EXP_DIR"
    local -a gpus=()
    if [[ -n "$TEACHER_GPUS" ]]; then gpus=(env "CUDA_VISIBLE_DEVICES=$TEACHER_GPUS"); fi
    gsi_log "serving teacher $TEACHER_SERVE_PATH as '$TEACHER_MODEL' on port $TEACHER_PORT" \
        "(GPUs ${TEACHER_GPUS:-all}, tensor parallel $TEACHER_TP; log: $log)"
    # shellcheck disable=SC2086
    "${gpus[@]}" "$PYTHON" -m vllm.entrypoints.openai.api_server --model "$TEACHER_SERVE_PATH" \
        --served-model-name "$TEACHER_MODEL" --port "$TEACHER_PORT" --max-model-len "$MAX_MODEL_LEN" \
        --tensor-parallel-size "$TEACHER_TP" --gpu-memory-utilization "$TEACHER_GPU_MEM" \
        --seed "$SEED" $TEACHER_SERVE_ARGS > "$log" 2>&1 &
    GSI_TEACHER_PID=$!
    trap gsi_teacher_down EXIT
    local waited=0
    until "$PYTHON" -c "import urllib.request as u; u.urlopen('$TEACHER_BASE_URL/models', timeout=2)" 2>/dev/null; do
        if ! kill -0 "$GSI_TEACHER_PID" 2>/dev/null || ((waited > 600)); then
            gsi_log "teacher server did not come up; see $log"
            return 1
        fi
        sleep 2
        waited=$((waited + 2))
    done
}
gsi_teacher_down() {
    if [[ -n "$GSI_TEACHER_PID" ]]; then
        kill "$GSI_TEACHER_PID" 2>/dev/null || true
        wait "$GSI_TEACHER_PID" 2>/dev/null || true
        GSI_TEACHER_PID=""
    fi
}

# ------------------------------------------------------------------------------------------------ main
# The embedded default's world and base: the demo's stages, cached in TINY_BASE_DIR (a finished one is skipped).
gsi_tiny_setup() {
    # shellcheck disable=SC2086
    local -a cmd=("$PYTHON" scripts/tiny/base.py --out_dir "$TINY_BASE_DIR" $TINY_BASE_ARGS)
    if [[ "$DRY_RUN" == 1 ]]; then
        gsi_show "[dry-run] base:" "${cmd[@]}"
        return 0
    fi
    gsi_log "the demo's world and base in $TINY_BASE_DIR (default recipe: the shipped base; else trained, ~7.5 min)"
    "${cmd[@]}" >&2
}

# The hardware-dependent settings, one per line ("[settings] name: value", src.profiles.hardware_summary): on
# stdout with DRY_RUN=1, with every setting and where its value came from ("[setting] NAME=value  (source)");
# else in the log.
gsi_settings() {
    local line
    while IFS= read -r line; do
        if [[ "$DRY_RUN" == 1 ]]; then echo "[settings] $line"; else gsi_log "$line"; fi
    done <<< "$GSI_SUMMARY"
    if [[ "$DRY_RUN" == 1 ]]; then
        while IFS= read -r line; do echo "[setting] $line"; done <<< "$GSI_SETTING_LINES"
    fi
}

# teacher_help with a teacher on another node: check its name and port now, not after the first training.
gsi_teacher_preflight() {
    if [[ "$STRATEGY" != teacher_help || -n "$TEACHER_SERVE_PATH" || "$TEACHER_PREFLIGHT" != 1 ]]; then return 0; fi
    local -a cmd=("$PYTHON" -c 'import sys; from src.sampling.teacher import main; sys.exit(main(sys.argv[1:]))'
                  --teacher_model "${TEACHER_MODEL:?teacher_help needs TEACHER_MODEL}"
                  --teacher_base_url "$TEACHER_BASE_URL" --teacher_preflight_timeout 10)
    if [[ "$DRY_RUN" == 1 ]]; then
        gsi_show "[preflight]" "${cmd[@]}"
    else
        "${cmd[@]}" || exit 2
    fi
}

# Before any stage of a run (every method's main): show the settings, build the tiny world and model when asked,
# and check that every test set and pool file exists.
gsi_prepare_run() {
    gsi_settings
    if [[ "$TINY_SETUP" == 1 ]]; then gsi_tiny_setup; fi
    gsi_lookup test "$EVAL_DATASETS"
    gsi_lookup pool "$TRAIN_DATASETS"
}

# One GSI run: NUM_ITERS iterations of train -> eval -> sample -> generate, each resumable stage by stage.
gsi_main() {
    gsi_log "experiment $EXP_DIR (strategy $STRATEGY, mode $MODE, iterations $START_ITER..$((NUM_ITERS - 1)))"
    gsi_prepare_run
    gsi_teacher_preflight
    if ((START_ITER == 0)); then gsi_data_stage; fi
    local i
    for ((i = START_ITER; i < NUM_ITERS; i++)); do
        ITER_DIR="$EXP_DIR/iter_$i" TRAIN_FILE="$(gsi_iter_data "$i")"
        gsi_train_stage           # scripts/_template.sh
        gsi_eval_stage
        gsi_sample_stage          # scripts/_template_inference.sh
        gsi_generate_stage "$i"
    done
    if [[ "$DRY_RUN" != 1 ]]; then "$PYTHON" -m src.stages report "$EXP_DIR"; fi
}
