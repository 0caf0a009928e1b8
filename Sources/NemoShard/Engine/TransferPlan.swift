/// How a piece's source bytes become destination bytes.
enum Transform: Sendable, Equatable {
    /// Bytes unchanged.
    case copy
    /// A `rows x cols` matrix of `from` becomes its `cols x rows` transpose in `to`.
    case transpose(rows: Int, cols: Int, from: DType, to: DType)

    /// Destination bytes produced from `sourceBytes` source bytes.
    func outputBytes(sourceBytes: Int) -> Int {
        switch self {
        case .copy: return sourceBytes
        case let .transpose(rows, cols, _, to): return rows * cols * to.size
        }
    }
}

/// A byte range of one source file.
struct SourceRange: Sendable, Equatable {
    let file: Int
    let offset: Int
    let count: Int
    var end: Int { offset + count }
}

/// One unit of work: read `source`, apply `transform`, place the result at `destOffset` of output `output`.
struct Piece: Sendable, Equatable {
    let source: SourceRange
    let transform: Transform
    let output: Int
    let destOffset: Int

    init(source: SourceRange, transform: Transform, output: Int, destOffset: Int) {
        self.source = source
        self.transform = transform
        self.output = output
        self.destOffset = destOffset
    }
}

/// Everything one rank must read and produce: source files, output tensors and the pieces between them.
struct TransferPlan: Sendable {
    var files: [String]
    /// What each file (by index) was when the plan was made from its header; the executor refuses
    /// a file that no longer matches, so a shard changed mid-job is an error, not a mixed output.
    var fingerprints: [Int: FileFingerprint] = [:]
    var outputs: [TensorSpec]
    var pieces: [Piece]

    init(files: [String] = [], fingerprints: [Int: FileFingerprint] = [:], outputs: [TensorSpec] = [], pieces: [Piece] = []) {
        self.files = files
        self.fingerprints = fingerprints
        self.outputs = outputs
        self.pieces = pieces
    }

    /// Source bytes this plan reads.
    var bytesToRead: Int { pieces.reduce(0) { $0 + $1.source.count } }
    /// Bytes of all outputs.
    var bytesToProduce: Int { outputs.reduce(0) { $0 + $1.byteCount } }

    /// The plan without the outputs `keep` refuses (and without the pieces that produce them).
    func keeping(_ keep: (TensorSpec) -> Bool) -> TransferPlan {
        keeping(outputs: outputs.indices.filter { keep(outputs[$0]) })
    }

    /// The plan of only the outputs at `kept` (ascending), renumbered in that order.
    func keeping(outputs kept: [Int]) -> TransferPlan {
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

    /// Checks that every output byte is produced exactly once (a plan bug otherwise).
    func validateCoverage() throws {
        var covered = [Int](repeating: 0, count: outputs.count)
        for p in pieces {
            let n = p.transform.outputBytes(sourceBytes: p.source.count)
            guard p.destOffset >= 0, p.destOffset + n <= outputs[p.output].byteCount else {
                throw InternalError("\(outputs[p.output].name): a piece lies outside its tensor")
            }
            covered[p.output] += n
        }
        for (i, o) in outputs.enumerated() where covered[i] != o.byteCount {
            throw InternalError("\(o.name): the plan covers \(covered[i]) of \(o.byteCount) bytes")
        }
    }
}
