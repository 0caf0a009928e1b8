import CKernels
import Dispatch
import Synchronization
import NemoShardCore
import NemoShardFormat
import NemoShardModel

/// Counters and phase times of one executed plan.
package struct ExecutionStats: Sendable {
    package var bytesRead = 0
    package var bytesProduced = 0

    package init() {}
}

/// Runs a `TransferPlan`. Pieces are sorted by file position and exactly adjacent source ranges are
/// coalesced into batches of at most `chunkBytes` (bytes no piece asked for are never read). Per batch:
/// - copies into memory: one `pread` straight into the destination tensor;
/// - copies into a file: `copy_file_range` (in-kernel), falling back to read + `pwrite`;
/// - plain transposes: read in blocks of source rows and transposed from the worker's buffer
///   (`RowBlockTranspose`);
/// - casts, dequantizations and mixed batches: the batch's source range is mapped read-only for
///   the duration of the batch only (`MAP_POPULATE`, never a whole file) and transformed straight
///   into the destination (memory) or into a per-thread scratch buffer that is then written.
/// With `threads > 1` that many workers take batches in turn.
package final class PlanExecutor: Sendable {
    package let chunkBytes: Int
    package let threads: Int
    /// Ask for each batch's whole source range at once (`POSIX_FADV_WILLNEED`) before reading it.
    /// From a cold cache (4 MoE layers, 11.9 GB, 8 ranks) it took `save-hf` from 13.0-13.2 s to
    /// 12.1-12.2 s and `reshard 8 -> 4` from 13.1-14.2 s to 12.4-12.9 s, but `load --out` from
    /// 13.3 s to 14.7 s (its ranks' ranges interleave in the same files), so jobs choose.
    package let prefetch: Bool

    /// Largest coalesced read (and mapped window): big enough for long sequential reads, small
    /// enough that a rank's transient memory stays far below its output.
    package static let defaultChunkBytes = 16 << 20

    /// Batches of copies whose pieces average at least this many bytes are read piece by piece
    /// straight into place (`pread`, `copy_file_range`); smaller ones go through the batch's window.
    package static let directCopyBytes = 64 << 10

    package init(chunkBytes: Int = PlanExecutor.defaultChunkBytes, threads: Int = 1, prefetch: Bool = false) {
        self.chunkBytes = max(chunkBytes, 4096)
        self.threads = max(threads, 1)
        self.prefetch = prefetch
    }

    package struct Batch: Sendable {
        package let file: Int
        package let offset: Int
        package var count: Int
        package var pieces: [Piece]
    }

    /// Splits large copies and casts, sorts and coalesces.
    package func batches(_ plan: TransferPlan) -> [Batch] {
        var pieces: [Piece] = []
        pieces.reserveCapacity(plan.pieces.count)
        let step = max(chunkBytes / 8 * 8, 1)
        for p in plan.pieces {
            // A piece within one step is its own split (an empty copy stays, as one piece: its
            // file is still opened and checked); no array is made for it.
            if p.source.count <= step { pieces.append(p) } else { pieces += p.split(max: step) }
        }
        pieces.sort { ($0.source.file, $0.source.offset) < ($1.source.file, $1.source.offset) }
        var out: [Batch] = []
        for p in pieces {
            // The last batch grows in place: a copy of it taken here would share its pieces and
            // make every append copy them all (quadratic in the pieces of one batch).
            if let i = out.indices.last, out[i].file == p.source.file, out[i].offset + out[i].count == p.source.offset,
               out[i].count + p.source.count <= chunkBytes {
                out[i].count += p.source.count
                out[i].pieces.append(p)
            } else {
                out.append(Batch(file: p.source.file, offset: p.source.offset, count: p.source.count, pieces: [p]))
            }
        }
        return out
    }

    /// Executes `plan` into `sink`. `progress` receives cumulative source bytes done.
    package func run(_ plan: TransferPlan, into sink: TensorSink, progress: (@Sendable (Int) -> Void)? = nil) throws -> ExecutionStats {
        // Only the files some piece reads are opened (a rank may not see the others at all), and
        // only while they are needed.
        let files = SourceFiles(plan)
        defer { files.closeAll() }
        // Whole-output copies the sink takes as they are (mapped), then everything else.
        var remaining = plan
        var adoptedBytes = 0
        remaining.pieces = try plan.pieces.filter { p in
            guard p.transform == .copy, p.destOffset == 0, p.source.count == plan.outputs[p.output].byteCount,
                  try sink.adopt(file: try files.file(p.source.file), offset: p.source.offset, count: p.source.count, output: p.output)
            else { return true }
            adoptedBytes += p.source.count
            return false
        }
        try sink.prepareOutputs()
        let adopted = adoptedBytes
        let work = batches(remaining)
        let state = RunState(total: work.count)
        let workers = min(threads, max(work.count, 1))
        let body: @Sendable (Int) -> Void = { _ in
            let scratch = ScratchBuffer()
            while let i = state.next() {
                do {
                    try self.process(work[i], files: files, sink: sink, scratch: scratch)
                } catch {
                    state.fail(error)
                    return
                }
                let done = state.finished(bytes: work[i].count) + adopted
                if let progress { state.report { progress(done) } }
            }
        }
        if workers == 1 { body(0) } else { DispatchQueue.concurrentPerform(iterations: workers, execute: body) }
        if let e = state.error { throw e }
        try files.verifyUnchanged()
        var stats = ExecutionStats()
        stats.bytesRead = state.bytesDone + adoptedBytes
        stats.bytesProduced = plan.bytesToProduce
        return stats
    }

    private func process(_ b: Batch, files: SourceFiles, sink: TensorSink, scratch: ScratchBuffer) throws {
        let file = try files.file(b.file)
        do {
            try process(b, file: file, files: files, sink: sink, scratch: scratch)
        } catch {
            throw MappedSource.explain(error, reading: file, expected: files.fingerprint(b.file))
        }
    }

    private func process(_ b: Batch, file: SystemFile, files: SourceFiles, sink: TensorSink, scratch: ScratchBuffer) throws {
        if prefetch { file.adviseWillNeed(offset: b.offset, length: b.count) }
        // Plain copies of large pieces need no user-space source buffer. Many small ones (a
        // million tiny tensors) take the window below instead: one read or mapping of the batch
        // and a memory copy each, not two system calls each.
        if b.count >= PlanExecutor.directCopyBytes * b.pieces.count, b.pieces.allSatisfy({ $0.transform == .copy }) {
            var rest: [Piece] = []
            for p in b.pieces {
                if let dst = sink.directPointer(output: p.output, offset: p.destOffset, count: p.source.count) {
                    Memory.populate(dst, count: p.source.count)
                    try file.read(into: UnsafeMutableRawBufferPointer(start: dst, count: p.source.count), at: p.source.offset)
                } else if try !sink.copy(from: file, offset: p.source.offset, count: p.source.count, output: p.output, destOffset: p.destOffset) {
                    rest.append(p)
                }
            }
            if rest.isEmpty { return }
        }
        if b.pieces.allSatisfy({ RowBlockTranspose.shape($0) != nil }) {
            return try RowBlockTranspose.run(b.pieces, file: file, sink: sink, scratch: scratch)
        }
        try SourceWindow.with(file: file, offset: b.offset, count: b.count, scratch: scratch) { base in
            for p in b.pieces { try apply(p, src: base + (p.source.offset - b.offset), sink: sink, scratch: scratch, files: files) }
        }
    }

    /// Produces one piece from its source bytes at `src` into `sink`. A dequantizing piece reads
    /// its scales from `files` (nil: the sources are tensors in memory, which are never quantized).
    private func apply(_ p: Piece, src: UnsafeRawPointer, sink: TensorSink, scratch: ScratchBuffer, files: SourceFiles?) throws {
        let outCount = p.transform.outputBytes(sourceBytes: p.source.count)
        func produce(_ dst: UnsafeMutableRawPointer) throws {
            guard case let .dequantize(d) = p.transform else {
                return try PlanExecutor.transform(p.transform, src: src, sourceBytes: p.source.count, dst: dst)
            }
            guard let files else { throw InternalError("a dequantizing piece whose source is a tensor in memory") }
            try Dequantizer.run(d, src: src, sourceBytes: p.source.count, dst: dst, files: files, scratch: scratch)
        }
        if let dst = sink.directPointer(output: p.output, offset: p.destOffset, count: outCount) {
            Memory.populate(dst, count: outCount)
            try produce(dst)
        } else if p.transform == .copy {
            try sink.write(output: p.output, offset: p.destOffset, UnsafeRawBufferPointer(start: src, count: outCount))
        } else {
            let dst = try scratch.output(count: outCount)
            try produce(dst)
            try sink.write(output: p.output, offset: p.destOffset, UnsafeRawBufferPointer(start: dst, count: outCount))
        }
    }

    /// Executes `plan` whose sources are tensors in memory: `SourceRange.file` indexes `tensors`
    /// (e.g. a loaded state dict on its way back to Hugging Face). Workers take pieces in turn.
    package func run(_ plan: TransferPlan, from tensors: [Tensor], into sink: TensorSink) throws -> ExecutionStats {
        for p in plan.pieces where p.source.file >= tensors.count || p.source.offset + p.source.count > tensors[p.source.file].byteCount {
            throw InternalError("piece reads past the end of in-memory tensor \(p.source.file)")
        }
        try sink.prepareOutputs()
        let state = RunState(total: plan.pieces.count)
        let body: @Sendable (Int) -> Void = { _ in
            let scratch = ScratchBuffer()
            while let i = state.next() {
                let p = plan.pieces[i]
                do {
                    guard let base = tensors[p.source.file].storage.bytes.baseAddress else { throw InternalError("in-memory tensor \(p.source.file) has no storage") }
                    try self.apply(p, src: UnsafeRawPointer(base) + p.source.offset, sink: sink, scratch: scratch, files: nil)
                } catch is MappedSource.Fault {
                    state.fail(InputChangedError(path: "the source file mapped under in-memory tensor \(plan.files.indices.contains(p.source.file) ? plan.files[p.source.file] : String(p.source.file))",
                                                 "it shrank after it was loaded"))
                    return
                } catch {
                    state.fail(error)
                    return
                }
                _ = state.finished(bytes: p.source.count)
            }
        }
        let workers = min(threads, max(plan.pieces.count, 1))
        if workers == 1 { body(0) } else { DispatchQueue.concurrentPerform(iterations: workers, execute: body) }
        if let e = state.error { throw e }
        var stats = ExecutionStats()
        stats.bytesRead = state.bytesDone
        stats.bytesProduced = plan.bytesToProduce
        return stats
    }

    /// Applies one transform from `src` to `dst`.
    package static func transform(_ t: Transform, src: UnsafeRawPointer, sourceBytes: Int, dst: UnsafeMutableRawPointer) throws {
        switch t {
        case .copy:
            try MappedSource.copy(dst, from: src, count: sourceBytes)
        case let .transpose(rows, cols, from, to):
            // The source may be a mapped input file: the guarded kernels survive its truncation.
            if from == to {
                let rc = ns_guarded_transpose_raw(src, dst, rows, cols, from.size)
                if rc == Int32(NS_SOURCE_FAULT) { throw MappedSource.Fault() }
                guard rc == 0 else { throw CheckpointError(path: from.rawValue, "cannot transpose \(from.size)-byte elements") }
            } else {
                guard let a = from.kernelKind, let b = to.kernelKind else {
                    throw CheckpointError(path: from.rawValue, "cannot convert \(from.rawValue) to \(to.rawValue)")
                }
                let rc = ns_guarded_transpose(src, a, dst, b, rows, cols)
                if rc == Int32(NS_SOURCE_FAULT) { throw MappedSource.Fault() }
                guard rc == 0 else { throw CheckpointError(path: from.rawValue, "cannot convert \(from.rawValue) to \(to.rawValue)") }
            }
        case .dequantize:
            throw InternalError("a dequantizing piece needs its scales (Dequantizer.run)")
        }
    }
}

