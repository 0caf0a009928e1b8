import CKernels
import NemoShardCore
import NemoShardModel

/// Plain transposes (no cast) read from their file in blocks of whole source rows, each one
/// `pread` into the worker's buffer and transposed from there into the destination's columns.
///
/// Measured against mapping the batch's source range (`SourceWindow`) on a 2-core VM, in-memory
/// `load` of 128 Nano experts (2.6 GB): 0.93-0.97 s -> 0.63-0.69 s. A mapping costs page tables
/// and an unmap per batch, and every unmap's TLB shootdown stalls the other workers; blocks of
/// 1 MiB (about a core's L2) beat 128-256 KiB (too few rows: short runs into each destination
/// row) and match one 16 MiB read.
enum RowBlockTranspose {
    /// Bytes of source rows read at a time (a block is at least one row).
    static let blockBytes = 1 << 20

    /// The piece's rows, columns and element size when it is a plain transpose.
    static func shape(_ p: Piece) -> (rows: Int, cols: Int, size: Int)? {
        guard case let .transpose(rows, cols, from, to) = p.transform, from == to, rows > 0, cols > 0,
              p.source.count == rows * cols * from.size else { return nil }
        return (rows, cols, from.size)
    }

    /// Produces every piece of `pieces` (plain transposes, see `shape`) from `file` into `sink`:
    /// in place where the sink gives a pointer (faulted in first, one call per piece), else
    /// through the worker's output buffer.
    static func run(_ pieces: [Piece], file: SystemFile, sink: TensorSink, scratch: ScratchBuffer,
                    blockBytes: Int = RowBlockTranspose.blockBytes) throws {
        for p in pieces {
            let outCount = p.transform.outputBytes(sourceBytes: p.source.count)
            if let dst = sink.directPointer(output: p.output, offset: p.destOffset, count: outCount) {
                Memory.populate(dst, count: outCount)
                try run(p, file: file, dst: dst, scratch: scratch, blockBytes: blockBytes)
            } else {
                let dst = try scratch.output(count: outCount)
                try run(p, file: file, dst: dst, scratch: scratch, blockBytes: blockBytes)
                try sink.write(output: p.output, offset: p.destOffset, UnsafeRawBufferPointer(start: dst, count: outCount))
            }
        }
    }

    private static func run(_ p: Piece, file: SystemFile, dst: UnsafeMutableRawPointer, scratch: ScratchBuffer, blockBytes: Int) throws {
        guard let (rows, cols, size) = shape(p) else { throw InternalError("a row-block transpose of a piece that is not a plain transpose") }
        let rowBytes = cols * size
        let step = max(blockBytes / rowBytes, 1)
        let buffer = try scratch.input(count: min(step, rows) * rowBytes)
        var r0 = 0
        while r0 < rows {
            let n = min(step, rows - r0)
            try file.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: n * rowBytes), at: p.source.offset + r0 * rowBytes)
            guard ns_transpose_rows(buffer, dst + r0 * size, n, cols, rows, size) == 0 else {
                throw InternalError("cannot transpose \(size)-byte elements")
            }
            r0 += n
        }
    }
}
