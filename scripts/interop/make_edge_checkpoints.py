#!/usr/bin/env python3
"""Small HF checkpoints that exercise the corners of NeMo AutoModel 0.7.0's NemotronV3StateDictAdapter.

    make_edge_checkpoints.py SRC OUT_DIR CASE [CASE ...]

SRC is an HF checkpoint with routed experts (e.g. Tests/NemoShardTests/Fixtures/transformers5/moe);
each CASE becomes OUT_DIR/CASE (config.json + one model.safetensors), SRC's tensors changed as below.
Deterministic (seeded values). Used by scripts/interop/nemo_reference_matrix --edge; what 0.7.0 does
with each is in docs/nemo-0.7-rules.md.
  peft              every key under `base_model.model.` (a PEFT-wrapped base checkpoint)
  embedding         the embedding named `backbone.embedding.weight` (singular, as save_pretrained)
  embed_tokens      the embedding named `backbone.embed_tokens.weight`
  scale_inv         extra `_scale_inv` keys: a non-expert one, an expert one, one on the gate
  gate_proj         gate_proj weights for every expert of layer 1 (ReLU^2 experts are not gated),
                    an expert `up_proj.bias` and an expert-looking key that is no expert
  fp32_config       config torch_dtype float32 (the adapter's grouped-expert dtype follows it)
  truncate          config num_hidden_layers 3 and a 3-entry layers_block_type; the tensors of
                    the layers after stay in the checkpoint
  lora_v4           per-expert PEFT LoRA keys `...experts.E.{up,down}_proj.lora_{A,B}.weight`
                    (all experts of layer 1) and one attention LoRA key
  lora_v5           PEFT ParamWrapper expert LoRA keys `...mixer.experts.[base_layer.]lora_{A,B}.weight`
                    (peft >= 0.19.1 layout) under base_model.model.model.
  bf16_bias_f32_alog  e_score_correction_bias stored BF16 and A_log stored F32
  dense_no_moe_config  config without any MoE field (a remote-code dense config: the adapter
                    then gets moe_config=None; run nemo_reference.py with --config-class json)
                    plus a non-expert `_scale_inv` key; meant for a SRC without routed experts
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

CASES = (
    "peft embedding embed_tokens scale_inv gate_proj fp32_config truncate lora_v4 lora_v5 "
    "bf16_bias_f32_alog dense_no_moe_config"
).split()


def load(src: str) -> tuple[dict, dict]:
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    sd: dict[str, torch.Tensor] = {}
    for name in sorted(os.listdir(src)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(src, name), framework="pt") as f:
                for key in f.keys():
                    sd[key] = f.get_tensor(key)
    return cfg, sd


def make(src: str, out: str, case: str) -> None:
    cfg, sd = load(src)
    g = torch.Generator().manual_seed(1)
    rnd = lambda *shape: torch.randn(*shape, generator=g).to(torch.bfloat16)  # noqa: E731
    E, H, I = cfg.get("n_routed_experts"), cfg["hidden_size"], cfg.get("moe_intermediate_size")
    prefix = "model." if any(k.startswith("model.") for k in sd) else "backbone."
    moe_layer = next(
        (int(k.split(".")[2]) for k in sorted(sd) if k.startswith(prefix + "layers.") and ".mixer.experts." in k), None
    )
    needs_experts = case in ("gate_proj", "lora_v4", "lora_v5", "scale_inv")
    if needs_experts and moe_layer is None:
        sys.exit(f"make_edge_checkpoints: {case} needs a SRC with routed experts")
    L = f"{prefix}layers.{moe_layer}."
    if case == "peft":
        sd = {"base_model.model." + k: v for k, v in sd.items()}
    elif case in ("embedding", "embed_tokens"):
        old = next(k for k in sd if k.endswith((".embeddings.weight", ".embed_tokens.weight", ".embedding.weight")))
        sd[f"{prefix}{'embedding' if case == 'embedding' else 'embed_tokens'}.weight"] = sd.pop(old)
    elif case == "scale_inv":
        sd[f"{prefix}layers.0.mixer.in_proj.weight_scale_inv"] = torch.ones(4, 1)
        sd[L + "mixer.experts.0.up_proj.weight_scale_inv"] = torch.ones(2, 1)
        sd[L + "mixer.gate.weight_scale_inv"] = torch.ones(1)
    elif case == "gate_proj":
        for e in range(E):
            sd[L + f"mixer.experts.{e}.gate_proj.weight"] = rnd(I, H)
        sd[L + "mixer.experts.0.up_proj.bias"] = rnd(I)
        sd[L + "mixer.experts.extra.weight"] = rnd(3)
    elif case == "fp32_config":
        cfg["torch_dtype"] = cfg["dtype"] = "float32"
    elif case == "truncate":
        if "layers_block_type" in cfg:
            cfg["layers_block_type"] = cfg["layers_block_type"][:3]
        if "hybrid_override_pattern" in cfg:
            cfg["hybrid_override_pattern"] = cfg["hybrid_override_pattern"][:3]
        cfg["num_hidden_layers"] = 3
    elif case == "lora_v4":
        r = 2
        for e in range(E):
            for proj, (fan_in, fan_out) in {"up_proj": (H, I), "down_proj": (I, H)}.items():
                base = f"base_model.model.{L}mixer.experts.{e}.{proj}."
                sd[base + "lora_A.weight"] = rnd(r, fan_in)
                sd[base + "lora_B.weight"] = rnd(fan_out, r)
        sd[f"base_model.model.{prefix}layers.{moe_layer + 1}.mixer.q_proj.lora_A.weight"] = rnd(r, H)
    elif case == "lora_v5":
        r = 2
        base = f"base_model.model.model.layers.{moe_layer}.mixer.experts."
        sd[base + "lora_A.weight"] = rnd(r * E, I)
        sd[base + "lora_B.weight"] = rnd(H, r * E)
        sd[base + "base_layer.lora_A.weight"] = rnd(r * E, H)
        sd[base + "base_layer.lora_B.weight"] = rnd(I, r * E)
    elif case == "bf16_bias_f32_alog":
        for k in sd:
            if k.endswith("e_score_correction_bias"):
                sd[k] = sd[k].to(torch.bfloat16)
            elif k.endswith(".A_log"):
                sd[k] = sd[k].to(torch.float32)
    elif case == "dense_no_moe_config":
        sd[f"{prefix}layers.0.mixer.in_proj.weight_scale_inv"] = torch.ones(4, 1)
        for k in list(cfg):
            if k.startswith(("n_routed", "moe_", "n_shared")) or k in ("num_experts_per_tok",):
                cfg.pop(k)
    else:
        sys.exit(f"make_edge_checkpoints: unknown case {case} (cases: {' '.join(CASES)})")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(out, "model.safetensors"))
    print(f"{out}: {len(sd)} tensors")


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    src, out_dir, cases = sys.argv[1], sys.argv[2], sys.argv[3:]
    for case in cases:
        make(src, os.path.join(out_dir, case), case)


if __name__ == "__main__":
    main()
