import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// The whole Hugging Face export of a per-rank checkpoint, laid out as `save-hf` with the
/// checkpoint's own world size writes it: each owner rank's share (`ExportPlanner`: its experts
/// and the non-expert tensors it holds, read from its rank file) split into shards
/// (`ExportPlanner.shardGroups`), numbered owner after owner. The layout depends only on the
/// checkpoint and the options, never on how many ranks export it: `assign` deals the shards out
/// to any number of ranks and `plan(shards:)` is one rank's part, each shard read from the old
/// rank file (and rows) where its bytes are. So W export ranks write the same files for every W.
package struct ExportLayout {
    /// One output file of the export.
    package struct Shard: Sendable, Equatable {
        /// The old rank whose share holds the shard; in the original format its rank file holds
        /// every byte of it (a fused shard's stacked tensors read rows from every rank file).
        package let owner: Int
        /// The shard's tensors, as output indices of `shares[owner]`, in file order.
        package let outputs: [Int]
        /// Bytes of tensor data.
        package let bytes: Int
    }

    /// The old rank files, indexed by old rank (every share's `files`).
    package let files: [String]
    package let fingerprints: [Int: FileFingerprint]
    /// Every owner rank's share of the export (files: `files`).
    package let shares: [Int: TransferPlan]
    /// Every shard, in global numbering order (`model-(i+1)-of-N`).
    package let shards: [Shard]
    /// Each old rank's experts (for reports).
    package let experts: [ExpertRange]

    /// Plans every owner's share from the checkpoint's location tables and splits each into
    /// shards of at most `maxShardBytes` (a larger tensor alone), as `save_pretrained` does.
    package init(source: ShardedCheckpoint, exclude: KeyFilter?, maxShardBytes: Int, format: HFExpertFormat = .original,
                 keepSourceDTypes: Bool = false) throws {
        let m = source.manifest
        files = m.ranks.map { source.path(ofRank: $0.rank) }
        fingerprints = Dictionary(uniqueKeysWithValues: source.fingerprints.enumerated().compactMap { i, f in f.map { (i, $0) } })
        experts = m.ranks.map(\.experts)
        var planner = ExportPlanner(manifest: m, exclude: exclude)
        planner.keepSourceDTypes = keepSourceDTypes
        var shares: [Int: TransferPlan] = [:]
        var shards: [Shard] = []
        for r in source.ownerRanks {
            guard r < source.locations.count else { throw CheckpointError(path: source.directory, "rank \(r) has no location table") }
            let table = source.locations[r]
            let locate = { (name: String) in table[name].map { ExportPlanner.Location(file: r, offset: $0.offset) } }
            // Fused: the stacked expert tensors are dealt out over the owners, rows read from every rank file.
            let share = format == .fused
                ? try planner.fusedPlan(rank: r, sources: files, locate: locate) { o, name in
                    source.locations.indices.contains(o) ? source.locations[o][name].map { ExportPlanner.Location(file: o, offset: $0.offset) } : nil
                }
                : try planner.plan(rank: r, writesExperts: true, sources: files, locate: locate)
            shares[r] = share
            for g in ExportPlanner.shardGroups(share.outputs, maxBytes: maxShardBytes) {
                shards.append(Shard(owner: r, outputs: g, bytes: g.reduce(0) { $0 + share.outputs[$1].byteCount }))
            }
        }
        self.shares = shares
        self.shards = shards
    }

    /// Which shards (global numbers, ascending) each of `ranks` export ranks writes. With the
    /// checkpoint's own world size, each rank writes its own share (mesh replicas nothing), as
    /// `save-hf` always did; with any other, runs of about equal bytes in shard order (a shard goes
    /// to the rank whose equal part of the export's bytes holds its middle byte). A shard its rank
    /// cannot read (`canRead(rank, old rank file)` false: node-local disks) goes to `reader(owner)`,
    /// a rank that can. The same on every rank.
    package func assign(ranks: Int, canRead: (Int, Int) -> Bool, reader: (Int) -> Int) -> [[Int]] {
        let n = max(ranks, 1)
        var out = [[Int]](repeating: [], count: n)
        if n == files.count {
            for (i, s) in shards.enumerated() {
                let rank = canRead(s.owner, s.owner) ? s.owner : reader(s.owner)
                out[rank >= 0 && rank < n ? rank : s.owner].append(i)
            }
            return out
        }
        let total = shards.reduce(0) { $0 + $1.bytes }
        var start = 0
        for (i, s) in shards.enumerated() {
            let position = total > 0 ? (Double(start) + Double(s.bytes) / 2) / Double(total)
                                     : (Double(i) + 0.5) / Double(shards.count)
            var rank = min(max(Int((position * Double(n)).rounded(.down)), 0), n - 1)
            if !canRead(rank, s.owner) {
                let r = reader(s.owner)
                if r >= 0 && r < n { rank = r }
            }
            out[rank].append(i)
            start += s.bytes
        }
        return out
    }

    /// One export rank's part: the outputs of shards `numbers` (ascending), shard after shard,
    /// each read from its owner's rank file; `groups` are each shard's output indices in it.
    package func plan(shards numbers: [Int]) -> (plan: TransferPlan, groups: [[Int]]) {
        var plan = TransferPlan(files: files, fingerprints: fingerprints)
        var groups: [[Int]] = []
        var byOutput: [Int: [[Piece]]] = [:]
        for n in numbers {
            let shard = shards[n]
            guard let share = shares[shard.owner] else { continue }
            if byOutput[shard.owner] == nil {
                var pieces = [[Piece]](repeating: [], count: share.outputs.count)
                for p in share.pieces { pieces[p.output].append(p) }
                byOutput[shard.owner] = pieces
            }
            let pieces = byOutput[shard.owner] ?? []
            var group: [Int] = []
            for i in shard.outputs {
                let out = plan.outputs.count
                plan.outputs.append(share.outputs[i])
                for p in pieces[i] {
                    plan.pieces.append(Piece(source: p.source, transform: p.transform, output: out, destOffset: p.destOffset))
                }
                group.append(out)
            }
            groups.append(group)
        }
        return (plan, groups)
    }

    /// The span of experts whose old rank files the shards `numbers` come from (for reports).
    package func expertSpan(shards numbers: [Int]) -> ExpertRange {
        let ranges = numbers.map { experts[shards[$0].owner] }.filter { !$0.isEmpty }
        guard let lo = ranges.map(\.start).min(), let hi = ranges.map(\.end).max() else { return ExpertRange(start: 0, end: 0) }
        return ExpertRange(start: lo, end: hi)
    }
}
