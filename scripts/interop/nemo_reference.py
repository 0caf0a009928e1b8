#!/usr/bin/env python3
"""Run NeMo AutoModel 0.7.0's NemotronV3StateDictAdapter on CPU, as one rank of an expert-parallel mesh.

    nemo_reference.py from-hf HF_DIR --ep W --rank R [--dp D] --out OUT.safetensors
    nemo_reference.py from-hf HF_DIR --ep W --rank all --out 'DIR/rank-{rank}.safetensors'
    nemo_reference.py to-hf HF_DIR RANK_0.safetensors ... RANK_{W-1}.safetensors --out OUT.safetensors

from-hf  loads HF_DIR with 0.7.0's own loader (checkpointing._load_hf_safetensors_checkpoint) and runs
         adapter.from_hf(hf_state_dict, device_mesh=MESH) as global rank R of a world of D*W ranks laid
         out as 0.7.0's MoE mesh (ep_shard=D, ep=W), row-major: R's ep coordinate is R % W. As in 0.7.0
         (mesh_utils: `if ep_size > 1`), W == 1 passes device_mesh=None. The returned native state dict
         (DTensors made local) is written to OUT.safetensors with one metadata entry `nemo_reference`
         (JSON: mesh, rank, experts, whether the source used the `model.` prefix, which to-hf needs).
to-hf    takes the W per-rank files in ep-rank order (this script's from-hf outputs of ranks 0..W-1;
         for dp > 1 one replica), or one nemoshard per-rank directory (each rank's file completed with
         the non-expert tensors nemoshard writes once, on their holder rank), runs adapter.to_hf as
         0.7.0's Checkpointer.save_model does (exclude_key_regex=r".*_extra_state.*", then contiguous), and
         writes the HF tensors to OUT.safetensors. --export-dtypes original (default) also applies the
         consolidation step's dtype mapping, as a consolidated export of a model loaded from HF_DIR:
         each key gets its dtype in HF_DIR's headers, except the adapter's forced_hf_dtype_mapping
         (F32 for Mamba A_log/D/dt_bias and e_score_correction_bias); `forced` applies only the forced
         mapping (a config-only run), `none` writes to_hf's dtypes as they are.

Meshes (--mesh):
  standin (default)  no torch.distributed: from-hf gets a tiny object with the DeviceMesh methods the
                     adapter calls (mesh_dim_names, [dims], size(), get_local_rank(), get_rank()), and
                     state_dict_mixin.create_dtensor_from_local is replaced by "return the local tensor"
                     (the only patch). to-hf concatenates the ranks' grouped expert tensors along the
                     expert axis and runs to_hf once on plain tensors (0.7.0's device_mesh=None path;
                     its per-expert slices are the same as each rank's DTensor path).
  dtensor            torch.distributed's in-process "fake" backend (no communication, one process):
                     from-hf gets a real DeviceMesh and runs unpatched; to-hf runs to_hf once per rank on
                     real Shard(0) DTensors and takes the union, as every rank does before DCP writes.
                     A cross-check of the stand-in: both must give the same bytes.

Config (--config-class): `transformers` (default) reads HF_DIR/config.json with transformers' own
NemotronHConfig, as 0.7.0 does without remote code; `json` uses the raw JSON (a remote-code config
without defaults: a dense config without n_routed_experts then gets moe_config=None). The MoEConfig
and the adapter dtype are built as NemotronV3Model / NemotronV3ForCausalLM build them (model.py
lines 110-146 and 443-481). --dtype overrides the adapter dtype (default: config torch_dtype, bf16).

Deterministic: one thread, no randomness; safetensors writes keys sorted. Exit 0 on success.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import types

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

try:
    import nemo_automodel  # noqa: F401
    import torch
except ImportError as e:
    sys.exit(f"nemo_reference: {e}; run it with the python that scripts/interop-venv prints")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(1)

import importlib.metadata as _md  # noqa: E402


import nemo_automodel.components.moe.state_dict_mixin as sd_mixin  # noqa: E402
from nemo_automodel.components.checkpoint._backports.consolidate_hf_safetensors import (  # noqa: E402
    _resolve_output_dtype,
)
from nemo_automodel.components.checkpoint._backports.hf_storage import get_fqn_to_dtype_mapping  # noqa: E402
from nemo_automodel.components.checkpoint.checkpointing import (  # noqa: E402
    _load_hf_safetensors_checkpoint,
    _materialize_to_hf_views_for_save,
)
from nemo_automodel.components.models.common import BackendConfig  # noqa: E402
from nemo_automodel.components.models.nemotron_v3.state_dict_adapter import NemotronV3StateDictAdapter  # noqa: E402
from nemo_automodel.components.moe.config import MoEConfig  # noqa: E402
from nemo_automodel.shared.utils import dtype_from_str  # noqa: E402

NEMO_VERSION = _md.version("nemo-automodel")
GROUPED_SUFFIXES = (".experts.gate_and_up_projs", ".experts.down_projs")
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
ST_DTYPE = {
    torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.float64: "F64",
    torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


def die(msg: str) -> None:
    print(f"nemo_reference: {msg}", file=sys.stderr)
    sys.exit(2)


# ----------------------------------------------------------------------------- config / adapter
def load_config(hf_dir: str, config_class: str):
    if config_class == "transformers":
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(hf_dir)
    with open(os.path.join(hf_dir, "config.json")) as f:
        raw = json.load(f)
    if "torch_dtype" not in raw and "dtype" in raw:
        raw["torch_dtype"] = raw["dtype"]
    if "num_hidden_layers" not in raw:
        blocks = raw.get("layers_block_type") or raw.get("hybrid_override_pattern") or ""
        raw["num_hidden_layers"] = len(blocks)
    return types.SimpleNamespace(**raw)


def build_moe_config(config) -> MoEConfig | None:
    """NemotronV3Model.__init__ (nemotron_v3/model.py:110-146), verbatim decision and fields.

    Only n_routed_experts, moe_inter_dim, expert_activation, expert_bias and dim reach the adapter;
    the routing fields fall back to NemotronHConfig's defaults when a raw JSON config lacks them."""
    layer_block_types = getattr(config, "layers_block_type", None) or []
    has_moe = "moe" in layer_block_types or getattr(config, "n_routed_experts", None) is not None
    if not has_moe:
        return None
    g = lambda name, default: getattr(config, name, default)  # noqa: E731
    return MoEConfig(
        n_routed_experts=config.n_routed_experts,
        n_shared_experts=1,
        n_activated_experts=g("num_experts_per_tok", 1),
        n_expert_groups=g("n_group", 1),
        n_limited_groups=g("topk_group", 1),
        train_gate=True,
        gate_bias_update_factor=0.0,
        aux_loss_coeff=0.0,
        score_func="sigmoid",
        route_scale=g("routed_scaling_factor", 1.0),
        dim=config.hidden_size,
        inter_dim=g("intermediate_size", 0),
        moe_inter_dim=config.moe_intermediate_size,
        norm_topk_prob=g("norm_topk_prob", True),
        router_bias=False,
        expert_bias=g("mlp_bias", False),
        expert_activation="relu2",
        dtype=g("torch_dtype", None),
        shared_expert_gate=False,
        shared_expert_inter_dim=g("moe_shared_expert_intermediate_size", None),
        shared_expert_activation="relu2",
        force_e_score_correction_bias=True,
        moe_latent_size=g("moe_latent_size", None),
    )


