import NemoShard
import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// Point-to-point MPI bandwidth between the first and the last rank (on a cluster: usually two
/// different nodes), over the same chunked `send`/`receive` the jobs use: a ceiling to compare
/// `save-hf --gather` against.
package enum BandwidthProbe {
    package struct Result: Sendable {
        package let bytes: Int
        package let rounds: Int
        /// Median seconds of one transfer of `bytes` (receiver's acknowledgement included).
        package let seconds: Double
        package var gigabytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds / 1e9 : 0 }
    }

    package static let tag = 13

    /// Collective. Rank 0 sends `bytes` to the last rank `rounds` times; the others wait.
    /// Memory is had before anything is sent, and every rank learns if a rank could not have it
    /// (an `AllocationError`): rank 0 allocates the message; the last rank, whose `receive`
    /// allocates a buffer of the message's size, first checks that it could allocate one.
    package static func run(bytes: Int, rounds: Int, world: Collective) throws -> Result {
        let last = world.size - 1
        var times: [Double] = []
        let size = max(bytes, 1)
        let payload = try world.agree { () -> TensorStorage? in
            if world.rank == 0 {
                return try TensorStorage(count: size, for: "the bandwidth probe's message (rank 0)")
            }
            if world.rank == last {
                _ = try TensorStorage(count: size, for: "the bandwidth probe's receive buffer (rank \(last))")
            }
            return nil
        }
        for _ in 0..<max(rounds, 1) {
            try world.quietBarrier()  // idle ranks sleep: on few cores a spinning rank steals the link's CPU
            let t0 = monotonicSeconds()
            if world.rank == 0, last > 0, let payload {
                try world.send(UnsafeRawBufferPointer(rebasing: payload.bytes[0..<max(0, min(bytes, payload.bytes.count))]), to: last, tag: tag)
                _ = try world.receive(from: last, tag: tag)
            } else if world.rank == last, last > 0 {
                let got = try world.receive(from: 0, tag: tag)
                guard got.count == bytes else { throw InternalError("received \(got.count) of \(bytes) bytes") }
                try [UInt8(1)].withUnsafeBytes { try world.send($0, to: 0, tag: tag) }
            }
            times.append(monotonicSeconds() - t0)
        }
        let sorted = times.sorted()
        let median: Double = try world.broadcast(sorted[sorted.count / 2], root: 0)
        return Result(bytes: bytes, rounds: times.count, seconds: median)
    }
}
