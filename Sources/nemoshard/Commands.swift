import NemoShard

/// Every subcommand's grammar and help.
let commands: [CommandSpec] = [
    CommandSpec(name: "synth", usage: "nemoshard synth OUT [--preset tiny|nano] [--pattern P] [--experts N] [--mtp P] [--shards N] [--expert-dtype bf16|f32] [--seed S] [--vocab N] [--model-prefix] [--embed-tokens] [--force]",
                summary: "write a deterministic synthetic Nemotron-H checkpoint in the HF layout",
                positionals: ["OUT"], optionalPositionals: 0,
                options: ["--preset", "--pattern", "--experts", "--mtp", "--shards", "--expert-dtype", "--seed", "--vocab"],
                flags: ["--model-prefix", "--embed-tokens", "--force"],
                help: """
                  --preset tiny|nano   tiny: every block type in a few dozen KB (default); nano: Nemotron 3 Nano shapes
                  --pattern P          layer pattern of M (mamba) * (attention) - (mlp) E (moe); default tiny ME*-E, nano ME*E
                  --experts N          routed experts per MoE layer
                  --mtp P              MTP layer pattern, e.g. '*E' (default: none)
                  --shards N           number of safetensors files (1 writes a single model.safetensors)
                  --expert-dtype D     bf16 (default) or f32 expert weights
                  --seed S             value seed (default 0)
                  --vocab N            vocabulary size (nano: 131072)
                  --model-prefix       use 'model.' instead of 'backbone.' as the key prefix
                  --embed-tokens       name the embedding 'embed_tokens' instead of 'embeddings'
                  --force              replace an existing OUT
                """),
    CommandSpec(name: "inspect", usage: "nemoshard inspect DIR [--json]",
                summary: "summarise an HF or per-rank checkpoint", positionals: ["DIR"], optionalPositionals: 0,
                options: [], flags: ["--json"], help: "  --json   print one JSON object"),
    CommandSpec(name: "convert", usage: "nemoshard convert HF_DIR --out DIR [--dtype bf16|f16|f32] [--force] [--json]\n       nemoshard convert --to-hf SHARDED_DIR --out DIR [--max-shard-size 5GB] [--exclude REGEX] [--force] [--json]",
                summary: "one process: HF -> per-rank checkpoint of one rank (all experts), or back with --to-hf",
                positionals: ["DIR"], optionalPositionals: 0,
                options: ["--out", "--dtype", "--max-shard-size", "--exclude", "--threads"], flags: ["--to-hf", "--force", "--json"],
                help: """
                  --out DIR            output directory (required)
                  --dtype D            dtype of the grouped experts: bf16 (default), f16, f32
                  --to-hf              convert a per-rank checkpoint back to Hugging Face
                  --max-shard-size S   with --to-hf: largest output file (default 5GB)
                  --exclude REGEX      with --to-hf: drop HF keys matching at their start
                  --force              replace an existing output directory
                  --json               print the summary as JSON
                """),
    CommandSpec(name: "load", usage: "mpirun -n N nemoshard load HF_DIR [--out DIR | --to-hf DIR [--gather] [--max-shard-size 5GB] [--exclude REGEX]] [--ep N | --mesh dp=2,ep=4] [--dtype bf16|f16|f32] [--threads N] [--copy-non-expert] [--progress] [--force] [--json]",
                summary: "each rank reads only its own experts and builds its internal state dict",
                positionals: ["HF_DIR"], optionalPositionals: 0,
                options: ["--out", "--to-hf", "--max-shard-size", "--exclude", "--ep", "--mesh", "--dtype", "--threads"],
                flags: ["--force", "--json", "--copy-non-expert", "--gather", "--progress"],
                help: """
                  --out DIR        write a per-rank checkpoint (rank-RRRRR-of-WWWWW.safetensors + nemoshard.json)
                  --to-hf DIR      round trip: load into memory, then write the state back as a Hugging Face
                                   checkpoint straight from memory (to_hf), no per-rank checkpoint between
                  --gather         with --to-hf: as for save-hf --gather
                  --max-shard-size S, --exclude REGEX   with --to-hf: as for save-hf
                  --ep N           1-D expert-parallel mesh of N ranks (default: the whole world)
                  --mesh SPEC      named mesh, row-major, e.g. dp=2,ep=4 (product = number of ranks)
                  --dtype D        dtype of the grouped experts: bf16 (default), f16, f32
                  --threads N      threads per rank (default: cores / ranks on this node)
                  --copy-non-expert  in memory: copy non-expert tensors instead of mapping their byte ranges
                  --progress       rank 0 keeps one updating line on stderr: bytes done of all ranks, GB/s, time
                                   left (without mpirun it appears by itself when stderr is a terminal)
                  --force          replace an existing DIR
                  --json           print the summary as JSON
                """),
    CommandSpec(name: "save-hf", usage: "mpirun -n W nemoshard save-hf SHARDED_DIR OUT_DIR [--gather] [--max-shard-size 5GB] [--exclude REGEX] [--force] [--json]",
                summary: "split grouped experts back and write a Hugging Face checkpoint from every rank",
                positionals: ["SHARDED_DIR", "OUT_DIR"], optionalPositionals: 0,
                options: ["--max-shard-size", "--exclude", "--threads"], flags: ["--gather", "--force", "--json"],
                help: """
                  --gather              only ranks that can write into rank 0's staging directory write (rank 0's
                                        node on node-local disks); the others stream their shards to them
                  --max-shard-size S    largest output file (default 5GB, as save_pretrained)
                  --exclude REGEX       drop HF keys matching at their start (Python re.match)
                  --force               replace an existing OUT_DIR
                  --json                print the summary as JSON
                W must equal the world size the per-rank checkpoint was written with.
                """),
    CommandSpec(name: "reshard", usage: "mpirun -n M nemoshard reshard SHARDED_DIR --out DIR [--ep M | --mesh ...] [--force] [--json]",
                summary: "move a per-rank checkpoint to another expert-parallel size",
                positionals: ["SHARDED_DIR"], optionalPositionals: 0,
                options: ["--out", "--ep", "--mesh", "--threads"], flags: ["--force", "--json"],
                help: """
                  --out DIR      output per-rank checkpoint (required)
                  --ep M         1-D expert-parallel mesh (default: the whole world)
                  --mesh SPEC    named mesh, e.g. dp=2,ep=2
                  --force        replace an existing DIR
                  --json         print the summary as JSON
                """),
    CommandSpec(name: "consolidate", usage: "[mpirun -n N] nemoshard consolidate DCP_DIR OUT_DIR [--force] [--json]",
                summary: "assemble a torch DCP checkpoint (shard-*-model-*-of-*.safetensors) into a standard HF checkpoint",
                positionals: ["DCP_DIR", "OUT_DIR"], optionalPositionals: 0, options: [], flags: ["--force", "--json"],
                help: """
                  DCP_DIR holds torch.distributed.checkpoint's HuggingFaceStorageWriter(save_distributed=True) files
                  shard-SSSSS-model-IIIII-of-NNNNN.safetensors (or has them under sharded/); each file's
                  DCP_SHARDING_INFO metadata places its chunks in the global tensors. The chunks must tile every
                  tensor exactly. OUT_DIR gets model-IIIII-of-NNNNN.safetensors (full tensors, sorted by name) and
                  model.safetensors.index.json; the output files are shared out over the ranks.
                  --force     replace an existing OUT_DIR
                  --json      print the summary as JSON
                """),
    CommandSpec(name: "verify", usage: "[mpirun -n N] nemoshard verify A B [--dtype bf16|f16|f32] [--strict] [--json]",
                summary: "compare two checkpoints (HF or per-rank, any mesh) tensor by tensor; exit 1 on a difference",
                positionals: ["A", "B"], optionalPositionals: 0, options: ["--dtype"], flags: ["--json", "--strict"],
                help: """
                  --dtype D   expert dtype an HF checkpoint is viewed in (as load would produce; default bf16)
                  --strict    also fail on what the internal view ignores: keys from_hf drops that only
                              one side has (_scale_inv, expert gate_proj, layers past num_hidden_layers)
                              and config.json fields that differ (listed as "ignored" otherwise)
                  --json      print checksums and differences as JSON
                """),
    CommandSpec(name: "bandwidth", usage: "mpirun -n N nemoshard bandwidth [--bytes 256MiB] [--rounds 5] [--json]",
                summary: "MPI point-to-point bandwidth from the first to the last rank (the ceiling for --gather)",
                positionals: [], optionalPositionals: 0, options: ["--bytes", "--rounds"], flags: ["--json"],
                help: """
                  --bytes S    size of one transfer (default 256MiB; chunked like every transfer nemoshard makes)
                  --rounds N   transfers timed; the median is reported (default 5)
                  --json       print one JSON object
                """),
]

let toolUsage = """
nemoshard: load, reshard and export Nemotron-H (NemotronV3) MoE checkpoints across MPI ranks

usage: nemoshard COMMAND [ARGS] [--help]

commands:
\(commands.map { "  " + pad($0.name, 9) + $0.summary }.joined(separator: "\n"))
"""


func helpText(_ c: CommandSpec) -> String { "usage: \(c.usage)\n\n\(c.summary)\n\n\(c.help)" }
