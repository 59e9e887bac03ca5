# shellcheck shell=bash
# Shared logic of every GSI shell script (sourced, never run). The calling script sets its defaults first
# (": "${VAR:=value}"), so every setting can be overridden from the environment:
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

# ------------------------------------------------------------------------------------------------ GPUs
# The GPUs of this job: CUDA_VISIBLE_DEVICES (SLURM sets it for --gpus), else SLURM_GPUS_ON_NODE, else
# nvidia-smi; on a machine with none of them (a login node: DRY_RUN) the paper's 8 are assumed.
gsi_gpu_ids() {
    if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
        echo "${CUDA_VISIBLE_DEVICES//,/ }"
    elif [[ "${SLURM_GPUS_ON_NODE:-}" =~ ^[0-9]+$ ]]; then
        seq -s ' ' 0 $((SLURM_GPUS_ON_NODE - 1))
    elif command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then
        seq -s ' ' 0 $(($(nvidia-smi -L | grep -c '^GPU') - 1))
    else
        seq -s ' ' 0 7
    fi
}
gsi_count() { echo $#; }
# Tensor-parallel size for N GPUs: the largest power of two <= N (Llama-3's 8 KV heads must divide evenly).
gsi_tp_size() { local n=1; while ((n * 2 <= $1)); do n=$((n * 2)); done; echo "$n"; }

# ------------------------------------------------------------------------------------------------ defaults
# The calling script sets PROFILE, STRATEGY, EXP_TAG, MODE and MAX_RESAMPLE_NUM; everything else defaults here.
: "${PROFILE:=llama3}"                # llama3: the paper's cluster run; tiny: the embedded default on a CPU
: "${STRATEGY:=state_reset}"          # vanilla | answer_driven | rationale_driven | teacher_help | state_reset
: "${EXP_TAG:=$STRATEGY}"             # first word of EXP_NAME (iter_original, uniform, state_reset, ...)
: "${MODE:=cot}"                      # cot | pot
case "$PROFILE" in
    llama3)  # SPEC.md: Llama-3-8B on 8 GPUs, DeepSpeed ZeRO-2, global batch 64
        : "${MODEL_PATH:=models/Meta-Llama-3-8B}" "${MODEL_NAME:=llama3-8b}"
        : "${GPU_IDS:=$(gsi_gpu_ids)}"
        # shellcheck disable=SC2086
        : "${NUM_GPUS:=$(gsi_count $GPU_IDS)}"
        : "${DEVICE_NUM:=$(gsi_tp_size "$NUM_GPUS")}" "${TRAIN_PROCS:=$NUM_GPUS}" "${GLOBAL_BATCH:=64}"
        # 80 GB fits a 4 x 1024-token micro-batch with 128k-vocabulary logits only with activations recomputed;
        # bf16 weights from the start (DeepSpeed keeps fp32 master copies); a resumable checkpoint every 250
        # steps (~10-15 min on 8 x 80 GB), the newest one kept (two exist while the next is being written).
        : "${GRADIENT_CHECKPOINTING:=true}" "${TORCH_DTYPE:=auto}" "${SAVING_STEP_FREQ:=250}"
        : "${POT_WORKERS:=8}"
        # tokenize training examples as the original did: no BOS on the prompt, question and rationale stripped
        : "${TRAIN_TOKENIZE_ARGS:=--prompt_bos false --strip_text true}"
        # the original's correct/incorrect decisions in evaluation and sampling (docs/FIDELITY.md)
        : "${GRADER:=reference}"
        # teacher_help: the teacher's name as served. Start it with the same name (README):
        #   python -m vllm.entrypoints.openai.api_server --model /models/Meta-Llama-3-70B-Instruct \
        #       --served-model-name Meta-Llama-3-70B-Instruct --tensor-parallel-size 8 --port 8000   (another node)
        # or set TEACHER_SERVE_PATH to serve it on this node for the sampling stage (GPUs split, see below).
        : "${TEACHER_MODEL:=Meta-Llama-3-70B-Instruct}"
        ;;
    tiny)  # 1M-parameter Llama + synthetic world on 2 CPU cores (DeepSpeed ZeRO-2, 2 processes, gloo)
        # the demo's world and base (trained from scratch on O past its phase transition), built by the demo's own
        # stages in TINY_BASE_DIR (scripts/tiny/base.py; TINY_BASE_ARGS: more demo.py flags) and shared with
        # `make demo`. A MODEL_PATH or DATA_DIR given (tests inject a small model) is used as it is: TINY_SETUP=0.
        if [[ -z "${TINY_SETUP:-}" ]]; then
            if [[ -n "${MODEL_PATH:-}" || -n "${DATA_DIR:-}" ]]; then TINY_SETUP=0; else TINY_SETUP=1; fi
        fi
        : "${TINY_BASE_DIR:=${OUTPUT_DIR:-output}/demo}" "${TINY_BASE_ARGS:=}"
        : "${MODEL_PATH:=$TINY_BASE_DIR/base/model}" "${MODEL_NAME:=tiny}" "${DATA_DIR:=$TINY_BASE_DIR/world/data}"
        : "${DATA_NAME:=synthetic}" "${TRAIN_DATASETS:=synthetic}"
        : "${EVAL_DATASETS:=synthetic synthetic_heldout}" "${ORIGINAL_DATA:=$DATA_DIR/train/$MODE/synthetic.json}"
        : "${DEVICE_NUM:=1}" "${MAX_LENGTH:=256}" "${MAX_MODEL_LEN:=1024}" "${CHECK_RESULT:=true}"
        # this project's filter, not the original's (docs/FIDELITY.md): strict process check, no duplicates
        : "${FILTER_ARGS:=--check_mode strict --dedupe --merged_first --record_strategy}"
        : "${ACCELERATE_CONFIG:=configs/accelerate_cpu_zero2_2proc.yaml}"
        # every iteration retrains the base like the demo's arms: 200 steps, lr 1e-3 (5% warm-up, cosine), AdamW
        # (0.9, 0.98), 16 sequences per step (8 on each of the 2 processes)
        : "${BATCH_SIZE:=8}" "${LEARNING_RATE:=1e-3}" "${LR_SCHEDULER:=cosine}" "${N_EPOCHS:=100}"
        : "${MAX_STEPS:=200}" "${WARMUP_STEP:=10}" "${KEEP_NUM_CKPT:=0}" "${TRAIN_EXTRA_ARGS:=--adam_beta2 0.98}"
        # teacher_help: a stand-in teacher served locally (a 1M-parameter model cannot really critique; this
        # exercises the machinery). On a cluster point TEACHER_BASE_URL at Llama-3-70B-Instruct instead.
        : "${TEACHER_MODEL:=tiny-teacher}" "${TEACHER_SERVE_PATH:=$MODEL_PATH}" "${TEACHER_PORT:=8011}"
        ;;
    *) echo "unknown PROFILE '$PROFILE' (llama3 or tiny)" >&2; exit 2 ;;
