#!/usr/bin/env python3
"""The torch reference dequantization of a ModelOpt FP8 / NVFP4 Hugging Face checkpoint.

    dequant_reference.py QUANT_DIR OUT_DIR [--dtype bf16|f32]

Writes OUT_DIR as the plain checkpoint `nemoshard load --dequantize DTYPE` must describe: every
quantized weight dequantized, every quantization tensor (weight_scale, weight_scale_2,
input_scale, k_scale, v_scale) gone, config.json without its ModelOpt quantization_config, no
hf_quant_config.json, the other tensors unchanged; one model.safetensors.

A weight is FP8 when it is float8_e4m3fn with `weight_scale` beside it, NVFP4 when it is uint8
with a float8_e4m3fn `weight_scale` beside it. In f32, then one rounding to DTYPE:
  FP8    w.to(float32) * weight_scale
  NVFP4  e2m1[code] * (weight_scale.to(float32) * weight_scale_2)   (ModelOpt's NVFP4QTensor
         .dequantize multiplies the two scales first), code 2j the low nibble of byte j of a row,
         2j+1 the high one; e2m1 = [0, .5, 1, 1.5, 2, 3, 4, 6, -0, -.5, -1, -1.5, -2, -3, -4, -6];
         one block scale per 16 values of a row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

SCALE_KINDS = ("weight_scale", "weight_scale_2", "input_scale", "k_scale", "v_scale")
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                    dtype=torch.float32)


def fp8(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    assert scale.dtype == torch.float32 and scale.numel() == 1
    return w.to(torch.float32) * scale.reshape(())


def nvfp4(packed: torch.Tensor, block: torch.Tensor, scale2: torch.Tensor) -> torch.Tensor:
    out, half = packed.shape
    inner = 2 * half
    assert block.dtype == torch.float8_e4m3fn and tuple(block.shape) == (out, inner // 16)
    assert scale2.dtype == torch.float32 and scale2.numel() == 1
    codes = torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(out, inner).long()
    values = E2M1[codes]
    scale = block.to(torch.float32) * scale2.reshape(())
    return (values.reshape(out, inner // 16, 16) * scale.unsqueeze(-1)).reshape(out, inner)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("quant_dir")
    p.add_argument("out_dir")
    p.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    a = p.parse_args()
    to = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    src = {}
    for name in sorted(os.listdir(a.quant_dir)):
        if name.endswith(".safetensors"):
            src.update(load_file(os.path.join(a.quant_dir, name)))
    out, done = {}, 0
    for key, t in src.items():
        if key.rsplit(".", 1)[-1] in SCALE_KINDS:
            continue
        base = key[: -len("weight")] if key.endswith(".weight") else None
        scale = src.get(base + "weight_scale") if base else None
        if scale is not None and t.dtype == torch.float8_e4m3fn:
            out[key] = fp8(t, scale).to(to)
        elif scale is not None and t.dtype == torch.uint8 and scale.dtype == torch.float8_e4m3fn:
            out[key] = nvfp4(t, scale, src[base + "weight_scale_2"]).to(to)
        else:
            out[key] = t
            continue
        done += 1
    if not done:
        sys.exit(f"dequant_reference: {a.quant_dir} has no ModelOpt quantized weight")
    os.makedirs(a.out_dir, exist_ok=False)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(a.out_dir, "model.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(a.quant_dir, "config.json")) as f:
        config = json.load(f)
    config.pop("quantization_config", None)
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"{a.out_dir}: {done} weights dequantized to {a.dtype}, {len(out)} tensors")


if __name__ == "__main__":
    main()
