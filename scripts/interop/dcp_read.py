"""Reads a nemoshard per-rank directory with torch.distributed.checkpoint and compares it with a reference.

    python dcp_read.py PER_RANK_DIR [PER_RANK_DIR ...] REFERENCE_DIR

For each PER_RANK_DIR: every *.safetensors file there must carry __metadata__["DCP_SHARDING_INFO"] with an entry
for each of its tensors. torch's HuggingFaceStorageReader(PER_RANK_DIR).read_metadata() must describe
exactly the tensors of REFERENCE_DIR (every *.safetensors there, e.g. a 1-rank `nemoshard load --out`
or `nemoshard convert`), with their global shapes and dtypes; dcp.load(..., no_dist=True) into empty
tensors of those shapes (one process, no process group) must give the reference's bytes exactly.
Prints one line "dcp: OK ..." or "dcp: FAILED ..." (exit 1) for all of them.
"""

import glob
import json
import os
import sys
import warnings

import torch
import torch.distributed.checkpoint as dcp
from safetensors import safe_open
from safetensors.torch import load_file
from torch.distributed.checkpoint import HuggingFaceStorageReader


def fail(msg):
    print(f"dcp: FAILED: {msg}")
    sys.exit(1)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    reference = sys.argv[-1]
    want = {}
    for path in sorted(glob.glob(os.path.join(reference, "*.safetensors"))):
        want.update(load_file(path))
    if not want:
        fail(f"no tensors in {reference}")
    summary = []
    for sharded in sys.argv[1:-1]:
        summary.append(check(sharded, want))
    print(f"dcp: OK {len(want)} global tensors from " + ", ".join(summary))


def check(sharded, want):
    files = sorted(glob.glob(os.path.join(sharded, "*.safetensors")))
    if not files:
        fail(f"no .safetensors in {sharded}")
    for path in files:
        with safe_open(path, framework="pt") as f:
            info = (f.metadata() or {}).get("DCP_SHARDING_INFO")
            if info is None:
                fail(f"{path}: no DCP_SHARDING_INFO metadata")
            info = json.loads(info)
            keys = set(f.keys())
            if set(info) != keys:
                fail(f"{path}: DCP_SHARDING_INFO names {sorted(set(info) ^ keys)} differently from the file")
            for k in keys:
                if len(info[k]["saved_offsets"]) != len(f.get_slice(k).get_shape()):
                    fail(f"{path}: {k}: saved_offsets {info[k]['saved_offsets']} has the wrong rank")

    md = HuggingFaceStorageReader(sharded).read_metadata().state_dict_metadata
    if set(md) != set(want):
        fail(f"{sharded}: DCP sees {len(md)} tensors, the reference {len(want)}: they differ in {sorted(set(md) ^ set(want))[:5]}")
    for k, t in want.items():
        if list(md[k].size) != list(t.shape) or md[k].properties.dtype != t.dtype:
            fail(f"{sharded}: {k}: DCP global {list(md[k].size)} {md[k].properties.dtype}, reference {list(t.shape)} {t.dtype}")

    state = {k: torch.zeros_like(t) for k, t in want.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(state, storage_reader=HuggingFaceStorageReader(sharded), no_dist=True)
    for k, t in want.items():
        if not torch.equal(state[k].contiguous().view(torch.uint8), t.contiguous().view(torch.uint8)):
            fail(f"{sharded}: {k}: the tensor DCP assembled differs from the reference")
    chunks = sum(len(m.chunks) for m in md.values())
    return f"{chunks} chunks in {len(files)} files ({os.path.basename(sharded)})"


if __name__ == "__main__":
    main()
