import CKernels
import Dispatch
import Glibc

/// Counters and phase times of one executed plan.
public struct ExecutionStats: Sendable {
    public var bytesRead = 0
    public var bytesProduced = 0
    public var readSeconds = 0.0
    public var transformSeconds = 0.0
    public var writeSeconds = 0.0
    public var wallSeconds = 0.0
}

/// Monotonic seconds.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Runs a `TransferPlan`: sorts the pieces by file position, coalesces exactly adjacent ranges into
/// large `pread`s of at most `chunkBytes` (bytes that no piece asked for are never read), and applies
/// each piece's transform straight into the sink. With `threads >= 2` a reader thread fills the next
/// chunk while the current one is transformed.
public final class PlanExecutor {
    public let chunkBytes: Int
    public let threads: Int

    public init(chunkBytes: Int = 32 << 20, threads: Int = 1) {
        self.chunkBytes = max(chunkBytes, 4096)
        self.threads = max(threads, 1)
    }

    struct Batch: Sendable {
        let file: Int
        let offset: Int
        var count: Int
        var pieces: [Piece]
    }

    /// Splits large copies and casts, sorts and coalesces.
    func batches(_ plan: TransferPlan) -> [Batch] {
        var pieces: [Piece] = []
        pieces.reserveCapacity(plan.pieces.count)
        for p in plan.pieces {
            switch p.transform {
            case .transpose:
                pieces.append(p)
            case .copy, .convert:
                var done = 0
                let unit: Int
                if case let .convert(from, _) = p.transform { unit = from.size } else { unit = 1 }
                let step = max(chunkBytes / 8 * 8, unit)
                while done < p.source.count || (p.source.count == 0 && done == 0) {
                    let n = min(step, p.source.count - done)
                    let outOffset = p.transform.outputBytes(sourceBytes: done)
                    pieces.append(Piece(source: SourceRange(file: p.source.file, offset: p.source.offset + done, count: n),
                                        transform: p.transform, output: p.output, destOffset: p.destOffset + outOffset))
                    done += n
                    if n == 0 { break }
                }
            }
        }
        pieces.sort { ($0.source.file, $0.source.offset) < ($1.source.file, $1.source.offset) }
        var out: [Batch] = []
        for p in pieces {
            if var last = out.last, last.file == p.source.file, last.offset + last.count == p.source.offset,
               last.count + p.source.count <= chunkBytes {
                last.count += p.source.count
                last.pieces.append(p)
                out[out.count - 1] = last
            } else {
                out.append(Batch(file: p.source.file, offset: p.source.offset, count: p.source.count, pieces: [p]))
            }
        }
        return out
    }

    /// Executes `plan` into `sink`. `progress` receives cumulative source bytes done.
    public func run(_ plan: TransferPlan, into sink: TensorSink, progress: ((Int) -> Void)? = nil) throws -> ExecutionStats {
        let start = monotonicSeconds()
        var stats = ExecutionStats()
        let files = try plan.files.map { path -> SystemFile in
            let f = try SystemFile(readingAt: path)
            f.adviseSequential()
            return f
        }
        let work = batches(plan)
        let largest = work.map(\.count).max() ?? 0
        let bufferSize = max(largest, 1)
        let buffers = (0..<(threads >= 2 ? 2 : 1)).map { _ in TensorStorage(count: bufferSize) }
        let scratch = ScratchBuffer()

        let readBatch: @Sendable (Batch, TensorStorage) throws -> Void = { b, buffer in
            try files[b.file].read(into: UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[0..<b.count]), at: b.offset)
        }

