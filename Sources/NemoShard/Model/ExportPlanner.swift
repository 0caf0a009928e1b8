import Foundation

/// Python `re.match` over keys: a pattern anchored at the start of the key only.
public struct KeyFilter: @unchecked Sendable {
    let regex: NSRegularExpression

    public init(pattern: String) throws {
        do { regex = try NSRegularExpression(pattern: pattern) } catch {
            throw UsageError("--exclude: invalid regular expression \"\(pattern)\"")
        }
    }

    /// Whether the pattern matches at the start of `key`.
    public func matches(_ key: String) -> Bool {
        let ns = key as NSString
        return regex.firstMatch(in: key, options: [.anchored], range: NSRange(location: 0, length: ns.length)) != nil
    }
}

/// Plans one rank's share of `to_hf` (`convert_single_tensor_to_hf` per tensor) from a per-rank
/// checkpoint: its own experts split back to per-expert HF weights with global ids, and the
/// non-expert tensors its file holds. Replica ranks (same experts as a lower rank) get nothing.
public struct ExportPlanner {
    public let source: ShardedCheckpoint
    public let exclude: KeyFilter?

    public init(source: ShardedCheckpoint, exclude: KeyFilter?) {
        self.source = source
        self.exclude = exclude
    }

    /// An HF tensor the plan produces, with its place in the source's key order.
    public struct Output {
        public let spec: TensorSpec
        public let order: Int
    }

    /// The rank's outputs in global order and the plan that produces them (source file 0 = its rank file).
    public func plan(rank: Int) throws -> (outputs: [Output], plan: TransferPlan) {
        let m = source.manifest
        let config = try m.nemotronConfig()
        var adapter = NemotronV3Adapter(config: config)
        adapter.hfPrefix = m.hfPrefix
        let owners = source.ownerRanks
        let isOwner = owners.contains(rank)
        let orderOf = Dictionary(m.hfKeys.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let range = m.ranks[rank].experts
        var items: [(Output, Piece)] = []
        for t in m.tensors {
            guard let loc = source.locations[rank][t.name] else { continue }
            if !t.expertSharded {
                guard t.holder == rank else { continue }
                let key: String
                switch adapter.toHF(t.name, shape: t.shape, firstExpert: 0) {
                case let .renamed(k): key = t.hfKey ?? k
                case .split: throw CheckpointError(path: source.path(ofRank: rank), "tensor \"\(t.name)\" looks grouped but is not expert-sharded")
                }
                items.append((Output(spec: TensorSpec(name: key, dtype: t.dtype, shape: t.shape), order: orderOf[key] ?? Int.max),
                              Piece(source: SourceRange(file: 0, offset: loc.offset, count: loc.byteCount), transform: .copy,
                                    output: 0, destOffset: 0)))
                continue
            }
            guard isOwner, !range.isEmpty else { continue }
            let local = [range.count] + t.shape.dropFirst()
            guard local.count == 3, case let .split(keys, _) = adapter.toHF(t.name, shape: local, firstExpert: range.start) else {
                throw CheckpointError(path: source.path(ofRank: rank), "grouped tensor \"\(t.name)\" \(local) does not map back to experts")
            }
            let slice = local[1] * local[2] * t.dtype.size
            for (j, key) in keys.enumerated() {
                items.append((Output(spec: TensorSpec(name: key, dtype: t.dtype, shape: [local[2], local[1]]), order: orderOf[key] ?? Int.max),
                              Piece(source: SourceRange(file: 0, offset: loc.offset + j * slice, count: slice),
                                    transform: .transpose(rows: local[1], cols: local[2], from: t.dtype, to: t.dtype),
                                    output: 0, destOffset: 0)))
            }
        }
        if let exclude { items.removeAll { exclude.matches($0.0.spec.name) } }
        items.sort { ($0.0.order, $0.0.spec.name) < ($1.0.order, $1.0.spec.name) }
        var plan = TransferPlan(files: [source.path(ofRank: rank)])
        for (i, (o, p)) in items.enumerated() {
            plan.outputs.append(o.spec)
            plan.pieces.append(Piece(source: p.source, transform: p.transform, output: i, destOffset: 0))
        }
        try plan.validateCoverage()
        return (items.map(\.0), plan)
    }

    /// Hugging Face's shard split: fill a shard until the next tensor would pass `maxBytes`.
    public static func shardGroups(_ specs: [TensorSpec], maxBytes: Int) -> [[Int]] {
        var groups: [[Int]] = []
        var size = 0
        for (i, s) in specs.enumerated() {
            if groups.isEmpty || (size + s.byteCount > maxBytes && !groups[groups.count - 1].isEmpty) {
                groups.append([])
                size = 0
            }
            groups[groups.count - 1].append(i)
            size += s.byteCount
        }
        return groups
    }
}
