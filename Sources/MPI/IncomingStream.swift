import CMPI
import NemoShardCore

/// Where a stream comes from: its sender and tag.
struct StreamKey: Hashable {
    let source: Int
    let tag: Int
}

extension Communicator {
    /// Receives a stream sent with `sendStream` piece by piece, handing each to `body(piece,
    /// offset)`; waits sleep rather than spin. Two receives are in flight where the stream has
    /// room for both, so the next piece crosses the link while `body` writes this one. If `body`
    /// throws, the rest is still received (so the sender is never left waiting) and the first
    /// error is rethrown; an abandoned stream throws a `PeerFailure`. Returns the total length.
    @discardableResult
    package func receiveStream(from source: Int, tag: Int, _ body: (UnsafeRawBufferPointer, Int) throws -> Void) throws -> Int {
        let key = StreamKey(source: source, tag: tag)
        var count: Int64 = 0
        if let early = earlyLengths.removeValue(forKey: key) {
            count = early
        } else {
            var request: MPI_Request?
            try MPIError.check(MPI_Irecv(&count, 1, cmpi_int64(), Int32(source), Int32(tag), handle, &request), "MPI_Irecv")
            _ = try waitQuietly(&request, "MPI_Irecv", maxPause: 200_000)
        }
        guard count >= 0 else { throw MPIError(call: "MPI_Recv (negative length)", code: -1) }
        var incoming = try IncomingStream(self, key: key, total: Int(count))
        return try incoming.receive(body)
    }
}

/// The receiving end of one stream. A sender's messages are at most `streamUnit` bytes but may
/// be shorter (each span it emits is cut on its own), so a receive is posted only while the stream
/// certainly has bytes beyond what the receives already posted can take: a receive never waits
/// for a message of the sender's next stream on the same tag. The one exception is an abandoned
/// stream (an empty message), after which the other receive is cancelled; if the next stream's
/// length message already matched it, that length is kept for the next `receiveStream`.
private struct IncomingStream {
    let comm: Communicator
    let key: StreamKey
    let total: Int
    private var buffers: [UnsafeMutableRawBufferPointer] = []
    /// Posted receives in posting order (which is the order they match): slot and request.
    private var posted: [(slot: Int, request: MPI_Request?)] = []
    /// Bytes received, and the most the posted receives can still take.
    private var received = 0
    private var inFlight = 0
    /// A stream's length message: one Int64.
    static let lengthBytes = MemoryLayout<Int64>.size

    init(_ comm: Communicator, key: StreamKey, total: Int) throws {
        self.comm = comm
        self.key = key
        self.total = total
        let unit = min(Communicator.streamUnit, max(total, 1))
        let slots = total > unit ? 2 : 1
        // Room for a length message too (see `cancelPosted`), however small the unit.
        buffers = (0..<slots).map { _ in .allocate(byteCount: max(unit, Self.lengthBytes), alignment: 64) }
    }

    mutating func receive(_ body: (UnsafeRawBufferPointer, Int) throws -> Void) throws -> Int {
        defer { for b in buffers { b.deallocate() } }
        for slot in buffers.indices { try post(slot) }
        var failure: Error?
        while received < total {
            guard !posted.isEmpty else { throw InternalError("stream from rank \(key.source) has no receive posted at \(received) of \(total) bytes") }
            var (slot, request) = posted.removeFirst()
            var status = try comm.waitQuietly(&request, "MPI_Irecv", maxPause: 200_000)
            var got: Int32 = 0
            try MPIError.check(MPI_Get_count(&status, cmpi_byte(), &got), "MPI_Get_count")
            inFlight -= buffers[slot].count
            if got == 0 {  // the sender abandoned the stream: nothing more comes
                try cancelPosted()
                throw failure ?? PeerFailure("stopped: rank \(key.source) could not produce the data it was sending")
            }
            if failure == nil {
                do { try body(UnsafeRawBufferPointer(rebasing: buffers[slot][0..<Int(got)]), received) } catch { failure = error }
            }
            received += Int(got)
            try post(slot)
        }
        if let failure { throw failure }
        return total
    }

    /// Posts a receive into `slot` if the stream certainly holds a message beyond the receives
    /// already posted (each takes at most its buffer).
    private mutating func post(_ slot: Int) throws {
        guard received + inFlight < total else { return }
        var request: MPI_Request?
        let n = max(min(buffers[slot].count, total - received), Self.lengthBytes)
        try MPIError.check(MPI_Irecv(buffers[slot].baseAddress, Int32(n), cmpi_byte(), Int32(key.source), Int32(key.tag), comm.handle, &request),
                           "MPI_Irecv")
        posted.append((slot, request))
        inFlight += buffers[slot].count
    }

    /// Cancels the receives still posted after an abandoned stream. One that matched a message
    /// anyway took the next stream's length (the sender's next message on this tag): kept for it.
    private mutating func cancelPosted() throws {
        while !posted.isEmpty {
            var (slot, request) = posted.removeFirst()
            try MPIError.check(MPI_Cancel(&request), "MPI_Cancel")
            var status = MPI_Status()
            try MPIError.check(MPI_Wait(&request, &status), "MPI_Wait")
            var cancelled: Int32 = 0
            try MPIError.check(MPI_Test_cancelled(&status, &cancelled), "MPI_Test_cancelled")
            guard cancelled == 0 else { continue }
            var got: Int32 = 0
            try MPIError.check(MPI_Get_count(&status, cmpi_byte(), &got), "MPI_Get_count")
            guard got == Int32(Self.lengthBytes) else {
                throw MPIError(call: "MPI_Irecv (rank \(key.source) sent \(got) bytes after abandoning a stream)", code: -1)
            }
            comm.earlyLengths[key] = buffers[slot].load(as: Int64.self)
        }
    }
}
