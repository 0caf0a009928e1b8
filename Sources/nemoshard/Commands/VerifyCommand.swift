import NemoShard
import NemoShardCore
import NemoShardMPI

/// `verify A B`: two checkpoints compared tensor by tensor; exit code 1 on a difference.
enum VerifyCommand: Command {
    static let name = "verify"
    static let usage = "[mpirun -n N] nemoshard verify A B [--dtype bf16|f16|f32] [--dequantize bf16|f32] [--strict] [--progress] [--json]"
    static let summary = "compare two checkpoints (HF or per-rank, any mesh) tensor by tensor; exit 1 on a difference"
    static let positionals = ["A", "B"]
    static let runsUnderMPI = true
    static let options: [OptionSpec] = [
        .value(.dtype, help: "expert dtype an HF checkpoint is viewed in (as load would produce; default: as load's)"),
        .value(.dequantize, help: "view a ModelOpt FP8 / NVFP4 HF checkpoint dequantized, as load --dequantize (experts default to D)"),
        .flag(.strict),
        .flag(.progress),
        .flag(.json, help: "print checksums and differences as JSON"),
    ]

    struct Request {
        var job: VerifyJob.Options
        var json: Bool
        var progress = false
    }

    static func validate(_ args: Arguments) throws -> Request {
        var o = VerifyJob.Options(a: args.positionals[0], b: args.positionals[1])
        o.dequantize = try dequantizeOption(args)
        o.dtype = try dtypeOption(args, .dtype) ?? o.dequantize
        o.strict = args.has(.strict)
        return Request(job: o, json: args.has(.json), progress: args.has(.progress))
    }

    static func run(_ request: Request, world: any Collective) throws -> Int32 {
        var job = request.job
        job.progress = progressLine("verify", world: world, forced: request.progress)
        let r = try VerifyJob.run(job, world: world)
        guard world.rank == 0 else { return r.equal ? 0 : 1 }
        if request.json {
            print(r.json().serialized())
            return r.equal ? 0 : 1
        }
        for t in r.a {
            print("\(hex(t.checksum))  \(t.dtype.rawValue) \(t.shape)  \(t.name)")
        }
        if !request.job.strict {
            for note in r.ignored { print("ignored (--strict counts it): \(note)") }
        }
        if r.equal {
            print("equal: \(r.a.count) tensors, \(formatBytes(r.report.totalRead)) read by \(world.size) rank(s)")
        } else {
            print("DIFFERENT: \(r.differences.count) difference(s); first:")
            for d in r.differences.prefix(10) { print("  \(d)") }
        }
        return r.equal ? 0 : 1
    }
}
