#!/usr/bin/env bash
# Sharded sampling (inference*.py) or evaluation (eval.py): N independent engines, then one merge (src/shards.py).
#
#   # one node, one shard per GPU (8 GPUs: 8 shards side by side), then the merge into out/s:
#   bash scripts/cluster/sample_shards.sh inference_state_reset.py --model_name_or_path M \
#       --inference_data_file F --dataset_name gsm8k --results_path out/s
#   # 4 nodes x 8 GPUs: a SLURM job array, one task per node running 8 shards (32 in all); merge after it:
#   jid=$(SHARDS_PER_NODE=8 sbatch --parsable --array=0-3 --nodes=1 --gpus-per-node=8 \
#       scripts/cluster/sample_shards.sh inference_state_reset.py ... --results_path out/s)
#   sbatch --dependency=afterok:"$jid" --wrap ".venv/bin/python -m src.shards merge out/s"
#   # inside one 4-node allocation (salloc/sbatch --nodes=4): srun starts one launcher per node, then the merge
#   SRUN_NODES=4 bash scripts/cluster/sample_shards.sh inference_state_reset.py ... --results_path out/s
#   # rerun only the shard that failed, then merge (the other shards' files are kept):
#   NUM_SHARDS=32 SHARD_INDEX=5 bash scripts/cluster/sample_shards.sh inference_state_reset.py ... --results_path out/s
#
# Settings (environment):
#   GPUS_PER_SHARD   GPUs per engine (pass the same --device_num for tensor parallelism); default 1
#   SHARDS_PER_NODE  shards this node runs at once; default: its GPUs / GPUS_PER_SHARD (1 without GPUs)
#   NUM_NODES        nodes running shards; default SLURM_ARRAY_TASK_COUNT (a job array), else 1
#   NODE_RANK        this node's number; default SLURM_ARRAY_TASK_ID, else 0 (node r runs the shards
#                    r, r + NUM_NODES, ..., SHARDS_PER_NODE of them at a time)
#   SRUN_NODES       N > 1: start this launcher on N nodes of the allocation with srun, then merge
#   NUM_SHARDS       all shards; default SHARDS_PER_NODE x NUM_NODES
#   SHARD_INDEX      run only this shard (a rerun)
#   SKIP_FINISHED    1: skip shards whose manifest says they finished (the iteration scripts' resume); default 0
#   MERGE            1: merge after the shards (default outside a job array); 0: leave it to a later step
#   MERGE_OUT        folder for the merged files; default the --results_path
#   CPU_BINDS        without GPUs: '|'-separated VLLM_CPU_OMP_THREADS_BIND values, one per local shard (0|1)
# Each shard logs to <results_path>/shard_<k>_of_<N>.log. A failed shard fails the launcher (exit 1, no merge)
# and names the SHARD_INDEX to rerun.
set -euo pipefail

