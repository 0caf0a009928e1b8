# The live-reference rows of scripts/interop/run, which sources this file (it uses run's `rows`,
# `passed`, `failed`, $BIN, $PY and $WORK): NeMo AutoModel 0.7.0's NemotronV3StateDictAdapter runs
# in one python process (scripts/interop/reference_rows.py, through nemo_reference.py) on the
# smallest checkpoints that exercise each rule of docs/nemo-0.7-rules.md (the moe, latent and dense
# fixtures, MTP with a Mamba layer, the model. prefix, F32-stored SSM parameters, the singular
# embedding name, a float32 config, a PEFT prefix), and each row compares it tensor for tensor
# (name, dtype, shape, bytes) with nemoshard under its default rules (nemo-0.7):
#   ref-ep1    from_hf without a mesh against `nemoshard convert`
#   ref-ep4    from_hf as each rank of ep=4 against `scripts/mpirun -n 4 nemoshard load --out` (all ranks)
#   ref-to_hf  0.7.0's consolidated export of its 4 ranks against `scripts/mpirun -n 4 nemoshard save-hf`
# The differing tensors of a failed row go to stderr.
if ! declare -F check >/dev/null; then
    echo "check_reference.sh is sourced by scripts/interop/run" >&2
    exit 2
fi

reference_log="$WORK/reference.log"
reference_out="$WORK/reference.rows"
"$PY" scripts/interop/reference_rows.py "$BIN" "$WORK/reference" >"$reference_out" 2>"$reference_log" || true
reference_rows=0
while IFS=$'\t' read -r variant name status secs detail; do
    [ -n "$variant" ] || continue
    reference_rows=$((reference_rows + 1))
    if [ "$status" = ok ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    rows+=("$(printf '%-9s %-11s %-7s %4ss  %s' "$variant" "$name" "$status" "$secs" "$(printf '%s' "$detail" | cut -c1-110)")")
done <"$reference_out"
if [ "$reference_rows" = 0 ] || grep -q "failed" "$reference_log"; then
    { echo "interop: reference rows:"; cat "$reference_log"; } >&2
fi
if [ "$reference_rows" = 0 ]; then
    failed=$((failed + 1))
    rows+=("$(printf '%-9s %-11s %-7s %4ss  %s' reference ref-rows FAILED 0 "reference_rows.py printed no row: $(tail -n 1 "$reference_log" | cut -c1-80)")")
fi
