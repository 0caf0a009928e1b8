#!/usr/bin/env python3
"""Compare a reference safetensors file with nemoshard's output, tensor for tensor.

    compare_reference.py REFERENCE CANDIDATE [--label-a ref --label-b nemoshard]

    compare_reference.py REFERENCE NEMOSHARD_PER_RANK_DIR --rank R

REFERENCE and CANDIDATE are each a .safetensors file (e.g. nemo_reference.py's OUT and nemoshard's
rank-0000r-of-0000W.safetensors) or a directory whose *.safetensors files are read as one set (an HF
checkpoint, e.g. nemoshard save-hf's output against nemo_reference.py to-hf's OUT). With --rank R,
CANDIDATE is a nemoshard per-rank directory and the comparison is against rank R's whole state dict:
nemoshard writes each non-expert tensor once (DCP deduplicates replicated tensors), on the rank that
nemoshard.json names as its holder, whereas 0.7.0's from_hf returns every non-expert tensor on every
rank; --rank adds the tensors other ranks hold (a bare rank file lacks them). Names, dtypes,
shapes and bytes must all match; file metadata is ignored. Prints one line per differing tensor:
  only-in-A / only-in-B   the name is missing on one side
  dtype                   dtypes differ; says whether the values are equal once both are upcast to F64
  shape                   shapes differ
  bytes                   same dtype and shape, different bytes; count of differing elements, max |a-b|
then a summary line "compare: N same, M differ (...)". Exit 0 when everything matches, 1 on any
difference, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import difflib
import glob
import json
import os
import sys
from collections import Counter

import torch
from safetensors import safe_open


def load_nemoshard_rank(directory: str, rank: int) -> dict[str, torch.Tensor]:
    """Rank `rank`'s whole state dict from a nemoshard per-rank directory: its own file, plus each
    non-expert tensor (written once, by its `holder` rank, as DCP deduplicates replicated tensors)
    from its holder's file."""
    with open(os.path.join(directory, "nemoshard.json")) as f:
        manifest = json.load(f)
    files = {r["rank"]: os.path.join(directory, r["file"]) for r in manifest["ranks"]}
    if rank not in files:
        sys.exit(f"compare_reference: {directory} has no rank {rank} (world size {len(files)})")
    out = load(files[rank])
    held: dict[int, list[str]] = {}
    for t in manifest["tensors"]:
        if not t.get("expert_sharded") and t["name"] not in out:
            held.setdefault(t["holder"], []).append(t["name"])
    for holder, names in sorted(held.items()):
        with safe_open(files[holder], framework="pt", device="cpu") as f:
            for name in names:
                out[name] = f.get_tensor(name)
    return out


def load(path: str) -> dict[str, torch.Tensor]:
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
        if not files:
            sys.exit(f"compare_reference: no *.safetensors in {path}")
    elif os.path.isfile(path):
        files = [path]
    else:
        sys.exit(f"compare_reference: {path}: no such file or directory")
    out: dict[str, torch.Tensor] = {}
    for name in files:
        with safe_open(name, framework="pt", device="cpu") as f:
            for key in f.keys():
                if key in out:
                    sys.exit(f"compare_reference: {key} appears twice under {path}")
                out[key] = f.get_tensor(key)
    return out


def raw(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def fmt(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"


def as_f64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64)


def compare(a: dict, b: dict, la: str, lb: str) -> tuple[list[str], Counter, int]:
    lines: list[str] = []
    kinds: Counter = Counter()
    same = 0
    for key in sorted(set(a) | set(b)):
        if key not in b:
            kinds[f"only-in-{la}"] += 1
            lines.append(f"only-in-{la:<9} {key}  {fmt(a[key])}")
            continue
        if key not in a:
            kinds[f"only-in-{lb}"] += 1
            lines.append(f"only-in-{lb:<9} {key}  {fmt(b[key])}")
            continue
        x, y = a[key], b[key]
        if x.shape != y.shape:
            kinds["shape"] += 1
            lines.append(f"{'shape':<17} {key}  {la} {fmt(x)} vs {lb} {fmt(y)}")
            continue
        if x.dtype != y.dtype:
            kinds["dtype"] += 1
            try:
                eq = torch.equal(as_f64(x), as_f64(y))
                note = "values equal after upcast" if eq else "values differ after upcast"
            except (RuntimeError, TypeError):
                note = "values not comparable"
            lines.append(f"{'dtype':<17} {key}  {la} {fmt(x)} vs {lb} {fmt(y)}; {note}")
            continue
        if torch.equal(raw(x), raw(y)):
            same += 1
            continue
        kinds["bytes"] += 1
        detail = ""
        try:
            fx, fy = as_f64(x), as_f64(y)
            ne = (fx != fy) & ~(fx.isnan() & fy.isnan())
            detail = f"; {int(ne.sum())}/{x.numel()} elements differ, max |a-b| {float((fx - fy).abs().nan_to_num(0).max()):.6g}"
        except (RuntimeError, TypeError):
            pass
        lines.append(f"{'bytes':<17} {key}  {fmt(x)}{detail}")
    # A name missing on one side whose values (upcast to F64) equal a name missing on the other side:
    # most likely a rename (and maybe a cast); say so.
    only_a = [k for k in a if k not in b]
    only_b = [k for k in b if k not in a]
    # Among equal-valued candidates take the most similar name (small tensors such as D can repeat).
    hints: dict[str, str] = {}
    for ka in only_a:
        best = None
        for kb in only_b:
            if kb in hints or a[ka].shape != b[kb].shape:
                continue
            try:
                if not torch.equal(as_f64(a[ka]), as_f64(b[kb])):
                    continue
            except (RuntimeError, TypeError):
                continue
            score = difflib.SequenceMatcher(None, ka, kb).ratio()
            if best is None or score > best[0]:
                best = (score, kb)
        if best is not None:
            hints[ka] = f"  (values = {lb}'s {best[1]})"
            hints[best[1]] = f"  (values = {la}'s {ka})"
    lines = [
        line + hints.get(line.split()[1], "") if line.startswith("only-in-") else line for line in lines
    ]
    return lines, kinds, same


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("reference")
    p.add_argument("candidate")
    p.add_argument("--label-a", default="ref")
    p.add_argument("--label-b", default="nemoshard")
    p.add_argument(
        "--rank",
        type=int,
        help="CANDIDATE is a nemoshard per-rank directory: compare rank RANK's whole state dict (its file "
        "plus the non-expert tensors that other ranks hold, per nemoshard.json)",
    )
    a = p.parse_args()
    ref = load(a.reference)
    if a.rank is not None:
        if not os.path.isfile(os.path.join(a.candidate, "nemoshard.json")):
            sys.exit(f"compare_reference: --rank needs a nemoshard per-rank directory, not {a.candidate}")
        cand = load_nemoshard_rank(a.candidate, a.rank)
    else:
        cand = load(a.candidate)
        beside = os.path.join(os.path.dirname(os.path.abspath(a.candidate)), "nemoshard.json")
        if os.path.isfile(a.candidate) and os.path.isfile(beside):
            print(
                "note: a nemoshard rank file holds only the non-expert tensors assigned to its rank; "
                "pass the directory and --rank R to compare the rank's whole state dict"
            )
    lines, kinds, same = compare(ref, cand, a.label_a, a.label_b)
    for line in lines:
        print(line)
    differ = sum(kinds.values())
    parts = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    print(f"compare: {same} same, {differ} differ" + (f" ({parts})" if parts else ""))
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
