import Foundation

/// Python `re.match` over keys: a pattern anchored at the start of the key only.
struct KeyFilter: @unchecked Sendable {
    let regex: NSRegularExpression

    init(pattern: String) throws {
        do { regex = try NSRegularExpression(pattern: pattern) } catch {
            throw UsageError("--exclude: invalid regular expression \"\(pattern)\"")
        }
    }

    /// Whether the pattern matches at the start of `key`.
    func matches(_ key: String) -> Bool {
        let ns = key as NSString
        return regex.firstMatch(in: key, options: [.anchored], range: NSRange(location: 0, length: ns.length)) != nil
    }
}

/// Plans one rank's share of `to_hf` (`convert_single_tensor_to_hf` per tensor): its own experts
/// split back to per-expert HF weights with global ids, and the non-expert tensors it holds.
/// Replica ranks (same experts as a lower rank) get nothing. The same rules serve a per-rank
/// checkpoint on disk and a state dict in memory: only where a tensor's bytes are differs.
struct ExportPlanner {
    let manifest: Manifest
    let exclude: KeyFilter?

    init(manifest: Manifest, exclude: KeyFilter?) {
        self.manifest = manifest
        self.exclude = exclude
    }

    /// Where the bytes of one internal tensor of this rank are: `file` indexes the plan's sources.
    struct Location {
        let file: Int
        let offset: Int
    }

    /// The rank's HF outputs in the source's key order, and the plan that produces them from
    /// `sources` (files, or names of in-memory tensors); `locate` finds a tensor of this rank.
    /// `writesExperts`: the mesh's word that this rank is its experts' primary replica.
    func plan(rank: Int, writesExperts: Bool, sources: [String], locate: (String) -> Location?) throws -> TransferPlan {
        let m = manifest
        var adapter = NemotronV3Adapter(config: try m.nemotronConfig())
        adapter.hfPrefix = m.hfPrefix
        let orderOf = Dictionary(m.hfKeys.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let range = m.ranks[rank].experts
        let here = sources.first ?? "rank \(rank)"
        var items: [(spec: TensorSpec, order: Int, piece: Piece)] = []
        for t in m.tensors {
            guard let loc = locate(t.name) else { continue }
            if !t.expertSharded {
                guard t.holder == rank else { continue }
                let key: String
                switch adapter.toHF(t.name, shape: t.shape, firstExpert: 0) {
                case let .renamed(k): key = t.hfKey ?? k
                case .split: throw CheckpointError(path: here, "tensor \"\(t.name)\" looks grouped but is not expert-sharded")
                }
                let spec = TensorSpec(name: key, dtype: t.dtype, shape: t.shape)
                items.append((spec, orderOf[key] ?? Int.max,
                              Piece(source: SourceRange(file: loc.file, offset: loc.offset, count: spec.byteCount), transform: .copy,
                                    output: 0, destOffset: 0)))
                continue
            }
            guard writesExperts, !range.isEmpty else { continue }
            let local = [range.count] + t.shape.dropFirst()
            guard local.count == 3, case let .split(keys, _) = adapter.toHF(t.name, shape: local, firstExpert: range.start) else {
                throw CheckpointError(path: here, "grouped tensor \"\(t.name)\" \(local) does not map back to experts")
            }
            let slice = local[1] * local[2] * t.dtype.size
            for (j, key) in keys.enumerated() {
                items.append((TensorSpec(name: key, dtype: t.dtype, shape: [local[2], local[1]]), orderOf[key] ?? Int.max,
                              Piece(source: SourceRange(file: loc.file, offset: loc.offset + j * slice, count: slice),
                                    transform: .transpose(rows: local[1], cols: local[2], from: t.dtype, to: t.dtype),
                                    output: 0, destOffset: 0)))
            }
        }
        if let exclude { items.removeAll { exclude.matches($0.spec.name) } }
        items.sort { ($0.order, $0.spec.name) < ($1.order, $1.spec.name) }
        var plan = TransferPlan(files: sources)
        for (i, item) in items.enumerated() {
            plan.outputs.append(item.spec)
            plan.pieces.append(Piece(source: item.piece.source, transform: item.piece.transform, output: i, destOffset: 0))
        }
        try plan.validateCoverage()
        return plan
    }

    /// Hugging Face's shard split: fill a shard until the next tensor would pass `maxBytes`.
    static func shardGroups(_ specs: [TensorSpec], maxBytes: Int) -> [[Int]] {
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
