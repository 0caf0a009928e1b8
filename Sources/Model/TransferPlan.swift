import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// How a piece's source bytes become destination bytes.
package enum Transform: Sendable, Equatable {
    /// Bytes unchanged.
    case copy
    /// A `rows x cols` matrix of `from` becomes its `cols x rows` transpose in `to`.
    case transpose(rows: Int, cols: Int, from: DType, to: DType)
    /// A quantized weight (the source) becomes floats, its scales read from their own ranges.
    case dequantize(Dequantization)

    /// Destination bytes produced from `sourceBytes` source bytes.
    package func outputBytes(sourceBytes: Int) -> Int {
        switch self {
        case .copy: return sourceBytes
        case let .transpose(rows, cols, _, to): return rows * cols * to.size
        case let .dequantize(d): return d.rows * d.cols * d.to.size
        }
    }

    /// Byte ranges read besides the piece's source (a dequantization's scales).
    package var auxiliarySources: [SourceRange] {
        guard case let .dequantize(d) = self else { return [] }
        return [d.scales] + (d.globalScale.map { [$0] } ?? [])
    }
}

/// A byte range of one source file.
package struct SourceRange: Sendable, Equatable {
    package let file: Int
    package let offset: Int
    package let count: Int
    package var end: Int { offset + count }

    package init(file: Int, offset: Int, count: Int) {
        self.file = file
        self.offset = offset
        self.count = count
    }
}

/// One unit of work: read `source`, apply `transform`, place the result at `destOffset` of output `output`.
package struct Piece: Sendable, Equatable {
    package let source: SourceRange
    package let transform: Transform
    package let output: Int
    package let destOffset: Int

    package init(source: SourceRange, transform: Transform, output: Int, destOffset: Int) {
        self.source = source
        self.transform = transform
        self.output = output
        self.destOffset = destOffset
    }

    /// The one way a piece is cut: a copy into consecutive pieces of at most `max` bytes, cut
    /// where `phase` plus the offset into this piece is a multiple of `max` (so with `phase` the
    /// piece's position in a stream of `max`-byte windows, no piece crosses a window boundary;
    /// with 0, every piece but the last is `max` bytes). Each keeps its output, its destination
    /// moving with its source. An empty copy yields no pieces; a transform other than a copy is
    /// one matrix and comes back whole.
    package func split(max: Int, phase: Int = 0) -> [Piece] {
        guard transform == .copy else { return [self] }
        let unit = Swift.max(max, 1)
        var out: [Piece] = []
        var done = 0
        while done < source.count {
            let n = Swift.min(source.count - done, unit - (phase + done) % unit)
            out.append(Piece(source: SourceRange(file: source.file, offset: source.offset + done, count: n),
                             transform: transform, output: output, destOffset: destOffset + done))
            done += n
        }
        return out
    }
}

/// Everything one rank must read and produce: source files, output tensors and the pieces between them.
package struct TransferPlan: Sendable {
    package var files: [String]
    /// What each file (by index) was when the plan was made from its header; the executor refuses
    /// a file that no longer matches, so a shard changed mid-job is an error, not a mixed output.
    package var fingerprints: [Int: FileFingerprint] = [:]
    package var outputs: [TensorSpec]
    package var pieces: [Piece]

    package init(files: [String] = [], fingerprints: [Int: FileFingerprint] = [:], outputs: [TensorSpec] = [], pieces: [Piece] = []) {
        self.files = files
        self.fingerprints = fingerprints
        self.outputs = outputs
        self.pieces = pieces
    }

    /// Source bytes this plan reads.
    package var bytesToRead: Int { pieces.reduce(0) { $0 + $1.source.count } }
    /// Bytes of all outputs.
    package var bytesToProduce: Int { outputs.reduce(0) { $0 + $1.byteCount } }

    /// The plan without the outputs `keep` refuses (and without the pieces that produce them).
    package func keeping(_ keep: (TensorSpec) -> Bool) -> TransferPlan {
        keeping(outputs: outputs.indices.filter { keep(outputs[$0]) })
    }

    /// The plan of only the outputs at `kept` (ascending), renumbered in that order.
    package func keeping(outputs kept: [Int]) -> TransferPlan {
        var index = [Int?](repeating: nil, count: outputs.count)
        var out = TransferPlan(files: files, fingerprints: fingerprints)
        for i in kept {
            index[i] = out.outputs.count
            out.outputs.append(outputs[i])
        }
        for p in pieces {
            guard let j = index[p.output] else { continue }
            out.pieces.append(Piece(source: p.source, transform: p.transform, output: j, destOffset: p.destOffset))
        }
        return out
    }

    /// Checks that every output byte is produced exactly once (a plan bug otherwise): each output's
    /// destination intervals, sorted, must be disjoint and together cover `[0, byteCount)`. (Equal
    /// byte sums are not enough: one piece written twice and another byte range never written have
    /// the same sum as a correct plan.)
    package func validateCoverage() throws {
        // One flat list in (output, start, end) order, not an array per output (a plan may have a
        // million outputs); planners make their pieces in that order, so it is rarely sorted here.
        var intervals: [(output: Int, range: Range<Int>)] = []
        intervals.reserveCapacity(pieces.count)
        for p in pieces {
            guard outputs.indices.contains(p.output) else {
                throw InternalError("a piece names output \(p.output) of a plan with \(outputs.count)")
            }
            let n = p.transform.outputBytes(sourceBytes: p.source.count)
            guard n >= 0, p.destOffset >= 0, p.destOffset <= outputs[p.output].byteCount - n else {
                throw InternalError("\(outputs[p.output].name): a piece lies outside its tensor")
            }
            if n > 0 { intervals.append((p.output, p.destOffset..<(p.destOffset + n))) }
        }
        func before(_ a: (output: Int, range: Range<Int>), _ b: (output: Int, range: Range<Int>)) -> Bool {
            (a.output, a.range.lowerBound, a.range.upperBound) < (b.output, b.range.lowerBound, b.range.upperBound)
        }
        if zip(intervals, intervals.dropFirst()).contains(where: { before($1, $0) }) { intervals.sort(by: before) }
        var next = 0
        for (i, o) in outputs.enumerated() {
            let first = next
            while next < intervals.count, intervals[next].output == i { next += 1 }
            let sorted = intervals[first..<next].lazy.map(\.range)
            var covered = 0  // bytes [0, covered) are produced, each once, by the intervals so far
            var firstGap: Range<Int>?
            for r in sorted {
                if r.lowerBound < covered {
                    throw InternalError("\(o.name): the plan produces bytes [\(r.lowerBound), \(min(covered, r.upperBound))) more than once")
                }
                if r.lowerBound > covered, firstGap == nil { firstGap = covered..<r.lowerBound }
                covered = r.upperBound
            }
            if covered < o.byteCount, firstGap == nil { firstGap = covered..<o.byteCount }
            if let gap = firstGap {
                let total = sorted.reduce(0) { $0 + $1.count }
                throw InternalError("\(o.name): the plan covers \(total) of \(o.byteCount) bytes; bytes [\(gap.lowerBound), \(gap.upperBound)) are produced by no piece")
            }
        }
    }
}
