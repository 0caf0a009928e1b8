import NemoShard
import NemoShardCore
import NemoShardMPI

/// `load HF_DIR`: every rank reads only its own experts into memory, then writes a per-rank
/// checkpoint (`--out`), an HF checkpoint straight from memory (`--to-hf`), or nothing.
enum LoadCommand: Command {
    static let name = "load"
    static let usage = "mpirun -n N nemoshard load HF_DIR [--out DIR | --to-hf DIR [--gather] [--max-shard-size 5GB] [--exclude REGEX] [--format original|fused] [--keep-source-dtypes]] [--ep N | --mesh dp=2,ep=4] [--rules nemo-0.7|seed] [--dtype bf16|f16|f32] [--dequantize bf16|f32] [--threads N] [--copy-non-expert] [--progress] [--force] [--json]"
    static let summary = "each rank reads only its own experts and builds its internal state dict"
    static let positionals = ["HF_DIR"]
    static let runsUnderMPI = true
    static let options: [OptionSpec] = [
        .value(.out, help: "write a per-rank checkpoint (rank-RRRRR-of-WWWWW.safetensors + nemoshard.json)"),
        .value(.toHF, help: """
            round trip: load into memory, then write the state back as a Hugging Face
            checkpoint straight from memory (to_hf), no per-rank checkpoint between
            """),
        .flag(.gather, help: "with --to-hf: as for save-hf --gather"),
        .value(.maxShardSize, help: "with --to-hf: as for save-hf"),
        .value(.exclude, help: "with --to-hf: as for save-hf"),
        .value(.format, help: "with --to-hf: as for save-hf (original or fused)"),
        .flag(.keepSourceDTypes, help: "with --to-hf: as for save-hf"),
        .value(.ep),
        .value(.mesh),
        .value(.rules),
        .value(.dtype),
        .value(.dequantize),
        .value(.threads),
        .flag(.copyNonExpert),
        .flag(.progress),
        .flag(.force, help: "replace an existing DIR"),
        .flag(.json),
    ]

    struct Request {
        var load: LoadJob.Options
        /// The HF export from memory (`--to-hf`), if asked for.
        var toHF: ToHFJob.Options?
        var progress: Bool
        var json: Bool
    }

    static func validate(_ args: Arguments) throws -> Request {
        let mesh = try meshOption(args)
        let dequantize = try dequantizeOption(args)
        let dtype = try dtypeOption(args, .dtype) ?? dequantize
        let threads = try threadsOption(args)
        var o = LoadJob.Options(source: args.positionals[0])
        o.output = args.value(.out)
        o.mesh = mesh
        o.dtype = dtype
        o.rules = try rulesOption(args) ?? o.rules
        o.dequantize = dequantize
        o.force = args.has(.force)
        o.threads = threads
        o.mapNonExpertTensors = !args.has(.copyNonExpert)
        var r = Request(load: o, toHF: nil, progress: args.has(.progress), json: args.has(.json))
        guard let hfOut = args.value(.toHF) else {
            if args.firstGiven([FlagKey.gather, ValueKey.maxShardSize, ValueKey.exclude, ValueKey.format, FlagKey.keepSourceDTypes]) != nil {
                throw UsageError("--gather, --max-shard-size, --exclude, --format and --keep-source-dtypes go with --to-hf")
            }
            return r
        }
        guard o.output == nil else { throw UsageError("give --out or --to-hf, not both") }
        r.toHF = try exportOptions(args, output: hfOut)
        return r
    }

    static func run(_ r: Request, world: any Collective) throws -> Int32 {
        var o = r.load
        o.progress = progressLine("load", world: world, forced: r.progress)
        guard let h = r.toHF else {
            emit(try LoadJob.run(o, world: world).report, json: r.json, world: world)
            return 0
        }
        let loaded = try LoadJob.run(o, world: world)
        let back = try ToHFJob.run(loaded, h)
        if world.rank == 0 {
            print(r.json ? JSON.object([("load", loaded.report.json()), ("to_hf", back.json())]).serialized()
                         : loaded.report.text() + "\n" + back.text())
        }
        return 0
    }
}
