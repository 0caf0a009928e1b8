"""Compares two fixture trees file by file; prints each difference and exits 1 if there is any.

    python compare_trees.py EXPECTED_DIR ACTUAL_DIR

The same relative file names must exist in both. *.safetensors: the headers must be equal as JSON
(a __metadata__ value that is itself JSON, such as DCP_SHARDING_INFO, is compared parsed: the
safetensors library writes __metadata__ entries in a random order) and the data buffers byte for
byte. *.json: equal as JSON. Anything else: byte for byte.
"""

import json
import os
import re
import struct
import sys


def files(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def safetensors_parts(path):
    with open(path, "rb") as fh:
        raw = fh.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = header.get("__metadata__")
    if meta is not None:
        parsed = {}
        for k, v in meta.items():
            try:
                parsed[k] = json.loads(v)
            except ValueError:
                parsed[k] = v
        header["__metadata__"] = parsed
    return header, raw[8 + n :]


def main():
    a, b = sys.argv[1], sys.argv[2]
    fa, fb = files(a), files(b)
    problems = [f"only in {a}: {p}" for p in sorted(fa - fb)] + [f"only in {b}: {p}" for p in sorted(fb - fa)]
    for rel in sorted(fa & fb):
        pa, pb = os.path.join(a, rel), os.path.join(b, rel)
        if rel.endswith(".safetensors"):
            ha, da = safetensors_parts(pa)
            hb, db = safetensors_parts(pb)
            if ha != hb:
                problems.append(f"{rel}: headers differ")
            if da != db:
                problems.append(f"{rel}: tensor data differ")
        elif rel.endswith(".json"):
            with open(pa) as x, open(pb) as y:
                if json.load(x) != json.load(y):
                    problems.append(f"{rel}: JSON differs")
        elif os.path.basename(rel) == "VERSIONS":
            with open(pa) as x, open(pb) as y:
                strip = lambda t: re.sub(r"(?m)^(torch \S+?)\+\S+$", r"\1", t)  # noqa: E731
                if strip(x.read()) != strip(y.read()):
                    problems.append(f"{rel}: differs")
        else:
            with open(pa, "rb") as x, open(pb, "rb") as y:
                if x.read() != y.read():
                    problems.append(f"{rel}: bytes differ")
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
