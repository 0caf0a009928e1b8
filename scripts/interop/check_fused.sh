# The fused-format rows of scripts/interop/run, which sources this file (it uses run's `check`,
# $BIN, $PY, $WORK and $FIXTURES). Fixture: Tests/NemoShardTests/Fixtures/transformers5/fused, the
# moe fixture's model saved by transformers itself with save_pretrained(save_original_format=False)
# (stacked experts model.layers.N.mixer.experts.up_proj [n, moe_inter, hidden] / down_proj
# [n, hidden, moe_inter]; scripts/interop/make_fixtures.py). Rows:
#   fused load    `scripts/mpirun -n 4 nemoshard load fused --out`: every rank file is byte for byte
#                 the one `load moe --out` writes (the same weights, saved per expert)
#   fused logits  `scripts/mpirun -n 4 nemoshard save-hf --format fused` of that directory: the
#                 export holds exactly the fixture's tensors (same_tensors.py), and from_pretrained
#                 loads it with no missing or unexpected key and logits identical (torch.equal) to
#                 the fixture's, loaded in the same process (check_logits.py)
#   fused to-hf   `scripts/mpirun -n 4 nemoshard load moe --to-hf --format fused`: the per-expert
#                 fixture written in transformers' layout holds exactly the fused fixture's tensors
if ! declare -F check >/dev/null; then
    echo "check_fused.sh is sourced by scripts/interop/run" >&2
    exit 2
fi

fused_load() {
    local d="$WORK/fused"
    scripts/mpirun -n 4 "$BIN" load "$FIXTURES/fused" --out "$d/ep4"
    scripts/mpirun -n 4 "$BIN" load "$FIXTURES/moe" --out "$d/moe-ep4"
    local n=0 f
    for f in "$d/moe-ep4"/rank-*.safetensors; do
        cmp "$f" "$d/ep4/$(basename "$f")" || { echo "load: FAILED $(basename "$f") differs from the per-expert fixture's"; return 1; }
        n=$((n + 1))
    done
    [ "$n" = 4 ] || { echo "load: FAILED $n rank files, not 4"; return 1; }
    echo "load: OK 4 rank files of the fused fixture == those of the per-expert moe fixture, byte for byte"
}

fused_logits() {
    local d="$WORK/fused"
    [ -f "$d/ep4/nemoshard.json" ] || { echo "no 4-rank directory (the fused load check failed)"; return 1; }
    scripts/mpirun -n 4 "$BIN" save-hf "$d/ep4" "$d/hf" --format fused
    "$PY" scripts/interop/same_tensors.py "$FIXTURES/fused" "$d/hf"
    "$PY" scripts/interop/check_logits.py "$FIXTURES/fused" "$d/hf" --atol "$ATOL"
}

fused_to_hf() {
    local d="$WORK/fused"
    scripts/mpirun -n 4 "$BIN" load "$FIXTURES/moe" --to-hf "$d/from-moe" --format fused
    "$PY" scripts/interop/same_tensors.py "$FIXTURES/fused" "$d/from-moe"
}

check fused load fused_load
check fused logits fused_logits
check fused to-hf fused_to_hf
