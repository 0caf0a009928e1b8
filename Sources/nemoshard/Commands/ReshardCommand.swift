import NemoShard
import NemoShardCore
import NemoShardMPI

/// `reshard SHARDED_DIR --out DIR`: a per-rank checkpoint moved to another expert-parallel size.
enum ReshardCommand: Command {
    static let name = "reshard"
    static let usage = "mpirun -n M nemoshard reshard SHARDED_DIR --out DIR [--ep M | --mesh ...] [--threads N] [--progress] [--force] [--json]"
    static let summary = "move a per-rank checkpoint to another expert-parallel size"
    static let positionals = ["SHARDED_DIR"]
    static let runsUnderMPI = true
    static let options: [OptionSpec] = [
        .value(.out, help: "output per-rank checkpoint (required)"),
        .value(.ep, as: "M", help: "1-D expert-parallel mesh (default: the whole world)"),
        .value(.mesh, help: "named mesh, e.g. dp=2,ep=2"),
        .value(.threads),
        .flag(.progress),
        .flag(.force, help: "replace an existing DIR"),
        .flag(.json),
    ]

    struct Request {
        var job: ReshardJob.Options
        var json: Bool
        var progress = false
    }

    static func validate(_ args: Arguments) throws -> Request {
        guard let out = args.value(.out) else { throw UsageError("reshard needs --out DIR") }
        let mesh = try meshOption(args)
        var o = ReshardJob.Options(source: args.positionals[0], output: out)
        o.mesh = mesh
        o.force = args.has(.force)
        o.threads = try threadsOption(args)
        return Request(job: o, json: args.has(.json), progress: args.has(.progress))
    }

    static func run(_ r: Request, world: any Collective) throws -> Int32 {
        var job = r.job
        job.progress = progressLine("reshard", world: world, forced: r.progress)
        emit(try ReshardJob.run(job, world: world).1, json: r.json, world: world)
        return 0
    }
}
