import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// How a Hugging Face export lays out the routed experts.
public enum HFExpertFormat: String, Sendable, CaseIterable {
    /// One key per expert and projection, `...layers.L.mixer.experts.E.up_proj.weight` `[inter, in]`
    /// and `...down_proj.weight` `[in, inter]`, under the source's prefix: NeMo's `to_hf` (the default).
    case original
    /// transformers 5's own layout, as `save_pretrained(save_original_format=False)` writes it: all
    /// experts of a layer stacked in one tensor, `model.layers.L.mixer.experts.up_proj` `[n, inter, in]`
    /// and `...down_proj` `[n, in, inter]` (`mtp.layers...` for the MTP head), and `model.` where the
    /// source's keys say `backbone.`.
    case fused
}

/// One stacked expert tensor of a fused export and the grouped tensor it is made from.
package struct StackedTensor: Sendable {
    /// Its HF key, e.g. `model.layers.1.mixer.experts.up_proj`.
    package let key: String
    /// The grouped internal tensor (global shape `[n, a, b]`).
    package let grouped: Manifest.TensorEntry
    /// `[n, b, a]`: slice `e` is expert `e`'s grouped slice transposed back.
    package let spec: TensorSpec
    /// Position in the source's key order (its own key, else its layer's first per-expert key).
    package let order: Int
    /// The owner rank whose share holds it.
    package let owner: Int

    /// Bytes of one expert's slice here, and in the grouped tensor (whose dtype may differ).
    package var sliceBytes: Int { spec.shape[1] * spec.shape[2] * spec.dtype.size }
    package var groupedSliceBytes: Int { grouped.shape[1] * grouped.shape[2] * grouped.dtype.size }

    /// The pieces that turn `rows` experts of the grouped tensor, found at `at` (the first of
    /// them), into their slices of this tensor, placed `firstRow` slices into output `output`.
    package func pieces(rows: Int, at: ExportPlanner.Location, output: Int, firstRow: Int) -> [Piece] {
        let a = grouped.shape[1], b = grouped.shape[2], from = groupedSliceBytes, to = sliceBytes
        return (0..<rows).map { j in
            Piece(source: SourceRange(file: at.file, offset: at.offset + j * from, count: from),
                  transform: .transpose(rows: a, cols: b, from: grouped.dtype, to: spec.dtype),
                  output: output, destOffset: (firstRow + j) * to)
        }
    }
}

/// Rows of a stacked tensor in its owner's share that no source of the owner holds: rank `rank`
/// makes them from its own grouped tensor and sends them (`load --to-hf --format fused`).
package struct RemoteRows: Sendable, Equatable {
    /// Output index in the owner's plan.
    package let output: Int
    package let rank: Int
    /// Byte range within the stacked tensor.
    package let offset: Int
    package let count: Int
}

