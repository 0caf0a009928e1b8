import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// Builds the `TransferPlan` of `from_hf` for one rank: which HF byte ranges it reads and which
/// internal tensors it produces, with every check of the reference (missing experts, shapes, dtypes).
/// The checkpoint's keys are classified once, when the planner is made.
package struct LoadPlanner {
    package let checkpoint: HFCheckpoint
    package let adapter: NemotronV3Adapter
    /// dtype of the grouped expert tensors (the adapter's dtype; default bf16).
    package let expertDType: DType
    /// Every key classified (renamed, expert, dropped).
    package let layout: Layout

    /// Classifies every key of `checkpoint`; throws on collisions and bad expert keys.
    package init(checkpoint: HFCheckpoint, expertDType: DType = .bf16) throws {
        self.checkpoint = checkpoint
        adapter = NemotronV3Adapter(config: checkpoint.config)
        self.expertDType = expertDType
        layout = try LoadPlanner.classify(checkpoint, adapter)
    }

    /// One internal tensor of the global view: the manifest's entry (holders are assigned later).
    package typealias GlobalTensor = Manifest.TensorEntry

    /// The classified checkpoint: renamed tensors and per-layer experts.
    package struct Layout {
        package var renamed: [(name: String, source: HFTensor)] = []
        package var experts: [ExpertLayer: [Projection: [Int: HFTensor]]] = [:]
        /// Layers where any expert key (any projection) exists, per namespace.
        package var layersWithExperts: [LayerNamespace: Set<Int>] = [:]
        /// Dropped keys with the reason.
        package var dropped: [(key: String, reason: DropReason)] = []
        package var hfPrefix = "backbone."
    }

    /// Classifies every key; refuses collisions and expert ids beyond `n_routed_experts`.
    package static func classify(_ checkpoint: HFCheckpoint, _ adapter: NemotronV3Adapter) throws -> Layout {
        var out = Layout()
        var seen: [String: String] = [:]
        let nExperts = adapter.nRoutedExperts ?? 0
        out.hfPrefix = NemotronV3Adapter.detectPrefix(checkpoint.tensors.map(\.name))
        for t in checkpoint.tensors {
            let role: HFKeyRole
            do { role = try adapter.classify(t.name) } catch let e as CheckpointError where e.path == t.name {
                throw CheckpointError(path: checkpoint.path(ofFile: t.file), "\"\(t.name)\": \(e.reason)")
            }
            switch role {
            case let .drop(why):
                out.dropped.append((t.name, why))
                if case let .gateProjection(slot) = why { out.layersWithExperts[slot.namespace, default: []].insert(slot.layer) }
            case let .rename(name):
                if let other = seen[name] {
                    throw CheckpointError(path: checkpoint.path(ofFile: t.file),
                                          "\"\(t.name)\" and \"\(other)\" both map to \"\(name)\"")
                }
                seen[name] = t.name
                out.renamed.append((name, t))
            case let .expert(slot, expert, projection):
                guard expert < nExperts else {
                    throw CheckpointError(path: checkpoint.path(ofFile: t.file),
                                          "\"\(t.name)\": expert id \(expert) >= n_routed_experts \(nExperts)")
                }
                if let other = out.experts[slot]?[projection]?[expert] {
                    throw CheckpointError(path: checkpoint.path(ofFile: t.file),
                                          "\"\(t.name)\" and \"\(other.name)\" are both expert \(expert)'s \(projection.rawValue) of layer \(slot.layer)")
                }
                out.layersWithExperts[slot.namespace, default: []].insert(slot.layer)
                out.experts[slot, default: [:]][projection, default: [:]][expert] = t
            }
        }
        // Every MoE layer of the pattern needs its experts, even when none of its keys exist (the
        // MTP head's only when the checkpoint ships MTP weights at all).
        if adapter.nRoutedExperts != nil {
            let config = checkpoint.config
            for (i, b) in config.layers.enumerated() where b == .moe { out.layersWithExperts[.backbone, default: []].insert(i) }
            if checkpoint.tensors.contains(where: { $0.name.hasPrefix("mtp.") }) {
                for (i, b) in config.mtpLayers.enumerated() where b == .moe { out.layersWithExperts[.mtp, default: []].insert(i) }
            }
        }
        return out
    }

    /// The reference's check that a rank's experts are all present, with its message.
    package func checkExperts(range: ExpertRange, rank: Int?) throws {
        for ns in [LayerNamespace.backbone, .mtp] {
            guard let layers = layout.layersWithExperts[ns], !layers.isEmpty else { continue }
            var missing: [String] = []
            let slots = layout.experts.keys.filter { $0.namespace == ns }
            let sortedLayers = layers.sorted()
            for layer in sortedLayers {
                let prefixes = Set(slots.filter { $0.layer == layer }.map(\.prefix)).sorted()
                for prefix in prefixes.isEmpty ? [ns == .mtp ? "mtp." : "model."] : prefixes {
                    let slot = ExpertLayer(namespace: ns, prefix: prefix, layer: layer)
                    let shown = ns == .mtp ? String(prefix.dropFirst(4)) : prefix
                    for e in range.start..<range.end {
                        for proj in [Projection.up, .down] where layout.experts[slot]?[proj]?[e] == nil {
                            missing.append("\(shown)layers.\(layer).mixer.experts.\(e).\(proj.rawValue).weight")
                        }
                    }
                }
            }
            if !missing.isEmpty {
                let total = range.count * layers.count * 2
                let rankInfo = rank.map { " (rank \($0))" } ?? ""
                let required = "[" + (range.start..<range.end).map(String.init).joined(separator: ", ") + "]"
                let layerList = "[" + sortedLayers.map(String.init).joined(separator: ", ") + "]"
                let first = "[" + missing.prefix(5).map { "'\($0)'" }.joined(separator: ", ") + "]"
                let more = missing.count > 5 ? " (and \(missing.count - 5) more)" : ""
                throw CheckpointError(path: checkpoint.directory,
                    "Expert weights missing from checkpoint\(rankInfo): \(missing.count)/\(total) required weights not found. "
                    + "Cannot load experts - checkpoint may be incomplete or corrupted. Layers with experts: \(layerList), "
                    + "Required experts: \(required). First few missing keys: \(first)\(more)")
            }
        }
    }

    /// Checks one layer's experts agree in shape and dtype and returns (dtype, inter, dim).
    package func expertGeometry(_ slot: ExpertLayer) throws -> (DType, Int, Int) {
        guard let ups = layout.experts[slot]?[.up], let downs = layout.experts[slot]?[.down],
              let any = ups.values.min(by: { $0.name < $1.name }) else {
            throw CheckpointError(path: checkpoint.directory, "layer \(slot.layer): experts lack up_proj or down_proj weights")
        }
        let inter = any.shape.count == 2 ? any.shape[0] : -1
        let dim = any.shape.count == 2 ? any.shape[1] : -1
        let inFile = { (t: HFTensor) in self.checkpoint.path(ofFile: t.file) }
        for (proj, table) in [(Projection.up, ups), (.down, downs)] {
            let want = proj == .up ? [inter, dim] : [dim, inter]
            for t in table.values.sorted(by: { $0.name < $1.name }) {
                if t.dtype.isFloat8 {
                    throw CheckpointError(path: inFile(t), "\"\(t.name)\": \(t.dtype.rawValue) expert weights need block dequantization, which nemoshard does not do yet")
                }
                guard t.dtype.kernelKind != nil else {
                    throw CheckpointError(path: inFile(t), "\"\(t.name)\": expert dtype \(t.dtype.rawValue) is not a float type (BF16, F16, F32)")
                }
                guard t.shape == want, t.dtype == any.dtype else {
                    throw CheckpointError(path: inFile(t),
                        "\"\(t.name)\": \(t.dtype.rawValue) \(t.shape) differs from the layer's other experts (\(any.dtype.rawValue) \(want))")
                }
            }
        }
        if let moeInter = adapter.moeIntermediateSize, inter != moeInter {
            throw CheckpointError(path: inFile(any), "\"\(any.name)\": shape \(any.shape) has \(inter) rows but moe_intermediate_size is \(moeInter)")
        }
        return (any.dtype, inter, dim)
    }

    /// The global internal view: every output tensor with its global shape.
    package func globalTensors() throws -> [GlobalTensor] {
        var out: [GlobalTensor] = layout.renamed.map {
            GlobalTensor(name: $0.name, dtype: $0.source.dtype, shape: $0.source.shape, expert: nil, hfKey: $0.source.name)
        }
        let n = adapter.nRoutedExperts ?? 0
        for slot in layout.experts.keys.sorted() {
            let (_, inter, dim) = try expertGeometry(slot)
            out.append(GlobalTensor(name: slot.groupedName(.up), dtype: expertDType, shape: [n, dim, inter],
                                    expert: ExpertSlot(layer: slot, projection: .up), hfKey: nil))
            out.append(GlobalTensor(name: slot.groupedName(.down), dtype: expertDType, shape: [n, inter, dim],
                                    expert: ExpertSlot(layer: slot, projection: .down), hfKey: nil))
        }
        return out.sorted { $0.name < $1.name }
    }

    /// The plan for the rank holding `range` (rank number for error messages only), and the
    /// global view it was cut from.
    package func plan(range: ExpertRange, rank: Int?) throws -> (plan: TransferPlan, globals: [GlobalTensor]) {
        try checkExperts(range: range, rank: rank)
        let globals = try globalTensors()
        var plan = TransferPlan(files: checkpoint.files.indices.map { checkpoint.path(ofFile: $0) },
                                fingerprints: Dictionary(uniqueKeysWithValues: checkpoint.fingerprints.enumerated().map { ($0, $1) }))
        let renamed = Dictionary(layout.renamed.map { ($0.name, $0.source) }, uniquingKeysWith: { a, _ in a })
        for g in globals {
            let out = plan.outputs.count
            if let slot = g.expert?.layer, let projection = g.expert?.projection {
                guard !range.isEmpty else { continue }
                var shape = g.shape
                shape[0] = range.count
                plan.outputs.append(TensorSpec(name: g.name, dtype: expertDType, shape: shape))
                let slice = shape[1] * shape[2] * expertDType.size
                for (j, e) in (range.start..<range.end).enumerated() {
                    guard let src = layout.experts[slot]?[projection]?[e] else { continue }  // checked above
                    plan.pieces.append(Piece(
                        source: SourceRange(file: src.file, offset: src.offset, count: src.byteCount),
                        transform: .transpose(rows: src.shape[0], cols: src.shape[1], from: src.dtype, to: expertDType),
                        output: out, destOffset: j * slice))
                }
            } else {
                guard let src = renamed[g.name] else { continue }
                plan.outputs.append(TensorSpec(name: g.name, dtype: src.dtype, shape: src.shape))
                plan.pieces.append(Piece(source: SourceRange(file: src.file, offset: src.offset, count: src.byteCount),
                                         transform: .copy, output: out, destOffset: 0))
            }
        }
        try plan.validateCoverage()
        return (plan, globals)
    }
}
