import NemoShardCore
import NemoShardFormat
import NemoShardModel

/// A safetensors file produced window by window, in file order: the header, then consecutive byte
/// ranges of the data, each with the part of the plan that produces exactly those bytes. A rank
/// streams a shard this way (`HFExport`'s gathered mode) holding two windows, never the file.
package struct ImageWindows {
    /// One byte range of the file and the pieces that produce it (output indices unchanged).
    package struct Window {
        package let range: Range<Int>
        package let plan: TransferPlan
    }

    package let header: [UInt8]
    /// File offset of each output.
    package let offsets: [Int]
    package let fileSize: Int
    package let windows: [Window]

    /// Splits `plan` (whose outputs are the file's tensors, in file order) into windows of about
    /// `windowBytes`: copies are cut at window boundaries; a transpose stays whole, so a window
    /// may be as large as the largest transposed piece.
    package init(plan: TransferPlan, metadata: [(String, String)], windowBytes: Int) throws {
        (header, offsets, fileSize) = SafetensorsWriter.layout(plan.outputs, metadata: metadata)
        let unit = max(windowBytes, 1)
        // Every piece as the file range it fills; copies cut where a window would end.
        var placed: [(start: Int, piece: Piece)] = []
        for p in plan.pieces {
            let start = offsets[p.output] + p.destOffset
            for q in p.split(max: unit, phase: start - header.count) { placed.append((start + q.destOffset - p.destOffset, q)) }
        }
        placed.sort { $0.start < $1.start }
        var windows: [Window] = []
        var current = TransferPlan(files: plan.files, fingerprints: plan.fingerprints, outputs: plan.outputs)
        var lo = header.count, hi = header.count
        for (start, p) in placed {
            guard start == hi else {
                throw InternalError("export plan leaves bytes \(hi)..<\(start) of a shard unproduced or produced twice")
            }
            let end = start + p.transform.outputBytes(sourceBytes: p.source.count)
            if hi > lo, end - lo > unit {
                windows.append(Window(range: lo..<hi, plan: current))
                current.pieces = []
                lo = hi
            }
            current.pieces.append(p)
            hi = end
        }
        if hi > lo { windows.append(Window(range: lo..<hi, plan: current)) }
        guard hi == fileSize else { throw InternalError("export plan produces \(hi) of a shard's \(fileSize) bytes") }
        self.windows = windows
    }
}

/// Takes the outputs of one `ImageWindows.Window` into `buffer`, which holds the file's bytes
/// `window.lowerBound...`.
package final class WindowSink: TensorSink, @unchecked Sendable {
    private let base: UnsafeMutableRawPointer
    private let offsets: [Int]
    private let window: Range<Int>

    package init(buffer: UnsafeMutableRawBufferPointer, window: Range<Int>, offsets: [Int]) {
        precondition(buffer.count >= window.count, "window buffer too small")
        base = buffer.baseAddress!
        self.offsets = offsets
        self.window = window
    }

    package func directPointer(output: Int, offset: Int, count: Int) -> UnsafeMutableRawPointer? {
        let at = offsets[output] + offset
        precondition(at >= window.lowerBound && at + count <= window.upperBound, "piece outside its window")
        return base + (at - window.lowerBound)
    }

    package func write(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0, let src = bytes.baseAddress,
              let dst = directPointer(output: output, offset: offset, count: bytes.count) else { return }
        try MappedSource.copy(dst, from: src, count: bytes.count)
    }
}