def build_adapter(hf_dir: str, config_class: str, dtype: str) -> NemotronV3StateDictAdapter:
    config = load_config(hf_dir, config_class)
    if dtype == "auto":  # NemotronV3ForCausalLM: dtype = get_dtype(config.torch_dtype, torch.bfloat16)
        adapter_dtype = dtype_from_str(getattr(config, "torch_dtype", None), torch.bfloat16)
    else:
        adapter_dtype = DTYPES[dtype]
    return NemotronV3StateDictAdapter(
        config=config, moe_config=build_moe_config(config), backend=BackendConfig(), dtype=adapter_dtype
    )


# ----------------------------------------------------------------------------- meshes
class StandInMesh:
    """What the adapter calls on a DeviceMesh: mesh_dim_names, mesh[dims], size(), get_local_rank(),
    get_rank(). Row-major like torch's DeviceMesh; `rank` is the global rank."""

    def __init__(self, names: tuple[str, ...], shape: tuple[int, ...], rank: int):
        self.mesh_dim_names = names
        self._shape = shape
        self._rank = rank
        coords, rest = [], rank
        for size in reversed(shape):
            coords.append(rest % size)
            rest //= size
        self._coords = tuple(reversed(coords))

    def __getitem__(self, dims):
        dims = (dims,) if isinstance(dims, str) else tuple(dims)
        idx = [self.mesh_dim_names.index(d) for d in dims]
        sub = StandInMesh(dims, tuple(self._shape[i] for i in idx), 0)
        sub._coords = tuple(self._coords[i] for i in idx)
        sub._rank = self._rank
        return sub

    def size(self, dim: int | None = None) -> int:
        if dim is not None:
            return self._shape[dim]
        n = 1
        for s in self._shape:
            n *= s
        return n

    def get_local_rank(self, mesh_dim=None) -> int:
        if mesh_dim is None:
            if len(self._shape) != 1:
                raise RuntimeError("get_local_rank() needs mesh_dim on a multi-dimensional mesh")
            return self._coords[0]
        if isinstance(mesh_dim, str):
            mesh_dim = self.mesh_dim_names.index(mesh_dim)
        return self._coords[mesh_dim]

    def get_rank(self) -> int:
        return self._rank


