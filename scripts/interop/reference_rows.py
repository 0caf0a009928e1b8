#!/usr/bin/env python3
"""nemoshard against NeMo AutoModel 0.7.0 itself, live, in one process: the rows of scripts/interop/run.

    reference_rows.py NEMOSHARD_BIN WORKDIR

For each checkpoint below, nemoshard (default rules, nemo-0.7) writes
  - `nemoshard convert HF --out ns1` (one rank, every expert) and
  - `scripts/mpirun -n 4 nemoshard load HF --out ns4`, then `scripts/mpirun -n 4 nemoshard save-hf ns4 nshf`,
and NeMo AutoModel 0.7.0's NemotronV3StateDictAdapter runs as nemo_reference.py runs it: from_hf as
ep=1 (device_mesh=None) and as each rank of ep=4, to_hf of the 4 ranks with the consolidated export's
dtypes (the source's headers, then forced_hf_dtype_mapping). Rows, compared tensor for tensor (name,
dtype, shape, bytes; compare_reference.py, a nemoshard rank's whole state dict):
  ref-ep1    the ep=1 state dict against nemoshard's one-rank checkpoint
  ref-ep4    each of the 4 ranks' state dicts against nemoshard's rank files (one row for all four)
  ref-to_hf  the 4-rank HF export against 0.7.0's export of its own 4 ranks
Checkpoints (the smallest that exercise each rule; docs/nemo-0.7-rules.md):
  moe, latent, dense   the transformers 5 fixtures (backbone., BF16 Mamba parameters)
  mtp-mamba            `nemoshard synth --experts 8 --mtp 'M*E'` (a Mamba layer in the MTP head)
  model-pfx            `nemoshard synth --experts 10 --model-prefix --mtp '*E'` (model. prefix, uneven over 4 ranks)
  ssm-f32              the moe fixture with A_log stored F32 and e_score_correction_bias BF16
                       (make_edge_checkpoints.py bf16_bias_f32_alog)
  embedding            the moe fixture's embedding named `backbone.embedding.weight` (singular)
  fp32-cfg             the moe fixture with config dtype float32 (grouped experts F32)
  peft                 the moe fixture under `base_model.model.` (experts stay per expert)
--extended adds make_edge_checkpoints.py's embed_tokens, scale_inv, gate_proj and truncate cases and
`nemoshard synth --expert-dtype f32` (F32 experts grouped as bf16, exported F32 as the source's dtype).
Prints one line per row on stdout: VARIANT<TAB>CHECK<TAB>ok|FAILED<TAB>SECONDS<TAB>DETAIL; the differing
tensors of a failed row (or a step's error) go to stderr. Exit 0 when every row is ok, else 1.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import compare_reference as cmp  # noqa: E402
import make_edge_checkpoints as edge  # noqa: E402
import nemo_reference as ref  # noqa: E402

FIXTURES = os.path.join(ROOT, "Tests", "NemoShardTests", "Fixtures", "transformers5")
MPIRUN = os.path.join(ROOT, "scripts", "mpirun")
RANKS = 4


def checkpoints(bin_: str, work: str, extended: bool = False) -> list[tuple[str, callable]]:
    """(variant, function making the HF directory and returning it); `extended` adds more of
    make_edge_checkpoints.py's cases (not in scripts/interop/run: each rule they touch is covered there)."""

    def fixture(name):
        return lambda: os.path.join(FIXTURES, name)

    def synth(name, *args):
        def make():
            out = os.path.join(work, name, "hf")
            run([bin_, "synth", out, "--force", *args])
            return out

        return make

    def edge_case(name, case):
        def make():
            out = os.path.join(work, name, "hf")
            with contextlib.redirect_stdout(io.StringIO()):
                edge.make(os.path.join(FIXTURES, "moe"), out, case)
            return out

        return make

    return [
        ("moe", fixture("moe")),
        ("latent", fixture("latent")),
        ("dense", fixture("dense")),
        ("mtp-mamba", synth("mtp-mamba", "--experts", "8", "--mtp", "M*E")),
        ("model-pfx", synth("model-pfx", "--experts", "10", "--model-prefix", "--mtp", "*E")),
        ("ssm-f32", edge_case("ssm-f32", "bf16_bias_f32_alog")),
        ("embedding", edge_case("embedding", "embedding")),
        ("fp32-cfg", edge_case("fp32-cfg", "fp32_config")),
        ("peft", edge_case("peft", "peft")),
    ] + ([] if not extended else [
        (case.replace("_", "-"), edge_case(case.replace("_", "-"), case))
        for case in ("embed_tokens", "scale_inv", "gate_proj", "truncate")
    ] + [("f32-experts", synth("f32-experts", "--experts", "8", "--expert-dtype", "f32"))])


def run(argv: list[str]) -> None:
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))} exited "
                           f"{p.returncode}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}")


