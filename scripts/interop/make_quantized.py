#!/usr/bin/env python3
"""Write a BF16 Nemotron-H checkpoint in NVIDIA ModelOpt's quantized Hugging Face layout.

    make_quantized.py BF16_DIR OUT_DIR --format fp8|nvfp4

Quantized: every 2-D weight of the linear layers (routed and shared experts, Mamba in_proj/out_proj,
attention q/k/v/o_proj, MLP up/down_proj); not embeddings, lm_head, the router gate, norms, conv1d.
NVFP4 needs whole blocks of 16 values per row: a weight whose rows are not is left in BF16 (as
ModelOpt's exclude list leaves layers in higher precision).

fp8    `X.weight` F8_E4M3 = (w / s).to(float8_e4m3fn) with s = amax(|w|) / 448 (F32 scalar
       `X.weight_scale`, ModelOpt's per-tensor FP8), `X.input_scale` an F32 scalar.
nvfp4  `X.weight` U8 [out, in/2]: e2m1 codes, element 2j in the low nibble, 2j+1 in the high one;
       `X.weight_scale` F8_E4M3 [out, in/16] = (block amax / 6 / s2).to(float8_e4m3fn);
       `X.weight_scale_2` F32 scalar s2 = amax(|w|) / (6 * 448); `X.input_scale` F32 scalar.
Both: attention `k_proj.k_scale` / `v_proj.v_scale` (F32 scalars, an FP8 KV cache), config.json
`quantization_config` {quant_method: modelopt, quant_algo, kv_cache_quant_algo[, group_size]} and
ModelOpt's `hf_quant_config.json`. Weights go to model-00001-of-00002.safetensors, every
quantization tensor to model-00002-of-00002.safetensors (a reader must find scales in another
file than their weight), with an index. Other small files of BF16_DIR are copied.

The scales are "known": each is a plain function of the BF16 weights above, and every value the
reference must reproduce is in the files (dequant_reference.py reads nothing else). Deterministic.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

E4M3_MAX = 448.0
E2M1_MAX = 6.0
# Positive e2m1 magnitudes by code 0..7; code | 8 is the negative value.
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
QUANTIZED_SUFFIXES = (
    ".up_proj.weight", ".down_proj.weight", ".in_proj.weight", ".out_proj.weight",
    ".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".o_proj.weight",
)


def read_checkpoint(d: str) -> dict:
    out = {}
    for name in sorted(os.listdir(d)):
        if name.endswith(".safetensors"):
            out.update(load_file(os.path.join(d, name)))
    if not out:
        sys.exit(f"make_quantized: no safetensors in {d}")
    return out


def quantizable(key: str, t: torch.Tensor) -> bool:
    return t.dim() == 2 and key.endswith(QUANTIZED_SUFFIXES)


def fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = w.float()
    scale = (w.abs().max() / E4M3_MAX).reshape(())
    q = (w / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def e2m1_codes(x: torch.Tensor) -> torch.Tensor:
    """Nearest e2m1 code of each value (ties to the lower magnitude), sign in bit 3."""
    mag = x.abs().clamp(max=E2M1_MAX)
    code = (mag.unsqueeze(-1) - E2M1).abs().argmin(dim=-1).to(torch.uint8)
    return code | ((x < 0).to(torch.uint8) << 3)


def nvfp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    w = w.float()
    out, inner = w.shape
    s2 = (w.abs().max() / (E2M1_MAX * E4M3_MAX)).reshape(())
    blocks = w.reshape(out, inner // 16, 16)
    block_scale = (blocks.abs().amax(dim=-1) / E2M1_MAX / s2).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)
    scale = block_scale.float() * s2
    codes = e2m1_codes(blocks / torch.where(scale == 0, torch.ones_like(scale), scale).unsqueeze(-1)).reshape(out, inner)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return packed.contiguous(), block_scale, s2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bf16_dir")
    p.add_argument("out_dir")
    p.add_argument("--format", choices=["fp8", "nvfp4"], required=True)
    a = p.parse_args()
    tensors = read_checkpoint(a.bf16_dir)
    weights, scales = {}, {}
    quantized = 0
    for key, t in tensors.items():
        base = key[: -len("weight")]
        if not quantizable(key, t) or (a.format == "nvfp4" and t.shape[1] % 16):
            weights[key] = t
            continue
        quantized += 1
        if a.format == "fp8":
            weights[key], scales[base + "weight_scale"] = fp8(t)
        else:
            weights[key], scales[base + "weight_scale"], scales[base + "weight_scale_2"] = nvfp4(t)
        # A calibrated activation scale: some F32 value (it is dropped when dequantizing).
        scales[base + "input_scale"] = (t.float().abs().mean() / E4M3_MAX).reshape(())
        if key.endswith((".k_proj.weight", ".v_proj.weight")):
            which = "k_scale" if ".k_proj." in key else "v_scale"
            scales[base + which] = torch.tensor(1.0 + quantized / 64, dtype=torch.float32)
    os.makedirs(a.out_dir, exist_ok=False)
    files = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    save_file(weights, os.path.join(a.out_dir, files[0]), metadata={"format": "pt"})
    save_file(scales, os.path.join(a.out_dir, files[1]), metadata={"format": "pt"})
    weight_map = {k: files[0] for k in weights} | {k: files[1] for k in scales}
    total = sum(t.numel() * t.element_size() for t in list(weights.values()) + list(scales.values()))
    with open(os.path.join(a.out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    algo = "FP8" if a.format == "fp8" else "NVFP4"
    quant = {"quant_algo": algo, "kv_cache_quant_algo": "FP8"}
    if a.format == "nvfp4":
        quant["group_size"] = 16
    with open(os.path.join(a.bf16_dir, "config.json")) as f:
        config = json.load(f)
    config["quantization_config"] = {"quant_method": "modelopt", **quant}
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(a.out_dir, "hf_quant_config.json"), "w") as f:
        json.dump({"producer": {"name": "modelopt", "version": "0.39.0"},
                   "quantization": {**quant, "exclude_modules": ["lm_head"]}}, f, indent=2)
    for name in sorted(os.listdir(a.bf16_dir)):
        src = os.path.join(a.bf16_dir, name)
        if os.path.isfile(src) and not name.endswith(".safetensors") and name not in (
                "config.json", "model.safetensors.index.json"):
            shutil.copyfile(src, os.path.join(a.out_dir, name))
    print(f"{a.out_dir}: {algo}, {quantized} quantized weights, {len(scales)} quantization tensors")


if __name__ == "__main__":
    main()
