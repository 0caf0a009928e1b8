import NemoShard
import NemoShardCore
import NemoShardMPI

/// `save-hf SHARDED_DIR OUT_DIR`: every rank writes its share of an HF checkpoint from a per-rank one.
enum SaveHFCommand: Command {
    static let name = "save-hf"
    static let usage = "mpirun -n W nemoshard save-hf SHARDED_DIR OUT_DIR [--gather] [--max-shard-size 5GB] [--exclude REGEX] [--threads N] [--force] [--json]"
    static let summary = "split grouped experts back and write a Hugging Face checkpoint from every rank"
    static let details = "W must equal the world size the per-rank checkpoint was written with."
    static let positionals = ["SHARDED_DIR", "OUT_DIR"]
    static let runsUnderMPI = true
    static let options: [OptionSpec] = [
        .flag(.gather),
        .value(.maxShardSize),
        .value(.exclude, help: """
            drop HF keys matching at their start (Python re.match; '' matches every key);
            a pattern that drops every tensor is an error
            """),
        .value(.threads),
        .flag(.force, help: "replace an existing OUT_DIR"),
        .flag(.json),
    ]

    struct Request {
        var job: SaveHFJob.Options
        var json: Bool
    }

    static func validate(_ args: Arguments) throws -> Request {
        var o = SaveHFJob.Options(source: args.positionals[0], output: args.positionals[1])
        o.gather = args.has(.gather)
        o.maxShardBytes = try sizeOption(args, .maxShardSize) ?? o.maxShardBytes
        o.exclude = try excludeOption(args)
        o.force = args.has(.force)
        o.threads = try threadsOption(args)
        return Request(job: o, json: args.has(.json))
    }

    static func run(_ r: Request, world: any Collective) throws -> Int32 {
        emit(try SaveHFJob.run(r.job, world: world), json: r.json, world: world)
        return 0
    }
}