/// A batch's source bytes in memory: a read-only mapping of just that range (unmapped right after),
/// or, where mapping fails, a `pread` into the worker's scratch.
package enum SourceWindow {
    package static func with(file: SystemFile, offset: Int, count: Int, scratch: ScratchBuffer,
                     _ body: (UnsafeRawPointer) throws -> Void) throws {
        if try file.withMappedRange(offset: offset, count: count, body) { return }
        let buffer = try scratch.input(count: max(count, 1))
        try file.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: count), at: offset)
        try body(UnsafeRawPointer(buffer))
    }
}

/// Per-worker reusable buffers that grow to the largest request (from the throwing allocator:
/// a transposed piece is as large as the input makes it).
package final class ScratchBuffer {
    private var inStorage: TensorStorage?
    private var outStorage: TensorStorage?
    private var auxStorage: TensorStorage?

    package func input(count: Int) throws -> UnsafeMutableRawPointer {
        try ScratchBuffer.grow(&inStorage, to: count, for: "a worker's read buffer")
    }

    package func output(count: Int) throws -> UnsafeMutableRawPointer {
        try ScratchBuffer.grow(&outStorage, to: count, for: "a worker's transpose buffer")
    }

    /// A dequantizing piece's block scales (apart from the batch's source window, which may be `input`).
    package func auxiliary(count: Int) throws -> UnsafeMutableRawPointer {
        try ScratchBuffer.grow(&auxStorage, to: count, for: "a worker's scale buffer")
    }

    private static func grow(_ storage: inout TensorStorage?, to count: Int, for purpose: String) throws -> UnsafeMutableRawPointer {
        if let s = storage, s.bytes.count >= count, let base = s.bytes.baseAddress { return base }
        storage = nil
        let s = try TensorStorage(count: max(count, 1), for: purpose)
        storage = s
        guard let base = s.bytes.baseAddress else { throw InternalError("\(purpose) has no address") }
        return base
    }
}

/// Work distribution and error collection shared by the workers.
package final class RunState: Sendable {
    private struct Counters {
        var nextIndex = 0
        var bytesDone = 0
        var error: Error?
    }

    private let counters = Mutex(Counters())
    private let total: Int

    package init(total: Int) { self.total = total }

    package var bytesDone: Int { counters.withLock { $0.bytesDone } }
    package var error: Error? { counters.withLock { $0.error } }

    package func next() -> Int? {
        counters.withLock { c in
            guard c.error == nil, c.nextIndex < total else { return nil }
            defer { c.nextIndex += 1 }
            return c.nextIndex
        }
    }

    package func finished(bytes: Int) -> Int { counters.withLock { $0.bytesDone += bytes; return $0.bytesDone } }
    package func fail(_ e: Error) { counters.withLock { if $0.error == nil { $0.error = e } } }
    package func report(_ body: () -> Void) { counters.withLock { _ in body() } }
}
