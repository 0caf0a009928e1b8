#!/usr/bin/env bash
# Quantized releases against the torch reference, one row per format and dtype:
#   scripts/interop/check_quantized.sh PY BIN WORK
# (called by scripts/interop/run with its venv python, nemoshard binary and scratch directory).
# A BF16 `nemoshard synth --experts 8` checkpoint is written in ModelOpt's FP8 and NVFP4 layouts
# (make_quantized.py: known scales, weights and scales in different files). For each of fp8 and
# nvfp4, and each of bf16 and f32, dequant_reference.py dequantizes it with torch into a plain
# checkpoint REF; then
#   - `scripts/mpirun -n 4 nemoshard load Q --dequantize D --out A` and `load REF --dtype D --out B`
#     must write the same rank files, header and every byte (compare_trees.py): the dequantized
#     load is the torch reference's tensors, tensor for tensor, in whatever layout load writes;
#   - `load Q --dequantize D --to-hf H` must hold exactly the tensors of `load REF --dtype D --to-hf`
#     (same_tensors.py), no hf_quant_config.json, and a config.json without quantization_config.
set -euo pipefail
[ $# = 3 ] || { echo "usage: $0 PY BIN WORK" >&2; exit 2; }
PY=$1 BIN=$2 WORK=$3/quantized
cd "$(dirname "$0")/../.."
mkdir -p "$WORK"
"$BIN" synth "$WORK/bf16" --experts 8 >/dev/null

passed=0
failed=0
row() {
    local fmt=$1 dtype=$2 d="$WORK/$1-$2" log="$WORK/$1-$2.log" t0=$SECONDS status
    if (
        set -e
        mkdir -p "$d"
        [ -d "$WORK/$fmt" ] || "$PY" scripts/interop/make_quantized.py "$WORK/bf16" "$WORK/$fmt" --format "$fmt"
        "$PY" scripts/interop/dequant_reference.py "$WORK/$fmt" "$d/ref" --dtype "$dtype"
        scripts/mpirun -n 4 "$BIN" load "$WORK/$fmt" --dequantize "$dtype" --out "$d/ours"
        scripts/mpirun -n 4 "$BIN" load "$d/ref" --dtype "$dtype" --out "$d/theirs"
        mkdir -p "$d/a" "$d/b"
        cp "$d"/ours/rank-*.safetensors "$d/a/"
        cp "$d"/theirs/rank-*.safetensors "$d/b/"
        "$PY" scripts/interop/compare_trees.py "$d/b" "$d/a"
        scripts/mpirun -n 4 "$BIN" load "$WORK/$fmt" --dequantize "$dtype" --to-hf "$d/hf"
        scripts/mpirun -n 4 "$BIN" load "$d/ref" --dtype "$dtype" --to-hf "$d/hf-ref"
        [ ! -e "$d/hf/hf_quant_config.json" ] || { echo "the export carries hf_quant_config.json"; exit 1; }
        ! grep -q quantization_config "$d/hf/config.json" || { echo "the export's config.json has quantization_config"; exit 1; }
        "$PY" scripts/interop/same_tensors.py "$d/hf-ref" "$d/hf"
    ) >"$log" 2>&1; then status=ok; passed=$((passed + 1)); else
        status=FAILED; failed=$((failed + 1))
        { echo "interop: quant $fmt-$dtype failed:"; cat "$log"; } >&2
    fi
    printf '%-9s %-11s %-7s %4ss  %s\n' quant "$fmt-$dtype" "$status" $((SECONDS - t0)) "$(tail -n 1 "$log" | cut -c1-110)"
}

for fmt in fp8 nvfp4; do
    for dtype in bf16 f32; do row "$fmt" "$dtype"; done
done
echo "quantized: $passed passed, $failed failed"
[ "$failed" = 0 ]
