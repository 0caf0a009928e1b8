import CMPI
import NemoShardCore

/// The sending end of a stream (`Communicator.sendStream`): the length first, then the bytes in
/// messages of at most `Communicator.streamUnit`. The producer fills one of two buffers while the
/// other one's messages are in flight, so a rank needs two spans of memory, not the whole stream,
/// and a receiver that reads straight from the sender's memory (shared-memory single copy) does
/// so while the next span is being produced. An empty message means the stream was abandoned.
public final class OutgoingStream {
    private let comm: Communicator
    private let dest: Int32
    private let tag: Int32
    /// Bytes the receiver expects, and bytes handed to `emit` so far.
    package let count: Int
    package private(set) var sent = 0
    private var buffers: [UnsafeMutableRawBufferPointer] = []
    private var pending: [[MPI_Request?]] = [[], []]
    private var next = 0

    package init(_ comm: Communicator, to dest: Int, tag: Int, count: Int) throws {
        self.comm = comm
        self.dest = Int32(dest)
        self.tag = Int32(tag)
        self.count = count
        var length = Int64(count)
        try MPIError.check(MPI_Send(&length, 1, cmpi_int64(), self.dest, self.tag, comm.handle), "MPI_Send")
    }

    deinit {
        // Only reached with nothing in flight (`finish` or `abandon` waited), or on an MPI error.
        for b in buffers { b.deallocate() }
    }

    /// Sends the next `count` bytes of the stream, which `fill` writes into the buffer it is given.
    public func emit(count n: Int, _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws {
        guard n > 0 else { return }
        guard n <= count - sent else {
            throw InternalError("stream to rank \(dest) overruns its announced \(count) bytes")
        }
        let slot = next
        next = 1 - next
        try wait(slot)
        if buffers.count <= slot {
            buffers.append(.allocate(byteCount: n, alignment: 64))
        } else if buffers[slot].count < n {
            buffers[slot].deallocate()
            buffers[slot] = .allocate(byteCount: n, alignment: 64)
        }
        let buffer = UnsafeMutableRawBufferPointer(rebasing: buffers[slot][0..<n])
        try fill(buffer)
        var offset = 0
        while offset < n {
            let m = min(Communicator.streamUnit, n - offset)
            var request: MPI_Request?
            try MPIError.check(MPI_Isend(buffer.baseAddress! + offset, Int32(m), cmpi_byte(), dest, tag, comm.handle, &request), "MPI_Isend")
            pending[slot].append(request)
            offset += m
        }
        sent += n
    }

    /// Waits (sleeping) until the messages of buffer `slot` have left.
    private func wait(_ slot: Int) throws {
        while var request = pending[slot].first {
            _ = try comm.waitQuietly(&request, "MPI_Isend", maxPause: 200_000)
            pending[slot].removeFirst()
        }
    }

    /// Waits until both buffers' messages have left.
    private func drain() throws {
        try wait(0)
        try wait(1)
    }

    /// Waits for everything to leave; the stream must be complete.
    package func finish() throws {
        try drain()
        guard sent == count else { throw InternalError("stream to rank \(dest) ended after \(sent) of \(count) bytes") }
    }

    /// Tells the receiver that no more bytes come (an empty message), after what was sent has left.
    /// A stream already complete needs no word: the receiver has stopped listening.
    package func abandon() throws {
        try drain()
        guard sent < count else { return }
        try MPIError.check(MPI_Send(nil, 0, cmpi_byte(), dest, tag, comm.handle), "MPI_Send")
    }
}
