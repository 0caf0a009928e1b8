# The complete-consolidation row of scripts/interop/run, which sources this file (it uses run's
# `check`, $BIN, $PY, $WORK and $FIXTURES):
#   moe consol-hf  make_dcp.py --from-hf writes the moe fixture as a torch DCP checkpoint from 2
#           gloo processes (DCP_DIR = $WORK/dcp-hf-moe/dcp; config.json and generation_config.json in its
#           parent, as training runs keep them); `scripts/mpirun -n 2 nemoshard consolidate DCP_DIR`
#           must write a complete HF checkpoint: exactly the fixture's tensors (same_tensors.py), the
#           fixture's config files byte for byte, and from_pretrained loads it with no missing,
#           unexpected or mismatched key and logits identical (torch.equal) to the fixture's (check_logits.py)
if ! declare -F check >/dev/null; then
    echo "check_consolidate_hf.sh is sourced by scripts/interop/run" >&2
    exit 2
fi

consolidate_hf() {
    local v=$1 d="$WORK/dcp-hf-$1" f
    "$PY" scripts/interop/make_dcp.py --from-hf "$FIXTURES/$v" "$d"
    scripts/mpirun -n 2 "$BIN" consolidate "$d/dcp" "$d/hf"
    for f in config.json generation_config.json; do
        cmp "$FIXTURES/$v/$f" "$d/hf/$f" || { echo "consol-hf: FAILED $f is not the fixture's"; return 1; }
    done
    "$PY" scripts/interop/same_tensors.py "$FIXTURES/$v" "$d/hf"
    "$PY" scripts/interop/check_logits.py "$FIXTURES/$v" "$d/hf" --atol "$ATOL"
}

check moe consol-hf consolidate_hf
