import NemoShard
import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine
import NemoShardTools

/// One option (takes a value) or flag (does not) of a subcommand, as its help lists it.
struct OptionSpec {
    let name: String
    /// The value's placeholder (`DIR`, `N`, ...); nil for a flag.
    let value: String?
    /// Help text; each further line is indented under the first.
    let help: String

    /// An option that takes a value shown as `value`.
    init(_ name: String, _ value: String, _ help: String) {
        self.name = name
        self.value = value
        self.help = help
    }

    /// A flag.
    init(_ name: String, _ help: String) {
        self.name = name
        value = nil
        self.help = help
    }

    /// `--out DIR` or `--force`: the help column's left side.
    var label: String { value.map { "\(name) \($0)" } ?? name }
}

/// One subcommand's grammar: positional names, its options and flags, and help text. The parser
/// accepts exactly the options listed, so `--help` lists everything the command takes.
struct CommandSpec {
    let name: String
    let usage: String
    let summary: String
    let positionals: [String]
    let optionalPositionals: Int
    let entries: [OptionSpec]
    /// Prose printed after the summary, before the options.
    var details = ""

    /// Names of the options that take a value.
    var options: [String] { entries.filter { $0.value != nil }.map(\.name) }
    /// Names of the flags.
    var flags: [String] { entries.filter { $0.value == nil }.map(\.name) }
}

private let force = OptionSpec("--force", "replace an existing output directory")
private let json = OptionSpec("--json", "print the summary as JSON")
private let threads = OptionSpec("--threads", "N", "threads per rank (default: cores / ranks on this node)")