def install_standin_dtensor_patch() -> None:
    # state_dict_mixin imported create_dtensor_from_local by name; it wraps each merged grouped tensor
    # in DTensor.from_local(local, moe_mesh, [Shard(1) on ep_shard if sharded, Shard(0) on ep]). The
    # stand-in keeps the local tensor, which is what to_local() of that DTensor returns.
    sd_mixin.create_dtensor_from_local = lambda local_tensor, device_mesh, rank=None: local_tensor


def fake_pg(rank: int, world: int) -> None:
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        dist.destroy_process_group()
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world)


def moe_mesh(kind: str, ep: int, dp: int, rank: int):
    """0.7.0's moe_mesh (mesh_utils._create_moe_mesh, pp=1): shape (ep_shard=dp, ep), None when ep == 1."""
    if ep == 1:
        return None
    if kind == "standin":
        return StandInMesh(("ep_shard", "ep"), (dp, ep), rank)
    from torch.distributed.device_mesh import init_device_mesh

    fake_pg(rank, dp * ep)
    return init_device_mesh("cpu", (dp, ep), mesh_dim_names=("ep_shard", "ep"))


def expert_range(n: int, ep: int, r: int) -> tuple[int, int]:
    # state_dict_utils.get_expert_range_for_rank_from_mesh
    per, rem = divmod(n, ep)
    if r < rem:
        start = r * (per + 1)
        return start, start + per + 1
    start = r * per + rem
    return start, start + per


def uses_model_prefix(keys) -> bool:
    # NemotronV3StateDictAdapter.from_hf, state_dict_adapter.py:259-268 (non-mtp keys, skip LoRA).
    for key in keys:
        if key.startswith("mtp."):
            continue
        if any(part.startswith("lora_") for part in key.split(".")):
            continue
        bare = key.removeprefix("base_model.model.")
        if bare.startswith("backbone."):
            return False
        if bare.startswith("model."):
            return True
    return False