esac
: "${MODEL_NAME:=$(basename "$MODEL_PATH")}"
: "${MODEL_TAG:=${MODEL_NAME}_${MODE}}"  # the <model> folder under OUTPUT_DIR
: "${OUTPUT_DIR:=output}"
: "${DATA_DIR:=data}"
: "${DATA_NAME:=train}"               # iter_data/<DATA_NAME>_iter_<i>.json
: "${NUM_ITERS:=4}"                   # each iteration retrains from MODEL_PATH on that iteration's data
: "${START_ITER:=0}"
: "${SEED:=42}"
# sampling
: "${TRAIN_DATASETS:=gsm8k math aqua}"     # held-in sampling pools: $DATA_DIR/inference/$MODE/<file>.json
: "${SAMPLE_NUM:=8}"
: "${MIN_CORRECT_NUM:=4}"
: "${MAX_RESAMPLE_NUM:=8}"
: "${TEMPERATURE:=0.7}"
: "${MAX_LENGTH:=1024}"               # new tokens per sample / evaluation response
: "${MAX_MODEL_LEN:=4096}"            # prompt + response tokens per sequence in vLLM
: "${DEVICE_NUM:=8}"                  # tensor-parallel GPUs of the vLLM stages
: "${GRADER:=project}"                # project | reference: the grader of eval.py and inference*.py
: "${POT_WORKERS:=2}"                 # PoT: sandbox processes running the sampled programs (eval and sample)
: "${NUM_SHARDS:=1}"                  # >1: sampling as NUM_SHARDS engines, merged (scripts/cluster/sample_shards.sh)
: "${SHARDS_PER_NODE:=}"              # shards side by side on a node (empty: its GPUs / DEVICE_NUM)
: "${SHARD_NODES:=1}"                 # >1: spread the shards over this many nodes of the allocation (srun)
: "${TEACHER_MODEL:=}"                # teacher_help: model name served at TEACHER_BASE_URL
: "${TEACHER_SERVE_PATH:=}"           # teacher_help: if set, serve this model folder locally for the stage
: "${TEACHER_PORT:=8000}"             # port of the teacher served here (TEACHER_SERVE_PATH)
: "${TEACHER_BASE_URL:=http://127.0.0.1:$TEACHER_PORT/v1}"   # set it for a teacher on another node
: "${TEACHER_CONCURRENCY:=16}"        # teacher requests in flight at once
: "${TEACHER_PREFLIGHT:=1}"           # 1: check the teacher's name and port before the first stage
# A teacher served on this node shares it with the student's sampling engine: by default the upper half of the
# GPUs serve the teacher (tensor parallel over them) and the sampling stage runs on the lower half. Set
# TEACHER_GPUS / SAMPLE_GPUS (comma lists) to split otherwise, TEACHER_GPU_MEM to share GPUs between the two.
if [[ -n "$TEACHER_SERVE_PATH" && "$STRATEGY" == teacher_help && -n "${GPU_IDS:-}" ]] && ((${NUM_GPUS:-0} > 1)); then
    read -r -a _gsi_ids <<< "$GPU_IDS"
    _gsi_half=$((${NUM_GPUS:-0} / 2))
    : "${SAMPLE_GPUS:=$(IFS=,; echo "${_gsi_ids[*]:0:_gsi_half}")}"
    : "${TEACHER_GPUS:=$(IFS=,; echo "${_gsi_ids[*]:_gsi_half}")}"
