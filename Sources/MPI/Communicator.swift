import CMPI
import Glibc
import NemoShardCore

/// A typed wrapper over an MPI communicator: collectives on bytes and 64-bit integers.
/// Messages of any size are split into pieces of at most `MPIRuntime.maxChunk` bytes.
package final class Communicator: @unchecked Sendable {
    package let handle: MPI_Comm
    private let owned: Bool
    package let rank: Int
    package let size: Int
    /// Stream lengths that arrived early, by (source, tag): see `IncomingStream`.
    var earlyLengths: [StreamKey: Int64] = [:]

    package init(handle: MPI_Comm, owned: Bool) {
        self.handle = handle
        self.owned = owned
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(handle, &r)
        MPI_Comm_size(handle, &s)
        rank = Int(r)
        size = Int(s)
    }

    deinit {
        if owned {
            var h: MPI_Comm? = handle
            MPI_Comm_free(&h)
        }
    }

    /// Ranks with the same `color` form a new communicator, ordered by `key`.
    package func split(color: Int, key: Int) throws -> Communicator {
        var out: MPI_Comm?
        try MPIError.check(MPI_Comm_split(handle, Int32(color), Int32(key), &out), "MPI_Comm_split")
        guard let out else { throw MPIError(call: "MPI_Comm_split", code: -1) }
        MPI_Comm_set_errhandler(out, cmpi_errors_return())
        return Communicator(handle: out, owned: true)
    }

    /// The ranks that share this rank's node (`MPI_Comm_split_type(SHARED)`), ordered by rank:
    /// its rank 0 is the node's leader.
    package func splitByNode() throws -> Communicator {
        var out: MPI_Comm?
        try MPIError.check(MPI_Comm_split_type(handle, cmpi_comm_type_shared(), Int32(rank), cmpi_info_null(), &out),
                           "MPI_Comm_split_type")
        guard let out else { throw MPIError(call: "MPI_Comm_split_type", code: -1) }
        MPI_Comm_set_errhandler(out, cmpi_errors_return())
        return Communicator(handle: out, owned: true)
    }

    package func barrier() throws { try MPIError.check(MPI_Barrier(handle), "MPI_Barrier") }

    /// A barrier that sleeps while it waits instead of spinning: ranks that finish early leave the
    /// cores to the ranks still working (8 ranks on 2 cores would otherwise poll each other down).
    package func quietBarrier() throws {
        var request: MPI_Request?
        try MPIError.check(MPI_Ibarrier(handle, &request), "MPI_Ibarrier")
        _ = try waitQuietly(&request, "MPI_Ibarrier")
    }

    /// Waits for `request` by testing it with growing pauses in between (50 us up to `maxPause`
    /// nanoseconds) rather than spinning in `MPI_Wait`, which with more ranks than cores takes the
    /// core from the ranks doing the work. Returns the completed request's status.
    package func waitQuietly(_ request: inout MPI_Request?, _ call: String, maxPause: Int = 1_000_000) throws -> MPI_Status {
        var status = MPI_Status()
        var done: Int32 = 0
        var pause = timespec(tv_sec: 0, tv_nsec: 50_000)
        while true {
            try MPIError.check(MPI_Test(&request, &done, &status), call)
            if done != 0 { return status }
            nanosleep(&pause, nil)
            if pause.tv_nsec < maxPause { pause.tv_nsec = min(pause.tv_nsec * 2, maxPause) }
        }
    }

    /// Largest piece of a stream (`sendStream`/`receiveStream`): the receiver needs no more memory.
    package static var streamUnit: Int { min(8 << 20, MPIRuntime.maxChunk) }

    /// Sends `count` bytes to `dest` as a stream that `produce` fills in order, span by span, while
    /// earlier spans are still on their way (`OutgoingStream`). If `produce` throws, the receiver is
    /// told the stream was abandoned (`receiveStream` then throws a `PeerFailure`) and the error is
    /// rethrown.
    package func sendStream(count: Int, to dest: Int, tag: Int, produce: (OutgoingStream) throws -> Void) throws {
        let stream = try OutgoingStream(self, to: dest, tag: tag, count: count)
        do {
            try produce(stream)
            try stream.finish()
        } catch {
            try? stream.abandon()  // the producer's error is the one to report
            throw error
        }
    }

    /// Sends `bytes` from `root` to every rank; returns them everywhere.
    package func broadcast(_ bytes: [UInt8], root: Int = 0) throws -> [UInt8] {
        var count = [Int64(bytes.count)]
        try count.withUnsafeMutableBytes {
            try MPIError.check(MPI_Bcast($0.baseAddress, 1, cmpi_int64(), Int32(root), handle), "MPI_Bcast")
        }
        var out = rank == root ? bytes : [UInt8](repeating: 0, count: Int(count[0]))
        try out.withUnsafeMutableBytes { buf in
            try forEachChunk(buf.count) { offset, n in
                try MPIError.check(MPI_Bcast(buf.baseAddress! + offset, Int32(n), cmpi_byte(), Int32(root), handle), "MPI_Bcast")
            }
        }
        return out
    }

    /// The reduction of `allreduce` (the public `ReduceOp`, spelt as before).
    package typealias ReduceOp = NemoShardMPI.ReduceOp

    /// Element-wise reduction of `values` over all ranks, result everywhere.
    package func allreduce(_ values: [Int64], _ op: ReduceOp) throws -> [Int64] {
        var out = [Int64](repeating: 0, count: values.count)
        let mpiOp: MPI_Op = switch op {
        case .sum: cmpi_op_sum()
        case .max: cmpi_op_max()
        case .min: cmpi_op_min()
        }
        try values.withUnsafeBytes { src in
            try out.withUnsafeMutableBytes { dst in
                try MPIError.check(MPI_Allreduce(src.baseAddress, dst.baseAddress, Int32(values.count), cmpi_int64(), mpiOp, handle),
                                   "MPI_Allreduce")
            }
        }
        return out
    }

    /// Every rank's `values` (same count everywhere), concatenated in rank order, on every rank.
    package func allgather(_ values: [Int64]) throws -> [Int64] {
        var out = [Int64](repeating: 0, count: values.count * size)
        try values.withUnsafeBytes { src in
            try out.withUnsafeMutableBytes { dst in
                try MPIError.check(MPI_Allgather(src.baseAddress, Int32(values.count), cmpi_int64(),
                                                 dst.baseAddress, Int32(values.count), cmpi_int64(), handle), "MPI_Allgather")
            }
        }
        return out
    }

    /// Every rank's byte string, in rank order, on every rank.
    package func allgatherBytes(_ bytes: [UInt8]) throws -> [[UInt8]] {
        let sizes = try allgather([Int64(bytes.count)]).map(Int.init)
        var parts: [[UInt8]] = []
        for r in 0..<size { parts.append(try self.broadcast(r == rank ? bytes : [UInt8](repeating: 0, count: sizes[r]), root: r)) }
        return parts
    }

    /// Sends raw bytes (length first, then chunks of at most `maxChunk`).
    package func send(_ bytes: UnsafeRawBufferPointer, to dest: Int, tag: Int) throws {
        var count = Int64(bytes.count)
        try MPIError.check(MPI_Send(&count, 1, cmpi_int64(), Int32(dest), Int32(tag), handle), "MPI_Send")
        try forEachChunk(bytes.count) { offset, n in
            try MPIError.check(MPI_Send(bytes.baseAddress! + offset, Int32(n), cmpi_byte(), Int32(dest), Int32(tag), handle), "MPI_Send")
        }
    }

    /// Receives a byte string sent with `send`.
    package func receive(from source: Int, tag: Int) throws -> [UInt8] {
        var count: Int64 = 0
        try MPIError.check(MPI_Recv(&count, 1, cmpi_int64(), Int32(source), Int32(tag), handle, cmpi_status_ignore()), "MPI_Recv")
        guard count >= 0 else { throw MPIError(call: "MPI_Recv (negative length)", code: -1) }
        var out = [UInt8](repeating: 0, count: Int(count))
        try out.withUnsafeMutableBytes { buf in
            try forEachChunk(buf.count) { offset, n in
                try MPIError.check(MPI_Recv(buf.baseAddress! + offset, Int32(n), cmpi_byte(), Int32(source), Int32(tag), handle,
                                            cmpi_status_ignore()), "MPI_Recv")
            }
        }
        return out
    }

    /// Calls `body(offset, count)` for consecutive pieces of at most `MPIRuntime.maxChunk` bytes.
    package func forEachChunk(_ total: Int, _ body: (Int, Int) throws -> Void) throws {
        var offset = 0
        while offset < total {
            let n = min(MPIRuntime.maxChunk, total - offset)
            try body(offset, n)
            offset += n
        }
    }
}