def to_local(value):
    from torch.distributed.tensor import DTensor

    return value.to_local() if isinstance(value, DTensor) else value


def save(tensors: dict, out: str, metadata: dict) -> None:
    plain = {}
    for key in sorted(tensors):
        t = to_local(tensors[key])
        if not isinstance(t, torch.Tensor):
            die(f"{key}: not a tensor ({type(t).__name__})")
        # clone: safetensors refuses tensors that share storage (mmap-backed inputs are fine, but
        # views of one grouped tensor would not be).
        plain[key] = t.detach().contiguous().clone()
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    # One metadata entry (JSON, sorted keys): safetensors writes several in a random order.
    info = json.dumps({k: str(v) for k, v in metadata.items()}, sort_keys=True)
    save_file(plain, out, metadata={"nemo_reference": info})


def reference_info(meta: dict) -> dict:
    try:
        return json.loads(meta.get("nemo_reference", "{}"))
    except ValueError:
        return {}


# ----------------------------------------------------------------------------- from_hf
def cmd_from_hf(a) -> None:
    world = a.ep * a.dp
    if a.ep < 1 or a.dp < 1:
        die("--ep and --dp must be >= 1")
    if a.rank == "all":
        if "{rank}" not in a.out:
            die("--rank all needs {rank} in --out, e.g. --out DIR/rank-{rank}.safetensors")
        ranks = list(range(world))
    else:
        ranks = [int(a.rank)]
        if not 0 <= ranks[0] < world:
            die(f"--rank {a.rank} outside a world of dp={a.dp} x ep={a.ep}")
    if a.mesh == "standin":
        install_standin_dtensor_patch()
    for rank in ranks:
        # A fresh adapter and a fresh load per rank, as each process would have (from_hf pops its input).
        adapter = build_adapter(a.hf_dir, a.config_class, a.dtype)
        mesh = moe_mesh(a.mesh, a.ep, a.dp, rank)
        hf = _load_hf_safetensors_checkpoint(a.hf_dir)
        if hf is None:
            die(f"no safetensors checkpoint in {a.hf_dir}")
        out = adapter.from_hf(hf, device_mesh=mesh)
        ep_rank = rank % a.ep
        meta = {
            "adapter": f"nemo-automodel {NEMO_VERSION} NemotronV3StateDictAdapter.from_hf",
            "mesh": f"ep_shard={a.dp},ep={a.ep}" + (" (device_mesh=None)" if mesh is None else ""),
            "rank": rank,
            "ep_rank": ep_rank,
            "uses_model_prefix": "true" if adapter._uses_model_prefix else "false",
            "adapter_dtype": str(adapter.dtype),
            "moe_config": "none" if adapter.moe_config is None else "yes",
        }
        if adapter.moe_config is not None:
            start, end = expert_range(adapter.moe_config.n_routed_experts, a.ep, ep_rank)
            meta["experts"] = f"{start},{end}"
        path = a.out.replace("{rank}", str(rank))
        save(out, path, meta)
        print(f"nemo_reference: from_hf rank {rank} (ep {ep_rank}/{a.ep}, dp {a.dp}): {len(out)} tensors -> {path}")


