# shellcheck shell=bash
# IWSI stages (sourced after _common.sh by scripts/*/*_iwsi.sh, never run; settings: src/profiles.py).
# arXiv 2408.09849:
# sample m per query (vanilla), keep the samples reaching each question's majority answer (no gold labels), then
#   IWSI_VARIANT=iwsi    drop the (1 - KEEP_FRACTION) most distribution-shifted samples (DS weight, src/iwsi.py)
#   IWSI_VARIANT=iwsi_w  keep them all, each sample's loss multiplied by min(w', IWSI_CLIP) in training
#   IWSI_VARIANT=lmsi    vote only (the paper's LMSI baseline)
# w' is scored by the frozen pre-trained model DS_MODEL against a valid set: VALID_FRACTION (<= 5%) of the
# labelled VALID_SOURCE, disjoint from the sampling pools, drawn once per experiment ($EXP_DIR/iter_data/valid.json).
set -euo pipefail
IWSI_VALID="$EXP_DIR/iter_data/valid.json"
case "$IWSI_VARIANT" in
    iwsi | lmsi) ;;
    iwsi_w) TRAIN_EXTRA_ARGS+=" --sample_weight_field w_prime --sample_weight_clip $IWSI_CLIP" ;;
    *) echo "IWSI_VARIANT is not set: scripts/_iwsi.sh is sourced by the IWSI scripts, which set it" >&2; exit 2 ;;
esac

# The valid set, once per experiment (its own stage; the arrays of the calling stage are kept).
gsi_iwsi_valid_stage() {
    local -a saved_in=("${STAGE_INPUTS[@]}") saved_out=("${STAGE_OUTPUTS[@]}") names files
    gsi_data_files pool "$TRAIN_DATASETS"
    STAGE_INPUTS=("$VALID_SOURCE" "${files[@]}") STAGE_OUTPUTS=("$IWSI_VALID") STAGE_RESUMABLE=()
    gsi_stage valid "$EXP_DIR" "$PYTHON" -m src.iwsi --train_file "$VALID_SOURCE" --exclude "${files[@]}" \
        --out "$IWSI_VALID" --fraction "$VALID_FRACTION" --seed "$SEED"
    STAGE_INPUTS=("${saved_in[@]}") STAGE_OUTPUTS=("${saved_out[@]}") STAGE_RESUMABLE=()
}

# Called by gsi_generate_stage I NEXT before it runs: vote labels, the DS filter (or weights), their sidecar.
gsi_generate_hook() {
    local i=$1 next=$2 keep=$KEEP_FRACTION
    extra+=(--correctness vote)
    if [[ "$IWSI_VARIANT" != lmsi ]]; then
        gsi_iwsi_valid_stage
        if [[ "$IWSI_VARIANT" == iwsi_w ]]; then keep=1; fi  # weights only: every voted sample stays
        extra+=(--ds_filter true --ds_valid "$IWSI_VALID" --ds_model "$DS_MODEL"
                --ds_policy_model "$EXP_DIR/iter_$i/model" --keep_fraction "$keep" --ds_span "$DS_SPAN"
                --ds_reference_clip "$DS_REFERENCE_CLIP" --ds_max_length "$MAX_INPUT_LENGTH")
        STAGE_INPUTS+=("$IWSI_VALID" "$DS_MODEL")
    fi
    STAGE_OUTPUTS+=("${next%.json}.iwsi.json")
}
