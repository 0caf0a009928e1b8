"""Checks that two directories of safetensors files hold the same tensors.

    python same_tensors.py A B

Every tensor of every *.safetensors file in A must be in B with the same dtype, shape and bytes, and
B must hold no other tensor. Prints "tensors: OK N equal" or "tensors: FAILED ..." (exit 1).
"""

import glob
import os
import sys

import torch
from safetensors.torch import load_file


def load(d):
    out = {}
    for path in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        for k, v in load_file(path).items():
            if k in out:
                sys.exit(f"tensors: FAILED: {k} twice in {d}")
            out[k] = v
    return out


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if not a or set(a) != set(b):
        print(f"tensors: FAILED: {len(a)} vs {len(b)} tensors, differing in {sorted(set(a) ^ set(b))[:5]}")
        sys.exit(1)
    for k, t in a.items():
        u = b[k]
        if t.dtype != u.dtype or t.shape != u.shape or not torch.equal(t.contiguous().view(torch.uint8), u.contiguous().view(torch.uint8)):
            print(f"tensors: FAILED: {k}: {t.dtype} {list(t.shape)} vs {u.dtype} {list(u.shape)} or different bytes")
            sys.exit(1)
    print(f"tensors: OK {len(a)} equal")


if __name__ == "__main__":
    main()