def quiet(fn, *args):
    """Runs a nemo_reference step, its progress lines kept off stdout; its die() becomes an error."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return fn(*args)
        except SystemExit as e:
            raise RuntimeError(f"nemo_reference: exit {e.code}") from None


def reference_from_hf(hf: str, ep: int, out_pattern: str) -> None:
    a = argparse.Namespace(hf_dir=hf, ep=ep, dp=1, rank="all", out=out_pattern, mesh="standin",
                           config_class="transformers", dtype="auto")
    quiet(ref.cmd_from_hf, a)


def reference_to_hf(hf: str, rank_files: list[str], out: str) -> None:
    a = argparse.Namespace(hf_dir=hf, rank_files=rank_files, out=out, mesh="standin", config_class="transformers",
                           dtype="auto", export_dtypes="original", exclude=r".*_extra_state.*", hf_prefix="auto")
    quiet(ref.cmd_to_hf, a)


def compared(a: dict, b: dict, where: str) -> tuple[int, int, list[str]]:
    lines, kinds, same = cmp.compare(a, b, "ref", "nemoshard")
    return same, sum(kinds.values()), [f"{where}: {line}" for line in lines]


class Rows:
    def __init__(self):
        self.failed = 0

    def emit(self, variant: str, check: str, ok: bool, seconds: float, detail: str, lines=()) -> None:
        if not ok:
            self.failed += 1
            print(f"reference_rows: {variant} {check} failed: {detail}", file=sys.stderr)
            for line in list(lines)[:40]:
                print(f"  {line}", file=sys.stderr)
        print(f"{variant}\t{check}\t{'ok' if ok else 'FAILED'}\t{int(round(seconds))}\t{detail}", flush=True)


def check_checkpoint(variant: str, make, bin_: str, work: str, rows: Rows) -> None:
    d = os.path.join(work, variant)
    os.makedirs(d, exist_ok=True)
    t0 = time.monotonic()
    try:
        hf = make()
        run([bin_, "convert", hf, "--out", f"{d}/ns1", "--force"])
        run([MPIRUN, "-n", str(RANKS), bin_, "load", hf, "--out", f"{d}/ns4", "--force"])
        run([MPIRUN, "-n", str(RANKS), bin_, "save-hf", f"{d}/ns4", f"{d}/nshf", "--force"])
        reference_from_hf(hf, 1, f"{d}/ref1/rank-{{rank}}.safetensors")
        reference_from_hf(hf, RANKS, f"{d}/ref4/rank-{{rank}}.safetensors")
    except Exception as e:  # noqa: BLE001 - every failure is a row
        rows.emit(variant, "ref-ep4", False, time.monotonic() - t0, f"setup failed: {e}",
                  traceback.format_exc().splitlines())
        return
    setup = time.monotonic() - t0

    t1 = time.monotonic()
    same, differ, lines = compared(cmp.load(f"{d}/ref1/rank-0.safetensors"), cmp.load_nemoshard_rank(f"{d}/ns1", 0), "ep=1")
    rows.emit(variant, "ref-ep1", differ == 0, time.monotonic() - t1, f"compare: {same} same, {differ} differ (ep=1)", lines)

    t1 = time.monotonic()
    total_same, total_differ, all_lines = 0, 0, []
    for r in range(RANKS):
        same, differ, lines = compared(cmp.load(f"{d}/ref4/rank-{r}.safetensors"), cmp.load_nemoshard_rank(f"{d}/ns4", r),
                                       f"rank {r}")
        total_same, total_differ, all_lines = total_same + same, total_differ + differ, all_lines + lines
    rows.emit(variant, "ref-ep4", total_differ == 0, setup + time.monotonic() - t1,
              f"compare: {total_same} same, {total_differ} differ (ranks 0-{RANKS - 1})", all_lines)

    t1 = time.monotonic()
    try:
        reference_to_hf(hf, [f"{d}/ref4/rank-{r}.safetensors" for r in range(RANKS)], f"{d}/refhf/model.safetensors")
    except Exception as e:  # noqa: BLE001
        rows.emit(variant, "ref-to_hf", False, time.monotonic() - t1, f"reference to_hf failed: {e}")
        return
    same, differ, lines = compared(cmp.load(f"{d}/refhf"), cmp.load(f"{d}/nshf"), "to_hf")
    rows.emit(variant, "ref-to_hf", differ == 0, time.monotonic() - t1,
              f"compare: {same} same, {differ} differ (save-hf of 4 ranks)", lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bin")
    p.add_argument("work")
    p.add_argument("--only", nargs="*", help="variants to run (default: all)")
    p.add_argument("--extended", action="store_true", help="also embed_tokens, scale_inv, gate_proj, truncate, f32-experts")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    rows = Rows()
    for variant, make in checkpoints(a.bin, a.work, a.extended):
        if a.only and variant not in a.only:
            continue
        check_checkpoint(variant, make, a.bin, a.work, rows)
    sys.exit(1 if rows.failed else 0)


if __name__ == "__main__":
    main()
