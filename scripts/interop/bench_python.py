"""Times what a user runs instead of nemoshard's in-memory `load`, on CPU, imports excluded.

    python bench_python.py transformers HF_DIR
    python bench_python.py nemo HF_DIR

transformers  `NemotronHForCausalLM.from_pretrained(HF_DIR, dtype=torch.bfloat16)`: transformers 5
              merges the per-expert weights into grouped expert tensors while it loads (without
              the transpose NeMo's layout needs). Checked, not only timed: no missing, unexpected or
              mismatched keys, and every MoE layer's experts grouped into one [n_experts, ...] tensor.
nemo          NeMo AutoModel 0.7.0: its own safetensors loader, then
              `NemotronV3StateDictAdapter.from_hf` as one rank of expert-parallel size 1 (the
              adapter built as nemo_reference.py builds it). Checked: the grouped expert tensors
              are there.

Both use torch's default threads (every core). Prints one JSON line: seconds, peak RSS (VmHWM),
versions and the grouped tensors found.
"""
import json
import os
import sys
import time

import torch


def peak_rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def grouped(named, experts):
    return [f"{n} {list(t.shape)}" for n, t in named if "experts" in n and t.dim() == 3 and t.shape[0] == experts]


def run_transformers(hf_dir, config):
    import transformers
    from transformers import NemotronHForCausalLM

    t0 = time.perf_counter()
    model, info = NemotronHForCausalLM.from_pretrained(hf_dir, dtype=torch.bfloat16, output_loading_info=True)
    seconds = time.perf_counter() - t0
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        sys.exit(f"bench_python: {hf_dir}: transformers did not load every tensor: {problems}")
    return seconds, grouped(model.named_parameters(), config["n_routed_experts"]), f"transformers {transformers.__version__}"


def run_nemo(hf_dir, config):
    threads = torch.get_num_threads()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import nemo_reference as ref  # sets one thread for its deterministic reference runs

    torch.set_num_threads(threads)
    ref.install_standin_dtensor_patch()
    t0 = time.perf_counter()
    adapter = ref.build_adapter(hf_dir, "transformers", "auto")
    hf = ref._load_hf_safetensors_checkpoint(hf_dir)
    out = adapter.from_hf(hf, device_mesh=None)
    seconds = time.perf_counter() - t0
    return seconds, grouped(out.items(), config["n_routed_experts"]), f"nemo-automodel {ref.NEMO_VERSION}"


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("transformers", "nemo"):
        sys.exit("usage: bench_python.py transformers|nemo HF_DIR")
    tool, hf_dir = sys.argv[1], sys.argv[2]
    with open(os.path.join(hf_dir, "config.json")) as f:
        config = json.load(f)
    seconds, tensors, version = (run_transformers if tool == "transformers" else run_nemo)(hf_dir, config)
    moe_layers = config["hybrid_override_pattern"].count("E")
    if len(tensors) < moe_layers:
        sys.exit(f"bench_python: {hf_dir}: {tool}: expected grouped experts in {moe_layers} MoE layers, found {tensors}")
    print(json.dumps({"seconds": seconds, "peak_rss": peak_rss_bytes(), "version": version, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "grouped_expert_tensors": tensors}))


main()