fi
: "${SAMPLE_GPUS:=}" "${TEACHER_GPUS:=}" "${GPU_IDS:=}" "${NUM_GPUS:=0}"
: "${TEACHER_TP:=$(gsi_tp_size "$(gsi_count ${TEACHER_GPUS//,/ })")}"   # teacher's tensor-parallel size
: "${TEACHER_GPU_MEM:=0.9}"           # teacher's --gpu-memory-utilization
# evaluation
: "${EVAL_DATASETS:=gsm8k math aqua mathqa svamp theoremqa}"
: "${EVAL_EXTRA_ARGS:=}"              # more eval.py flags, word-split (TriPosT: --self_improve_rounds N)
# next iteration's data
: "${ORIGINAL_DATA:=$DATA_DIR/train/$MODE/mathinstruct.json}"   # iteration-0 data
: "${INCLUDE_ORIGINAL:=false}"
: "${INCLUDE_PRE_ITER:=false}"
: "${CHECK_RESULT:=false}"
: "${MAX_PER_QUESTION:=}"             # empty: no cap
: "${FILTER_ARGS:=}"                  # more generate_train_data.py flags, word-split; empty: the original's filter
# training (train.py flags)
: "${ACCELERATE_CONFIG:=default_config_deepspeed_ga2.yaml}"
: "${BATCH_SIZE:=4}"
: "${GRAD_ACC:=1}"                    # the ga2 DeepSpeed config sets 2 itself (it wins over this flag)
: "${LEARNING_RATE:=1e-5}"
: "${WEIGHT_DECAY:=0}"                # the paper's 0 (train.py alone defaults to the original's 1e-6)
: "${N_EPOCHS:=1}"
: "${MAX_STEPS:=-1}"
: "${WARMUP_STEP:=-1}"                # -1: 10% of the steps
: "${LR_SCHEDULER:=linear}"
: "${MAX_INPUT_LENGTH:=1024}"
: "${KEEP_NUM_CKPT:=1}"
: "${SAVING_STEP_FREQ:=0}"            # resumable checkpoint every N optimizer steps (0: per epoch only)
: "${GRADIENT_CHECKPOINTING:=false}"  # recompute activations (less GPU memory)
: "${TORCH_DTYPE:=auto}"              # dtype the weights are loaded in (auto: bf16 under DeepSpeed bf16)
: "${TRAIN_PROCS:=}"                  # training processes (empty: ACCELERATE_CONFIG's num_processes)
: "${GLOBAL_BATCH:=}"                 # set: DeepSpeed accumulation = GLOBAL_BATCH / (BATCH_SIZE x TRAIN_PROCS)
: "${MAIN_PROCESS_PORT:=0}"           # torch.distributed rendezvous port; 0: a free one (shared nodes)
: "${TRAIN_EXTRA_ARGS:=}"             # more train.py flags, word-split (e.g. "--adam_beta2 0.98")
: "${TRAIN_TOKENIZE_ARGS:=}"          # train.py tokenization flags (docs/FIDELITY.md); empty: BOS, no strip
# machinery
: "${DRY_RUN:=0}"                     # 1: print each stage's command instead of running it
: "${STAGE_RETRIES:=0}"               # reruns of a failed stage (outputs cleared first: nothing duplicated)

if [[ -z "${EXP_NAME:-}" ]]; then
    EXP_NAME="${EXP_TAG}_sample_${SAMPLE_NUM}_correct_${MIN_CORRECT_NUM}_max_${MAX_RESAMPLE_NUM}"
    EXP_NAME+="_orig_${INCLUDE_ORIGINAL}_preiter_${INCLUDE_PRE_ITER}"
fi
# Other settings (CHECK_RESULT, TEMPERATURE, ...) are not in the name (the original's names); changing one reruns
# the stages whose command it changes and everything downstream. Set EXP_NAME to keep both runs.
: "${EXP_DIR:=$OUTPUT_DIR/$MODEL_TAG/$EXP_NAME}"
# The stages run as functions of this shell (the templates too, when gsi_main calls them): nothing is exported
# but what a child process reads from its environment (GSI_REPO, PYTHONPATH above; each command gets its flags).

# ------------------------------------------------------------------------------------------------ helpers
gsi_log() { printf '[gsi %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# gsi_stage NAME STAGE_DIR COMMAND...   (inputs/outputs in the arrays STAGE_INPUTS, STAGE_OUTPUTS,
# STAGE_RESUMABLE). Marker: STAGE_DIR/stages/NAME.json; log: STAGE_DIR/logs/NAME.log.
gsi_stage() {
    local name=$1 stage_dir=$2
    shift 2
    if [[ "$DRY_RUN" == 1 ]]; then
        printf '[dry-run] %s:' "$name"
        printf ' %q' "$@"
        printf '\n'
        return 0
    fi
    "$PYTHON" -m src.stages run --stage "$name" --root "$EXP_DIR" --retries "$STAGE_RETRIES" \
        --marker "$stage_dir/stages/$name.json" --log "$stage_dir/logs/$name.log" \
        --inputs "${STAGE_INPUTS[@]}" --outputs "${STAGE_OUTPUTS[@]}" \
        --resumable "${STAGE_RESUMABLE[@]}" -- "$@"
}

# The data files of a space-separated list of data set names (file names come from src/datasets.py).
# gsi_lookup test|pool NAMES: sets GSI_FILES_test / GSI_FILES_pool (one path per line; file names come from
# src/datasets.py), once per script run. Unknown name: exit.
gsi_lookup() {
    local var="GSI_FILES_$1" listing
    if [[ -z "${!var:-}" ]]; then
        # shellcheck disable=SC2086
        listing="$("$PYTHON" -m src.stages files "$1" --data_dir "$DATA_DIR" --mode "$MODE" $2)" || exit 2
        printf -v "$var" '%s' "$listing"
    fi
}

# The sampling CLI of STRATEGY: inference.py for vanilla, else inference_<STRATEGY>.py (one per registered
# strategy, src/sampling/strategies.py).
gsi_inference_script() {
    if [[ "$STRATEGY" == vanilla ]]; then echo inference.py; return 0; fi
    if [[ "$STRATEGY" =~ ^[a-z_]+$ && -f "$GSI_REPO/inference_${STRATEGY}.py" ]]; then
        echo "inference_${STRATEGY}.py"
        return 0
    fi
    echo "unknown STRATEGY '$STRATEGY' (vanilla, or X with an inference_X.py)" >&2
    return 1
}

gsi_iter_data() { echo "$EXP_DIR/iter_data/${DATA_NAME}_iter_$1.json"; }

# ------------------------------------------------------------------------------------------------ stages
# Iteration 0 trains on a copy of the original data (kept beside the later iterations' data).
gsi_data_stage() {
    STAGE_INPUTS=("$ORIGINAL_DATA") STAGE_OUTPUTS=("$(gsi_iter_data 0)") STAGE_RESUMABLE=()
    gsi_stage data "$EXP_DIR/iter_0" cp "$ORIGINAL_DATA" "$(gsi_iter_data 0)"
}

# DeepSpeed's accumulation keeping the global batch at GLOBAL_BATCH on TRAIN_PROCS processes (rounded up).
gsi_ds_grad_acc() {
    local per_step=$((BATCH_SIZE * ${TRAIN_PROCS:-1}))
    echo $(((GLOBAL_BATCH + per_step - 1) / per_step))
}

# Training stage: see scripts/_template.sh (TRAIN_FILE, ITER_DIR and the training settings).
gsi_train_stage() {
    : "${TRAIN_FILE:?}" "${ITER_DIR:?}"
    STAGE_INPUTS=("$MODEL_PATH" "$TRAIN_FILE") STAGE_OUTPUTS=("$ITER_DIR/model")
    # the trainer resumes from its own checkpoints when the same inputs are retrained after a crash
    STAGE_RESUMABLE=("$ITER_DIR/checkpoints" "$ITER_DIR/train_log.json")
    local -a launch=(--main_process_port "$MAIN_PROCESS_PORT")
    if [[ -n "$TRAIN_PROCS" ]]; then launch+=(--num_processes "$TRAIN_PROCS"); fi
    if [[ -n "$GLOBAL_BATCH" ]]; then launch+=(--gradient_accumulation_steps "$(gsi_ds_grad_acc)"); fi
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
    read -r -a names <<< "$EVAL_DATASETS"
    gsi_lookup test "$EVAL_DATASETS"
    mapfile -t files <<< "$GSI_FILES_test"
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
    local script
    script="$(gsi_inference_script)"
    local -a names files teacher=() gpus=() device_num=("$DEVICE_NUM")
    read -r -a names <<< "$TRAIN_DATASETS"
    gsi_lookup pool "$TRAIN_DATASETS"
    mapfile -t files <<< "$GSI_FILES_pool"
    if [[ "$STRATEGY" == teacher_help ]]; then
        teacher=(--teacher_model "${TEACHER_MODEL:?teacher_help needs TEACHER_MODEL}"
                 --teacher_base_url "$TEACHER_BASE_URL" --teacher_max_concurrency "$TEACHER_CONCURRENCY")
        if [[ -n "$TEACHER_SERVE_PATH" && -n "$SAMPLE_GPUS" ]]; then  # the teacher holds the other GPUs
            gpus=(env "CUDA_VISIBLE_DEVICES=$SAMPLE_GPUS")
            device_num=("$(gsi_tp_size "$(gsi_count ${SAMPLE_GPUS//,/ })")")
        fi
    fi
    STAGE_INPUTS=("$ITER_DIR/model" "${files[@]}") STAGE_OUTPUTS=("$ITER_DIR/inference_data") STAGE_RESUMABLE=()
    local results="$ITER_DIR/inference_data"
    local -a shard_launch=()
    if ((NUM_SHARDS > 1)); then  # finished shards survive a rerun of the stage; merged into inference_data
        results="$ITER_DIR/inference_shards" STAGE_RESUMABLE=("$ITER_DIR/inference_shards")
        shard_launch=(env "PYTHON=$PYTHON" "NUM_SHARDS=$NUM_SHARDS" "GPUS_PER_SHARD=${device_num[0]}"
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
    gsi_stage sample "$ITER_DIR" "${gpus[@]}" "${shard_launch[@]}" "$PYTHON" "$script" \
        --model_name_or_path "$ITER_DIR/model" --inference_data_file "${files[@]}" --dataset_name "${names[@]}" \
        --results_path "$results" --sample_num "$SAMPLE_NUM" \
        --min_correct_num "$MIN_CORRECT_NUM" --max_resample_num "$MAX_RESAMPLE_NUM" \
        --temperature "$TEMPERATURE" --max_length "$MAX_LENGTH" --device_num "${device_num[0]}" --mode "$MODE" \
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
        printf '[dry-run] sample:'
        printf ' %q' "${cmd[@]}"
        printf '\n'
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
    "${gpus[@]}" "$PYTHON" -m vllm.entrypoints.openai.api_server --model "$TEACHER_SERVE_PATH" \
        --served-model-name "$TEACHER_MODEL" --port "$TEACHER_PORT" --max-model-len "$MAX_MODEL_LEN" \
        --tensor-parallel-size "$TEACHER_TP" --gpu-memory-utilization "$TEACHER_GPU_MEM" \
        --seed "$SEED" > "$log" 2>&1 &
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
    : "${TINY_BASE_DIR:?TINY_SETUP=1 needs PROFILE=tiny}"
    if [[ "$MODEL_PATH" != "$TINY_BASE_DIR/base/model" || "$DATA_DIR" != "$TINY_BASE_DIR/world/data" ]]; then
        gsi_log "TINY_SETUP=1 builds the base in TINY_BASE_DIR=$TINY_BASE_DIR, but MODEL_PATH or DATA_DIR points" \
            "elsewhere: set TINY_BASE_DIR, or TINY_SETUP=0 to use MODEL_PATH and DATA_DIR as they are"
        exit 2
    fi
    # shellcheck disable=SC2086
    local -a cmd=("$PYTHON" scripts/tiny/base.py --out_dir "$TINY_BASE_DIR" $TINY_BASE_ARGS)
    if [[ "$DRY_RUN" == 1 ]]; then
        printf '[dry-run] base:'
        printf ' %q' "${cmd[@]}"
        printf '\n'
        return 0
    fi
    gsi_log "the demo's world and base in $TINY_BASE_DIR (default recipe: the shipped base; else trained, ~7.5 min)"
    "${cmd[@]}" >&2
}

# What train.py --torch_dtype auto resolves to under ACCELERATE_CONFIG (src.training.load_dtype).
gsi_load_dtype() {
    if [[ "$TORCH_DTYPE" != auto ]]; then echo "$TORCH_DTYPE"; return; fi
    if grep -q '^distributed_type: DEEPSPEED' "$ACCELERATE_CONFIG" 2>/dev/null &&
            grep -q '^mixed_precision: bf16' "$ACCELERATE_CONFIG"; then
        echo "auto = bfloat16 (DeepSpeed bf16 in $ACCELERATE_CONFIG)"
    else
        echo "auto = float32 ($ACCELERATE_CONFIG has no DeepSpeed bf16)"
    fi
}

# The hardware-dependent settings, one per line ("[settings] name: value"): on stdout with DRY_RUN=1, else
# in the log.
gsi_settings() {
    local mp="${VLLM_ENABLE_V1_MULTIPROCESSING:-unset: vLLM default (src/engine.py: in-process on CPU only)}"
    local ga="from the config"
    if [[ -n "$GLOBAL_BATCH" ]]; then ga="$(gsi_ds_grad_acc) (global batch $GLOBAL_BATCH)"; fi
    local teacher="not used"
    if [[ "$STRATEGY" == teacher_help ]]; then
        teacher="'$TEACHER_MODEL' at $TEACHER_BASE_URL, $TEACHER_CONCURRENCY requests in flight"
        if [[ -n "$TEACHER_SERVE_PATH" ]]; then
            teacher+="; served here from $TEACHER_SERVE_PATH on GPUs ${TEACHER_GPUS:-all} (tensor parallel"
            teacher+=" $TEACHER_TP, memory $TEACHER_GPU_MEM), student sampling on GPUs ${SAMPLE_GPUS:-all}"
        fi
    fi
    local line
    for line in "gpus: ${NUM_GPUS:-0} (${GPU_IDS:-none})" "vllm tensor parallel (DEVICE_NUM): $DEVICE_NUM" \
            "vllm multiprocessing: $mp" "vllm dtype: auto" \
            "train processes: ${TRAIN_PROCS:-from the config} ($ACCELERATE_CONFIG)" \
            "train main_process_port: $MAIN_PROCESS_PORT (0: a free port)" "deepspeed accumulation: $ga" \
            "train load dtype: $(gsi_load_dtype)" \
            "gradient checkpointing: $GRADIENT_CHECKPOINTING" \
            "step checkpoints: every $SAVING_STEP_FREQ steps (0: off), newest $KEEP_NUM_CKPT kept" \
            "pot workers: $POT_WORKERS" "teacher: $teacher"; do
        if [[ "$DRY_RUN" == 1 ]]; then echo "[settings] $line"; else gsi_log "$line"; fi
    done
}

# teacher_help with a teacher on another node: check its name and port now, not after the first training.
gsi_teacher_preflight() {
    if [[ "$STRATEGY" != teacher_help || -n "$TEACHER_SERVE_PATH" || "$TEACHER_PREFLIGHT" != 1 ]]; then return 0; fi
    local -a cmd=("$PYTHON" -c 'import sys; from src.sampling.teacher import main; sys.exit(main(sys.argv[1:]))'
                  --teacher_model "${TEACHER_MODEL:?teacher_help needs TEACHER_MODEL}"
                  --teacher_base_url "$TEACHER_BASE_URL" --teacher_preflight_timeout 10)
    if [[ "$DRY_RUN" == 1 ]]; then
        printf '[preflight]'
        printf ' %q' "${cmd[@]}"
        printf '\n'
    else
        "${cmd[@]}" || exit 2
    fi
}

# Before any stage of a run (every method's main): show the settings, build the tiny world and model when asked,
# and check that every test set and pool file exists.
gsi_prepare_run() {
    gsi_inference_script > /dev/null || exit 2  # a misspelt strategy fails now, not after the first training
    gsi_settings
    if [[ "${TINY_SETUP:-0}" == 1 ]]; then gsi_tiny_setup; fi
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
