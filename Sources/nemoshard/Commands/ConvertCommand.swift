import NemoShard
import NemoShardCore
import NemoShardMPI

/// `convert HF_DIR --out DIR`: one process turns an HF checkpoint into a per-rank checkpoint of one
/// rank, or (`--to-hf`) a per-rank checkpoint back into HF.
enum ConvertCommand: Command {
    static let name = "convert"
    static let usage = """
        nemoshard convert HF_DIR --out DIR [--rules nemo-0.7|seed] [--dtype bf16|f16|f32] [--dequantize bf16|f32] [--threads N] [--force] [--json]
               nemoshard convert --to-hf SHARDED_DIR --out DIR [--max-shard-size 5GB] [--exclude REGEX] [--format original|fused] [--keep-source-dtypes] [--threads N] [--force] [--json]
        """
    static let summary = "one process: HF -> per-rank checkpoint of one rank (all experts), or back with --to-hf"
    static let positionals = ["DIR"]
    static let runsUnderMPI = false
    static let options: [OptionSpec] = [
        .value(.out),
        .value(.rules, help: "key rules: nemo-0.7 (default) or seed, as for load (a per-rank checkpoint's own with --to-hf)"),
        .value(.dtype),
        .value(.dequantize),
        .flag(.toHF),
        .value(.maxShardSize, help: "with --to-hf: largest output file (default 5GB)"),
        .value(.exclude, help: "with --to-hf: drop HF keys matching at their start (Python re.match)"),
        .value(.format, help: "with --to-hf: expert layout, original (default) or fused (as save-hf)"),
        .flag(.keepSourceDTypes, help: "with --to-hf: as for save-hf"),
        .value(.threads, help: "threads (default: the cores of this machine)"),
        .flag(.force), .flag(.json),
    ]

    /// The conversion asked for.
    enum Job {
        /// HF -> a per-rank checkpoint of one rank.
        case toPerRank(LoadJob.Options)
        /// A per-rank checkpoint -> HF.
        case toHF(SaveHFJob.Options)
    }

    struct Request {
        var job: Job
        var json: Bool
    }

    static func validate(_ args: Arguments) throws -> Request {
        guard let out = args.value(.out) else { throw UsageError("convert needs --out DIR") }
        if args.has(.toHF) {
            if let n = args.firstGiven([ValueKey.dtype, ValueKey.dequantize, ValueKey.rules]) {
                throw UsageError("\(n) does not go with --to-hf" + (n == ValueKey.rules.name ? " (the export follows the rules its manifest records)" : ""))
            }
            var o = SaveHFJob.Options(source: args.positionals[0], output: out)
            o.export = try exportOptions(args, output: out)
            return Request(job: .toHF(o), json: args.has(.json))
        }
        if let n = args.firstGiven([ValueKey.maxShardSize, ValueKey.exclude, ValueKey.format, FlagKey.keepSourceDTypes]) {
            throw UsageError("\(n) goes with --to-hf")
        }
        var o = LoadJob.Options(source: args.positionals[0])
        o.output = out
        o.dequantize = try dequantizeOption(args)
        o.dtype = try dtypeOption(args, .dtype) ?? o.dequantize
        o.rules = try rulesOption(args) ?? o.rules
        o.force = args.has(.force)
        o.threads = try threadsOption(args)
        return Request(job: .toPerRank(o), json: args.has(.json))
    }

    static func run(_ r: Request, world: any Collective) throws -> Int32 {
        switch r.job {
        case .toHF(let o): emit(try SaveHFJob.run(o, world: world), json: r.json, world: world)
        case .toPerRank(let o): emit(try LoadJob.run(o, world: world).report, json: r.json, world: world)
        }
        return 0
    }
}
