/// Chunks of a row-major global tensor, each a box at `offsets` with extent `shape`: the global
/// shape they span, whether they tile it exactly (no overlap, no gap), and the copy of one chunk
/// into the global buffer.
public enum ChunkTiling {
    /// The largest global tensor nemoshard assembles (16 TiB); beyond it the shape is surely corrupt.
    public static let maxGlobalBytes = 1 << 44

    /// The shape the chunks span: per dimension, the largest `offset + extent`. An error (naming
    /// `tensor`) if the result overflows or exceeds `maxGlobalBytes`.
    public static func globalShape(of chunks: [DCPCheckpoint.Chunk], dtype: DType, tensor: String, directory: String) throws -> [Int] {
        guard let rank = chunks.first?.shape.count else { return [] }
        var shape = [Int](repeating: 0, count: rank)
        for c in chunks {
            for d in 0..<rank {
                let (end, overflow) = c.offsets[d].addingReportingOverflow(c.shape[d])
                guard !overflow else { throw CheckpointError(path: FS.join(directory, c.file), "tensor \"\(tensor)\": offsets \(c.offsets) overflow") }
                shape[d] = max(shape[d], end)
            }
        }
        var bytes = dtype.size
        for s in shape {
            let (p, overflow) = bytes.multipliedReportingOverflow(by: s)
            guard !overflow, p <= maxGlobalBytes else {
                throw CheckpointError(path: directory, "tensor \"\(tensor)\": global shape \(shape) is larger than nemoshard accepts")
            }
            bytes = p
        }
        return shape
    }

    /// Whether boxes `a` and `b` share an element.
    static func overlap(_ a: DCPCheckpoint.Chunk, _ b: DCPCheckpoint.Chunk) -> Bool {
        for d in a.offsets.indices where max(a.offsets[d], b.offsets[d]) >= min(a.offsets[d] + a.shape[d], b.offsets[d] + b.shape[d]) {
            return false
        }
        return true
    }

    /// Checks that the chunks cover every element of `globalShape` exactly once: no two share an
    /// element, and together they hold as many elements as the global tensor.
    public static func checkTiling(_ chunks: [DCPCheckpoint.Chunk], globalShape: [Int], tensor: String, directory: String) throws {
        // Sweep along the dimension the chunks are split on most (row or column sharding alike):
        // a chunk can only overlap the ones that start before it ends there.
        let empty = chunks.first?.offsets.isEmpty ?? true
        let d = empty ? 0 : globalShape.indices.max { x, y in
            (Set(chunks.map { $0.offsets[x] }).count, -x) < (Set(chunks.map { $0.offsets[y] }).count, -y)
        } ?? 0
        func start(_ c: DCPCheckpoint.Chunk) -> Int { empty ? 0 : c.offsets[d] }
        let sorted = chunks.sorted { a, b in
            (start(a), a.file) < (start(b), b.file) || (start(a) == start(b) && a.file == b.file && a.offsets.lexicographicallyPrecedes(b.offsets))
        }
        for i in sorted.indices {
            let a = sorted[i]
            let aEnd = empty ? 1 : start(a) + a.shape[d]
            var j = i + 1
            while j < sorted.count, start(sorted[j]) < aEnd {
                let b = sorted[j]
                if overlap(a, b) && a.shape.allSatisfy({ $0 > 0 }) && b.shape.allSatisfy({ $0 > 0 }) {
                    throw CheckpointError(path: FS.join(directory, b.file), "tensor \"\(tensor)\": the chunk at offsets \(b.offsets) shape \(b.shape) overlaps the one at offsets \(a.offsets) shape \(a.shape) in \(a.file)")
                }
                j += 1
            }
        }
        let total = globalShape.reduce(1, *)
        let covered = chunks.reduce(0) { $0 + $1.shape.reduce(1, *) }
        guard covered == total else {
            throw CheckpointError(path: directory, "tensor \"\(tensor)\": its \(chunks.count) chunk(s) hold \(covered) of the \(total) elements of its global shape \(globalShape) (a gap)")
        }
    }

    /// Copies a chunk's row-major bytes into the row-major buffer of the global tensor.
    /// Contiguous runs are as long as the chunk spans whole trailing dimensions.
    public static func place(_ chunk: UnsafeRawBufferPointer, shape: [Int], offsets: [Int],
                             into global: UnsafeMutableRawBufferPointer, globalShape: [Int], elementSize: Int) {
        let n = shape.count
        guard n > 0 else {
            if chunk.count >= elementSize, global.count >= elementSize, let s = chunk.baseAddress, let g = global.baseAddress {
                g.copyMemory(from: s, byteCount: elementSize)
            }
            return
        }
        guard shape.allSatisfy({ $0 > 0 }), let src = chunk.baseAddress, let dst = global.baseAddress else { return }
        // Element strides of the chunk and of the global tensor.
        var cStride = [Int](repeating: 1, count: n), gStride = [Int](repeating: 1, count: n)
        for d in stride(from: n - 2, through: 0, by: -1) {
            cStride[d] = cStride[d + 1] * shape[d + 1]
            gStride[d] = gStride[d + 1] * globalShape[d + 1]
        }
        // j: the outermost dim of the contiguous run (every dim after it is whole).
        var j = n - 1
        while j > 0 && shape[j] == globalShape[j] { j -= 1 }
        let run = shape[j] * cStride[j] * elementSize
        var index = [Int](repeating: 0, count: j)
        while true {
            var s = 0, g = offsets[j] * gStride[j]
            for d in 0..<j {
                s += index[d] * cStride[d]
                g += (index[d] + offsets[d]) * gStride[d]
            }
            (dst + g * elementSize).copyMemory(from: src + s * elementSize, byteCount: run)
            var d = j - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < shape[d] { break }
                index[d] = 0
                d -= 1
            }
            if d < 0 { break }
        }
    }
}
