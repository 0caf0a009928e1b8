"""Writes a torch.distributed.checkpoint (DCP) checkpoint in the Hugging Face safetensors layout from
2 CPU processes, torch's consolidation of it, and a hand-made per-rank directory that DCP reads.

    python make_dcp.py OUT_DIR
    python make_dcp.py --from-hf HF_DIR OUT_DIR

With --from-hf, the checkpoint is HF_DIR's (a save_pretrained directory) instead, laid out as a
training run keeps it: OUT_DIR/dcp/ holds the shard files dcp.save writes from 2 gloo ranks (every
tensor a DTensor: Shard(0) where dim 0 has at least 2 rows, so uneven splits occur, else Replicate;
output file indices from HF_DIR's index), and OUT_DIR/ itself, the DCP directory's parent, gets
HF_DIR's config.json and generation_config.json. It checks that dcp.load reads the shards back equal
to HF_DIR's tensors and prints the files written.

OUT_DIR/sharded/       dcp.save(state_dict, storage_writer=HuggingFaceStorageWriter(path,
                       fqn_to_index_mapping=FQN_TO_INDEX, save_distributed=True)) from 2 gloo ranks
                       (127.0.0.1): shard-<rank+1>-model-<index>-of-<N>.safetensors, each with
                       __metadata__ {"DCP_SHARDING_INFO": json, "DCP_VERSION": "1.0", "format": "pt"}.
OUT_DIR/consolidated/  torch.distributed.checkpoint._consolidate_hf_safetensors.consolidate_safetensors_files
                       (input_dir=sharded, fqn_to_index_mapping=FQN_TO_INDEX): model-<i>-of-<N>.safetensors
                       + model.safetensors.index.json, full tensors.
OUT_DIR/handmade/      two per-rank files written with the safetensors library (tensor "w" [4, 3] split
                       2 + 2 rows, "b" only in the first file), which dcp.load(...,
                       storage_reader=HuggingFaceStorageReader(dir)) reads back whole.
OUT_DIR/expected.json  every tensor's full value (row-major list) and the facts checked here.

Tensor values are small integers and halves (exact in bf16), so a reader can check every element.
"""

import json
import os
import shutil
import socket
import struct
import sys
import warnings

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint._consolidate_hf_safetensors import consolidate_safetensors_files

WORLD = 2

# name -> (shape, dtype, placement): "shard0"/"shard1" = DTensor Shard(dim) over the 2 ranks,
# "replicate" = DTensor Replicate (DCP writes it once), "plain" = an ordinary tensor, the same on both ranks.
TENSORS = {
    "model.embed_tokens.weight": ([8, 4], torch.bfloat16, "replicate"),
    "model.layers.1.mixer.experts.gate_and_up_projs": ([4, 4, 6], torch.bfloat16, "shard0"),
    "model.layers.1.mixer.experts.down_projs": ([4, 6, 4], torch.bfloat16, "shard0"),
    "model.layers.1.mixer.gate.e_score_correction_bias": ([4], torch.float32, "plain"),
    "uneven.rows": ([5, 3], torch.float32, "shard0"),  # 3 + 2 rows
    "vector.f32": ([6], torch.float32, "shard0"),  # 1-D, 3 + 3
    "cols.bf16": ([2, 6], torch.bfloat16, "shard1"),  # column-sharded: offsets on dim 1
}
# Output file index of each tensor (as an HF index would give it): 2 files.
FQN_TO_INDEX = {name: (1 if i < 4 else 2) for i, name in enumerate(TENSORS)}


def full_value(i, shape, dtype):
    n = 1
    for s in shape:
        n *= s
    return (torch.arange(n, dtype=torch.float32) * 0.5 + 100 * i).reshape(shape).to(dtype)


def worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Replicate, Shard, distribute_tensor

        mesh = init_device_mesh("cpu", (WORLD,))
        state = {}
        for i, (name, (shape, dtype, placement)) in enumerate(TENSORS.items()):
            full = full_value(i, shape, dtype)
            if placement == "plain":
                state[name] = full
            else:
                p = {"replicate": Replicate(), "shard0": Shard(0), "shard1": Shard(1)}[placement]
                state[name] = distribute_tensor(full, mesh, [p])
        writer = HuggingFaceStorageWriter(
            path=os.path.join(out, "sharded"), fqn_to_index_mapping=FQN_TO_INDEX, save_distributed=True
        )
        dcp.save(state, storage_writer=writer)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def header(path):
    """The safetensors header as JSON, its __metadata__ keys sorted (the library writes them in a
    random order)."""
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        h = json.loads(fh.read(n))
    if "__metadata__" in h:
        h["__metadata__"] = dict(sorted(h["__metadata__"].items()))
    return n, h


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def handmade(out):
    """Two per-rank files written by hand; returns what dcp.load read."""
    from safetensors.torch import save_file

    d = os.path.join(out, "handmade")
    os.makedirs(d)
    w = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    b = torch.tensor([0.5, -1.5], dtype=torch.bfloat16)
    # Any *.safetensors name works for the reader; these follow DCP's own naming.
    save_file({"w": w[0:2].contiguous(), "b": b}, os.path.join(d, "shard-00001-model-00001-of-00001.safetensors"),
              metadata={"DCP_SHARDING_INFO": json.dumps({"w": {"saved_offsets": [0, 0]}, "b": {"saved_offsets": [0]}}),
                        "DCP_VERSION": "1.0", "format": "pt"})
    save_file({"w": w[2:4].contiguous()}, os.path.join(d, "shard-00002-model-00001-of-00001.safetensors"),
              metadata={"DCP_SHARDING_INFO": json.dumps({"w": {"saved_offsets": [2, 0]}}),
                        "DCP_VERSION": "1.0", "format": "pt"})
    state = {"w": torch.zeros(4, 3), "b": torch.zeros(2, dtype=torch.bfloat16)}
    dcp.load(state, storage_reader=HuggingFaceStorageReader(d))
    assert torch.equal(state["w"], w) and torch.equal(state["b"], b), state
    return {"w": state["w"].flatten().tolist(), "b": state["b"].float().tolist()}


def hf_tensors(hf_dir):
    """HF_DIR's tensors by name, and each one's output file index (1-based) from its index."""
    from safetensors.torch import load_file

    with open(os.path.join(hf_dir, "model.safetensors.index.json")) as fh:
        weight_map = json.load(fh)["weight_map"]
    files = sorted(set(weight_map.values()))
    tensors = {}
    for f in files:
        tensors.update(load_file(os.path.join(hf_dir, f)))
    index = {name: files.index(f) + 1 for name, f in weight_map.items()}
    return tensors, index