GSI_REPO="${GSI_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
cd "$GSI_REPO"
export PYTHONPATH="$GSI_REPO${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$GSI_REPO/.venv/bin/python" ]]; then PYTHON="$GSI_REPO/.venv/bin/python"; else PYTHON=python; fi
fi
(($# > 0)) || { echo "usage: sample_shards.sh SCRIPT.py FLAGS... --results_path DIR (see the header)" >&2; exit 2; }
cmd=("$@")
if [[ "${cmd[0]}" == *.py ]]; then cmd=("$PYTHON" "${cmd[@]}"); fi

results_path=""
for ((i = 0; i < ${#cmd[@]}; i++)); do
    case "${cmd[i]}" in
        --results_path) results_path="${cmd[i + 1]:-}" ;;
        --results_path=*) results_path="${cmd[i]#--results_path=}" ;;
        --num_shards* | --shard_index*) echo "sample_shards.sh: error: set NUM_SHARDS / SHARD_INDEX, not" \
            "${cmd[i]}" >&2; exit 2 ;;
    esac
done
[[ -n "$results_path" ]] || { echo "sample_shards.sh: error: the command needs --results_path" >&2; exit 2; }

# This node's GPUs: CUDA_VISIBLE_DEVICES (SLURM sets it), else nvidia-smi; none on a CPU machine.
gpus=()
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    IFS=, read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then
    mapfile -t gpus < <(seq 0 $(($(nvidia-smi -L | grep -c '^GPU') - 1)))
fi
: "${GPUS_PER_SHARD:=1}"
if ((${#gpus[@]} > 0)); then : "${SHARDS_PER_NODE:=$((${#gpus[@]} / GPUS_PER_SHARD))}"; else : "${SHARDS_PER_NODE:=1}"; fi
if ((SHARDS_PER_NODE < 1 || (${#gpus[@]} > 0 && SHARDS_PER_NODE * GPUS_PER_SHARD > ${#gpus[@]}))); then
    echo "sample_shards.sh: error: SHARDS_PER_NODE=$SHARDS_PER_NODE x GPUS_PER_SHARD=$GPUS_PER_SHARD needs more" \
        "than this node's ${#gpus[@]} GPUs" >&2
    exit 2
fi
if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then  # a job array: each task one node; merge in a later job
    : "${NUM_NODES:=${SLURM_ARRAY_TASK_COUNT:?}}" "${NODE_RANK:=$SLURM_ARRAY_TASK_ID}" "${MERGE:=0}"
fi
: "${NUM_NODES:=${SRUN_NODES:-1}}" "${NUM_SHARDS:=$((SHARDS_PER_NODE * NUM_NODES))}" "${MERGE:=1}"
: "${SKIP_FINISHED:=0}" "${MERGE_OUT:=$results_path}" "${CPU_BINDS:=}"
if [[ -n "${SRUN_NODES:-}" && -z "${NODE_RANK:-}" ]] && ((SRUN_NODES > 1)); then
    # one launcher per node (srun passes the environment on); each takes its node number from SLURM_NODEID
    export NUM_NODES NUM_SHARDS SHARDS_PER_NODE GPUS_PER_SHARD SKIP_FINISHED PYTHON
    MERGE=0 srun --nodes="$SRUN_NODES" --ntasks-per-node=1 --kill-on-bad-exit=0 \
        bash -c 'NODE_RANK=$SLURM_NODEID exec bash "$0" "$@"' "$0" "$@"
    if [[ "$MERGE" == 1 ]]; then exec "$PYTHON" -m src.shards merge "$results_path" --out "$MERGE_OUT"; fi
    exit 0
fi
: "${NODE_RANK:=0}"
first=$((NODE_RANK * SHARDS_PER_NODE))
IFS='|' read -r -a binds <<< "$CPU_BINDS"

# The shards this node runs: SHARD_INDEX alone, else k = NODE_RANK, NODE_RANK + NUM_NODES, ... (one wave of
# SHARDS_PER_NODE when NUM_SHARDS = SHARDS_PER_NODE x NUM_NODES; more shards run in further waves).
if [[ -n "${SHARD_INDEX:-}" ]]; then local_shards=("$SHARD_INDEX"); else
    local_shards=()
    for ((k = NODE_RANK; k < NUM_SHARDS; k += NUM_NODES)); do local_shards+=("$k"); done
fi
mkdir -p "$results_path"
failed=()
run_wave() {  # run_wave SHARD...: one shard per GPU group (or CPU_BINDS entry) side by side, then wait
    local j k dir
    local -a env_args group wave=("$@")
    pids=() shards=()
    for j in "${!wave[@]}"; do
        k=${wave[j]}
        dir="$results_path/shard_${k}_of_${NUM_SHARDS}"
        env_args=()
        if ((${#gpus[@]} > 0)); then
            group=("${gpus[@]:j * GPUS_PER_SHARD:GPUS_PER_SHARD}")
            env_args=("CUDA_VISIBLE_DEVICES=$(IFS=,; echo "${group[*]}")")
        elif [[ -n "${binds[j]:-}" ]]; then
            env_args=("VLLM_CPU_OMP_THREADS_BIND=${binds[j]}")
        fi
        echo "[shards] shard $k of $NUM_SHARDS: ${env_args[*]:-all devices} -> $dir (log $dir.log)" >&2
        env "${env_args[@]}" "${cmd[@]}" --num_shards "$NUM_SHARDS" --shard_index "$k" > "$dir.log" 2>&1 &
        pids+=($!) shards+=("$k")
    done
    for j in "${!pids[@]}"; do
        if ! wait "${pids[j]}"; then failed+=("${shards[j]}"); fi
    done
}
todo=()
for k in "${local_shards[@]}"; do
    if [[ "$SKIP_FINISHED" == 1 && -f "$results_path/shard_${k}_of_${NUM_SHARDS}/shard_manifest.json" ]]; then
        echo "[shards] shard $k of $NUM_SHARDS finished before: kept" >&2
    else
        todo+=("$k")
    fi
done
for ((w = 0; w < ${#todo[@]}; w += SHARDS_PER_NODE)); do
    run_wave "${todo[@]:w:SHARDS_PER_NODE}"
done
if ((${#failed[@]} > 0)); then
    for k in "${failed[@]}"; do
        echo "[shards] shard $k of $NUM_SHARDS failed: $(tail -n 1 "$results_path/shard_${k}_of_${NUM_SHARDS}.log")" >&2
        echo "[shards]   rerun it: NUM_SHARDS=$NUM_SHARDS SHARD_INDEX=$k bash $0 $*" >&2
    done
    exit 1
fi
if [[ "$MERGE" == 1 ]]; then
    "$PYTHON" -m src.shards merge "$results_path" --out "$MERGE_OUT"
fi
