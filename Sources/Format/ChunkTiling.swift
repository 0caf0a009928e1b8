import NemoShardCore

/// Chunks of a row-major global tensor, each a box at `offsets` with extent `shape`: the global
/// shape they span, whether they tile it exactly (no overlap, no gap), where each chunk's bytes
/// land in the global tensor (`Runs`), and the copy of one chunk into a global buffer.
package enum ChunkTiling {
    /// The largest global tensor nemoshard writes (16 TiB); beyond it the shape is surely corrupt.
    package static let maxGlobalBytes = 1 << 44

    /// The shape the chunks span: per dimension, the largest `offset + extent`. An error (naming
    /// `tensor`) if the result overflows or exceeds `maxGlobalBytes`.
    package static func globalShape(of chunks: [DCPCheckpoint.Chunk], dtype: DType, tensor: String, directory: String) throws -> [Int] {
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
    package static func overlap(_ a: DCPCheckpoint.Chunk, _ b: DCPCheckpoint.Chunk) -> Bool {
        for d in a.offsets.indices where max(a.offsets[d], b.offsets[d]) >= min(a.offsets[d] + a.shape[d], b.offsets[d] + b.shape[d]) {
            return false
        }
        return true
    }

    /// Checks that the chunks cover every element of `globalShape` exactly once: no two share an
    /// element, and together they hold as many elements as the global tensor.
    package static func checkTiling(_ chunks: [DCPCheckpoint.Chunk], globalShape: [Int], tensor: String, directory: String) throws {
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
        var covered = 0
        for c in chunks {
            let (sum, overflow) = covered.addingReportingOverflow(c.shape.reduce(1, *))
            guard !overflow else { throw CheckpointError(path: directory, "tensor \"\(tensor)\": its chunks hold more elements than its global shape \(globalShape)") }
            covered = sum
        }
        guard covered == total else {
            throw CheckpointError(path: directory, "tensor \"\(tensor)\": its \(chunks.count) chunk(s) hold \(covered) of the \(total) elements of its global shape \(globalShape) (a gap)")
        }
    }

    /// Where a chunk's bytes land in its row-major global tensor: `count` runs of `run` bytes each,
    /// every run contiguous both in the chunk and in the global tensor, in the same (increasing)
    /// order in both. Run r is bytes `r * run ..< (r + 1) * run` of the chunk and starts `dest`
    /// bytes into the global tensor when the cursor is on it. A run spans the chunk's innermost
    /// dimensions up to the first one (from the inside) the chunk does not span whole, so a
    /// row-split chunk is one run and a column-split chunk is one run per row.
    /// The chunk must lie inside `globalShape` (as `globalShape(of:)` and `checkTiling` ensure).
    package struct Runs: Sendable {
        /// Bytes in one run.
        package let run: Int
        /// Runs in the chunk (0 for a chunk with no elements).
        package let count: Int
        /// The run the cursor is on (`count` when done).
        package private(set) var number = 0
        /// Byte offset in the global tensor of the current run.
        package private(set) var dest = 0
        /// Byte offset in the chunk of the current run.
        package var source: Int { number * run }
        package var done: Bool { number >= count }

        private let offsets: [Int]
        /// Element strides of the global tensor, dims 0...j.
        private let globalStride: [Int]
        private let shape: [Int]
        private let elementSize: Int
        /// Index of the current run in the chunk's dims 0..<j.
        private var index: [Int]

        package init(shape: [Int], offsets: [Int], globalShape: [Int], elementSize: Int) {
            let n = shape.count
            self.shape = shape
            self.offsets = offsets
            self.elementSize = elementSize
            guard n > 0 else {  // a scalar: one element
                run = elementSize
                count = 1
                globalStride = []
                index = []
                return
            }
            var cStride = [Int](repeating: 1, count: n), gStride = [Int](repeating: 1, count: n)
            for d in stride(from: n - 2, through: 0, by: -1) {
                cStride[d] = cStride[d + 1] * shape[d + 1]
                gStride[d] = gStride[d + 1] * globalShape[d + 1]
            }
            // j: the outermost dim of a run (every dim after it is whole).
            var j = n - 1
            while j > 0 && shape[j] == globalShape[j] { j -= 1 }
            globalStride = Array(gStride[0...j])
            index = [Int](repeating: 0, count: j)
            guard shape.allSatisfy({ $0 > 0 }) else {
                run = 0
                count = 0
                return
            }
            run = shape[j] * cStride[j] * elementSize
            count = shape[0..<j].reduce(1, *)
            dest = destination()
        }

        /// Byte offset in the global tensor of the run at `index`.
        private func destination() -> Int {
            guard let j = globalStride.indices.last else { return 0 }
            var g = offsets[j] * globalStride[j]
            for d in 0..<j { g += (index[d] + offsets[d]) * globalStride[d] }
            return g * elementSize
        }

        /// Moves to the next run.
        package mutating func advance() {
            guard !done else { return }
            number += 1
            var d = index.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < shape[d] { break }
                index[d] = 0
                d -= 1
            }
            if d < 0 { number = count } else { dest = destination() }
        }
    }

    /// Copies a chunk's row-major bytes into the row-major buffer of the global tensor.
    package static func place(_ chunk: UnsafeRawBufferPointer, shape: [Int], offsets: [Int],
                             into global: UnsafeMutableRawBufferPointer, globalShape: [Int], elementSize: Int) {
        guard let src = chunk.baseAddress, let dst = global.baseAddress else { return }
        var runs = Runs(shape: shape, offsets: offsets, globalShape: globalShape, elementSize: elementSize)
        while !runs.done {
            guard runs.source + runs.run <= chunk.count, runs.dest + runs.run <= global.count else { return }
            (dst + runs.dest).copyMemory(from: src + runs.source, byteCount: runs.run)
            runs.advance()
        }
    }
}