def hf_worker(rank, port, hf_dir, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Replicate, Shard, distribute_tensor

        mesh = init_device_mesh("cpu", (WORLD,))
        tensors, index = hf_tensors(hf_dir)
        state = {}
        for name, full in tensors.items():
            placement = Shard(0) if full.dim() >= 1 and full.shape[0] >= WORLD else Replicate()
            state[name] = distribute_tensor(full, mesh, [placement])
        writer = HuggingFaceStorageWriter(path=os.path.join(out, "dcp"), fqn_to_index_mapping=index, save_distributed=True)
        dcp.save(state, storage_writer=writer)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def from_hf(hf_dir, out):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    mp.spawn(hf_worker, args=(free_port(), hf_dir, out), nprocs=WORLD, join=True)
    for name in ("config.json", "generation_config.json"):
        shutil.copyfile(os.path.join(hf_dir, name), os.path.join(out, name))
    tensors, _ = hf_tensors(hf_dir)
    loaded = {name: torch.zeros_like(t) for name, t in tensors.items()}
    dcp.load(loaded, storage_reader=HuggingFaceStorageReader(os.path.join(out, "dcp")))
    for name, t in tensors.items():
        assert torch.equal(loaded[name], t), f"dcp.load {name}"
    chunked = 0
    for f in sorted(os.listdir(os.path.join(out, "dcp"))):
        if f.endswith(".safetensors"):
            n, h = header(os.path.join(out, "dcp", f))
            info = json.loads(h.get("__metadata__", {}).get("DCP_SHARDING_INFO", "{}"))
            chunked += sum(1 for v in info.values() if any(v.get("saved_offsets", [])))
    assert chunked > 0, "no tensor was split between the ranks"
    for root, _, files in sorted(os.walk(out)):
        for f in sorted(files):
            p = os.path.join(root, f)
            print(f"{os.path.relpath(p, out)} {os.path.getsize(p)}")
    print(f"dcp: {len(tensors)} tensors of {hf_dir} written by {WORLD} ranks ({chunked} chunks at a non-zero offset), "
          f"dcp.load reads them back equal")


def main():
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    if len(sys.argv) == 4 and sys.argv[1] == "--from-hf":
        from_hf(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) != 2:
        sys.exit("usage: make_dcp.py OUT_DIR | make_dcp.py --from-hf HF_DIR OUT_DIR")
    # dcp.load without a process group says it assumes one process: that is the intent here.
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    out = sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    mp.spawn(worker, args=(free_port(), out), nprocs=WORLD, join=True)

    sharded = os.path.join(out, "sharded")
    consolidated = os.path.join(out, "consolidated")
    os.makedirs(consolidated)
    consolidate_safetensors_files(input_dir=sharded, output_dir=consolidated, fqn_to_index_mapping=FQN_TO_INDEX)

    # Check: the consolidated files hold the full values, and DCP reads the sharded files back whole.
    from safetensors.torch import load_file

    got = {}
    for f in sorted(os.listdir(consolidated)):
        if f.endswith(".safetensors"):
            got.update(load_file(os.path.join(consolidated, f)))
    loaded = {name: torch.zeros(shape, dtype=dtype) for name, (shape, dtype, _) in TENSORS.items()}
    dcp.load(loaded, storage_reader=HuggingFaceStorageReader(sharded))
    for i, (name, (shape, dtype, _)) in enumerate(TENSORS.items()):
        want = full_value(i, shape, dtype)
        assert torch.equal(got[name], want), f"consolidated {name}"
        assert torch.equal(loaded[name], want), f"dcp.load {name}"

    expected = {
        "world_size": WORLD,
        "fqn_to_index_mapping": FQN_TO_INDEX,
        "tensors": {
            name: {"shape": shape, "dtype": str(dtype).replace("torch.", ""), "placement": placement,
                   "values": full_value(i, shape, dtype).float().flatten().tolist()}
            for i, (name, (shape, dtype, placement)) in enumerate(TENSORS.items())
        },
        "headers": {
            os.path.relpath(os.path.join(root, f), out): header(os.path.join(root, f))[1]
            for root in (sharded, consolidated)
            for f in sorted(os.listdir(root))
            if f.endswith(".safetensors")
        },
        "handmade_loaded": handmade(out),
    }
    with open(os.path.join(out, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1)
        fh.write("\n")
    import platform

    import safetensors

    with open(os.path.join(out, "VERSIONS"), "w") as fh:
        fh.write(f"python {platform.python_version()}\n")
        fh.write(f"torch {torch.__version__}\n")
        fh.write(f"safetensors {safetensors.__version__}\n")
        fh.write("command: scripts/make-fixtures  (python scripts/interop/make_dcp.py Tests/NemoShardTests/Fixtures/dcp)\n")
    for root, _, files in sorted(os.walk(out)):
        for f in sorted(files):
            p = os.path.join(root, f)
            print(f"{os.path.relpath(p, out)} {os.path.getsize(p)}")


if __name__ == "__main__":
    main()
