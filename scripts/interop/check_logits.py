"""Checks that transformers loads nemoshard's HF export cleanly and computes exactly what it computes
for the original checkpoint, on this machine.

    python check_logits.py FIXTURE_DIR EXPORT_DIR [--expected FIXTURE_DIR/expected.json] [--atol 1e-5]

In one process (one thread, deterministic algorithms, model.eval(), torch.no_grad()) it loads both
FIXTURE_DIR (the checkpoint transformers wrote) and EXPORT_DIR (nemoshard's export of it) with
NemotronHForCausalLM.from_pretrained(dir, dtype=torch.float32, output_loading_info=True), runs the same
input_ids (expected["input_ids"]) through each, and requires:
  1. no missing, unexpected or mismatched key for either directory;
  2. the export's logits IDENTICAL to the fixture's (same shape, torch.equal: max_abs_diff 0). Both
     runs happen here, with the same torch build and kernels, so any difference is in the weights;
     on failure the parameters that differ are listed;
  3. the fixture's logits within --atol of expected["logits"] (recorded by make_fixtures.py on
     another machine; this only guards that the fixture is still what it was, so a tolerance is
     right: another CPU or BLAS may round differently).
Exit 1 on any failure. The last line printed is the summary: "logits: OK ..." or "logits: FAILED ...".
"""

import argparse
import json
import os
import sys

import torch
import transformers
from transformers import NemotronHForCausalLM


def load(d):
    model, info = NemotronHForCausalLM.from_pretrained(d, dtype=torch.float32, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        print(f"logits: FAILED: from_pretrained({d}) reported {problems}")
        sys.exit(1)
    model.eval()
    return model


def run(model, input_ids):
    torch.manual_seed(0)  # nothing is random in eval mode; this only makes sure of it
    with torch.no_grad():
        return model(input_ids).logits.to(torch.float32)


def differing_parameters(a, b):
    """Names of the state-dict tensors that are not identical between models a and b (a diagnosis)."""
    sa, sb = a.state_dict(), b.state_dict()
    out = []
    for k in sorted(set(sa) | set(sb)):
        if k not in sa or k not in sb:
            out.append(f"{k} (only in {'fixture' if k in sa else 'export'})")
        elif sa[k].dtype != sb[k].dtype or sa[k].shape != sb[k].shape:
            out.append(f"{k} ({sa[k].dtype}{list(sa[k].shape)} vs {sb[k].dtype}{list(sb[k].shape)})")
        elif not torch.equal(sa[k], sb[k]):
            diff = float((sa[k].float() - sb[k].float()).abs().max())
            out.append(f"{k} (max_abs_diff={diff:.3g})")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixture", help="the original checkpoint (a transformers save_pretrained directory)")
    ap.add_argument("export", help="nemoshard's HF export of it")
    ap.add_argument("--expected", help="the fixture's expected.json (default FIXTURE/expected.json)")
    ap.add_argument("--atol", type=float, default=1e-5, help="tolerance against expected.json only")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    with open(args.expected or os.path.join(args.fixture, "expected.json")) as fh:
        expected = json.load(fh)
    input_ids = torch.tensor(expected["input_ids"])

    fixture = load(args.fixture)
    export = load(args.export)
    want = run(fixture, input_ids)
    got = run(export, input_ids)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    print(f"input_ids {expected['input_ids']}; logits {list(want.shape)} float32")

    # 2. export == fixture, bit for bit
    if list(got.shape) != list(want.shape):
        print(f"logits: FAILED export shape {list(got.shape)} != fixture shape {list(want.shape)}")
        sys.exit(1)
    same = torch.equal(got, want)
    diff = float((got - want).abs().max())
    print(f"export vs fixture: torch.equal={same} max_abs_diff={diff:.3g}")
    if not same:
        differing = differing_parameters(fixture, export)
        print(f"{len(differing)} parameters differ:" if differing else "every parameter is identical")
        for line in differing[:40]:
            print(f"  {line}")
        n = int((got != want).sum())
        print(f"logits: FAILED export != fixture: {n} of {got.numel()} differ, max_abs_diff={diff:.3g}")
        sys.exit(1)

    # 3. fixture == expected.json, within atol
    rec = torch.tensor(expected["logits"], dtype=torch.float32).reshape(expected["logits_shape"])
    if list(rec.shape) != list(want.shape):
        print(f"logits: FAILED fixture shape {list(want.shape)} != expected.json shape {list(rec.shape)}")
        sys.exit(1)
    rdiff = float((want - rec).abs().max())
    print(f"fixture vs expected.json: max_abs_diff={rdiff:.3g} (atol {args.atol:g})")
    if not rdiff <= args.atol:
        print(f"logits: FAILED export == fixture, but fixture vs expected.json max_abs_diff={rdiff:.3g} > atol={args.atol:g}")
        sys.exit(1)
    print(f"logits: OK export == fixture ({got.numel()} identical); expected.json max_abs_diff={rdiff:.3g} <= {args.atol:g}")


if __name__ == "__main__":
    main()
