import NemoShard
import NemoShardCore
import NemoShardMPI
import NemoShardTools

/// `bandwidth`: MPI point-to-point bandwidth from the first rank to the last.
enum BandwidthCommand: Command {
    static let name = "bandwidth"
    static let usage = "mpirun -n N nemoshard bandwidth [--bytes 256MiB] [--rounds 5] [--json]"
    static let summary = "MPI point-to-point bandwidth from the first to the last rank (the ceiling for --gather)"
    static let positionals: [String] = []
    static let runsUnderMPI = true
    static let options: [OptionSpec] = [
        .value(.bytes),
        .value(.rounds),
        .flag(.json, help: "print one JSON object"),
    ]

    struct Request {
        var bytes: Int
        var rounds: Int
        var json: Bool
    }

    static func validate(_ args: Arguments) throws -> Request {
        let bytes = try sizeOption(args, .bytes) ?? 256 << 20
        let rounds = try args.int(.rounds, default: 5)
        guard rounds >= 1, rounds <= 1000 else { throw UsageError("--rounds must be between 1 and 1000") }
        guard bytes <= 64 << 30 else { throw UsageError("--bytes must be at most 64GiB") }
        return Request(bytes: bytes, rounds: rounds, json: args.has(.json))
    }

    static func run(_ request: Request, world: any Collective) throws -> Int32 {
        let r = try BandwidthProbe.run(bytes: request.bytes, rounds: request.rounds, world: world)
        guard world.rank == 0 else { return 0 }
        if request.json {
            print(JSON.object([("bytes", .int(Int64(r.bytes))), ("rounds", .int(Int64(r.rounds))), ("seconds", .double(r.seconds)),
                               ("gb_per_s", .double(r.gigabytesPerSecond)), ("world_size", .int(Int64(world.size)))]).serialized())
        } else {
            print("rank 0 -> rank \(world.size - 1): \(formatBytes(r.bytes)) in \(format2(r.seconds)) s (median of \(r.rounds)): \(format2(r.gigabytesPerSecond)) GB/s")
        }
        return 0
    }
}