/// The fused export (`HFExpertFormat.fused`). A stacked tensor holds every owner rank's experts
/// but lies in one file, so it belongs to one owner's share (`owner(i)` for the i-th in the
/// source's key order); its rows are the owner ranks' grouped slices, each transposed back, read
/// wherever `locateRows` finds them. Non-expert tensors stay with their holders, under
/// transformers' names. Every tensor is written in its source checkpoint's dtype, as transformers
/// itself keeps it (the rules' forced F32, a NeMo `to_hf` trait, does not apply).
extension ExportPlanner {
    /// The stacked tensors of the export (the exclude pattern applied), in the source's key order,
    /// the i-th owned by `owner(i)`.
    package func stackedTensors(_ adapter: NemotronV3Adapter, owner: (Int) -> Int) throws -> [StackedTensor] {
        let orderOf = Dictionary(manifest.hfKeys.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [(key: String, grouped: Manifest.TensorEntry, dtype: DType, order: Int)] = []
        for t in manifest.tensors where t.expertSharded {
            guard t.shape.count == 3, let key = adapter.stackedKey(t.name, shape: t.shape)?.key,
                  case let .split(perExpert, _) = adapter.toHF(t.name, shape: t.shape, firstExpert: 0) else {
                throw CheckpointError(path: manifest.sourceDirectory, "grouped tensor \"\(t.name)\" \(t.shape) does not map back to stacked transformers experts")
            }
            if let exclude, exclude.matches(key) { continue }
            let dtype = try fusedDType(key, t, adapter)
            out.append((key, t, dtype, orderOf[key] ?? perExpert.first.flatMap { orderOf[$0] } ?? Int.max))
        }
        return out.sorted { ($0.order, $0.key) < ($1.order, $1.key) }.enumerated().map { i, s in
            StackedTensor(key: s.key, grouped: s.grouped,
                          spec: TensorSpec(name: s.key, dtype: s.dtype, shape: [s.grouped.shape[0], s.grouped.shape[2], s.grouped.shape[1]]),
                          order: s.order, owner: owner(i))
        }
    }

    /// The dtype `t` is written in under `key`: its source checkpoint's (`hf_dtype`), refused where
    /// no kernel converts to it.
    package func fusedDType(_ key: String, _ t: Manifest.TensorEntry, _ adapter: NemotronV3Adapter) throws -> DType {
        let dtype = adapter.exportDType(key, held: t.dtype, source: t.hfDType, keepSource: true)
        guard dtype == t.dtype || (dtype.kernelKind != nil && t.dtype.kernelKind != nil) else {
            throw CheckpointError(path: manifest.sourceDirectory, "\"\(key)\": the source held it as \(dtype.rawValue), and nemoshard converts \(t.dtype.rawValue) only between BF16, F16 and F32")
        }
        return dtype
    }

    /// The owner ranks (primary replicas), in rank order.
    package var ownerRanks: [Int] { Manifest.ownerRanks(manifest.ranks) }

    /// Owner ranks that hold experts (those that have rows of every stacked tensor), in rank order.
    package var expertOwners: [Int] { ownerRanks.filter { !manifest.ranks[$0].experts.isEmpty } }

    /// A non-expert tensor's key in transformers' own layout: its key in the original layout
    /// (`exportKey`) with `backbone.` made `model.`; and that original key.
    package func fusedKey(_ t: Manifest.TensorEntry, _ adapter: NemotronV3Adapter) throws -> (key: String, original: String) {
        guard case let .renamed(k) = adapter.toHF(t.name, shape: t.shape, firstExpert: 0) else {
            throw CheckpointError(path: manifest.sourceDirectory, "tensor \"\(t.name)\" looks grouped but is not expert-sharded")
        }
        let original = adapter.exportKey(generated: k, recorded: t.hfKey)
        return (NemotronV3Adapter.transformersName(original), original)
    }

    /// Rank `rank`'s share of a fused export: the non-expert tensors it holds and the stacked
    /// tensors it owns (`owner`, as for `stackedTensors`), with the pieces for the rows
    /// `locateRows(owner rank, grouped name)` finds; the rows it finds nowhere are returned as
    /// `remote`, by rank, then output. Outputs in the source's key order.
    package func fusedShare(rank: Int, owner: (Int) -> Int, sources: [String], locate: (String) -> Location?,
                            locateRows: (Int, String) -> Location?) throws -> (plan: TransferPlan, remote: [RemoteRows]) {
        let adapter = try manifest.adapter()
        let orderOf = Dictionary(manifest.hfKeys.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let stacked = try stackedTensors(adapter, owner: owner)
        try checkSomethingSurvivesFused(adapter, stacked: stacked)
        var items: [(spec: TensorSpec, order: Int, pieces: [Piece], stacked: StackedTensor?)] = []
        for t in manifest.tensors where !t.expertSharded && t.holder == rank {
            guard let loc = locate(t.name) else { continue }
            let (key, original) = try fusedKey(t, adapter)
            if let exclude, exclude.matches(key) { continue }
            let dtype = try fusedDType(original, t, adapter)
            let spec = TensorSpec(name: key, dtype: dtype, shape: t.shape)
            let elements = t.shape.reduce(1, *)
            // A dtype change is the transpose of a 1 x n matrix: the same order, converted.
            let transform: Transform = dtype == t.dtype ? .copy : .transpose(rows: 1, cols: elements, from: t.dtype, to: dtype)
            items.append((spec, orderOf[original] ?? Int.max,
                          [Piece(source: SourceRange(file: loc.file, offset: loc.offset, count: elements * t.dtype.size),
                                 transform: transform, output: 0, destOffset: 0)], nil))
        }
        for s in stacked where s.owner == rank { items.append((s.spec, s.order, [], s)) }
        items.sort { ($0.order, $0.spec.name) < ($1.order, $1.spec.name) }
        var plan = TransferPlan(files: sources)
        var remote: [RemoteRows] = []
        for (i, item) in items.enumerated() {
            plan.outputs.append(item.spec)
            guard let s = item.stacked else {
                plan.pieces += item.pieces.map { Piece(source: $0.source, transform: $0.transform, output: i, destOffset: 0) }
                continue
            }
            for r in expertOwners {
                let range = manifest.ranks[r].experts
                if let loc = locateRows(r, s.grouped.name) {
                    plan.pieces += s.pieces(rows: range.count, at: loc, output: i, firstRow: range.start)
                } else {
                    remote.append(RemoteRows(output: i, rank: r, offset: range.start * s.sliceBytes, count: range.count * s.sliceBytes))
                }
            }
        }
        try checkCoverage(plan, remote: remote)
        return (plan, remote.sorted { ($0.rank, $0.output) < ($1.rank, $1.output) })
    }

    /// `fusedShare` where every row is found (`save-hf`: the rank files hold them all), the
    /// stacked tensors dealt out over the owner ranks in turn.
    package func fusedPlan(rank: Int, sources: [String], locate: (String) -> Location?,
                           locateRows: (Int, String) -> Location?) throws -> TransferPlan {
        let owners = ownerRanks
        let (plan, remote) = try fusedShare(rank: rank, owner: { owners.isEmpty ? 0 : owners[$0 % owners.count] }, sources: sources,
                                            locate: locate, locateRows: locateRows)
        if let r = remote.first {
            throw CheckpointError(path: manifest.sourceDirectory, "no rank file holds rank \(r.rank)'s rows of \"\(plan.outputs[r.output].name)\"")
        }
        return plan
    }

    /// Rank `rank`'s rows of every stacked tensor another rank owns (`owner`; the owner's
    /// `fusedShare` lists them as remote rows), in the source's key order: one output per stacked
    /// tensor, named by its key and shaped `[rows, b, a]`, and each output's byte offset within its
    /// stacked tensor. Nothing for mesh replicas and ranks without experts.
    package func stackedRows(rank: Int, writesExperts: Bool, owner: (Int) -> Int, sources: [String],
                             locate: (String) -> Location?) throws -> (plan: TransferPlan, offsets: [Int]) {
        var plan = TransferPlan(files: sources)
        var offsets: [Int] = []
        let range = manifest.ranks[rank].experts
        guard writesExperts, !range.isEmpty else { return (plan, offsets) }
        let adapter = try manifest.adapter()
        for s in try stackedTensors(adapter, owner: owner) where s.owner != rank {
            guard let loc = locate(s.grouped.name) else {
                throw CheckpointError(path: sources.first ?? "rank \(rank)", "rank \(rank) does not hold grouped tensor \"\(s.grouped.name)\"")
            }
            let out = plan.outputs.count
            plan.outputs.append(TensorSpec(name: s.key, dtype: s.spec.dtype, shape: [range.count, s.spec.shape[1], s.spec.shape[2]]))
            plan.pieces += s.pieces(rows: range.count, at: loc, output: out, firstRow: 0)
            offsets.append(range.start * s.sliceBytes)
        }
        try plan.validateCoverage()
        return (plan, offsets)
    }

    /// Every output byte is produced once by the plan or listed as remote rows (a plan bug otherwise).
    private func checkCoverage(_ plan: TransferPlan, remote: [RemoteRows]) throws {
        var covered = [Int](repeating: 0, count: plan.outputs.count)
        for p in plan.pieces {
            let n = p.transform.outputBytes(sourceBytes: p.source.count)
            guard p.destOffset >= 0, p.destOffset + n <= plan.outputs[p.output].byteCount else {
                throw InternalError("\(plan.outputs[p.output].name): a piece lies outside its tensor")
            }
            covered[p.output] += n
        }
        for r in remote { covered[r.output] += r.count }
        for (i, o) in plan.outputs.enumerated() where covered[i] != o.byteCount {
            throw InternalError("\(o.name): the fused export covers \(covered[i]) of \(o.byteCount) bytes")
        }
    }

    /// Throws when `exclude` leaves the fused export without a tensor.
    private func checkSomethingSurvivesFused(_ adapter: NemotronV3Adapter, stacked: [StackedTensor]) throws {
        guard let exclude, stacked.isEmpty else { return }
        for t in manifest.tensors where !t.expertSharded {
            if !exclude.matches(try fusedKey(t, adapter).key) { return }
        }
        throw ExcludePatternError(pattern: exclude.pattern, .removesEveryTensor)
    }
}
