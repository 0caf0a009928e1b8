import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// Plans for reading a per-rank checkpoint back: the internal tensors of any expert range
/// (reshard, verify) read as row runs of the old ranks' grouped tensors.
package struct ReshardPlanner {
    package let source: ShardedCheckpoint

    package init(source: ShardedCheckpoint) { self.source = source }

    /// The internal state dict of a rank holding `range`: grouped tensors sliced to `range`, and
    /// the non-expert tensors, each copied from its holder's file.
    package func plan(range: ExpertRange) throws -> TransferPlan {
        let m = source.manifest
        let owners = source.ownerRanks
        var plan = TransferPlan(files: m.ranks.map { source.path(ofRank: $0.rank) },
                                fingerprints: Dictionary(uniqueKeysWithValues: source.fingerprints.enumerated().compactMap { i, f in f.map { (i, $0) } }))
        for t in m.tensors {
            let out = plan.outputs.count
            if !t.expertSharded {
                guard let holder = t.holder, holder < source.locations.count, let loc = source.locations[holder][t.name] else {
                    throw CheckpointError(path: source.directory, "tensor \"\(t.name)\" is in no rank file")
                }
                plan.outputs.append(TensorSpec(name: t.name, dtype: t.dtype, shape: t.shape))
                plan.pieces.append(Piece(source: SourceRange(file: holder, offset: loc.offset, count: loc.byteCount),
                                         transform: .copy, output: out, destOffset: 0))
                continue
            }
            guard !range.isEmpty else { continue }
            var shape = t.shape
            shape[0] = range.count
            plan.outputs.append(TensorSpec(name: t.name, dtype: t.dtype, shape: shape))
            let slice = t.shape.dropFirst().reduce(1, *) * t.dtype.size
            var covered = 0
            for r in owners {
                let old = m.ranks[r].experts
                let lo = max(range.start, old.start), hi = min(range.end, old.end)
                guard lo < hi, let loc = source.locations[r][t.name] else { continue }
                plan.pieces.append(Piece(
                    source: SourceRange(file: r, offset: loc.offset + (lo - old.start) * slice, count: (hi - lo) * slice),
                    transform: .copy, output: out, destOffset: (lo - range.start) * slice))
                covered += hi - lo
            }
            guard covered == range.count else {
                throw CheckpointError(path: source.directory, "tensor \"\(t.name)\": the ranks hold \(covered) of experts \(range)")
            }
        }
        try plan.validateCoverage()
        return plan
    }
}
