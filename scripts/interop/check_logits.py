"""Checks that transformers loads an HF checkpoint cleanly and gives the expected logits.

    python check_logits.py DIR EXPECTED_JSON [--atol 1e-5]

Loads DIR with NemotronHForCausalLM.from_pretrained(DIR, dtype=torch.float32) (output_loading_info),
runs expected["input_ids"] and compares with expected["logits"] (an expected.json written by
make_fixtures.py). Fails (exit 1) on any missing, unexpected or mismatched key, or when a logit
differs by more than --atol. Prints one line: "logits: OK max_abs_diff=..." or the problem.
"""

import argparse
import json
import sys

import torch
import transformers
from transformers import NemotronHForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("expected")
    ap.add_argument("--atol", type=float, default=1e-5)
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    with open(args.expected) as fh:
        expected = json.load(fh)
    model, info = NemotronHForCausalLM.from_pretrained(args.dir, dtype=torch.float32, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        print(f"logits: FAILED: from_pretrained({args.dir}) reported {problems}")
        sys.exit(1)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor(expected["input_ids"])).logits.to(torch.float32)
    want = torch.tensor(expected["logits"], dtype=torch.float32).reshape(expected["logits_shape"])
    if list(logits.shape) != list(want.shape):
        print(f"logits: FAILED: shape {list(logits.shape)}, expected {list(want.shape)}")
        sys.exit(1)
    diff = float((logits - want).abs().max())
    if not diff <= args.atol:
        print(f"logits: FAILED max_abs_diff={diff:.3g} > atol={args.atol:g}")
        sys.exit(1)
    print(f"logits: OK max_abs_diff={diff:.3g}")


if __name__ == "__main__":
    main()
