/// A typed option key: the spelling `Arguments` looks an option up by.
protocol OptionKey: Sendable {
    /// `--out`, `--force`, ...
    var name: String { get }
}

/// An option that takes no value (`--force`). Read with `Arguments.has(_:)`.
struct FlagKey: OptionKey {
    let name: String
    /// The help most commands give it; a command may word it for itself (`OptionSpec.flag(_:help:)`).
    let help: String

    init(_ name: String, _ help: String) {
        self.name = name
        self.help = help
    }
}

/// An option that takes a value (`--out DIR`). Read with `Arguments.value(_:)` or `Arguments.int(_:default:)`.
struct ValueKey: OptionKey {
    let name: String
    /// The value's placeholder in help (`DIR`, `N`, ...).
    let valueName: String
    /// The help most commands give it; a command may word it for itself (`OptionSpec.value(_:as:help:)`).
    let help: String

    init(_ name: String, _ valueName: String, _ help: String) {
        self.name = name
        self.valueName = valueName
        self.help = help
    }
}

/// Every flag a command accepts. A name is a flag or takes a value per command: `--to-hf` is a
/// flag of `convert` and takes a directory in `load` (`ValueKey.toHF`).
extension FlagKey {
    static let force = FlagKey("--force", "replace an existing output directory")
    static let json = FlagKey("--json", "print the summary as JSON")
    static let toHF = FlagKey("--to-hf", "convert a per-rank checkpoint back to Hugging Face")
    static let gather = FlagKey("--gather", """
        only ranks that can write into rank 0's staging directory write (rank 0's
        node on node-local disks); the others stream their shards to them
        """)
    static let copyNonExpert = FlagKey("--copy-non-expert", "in memory: copy non-expert tensors instead of mapping their byte ranges")
    static let progress = FlagKey("--progress", """
        rank 0 keeps one updating line on stderr: bytes done of all ranks, GB/s, time
        left (without mpirun it appears by itself when stderr is a terminal)
        """)
    static let strict = FlagKey("--strict", """
        also fail on what the internal view ignores: keys from_hf drops that only
        one side has (_scale_inv, expert gate_proj, layers past num_hidden_layers)
        and config.json fields that differ (listed as "ignored" otherwise)
        """)
    static let modelPrefix = FlagKey("--model-prefix", "use 'model.' instead of 'backbone.' as the key prefix")
    static let keepSourceDTypes = FlagKey("--keep-source-dtypes", """
        write every tensor in its source checkpoint's dtype, nothing forced to F32 (a
        BF16 source then comes back byte for byte under the nemo-0.7 rules too)
        """)
    static let embedTokens = FlagKey("--embed-tokens", "name the embedding 'embed_tokens' instead of 'embeddings'")
}

/// Every option that takes a value.
extension ValueKey {
    static let out = ValueKey("--out", "DIR", "output directory (required)")
    static let toHF = ValueKey("--to-hf", "DIR", "write a Hugging Face checkpoint to DIR")
    static let dtype = ValueKey("--dtype", "D", """
        dtype of the grouped experts: bf16, f16, f32 (default: the config's dtype
        under the nemo-0.7 rules, bf16 when it names none; bf16 under seed)
        """)
    static let rules = ValueKey("--rules", "R", """
        key rules: nemo-0.7 (default; NeMo AutoModel 0.7.0's adapter) or seed (the
        older documented rules: stored dtypes and names kept); see README "Which reference"
        """)
    static let dequantize = ValueKey("--dequantize", "D", """
        bf16 or f32: dequantize ModelOpt FP8 / NVFP4 weights (computed in f32, rounded
        once); scale tensors and quantization_config are not kept; experts default to D
        """)
    static let threads = ValueKey("--threads", "N", "threads per rank (default: cores / ranks on this node)")
    static let maxShardSize = ValueKey("--max-shard-size", "S", "largest output file (default 5GB, as save_pretrained)")
    static let exclude = ValueKey("--exclude", "REGEX", "drop HF keys matching at their start (Python re.match)")
    static let format = ValueKey("--format", "F", """
        expert layout: original (default: one key per expert, as the source) or fused
        (transformers 5's own: model.layers.L.mixer.experts.up_proj [n, inter, in])
        """)
    static let ep = ValueKey("--ep", "N", "1-D expert-parallel mesh of N ranks (default: the whole world)")
    static let mesh = ValueKey("--mesh", "SPEC", "named mesh, row-major, e.g. dp=2,ep=4 (product = number of ranks)")
    static let preset = ValueKey("--preset", "tiny|nano", "tiny: every block type in a few dozen KB (default); nano: Nemotron 3 Nano shapes")
    static let pattern = ValueKey("--pattern", "P", "layer pattern of M (mamba) * (attention) - (mlp) E (moe); default tiny ME*-E, nano ME*E")
    static let experts = ValueKey("--experts", "N", "routed experts per MoE layer")
    static let mtp = ValueKey("--mtp", "P", "MTP layer pattern, e.g. '*E' (default: none)")
    static let shards = ValueKey("--shards", "N", "number of safetensors files (1 writes a single model.safetensors)")
    static let expertDType = ValueKey("--expert-dtype", "D", "bf16 (default) or f32 expert weights")
    static let seed = ValueKey("--seed", "S", "value seed (default 0)")
    static let vocab = ValueKey("--vocab", "N", "vocabulary size (nano: 131072)")
    static let extraTensors = ValueKey("--extra-tensors", "N", """
        add N small non-expert tensors (16 BF16 values each) spread over the layers,
        layers.L.mixer.extra_norms.K.weight (for measuring planning at scale)
        """)
    static let bytes = ValueKey("--bytes", "S", "size of one transfer (default 256MiB; chunked like every transfer nemoshard makes)")
    static let rounds = ValueKey("--rounds", "N", "transfers timed; the median is reported (default 5)")
}

/// One row of a command's grammar: an option the parser accepts, as its help lists it. A command's
/// `options` are all the parser accepts, so `--help` lists everything the command takes.
struct OptionSpec: Sendable {
    let name: String
    /// The value's placeholder (`DIR`, `N`, ...); nil for a flag.
    let valueName: String?
    /// Help text; each further line is indented under the first.
    let help: String

    /// A flag, with its usual help or `help`.
    static func flag(_ key: FlagKey, help: String? = nil) -> OptionSpec {
        OptionSpec(name: key.name, valueName: nil, help: help ?? key.help)
    }

    /// An option that takes a value, with its usual placeholder and help or these.
    static func value(_ key: ValueKey, as valueName: String? = nil, help: String? = nil) -> OptionSpec {
        OptionSpec(name: key.name, valueName: valueName ?? key.valueName, help: help ?? key.help)
    }

    /// Whether it takes no value.
    var isFlag: Bool { valueName == nil }

    /// `--out DIR` or `--force`: the help column's left side.
    var label: String { valueName.map { "\(name) \($0)" } ?? name }
}