# ----------------------------------------------------------------------------- to_hf
def read_rank_file(path: str) -> tuple[dict, dict]:
    tensors = {}
    with safe_open(path, framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    return tensors, meta


def raw_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (NaNs with equal bits compare equal)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(raw_bytes(a), raw_bytes(b))


def union_into(dst: dict, src: dict, where: str) -> None:
    for key, value in src.items():
        if key in dst:
            if not same(dst[key], value):
                die(f"{key}: ranks disagree ({where})")
        else:
            dst[key] = value


def read_nemoshard_dir(directory: str) -> tuple[list[tuple[dict, dict]], list[str]]:
    """The ep ranks' whole state dicts from a nemoshard per-rank directory: each rank file plus the
    non-expert tensors written once by their holder rank (nemoshard.json). With a dp x ep mesh the
    first replica (dp coordinate 0: ranks 0..ep-1, the mesh being row-major with ep last)."""
    with open(os.path.join(directory, "nemoshard.json")) as f:
        manifest = json.load(f)
    names, shape = manifest["mesh"]["names"], manifest["mesh"]["shape"]
    if names[-1] != "ep":
        die(f"{directory}: mesh {names} does not end with ep")
    files = {r["rank"]: os.path.join(directory, r["file"]) for r in manifest["ranks"]}
    tensors_by_rank = {r: read_rank_file(files[r])[0] for r in range(shape[-1])}
    for t in manifest["tensors"]:
        if t.get("expert_sharded"):
            continue
        holder = t["holder"]
        if holder not in tensors_by_rank:
            tensors_by_rank[holder] = read_rank_file(files[holder])[0]
        value = tensors_by_rank[holder][t["name"]]
        for r in range(shape[-1]):
            tensors_by_rank[r].setdefault(t["name"], value)
    return [(tensors_by_rank[r], {}) for r in range(shape[-1])], [files[r] for r in range(shape[-1])]


def cmd_to_hf(a) -> None:
    adapter = build_adapter(a.hf_dir, a.config_class, a.dtype)
    if len(a.rank_files) == 1 and os.path.isfile(os.path.join(a.rank_files[0], "nemoshard.json")):
        ranks, a.rank_files = read_nemoshard_dir(a.rank_files[0])
    else:
        ranks = [read_rank_file(p) for p in a.rank_files]
    W = len(ranks)
    for i, (_, meta) in enumerate(ranks):
        info = reference_info(meta)
        m = re.search(r"\bep=(\d+)", info.get("mesh", ""))
        if m and int(m.group(1)) != W:
            die(f"{a.rank_files[i]} is a rank of an ep={m.group(1)} mesh; pass all {m.group(1)} rank files, not {W}")
        if "ep_rank" in info and int(info["ep_rank"]) != i:
            die(f"{a.rank_files[i]} is ep rank {info['ep_rank']}; pass the files in ep-rank order (0..{W - 1})")
    if a.hf_prefix != "auto":
        adapter._uses_model_prefix = a.hf_prefix == "model"
    else:
        flag = reference_info(ranks[0][1]).get("uses_model_prefix")
        if flag is not None:
            adapter._uses_model_prefix = flag == "true"
        else:  # not one of our files: the same detection from_hf runs, on HF_DIR's keys
            hf_keys = []
            index = os.path.join(a.hf_dir, "model.safetensors.index.json")
            if os.path.isfile(index):
                with open(index) as f:
                    hf_keys = list(json.load(f)["weight_map"])
            else:
                for name in sorted(os.listdir(a.hf_dir)):
                    if name.endswith(".safetensors"):
                        with safe_open(os.path.join(a.hf_dir, name), framework="pt") as f:
                            hf_keys += list(f.keys())
            adapter._uses_model_prefix = uses_model_prefix(hf_keys)
    kwargs = dict(exclude_key_regex=a.exclude, quantization=False, v4_compatible=False)
    kwargs["legacy_paramwrapper_layout"] = False
    hf: dict = {}
    if a.mesh == "standin":
        state: dict = {}
        keys = sorted(set().union(*[r[0].keys() for r in ranks]))
        for key in keys:
            present = [r[0][key] for r in ranks if key in r[0]]
            if len(present) != W:
                die(f"{key}: in {len(present)} of {W} rank files")
            if key.endswith(GROUPED_SUFFIXES) and W > 1:
                state[key] = torch.cat(present, dim=0)
            else:
                for other in present[1:]:
                    if not same(present[0], other):
                        die(f"{key}: not expert-sharded, yet the rank files differ")
                state[key] = present[0]
        hf = adapter.to_hf(state, **kwargs)
    else:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import DTensor, Shard

        for r, (tensors, _) in enumerate(ranks):
            state = {}
            mesh = None
            if W > 1:
                fake_pg(r, W)
                mesh = init_device_mesh("cpu", (1, W), mesh_dim_names=("ep_shard", "ep"))["ep"]
            for key, value in tensors.items():
                if key.endswith(GROUPED_SUFFIXES) and mesh is not None:
                    n = adapter.moe_config.n_routed_experts
                    shape = torch.Size([n, *value.shape[1:]])
                    stride = torch.empty(shape, device="meta").stride()
                    state[key] = DTensor.from_local(value, mesh, [Shard(0)], shape=shape, stride=stride)
                else:
                    state[key] = value
            union_into(hf, {k: to_local(v) for k, v in adapter.to_hf(state, **kwargs).items()}, f"rank {r}")
    _materialize_to_hf_views_for_save(hf)

    mapping: dict = {}
    if a.export_dtypes == "original":
        # Checkpointer._maybe_build_original_dtype_mapping with HF_DIR as the cached reference snapshot
        original = get_fqn_to_dtype_mapping(a.hf_dir, None)
        mapping = {k: v for k, v in original.items() if k in hf}
    if a.export_dtypes in ("original", "forced"):
        for fqn, dtype_str in adapter.forced_hf_dtype_mapping(hf).items():  # _apply_adapter_forced_dtype_mapping
            if fqn in hf:
                mapping[fqn] = dtype_str
    if mapping:
        for key in list(hf):
            t = hf[key]
            src = ST_DTYPE[t.dtype]
            out_dtype, out_str = _resolve_output_dtype(key, src, None, mapping)
            if out_str != src:
                hf[key] = t.to(dtype=out_dtype).contiguous()
    meta = {
        "adapter": f"nemo-automodel {NEMO_VERSION} NemotronV3StateDictAdapter.to_hf",
        "ranks": W,
        "mesh": a.mesh,
        "export_dtypes": a.export_dtypes,
        "hf_prefix": adapter._hf_prefix,
    }
    save(hf, a.out, meta)
    print(f"nemo_reference: to_hf of {W} ranks: {len(hf)} tensors -> {a.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config-class", choices=("transformers", "json"), default="transformers")
    common.add_argument("--dtype", choices=("auto", *DTYPES), default="auto", help="adapter dtype (auto: config torch_dtype)")
    common.add_argument("--out", required=True)

    f = sub.add_parser("from-hf", parents=[common], help="adapter.from_hf as one rank")
    f.add_argument("hf_dir")
    f.add_argument("--ep", type=int, required=True)
    f.add_argument(
        "--rank",
        required=True,
        help="global rank in [0, dp*ep) (its ep coordinate is rank %% ep), or `all` with {rank} in --out",
    )
    f.add_argument("--dp", type=int, default=1, help="ep_shard size of the MoE mesh (replicas of each expert range)")
    f.add_argument("--mesh", choices=("standin", "dtensor"), default="standin")
    f.set_defaults(fn=cmd_from_hf)

    t = sub.add_parser("to-hf", parents=[common], help="adapter.to_hf of all ranks' files")
    t.add_argument("hf_dir", help="the source HF checkpoint (config.json, original dtypes, prefix)")
    t.add_argument(
        "rank_files", nargs="+", help="per-rank files in ep-rank order, or one nemoshard per-rank directory"
    )
    t.add_argument("--mesh", choices=("standin", "dtensor"), default="standin")
    t.add_argument("--export-dtypes", choices=("original", "forced", "none"), default="original")
    t.add_argument("--exclude", default=r".*_extra_state.*", help="exclude_key_regex (default as save_model)")
    t.add_argument("--hf-prefix", choices=("auto", "model", "backbone"), default="auto")
    t.set_defaults(fn=cmd_to_hf)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
