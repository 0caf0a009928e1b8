import NemoShard
import NemoShardCore
import NemoShardMPI

/// `save-hf SHARDED_DIR OUT_DIR`: every rank writes its share of an HF checkpoint from a per-rank one.
enum SaveHFCommand: Command {
    static let name = "save-hf"
    static let usage = "mpirun -n W nemoshard save-hf SHARDED_DIR OUT_DIR [--gather] [--max-shard-size 5GB] [--exclude REGEX] [--format original|fused] [--keep-source-dtypes] [--threads N] [--progress] [--force] [--json]"
    static let summary = "split grouped experts back and write a Hugging Face checkpoint from every rank"
    static let details = """
        W may be any number of ranks: the files are the same as with the world size that wrote the checkpoint
        (each shard is read from its old rank file by a rank that can see it).
        """
    static let positionals = ["SHARDED_DIR", "OUT_DIR"]
    static let runsUnderMPI = true
    static let options: [OptionSpec] = [
        .flag(.gather),
        .value(.maxShardSize),
        .value(.exclude, help: """
            drop HF keys matching at their start (Python re.match; '' matches every key);
            a pattern that drops every tensor is an error
            """),
        .value(.format),
        .flag(.keepSourceDTypes),
        .value(.threads),
        .flag(.progress),
        .flag(.force, help: "replace an existing OUT_DIR"),
        .flag(.json),
    ]

    struct Request {
        var job: SaveHFJob.Options
        var json: Bool
        var progress = false
    }

    static func validate(_ args: Arguments) throws -> Request {
        var o = SaveHFJob.Options(source: args.positionals[0], output: args.positionals[1])
        o.export = try exportOptions(args, output: o.output)
        return Request(job: o, json: args.has(.json), progress: args.has(.progress))
    }

    static func run(_ r: Request, world: any Collective) throws -> Int32 {
        var job = r.job
        job.progress = progressLine("save-hf", world: world, forced: r.progress)
        emit(try SaveHFJob.run(job, world: world), json: r.json, world: world)
        return 0
    }
}
