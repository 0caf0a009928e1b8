"""Writes tiny Nemotron-H checkpoints with transformers itself (NemotronHForCausalLM.save_pretrained).

    python make_fixtures.py OUT_DIR

OUT_DIR/{moe,latent,dense}/ each get what save_pretrained writes (config.json, generation_config.json,
model-0000N-of-0000M.safetensors, model.safetensors.index.json) plus expected.json: the logits of the
saved checkpoint, re-loaded with NemotronHForCausalLM.from_pretrained(dir, dtype=torch.float32), on
input_ids [[1, 2, 3, 4, 5]]. OUT_DIR/fused/ is the moe model (the same bf16 weights) saved in
transformers' own layout, save_pretrained(save_original_format=False): stacked experts
model.layers.N.mixer.experts.up_proj [n, moe_inter, hidden] and down_proj [n, hidden, moe_inter],
`model.` keys; with its own expected.json. OUT_DIR/VERSIONS records the versions and the command line.

Every checkpoint is deterministic for fixed versions (fixed torch seed, one thread). Weights are saved
in bf16 the way a user gets them: the model is built in f32, saved, re-loaded with
from_pretrained(dtype=torch.bfloat16) (which keeps gate.weight and e_score_correction_bias in f32,
transformers' _keep_in_fp32_modules_strict) and saved again with a small max_shard_size.
"""

import json
import os
import platform
import shutil
import sys
import tempfile

import numpy as np
import safetensors
import torch
import transformers
from safetensors import safe_open
from transformers import NemotronHConfig, NemotronHForCausalLM

INPUT_IDS = [[1, 2, 3, 4, 5]]
MAX_SHARD_SIZE = "40KB"

COMMON = dict(
    vocab_size=128,
    hidden_size=32,
    tie_word_embeddings=False,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=64,
    intermediate_size=48,
    mamba_num_heads=4,
    mamba_head_dim=8,
    n_groups=2,
    ssm_state_size=8,
    conv_kernel=4,
    chunk_size=16,
    n_routed_experts=6,
    num_experts_per_tok=2,
    moe_intermediate_size=16,
    moe_shared_expert_intermediate_size=24,
    n_group=1,
    topk_group=1,
    routed_scaling_factor=2.5,
    norm_topk_prob=True,
    use_cache=False,
)

FIXTURES = {
    # mamba, moe, attention, moe, mlp, moe
    "moe": dict(layers_block_type=["linear_attention", "moe", "full_attention", "moe", "mlp", "moe"]),
    # Nemotron 3 Super style: experts work in moe_latent_size, the MoE block has fc1/fc2_latent_proj.
    "latent": dict(layers_block_type=["linear_attention", "moe", "full_attention", "moe"], moe_latent_size=16),
    # no MoE layer at all
    "dense": dict(layers_block_type=["linear_attention", "full_attention", "mlp", "linear_attention", "mlp"]),
}

# Fixtures saved in transformers' own layout (save_original_format=False) from another fixture's model.
FUSED = {"fused": "moe"}


def perturb(model, seed):
    """Adds small noise to every parameter and buffer so that no tensor is constant (norm weights,
    D, e_score_correction_bias, ... start as ones or zeros) and a swapped tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g, dtype=torch.float32).to(t.dtype) * 0.02)


def tensor_list(d):
    """[(file, key, dtype, shape)] of every tensor of every safetensors file in d, in file order."""
    out = []
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(d, f), "pt") as st:
                for k in st.keys():
                    sl = st.get_slice(k)
                    out.append((f, k, sl.get_dtype(), list(sl.get_shape())))
    return out


def logits_of(d, dtype=torch.float32):
    model, info = NemotronHForCausalLM.from_pretrained(d, dtype=dtype, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        sys.exit(f"{d}: from_pretrained reported {problems}")
    model.eval()
    with torch.no_grad():
        return model(torch.tensor(INPUT_IDS)).logits.to(torch.float32)


def write_expected(out):
    """expected.json of the checkpoint in out: its logits (f32 and bf16 loads) and its tensor list."""
    logits = logits_of(out, torch.float32)
    logits_bf16 = logits_of(out, torch.bfloat16)
    expected = {
        "input_ids": INPUT_IDS,
        "load": "NemotronHForCausalLM.from_pretrained(dir, dtype=torch.float32); model.eval(); torch.no_grad()",
        "logits_shape": list(logits.shape),
        # float32 values, exact: each is a float32 printed as the shortest decimal that reads back as that double
        "logits": [float(x) for x in logits.flatten().tolist()],
        # the same as float32 bit patterns, hex, row-major
        "logits_f32_hex": "".join(f"{v:08x}" for v in logits.flatten().numpy().view(np.uint32).tolist()),
        "logits_bf16_load_max_abs_diff": float((logits_bf16 - logits).abs().max()),
        "tensors": [{"file": f, "key": k, "dtype": dt, "shape": s} for f, k, dt, s in tensor_list(out)],
    }
    with open(os.path.join(out, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1)
        fh.write("\n")


def make(name, out_root, seed):
    torch.manual_seed(seed)
    config = NemotronHConfig(**COMMON, **FIXTURES[name])
    model = NemotronHForCausalLM(config)
    perturb(model, seed)
    out = os.path.join(out_root, name)
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        bf16, info = NemotronHForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16, output_loading_info=True)
        if any(info.values()):
            sys.exit(f"{name}: from_pretrained reported {info}")
        bf16.save_pretrained(out, max_shard_size=MAX_SHARD_SIZE)
        for fused, source in FUSED.items():
            if source == name:
                make_fused(bf16, os.path.join(out_root, fused))
    write_expected(out)
    return out


def make_fused(model, out):
    """model saved as transformers keeps it in memory (stacked experts), the way a user gets it with
    save_pretrained(save_original_format=False); its expected.json as for the other fixtures."""
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, max_shard_size=MAX_SHARD_SIZE, save_original_format=False)
    keys = [k for _, k, _, _ in tensor_list(out)]
    if not any(k.endswith(".mixer.experts.up_proj") for k in keys) or any(".experts.0." in k for k in keys):
        sys.exit(f"{out}: save_original_format=False did not write stacked experts: {keys}")
    write_expected(out)
    print(f"fused: {out}")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_fixtures.py OUT_DIR")
    out_root = sys.argv[1]
    os.makedirs(out_root, exist_ok=True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for i, name in enumerate(FIXTURES):
        d = make(name, out_root, seed=1234 + i)
        print(f"{name}: {d}")
    with open(os.path.join(out_root, "VERSIONS"), "w") as fh:
        fh.write(f"python {platform.python_version()}\n")
        fh.write(f"torch {torch.__version__}\n")
        fh.write(f"transformers {transformers.__version__}\n")
        fh.write(f"safetensors {safetensors.__version__}\n")
        fh.write(f"numpy {np.__version__}\n")
        fh.write("command: scripts/make-fixtures  (python scripts/interop/make_fixtures.py "
                 "Tests/NemoShardTests/Fixtures/transformers5)\n")


if __name__ == "__main__":
    main()