        var done = 0
        if buffers.count == 1 {
            for b in work {
                let t0 = monotonicSeconds()
                try readBatch(b, buffers[0])
                stats.readSeconds += monotonicSeconds() - t0
                try apply(b, buffer: buffers[0], sink: sink, scratch: scratch, stats: &stats)
                done += b.count
                progress?(done)
            }
        } else {
            // Double buffering: the reader fills buffer k % 2 while the caller transforms the other.
            let free = DispatchSemaphore(value: 2)
            let ready = DispatchSemaphore(value: 0)
            let state = ReaderState()
            let reader = DispatchQueue(label: "nemoshard.reader")
            reader.async {
                for (k, b) in work.enumerated() {
                    free.wait()
                    if state.cancelled { ready.signal(); return }
                    let t0 = monotonicSeconds()
                    do { try readBatch(b, buffers[k % 2]) } catch {
                        state.error = error
                        ready.signal()
                        return
                    }
                    state.readSeconds += monotonicSeconds() - t0
                    ready.signal()
                }
            }
            defer {
                state.cancelled = true
                free.signal()
                free.signal()
                reader.sync {}
            }
            for (k, b) in work.enumerated() {
                ready.wait()
                if let e = state.error { throw e }
                try apply(b, buffer: buffers[k % 2], sink: sink, scratch: scratch, stats: &stats)
                free.signal()
                done += b.count
                progress?(done)
            }
            reader.sync {}
            stats.readSeconds = state.readSeconds
        }
        stats.bytesRead = done
        stats.bytesProduced = plan.bytesToProduce
        stats.wallSeconds = monotonicSeconds() - start
        return stats
    }

    private func apply(_ b: Batch, buffer: TensorStorage, sink: TensorSink, scratch: ScratchBuffer,
                       stats: inout ExecutionStats) throws {
        let base = UnsafeRawPointer(buffer.bytes.baseAddress!)
        for p in b.pieces {
            let src = base + (p.source.offset - b.offset)
            let outCount = p.transform.outputBytes(sourceBytes: p.source.count)
            if case .copy = p.transform {
                let t0 = monotonicSeconds()
                if let dst = sink.directPointer(output: p.output, offset: p.destOffset, count: outCount) {
                    dst.copyMemory(from: src, byteCount: outCount)
                    stats.transformSeconds += monotonicSeconds() - t0
                } else {
                    try sink.write(output: p.output, offset: p.destOffset, UnsafeRawBufferPointer(start: src, count: outCount))
                    stats.writeSeconds += monotonicSeconds() - t0
                }
                continue
            }
            let direct = sink.directPointer(output: p.output, offset: p.destOffset, count: outCount)
            let dst = direct ?? scratch.pointer(count: outCount)
            let t0 = monotonicSeconds()
            try PlanExecutor.transform(p.transform, src: src, sourceBytes: p.source.count, dst: dst)
            let t1 = monotonicSeconds()
            stats.transformSeconds += t1 - t0
            if direct == nil {
                try sink.write(output: p.output, offset: p.destOffset, UnsafeRawBufferPointer(start: dst, count: outCount))
                stats.writeSeconds += monotonicSeconds() - t1
            }
        }
    }

    /// Applies one transform from `src` to `dst`.
    static func transform(_ t: Transform, src: UnsafeRawPointer, sourceBytes: Int, dst: UnsafeMutableRawPointer) throws {
        switch t {
        case .copy:
            dst.copyMemory(from: src, byteCount: sourceBytes)
        case let .transpose(rows, cols, from, to):
            if from == to {
                guard ns_transpose_raw(src, dst, rows, cols, from.size) == 0 else {
                    throw CheckpointError(path: from.rawValue, "cannot transpose \(from.size)-byte elements")
                }
            } else {
                guard let a = from.kernelKind, let b = to.kernelKind, ns_transpose(src, a, dst, b, rows, cols) == 0 else {
                    throw CheckpointError(path: from.rawValue, "cannot convert \(from.rawValue) to \(to.rawValue)")
                }
            }
        case let .convert(from, to):
            guard let a = from.kernelKind, let b = to.kernelKind,
                  ns_convert(src, a, dst, b, sourceBytes / from.size) == 0 else {
                throw CheckpointError(path: from.rawValue, "cannot convert \(from.rawValue) to \(to.rawValue)")
            }
        }
    }
}

/// A reusable output staging buffer that grows to the largest request.
final class ScratchBuffer {
    private var storage: TensorStorage?

    func pointer(count: Int) -> UnsafeMutableRawPointer {
        if storage == nil || storage!.bytes.count < count { storage = TensorStorage(count: count) }
        return storage!.bytes.baseAddress!
    }
}

/// Shared between the reader thread and the caller; guarded by the semaphores' ordering.
final class ReaderState: @unchecked Sendable {
    var error: Error?
    var cancelled = false
    var readSeconds = 0.0
}