/// Every subcommand's grammar and help.
let commands: [CommandSpec] = [
    CommandSpec(name: "synth", usage: "nemoshard synth OUT [--preset tiny|nano] [--pattern P] [--experts N] [--mtp P] [--shards N] [--expert-dtype bf16|f32] [--seed S] [--vocab N] [--model-prefix] [--embed-tokens] [--force]",
                summary: "write a deterministic synthetic Nemotron-H checkpoint in the HF layout",
                positionals: ["OUT"], optionalPositionals: 0, entries: [
                    OptionSpec("--preset", "tiny|nano", "tiny: every block type in a few dozen KB (default); nano: Nemotron 3 Nano shapes"),
                    OptionSpec("--pattern", "P", "layer pattern of M (mamba) * (attention) - (mlp) E (moe); default tiny ME*-E, nano ME*E"),
                    OptionSpec("--experts", "N", "routed experts per MoE layer"),
                    OptionSpec("--mtp", "P", "MTP layer pattern, e.g. '*E' (default: none)"),
                    OptionSpec("--shards", "N", "number of safetensors files (1 writes a single model.safetensors)"),
                    OptionSpec("--expert-dtype", "D", "bf16 (default) or f32 expert weights"),
                    OptionSpec("--seed", "S", "value seed (default 0)"),
                    OptionSpec("--vocab", "N", "vocabulary size (nano: 131072)"),
                    OptionSpec("--model-prefix", "use 'model.' instead of 'backbone.' as the key prefix"),
                    OptionSpec("--embed-tokens", "name the embedding 'embed_tokens' instead of 'embeddings'"),
                    OptionSpec("--force", "replace an existing OUT"),
                ]),
    CommandSpec(name: "inspect", usage: "nemoshard inspect DIR [--json]",
                summary: "summarise an HF or per-rank checkpoint", positionals: ["DIR"], optionalPositionals: 0,
                entries: [OptionSpec("--json", "print one JSON object")]),
    CommandSpec(name: "convert", usage: "nemoshard convert HF_DIR --out DIR [--dtype bf16|f16|f32] [--threads N] [--force] [--json]\n       nemoshard convert --to-hf SHARDED_DIR --out DIR [--max-shard-size 5GB] [--exclude REGEX] [--threads N] [--force] [--json]",
                summary: "one process: HF -> per-rank checkpoint of one rank (all experts), or back with --to-hf",
                positionals: ["DIR"], optionalPositionals: 0, entries: [
                    OptionSpec("--out", "DIR", "output directory (required)"),
                    OptionSpec("--dtype", "D", "dtype of the grouped experts: bf16 (default), f16, f32"),
                    OptionSpec("--to-hf", "convert a per-rank checkpoint back to Hugging Face"),
                    OptionSpec("--max-shard-size", "S", "with --to-hf: largest output file (default 5GB)"),
                    OptionSpec("--exclude", "REGEX", "with --to-hf: drop HF keys matching at their start (Python re.match)"),
                    OptionSpec("--threads", "N", "threads (default: the cores of this machine)"),
                    force, json,
                ]),
    CommandSpec(name: "load", usage: "mpirun -n N nemoshard load HF_DIR [--out DIR | --to-hf DIR [--gather] [--max-shard-size 5GB] [--exclude REGEX]] [--ep N | --mesh dp=2,ep=4] [--dtype bf16|f16|f32] [--threads N] [--copy-non-expert] [--progress] [--force] [--json]",
                summary: "each rank reads only its own experts and builds its internal state dict",
                positionals: ["HF_DIR"], optionalPositionals: 0, entries: [
                    OptionSpec("--out", "DIR", "write a per-rank checkpoint (rank-RRRRR-of-WWWWW.safetensors + nemoshard.json)"),
                    OptionSpec("--to-hf", "DIR", """
                        round trip: load into memory, then write the state back as a Hugging Face
                        checkpoint straight from memory (to_hf), no per-rank checkpoint between
                        """),
                    OptionSpec("--gather", "with --to-hf: as for save-hf --gather"),
                    OptionSpec("--max-shard-size", "S", "with --to-hf: as for save-hf"),
                    OptionSpec("--exclude", "REGEX", "with --to-hf: as for save-hf"),
                    OptionSpec("--ep", "N", "1-D expert-parallel mesh of N ranks (default: the whole world)"),
                    OptionSpec("--mesh", "SPEC", "named mesh, row-major, e.g. dp=2,ep=4 (product = number of ranks)"),
                    OptionSpec("--dtype", "D", "dtype of the grouped experts: bf16 (default), f16, f32"),
                    threads,
                    OptionSpec("--copy-non-expert", "in memory: copy non-expert tensors instead of mapping their byte ranges"),
                    OptionSpec("--progress", """
                        rank 0 keeps one updating line on stderr: bytes done of all ranks, GB/s, time
                        left (without mpirun it appears by itself when stderr is a terminal)
                        """),
                    OptionSpec("--force", "replace an existing DIR"),
                    json,
                ]),
    CommandSpec(name: "save-hf", usage: "mpirun -n W nemoshard save-hf SHARDED_DIR OUT_DIR [--gather] [--max-shard-size 5GB] [--exclude REGEX] [--threads N] [--force] [--json]",
                summary: "split grouped experts back and write a Hugging Face checkpoint from every rank",
                positionals: ["SHARDED_DIR", "OUT_DIR"], optionalPositionals: 0, entries: [
                    OptionSpec("--gather", """
                        only ranks that can write into rank 0's staging directory write (rank 0's
                        node on node-local disks); the others stream their shards to them
                        """),
                    OptionSpec("--max-shard-size", "S", "largest output file (default 5GB, as save_pretrained)"),
                    OptionSpec("--exclude", "REGEX", """
                        drop HF keys matching at their start (Python re.match; '' matches every key);
                        a pattern that drops every tensor is an error
                        """),
                    threads,
                    OptionSpec("--force", "replace an existing OUT_DIR"),
                    json,
                ],
                details: "W must equal the world size the per-rank checkpoint was written with."),
    CommandSpec(name: "reshard", usage: "mpirun -n M nemoshard reshard SHARDED_DIR --out DIR [--ep M | --mesh ...] [--threads N] [--force] [--json]",
                summary: "move a per-rank checkpoint to another expert-parallel size",
                positionals: ["SHARDED_DIR"], optionalPositionals: 0, entries: [
                    OptionSpec("--out", "DIR", "output per-rank checkpoint (required)"),
                    OptionSpec("--ep", "M", "1-D expert-parallel mesh (default: the whole world)"),
                    OptionSpec("--mesh", "SPEC", "named mesh, e.g. dp=2,ep=2"),
                    threads,
                    OptionSpec("--force", "replace an existing DIR"),
                    json,
                ]),
    CommandSpec(name: "consolidate", usage: "[mpirun -n N] nemoshard consolidate DCP_DIR OUT_DIR [--force] [--json]",
                summary: "assemble a torch DCP checkpoint (shard-*-model-*-of-*.safetensors) into a standard HF checkpoint",
                positionals: ["DCP_DIR", "OUT_DIR"], optionalPositionals: 0, entries: [
                    OptionSpec("--force", "replace an existing OUT_DIR"),
                    json,
                ],
                details: """
                DCP_DIR holds torch.distributed.checkpoint's HuggingFaceStorageWriter(save_distributed=True) files
                shard-SSSSS-model-IIIII-of-NNNNN.safetensors (or has them under sharded/); each file's
                DCP_SHARDING_INFO metadata places its chunks in the global tensors. The chunks must tile every
                tensor exactly. OUT_DIR gets model-IIIII-of-NNNNN.safetensors (full tensors, sorted by name) and
                model.safetensors.index.json; the output files are shared out over the ranks.
                """),
    CommandSpec(name: "verify", usage: "[mpirun -n N] nemoshard verify A B [--dtype bf16|f16|f32] [--strict] [--json]",
                summary: "compare two checkpoints (HF or per-rank, any mesh) tensor by tensor; exit 1 on a difference",
                positionals: ["A", "B"], optionalPositionals: 0, entries: [
                    OptionSpec("--dtype", "D", "expert dtype an HF checkpoint is viewed in (as load would produce; default bf16)"),
                    OptionSpec("--strict", """
                        also fail on what the internal view ignores: keys from_hf drops that only
                        one side has (_scale_inv, expert gate_proj, layers past num_hidden_layers)
                        and config.json fields that differ (listed as "ignored" otherwise)
                        """),
                    OptionSpec("--json", "print checksums and differences as JSON"),
                ]),
    CommandSpec(name: "bandwidth", usage: "mpirun -n N nemoshard bandwidth [--bytes 256MiB] [--rounds 5] [--json]",
                summary: "MPI point-to-point bandwidth from the first to the last rank (the ceiling for --gather)",
                positionals: [], optionalPositionals: 0, entries: [
                    OptionSpec("--bytes", "S", "size of one transfer (default 256MiB; chunked like every transfer nemoshard makes)"),
                    OptionSpec("--rounds", "N", "transfers timed; the median is reported (default 5)"),
                    OptionSpec("--json", "print one JSON object"),
                ]),
]

/// Rows of `(left, right)` as a two-column table: the right column starts two spaces after the
/// longest left entry, and a right side's further lines are indented to that column.
func helpColumns(_ rows: [(String, String)]) -> String {
    let width = (rows.map(\.0.count).max() ?? 0) + 2
    let indent = String(repeating: " ", count: 2 + width)
    return rows.map { left, right in
        "  " + pad(left, width) + right.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\n" + indent)
    }.joined(separator: "\n")
}

let toolUsage = """
nemoshard \(NemoShardVersion.string): load, reshard and export Nemotron-H (NemotronV3) MoE checkpoints across MPI ranks

usage: nemoshard COMMAND [ARGS] [--help]
       nemoshard --version

commands:
\(helpColumns(commands.map { ($0.name, $0.summary) }))
"""

/// `COMMAND --help`: usage, summary, details, then every option the command accepts.
func helpText(_ c: CommandSpec) -> String {
    var parts = ["usage: \(c.usage)", c.summary]
    if !c.details.isEmpty { parts.append(c.details) }
    if !c.entries.isEmpty { parts.append(helpColumns(c.entries.map { ($0.label, $0.help) })) }
    return parts.joined(separator: "\n\n")
}
