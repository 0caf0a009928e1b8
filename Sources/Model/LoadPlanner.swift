import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// Builds the `TransferPlan` of `from_hf` for one rank: which HF byte ranges it reads and which
/// internal tensors it produces, with every check of the reference (missing experts, shapes, dtypes).
/// The checkpoint's keys are classified once, when the planner is made.
package struct LoadPlanner {
    package let checkpoint: HFCheckpoint
    package let adapter: NemotronV3Adapter
    /// dtype of the grouped expert tensors (the adapter's dtype: the job's, else the rules' default).
    package let expertDType: DType
    /// Every key classified (renamed, expert, dropped).
    package let layout: Layout
    /// dtype ModelOpt-quantized weights are dequantized into (experts: `expertDType`); nil refuses them.
    package let dequantize: DType?
    /// The checkpoint's ModelOpt quantized weights and quantization tensors.
    package let quantization: ModelOptTensors

    /// Classifies every key of `checkpoint`; throws on collisions and bad expert keys. With
    /// `dequantize`, ModelOpt quantization tensors are dropped (the weight scales are read by the
    /// dequantizing pieces instead).
    /// `expertDType` nil: the rules' default (`NemotronV3Adapter.expertDType`).
    package init(checkpoint: HFCheckpoint, expertDType: DType? = nil, dequantize: DType? = nil, rules: Rules = .default) throws {
        self.checkpoint = checkpoint
        adapter = NemotronV3Adapter(config: checkpoint.config, rules: rules)
        self.dequantize = dequantize
        quantization = ModelOptTensors(checkpoint.tensors)
        var layout = try LoadPlanner.classify(checkpoint, adapter)
        // A dense checkpoint never needs the config's dtype: only experts are grouped in it.
        let configPath = FS.join(checkpoint.directory, "config.json")
        self.expertDType = layout.experts.isEmpty
            ? (try? adapter.expertDType(requested: expertDType, config: checkpoint.config, path: configPath)) ?? .bf16
            : try adapter.expertDType(requested: expertDType, config: checkpoint.config, path: configPath)
        if dequantize != nil { LoadPlanner.dropQuantizationTensors(&layout, quantization) }
        self.layout = layout
    }

    /// One internal tensor of the global view: the manifest's entry (holders are assigned later).
    package typealias GlobalTensor = Manifest.TensorEntry

    /// The classified checkpoint: renamed tensors and per-layer experts.
    package struct Layout {
        package var renamed: [(name: String, source: HFTensor)] = []
        package var experts: [ExpertLayer: [Projection: [Int: HFTensor]]] = [:]
        /// The stacked transformers expert tensors (`...mixer.experts.up_proj` `[n, rows, cols]`),
        /// by layer and projection; `experts` holds each of their slices as one expert's weight.
        package var stacked: [ExpertLayer: [Projection: HFTensor]] = [:]
        /// Layers where any expert key (any projection) exists, per namespace.
        package var layersWithExperts: [LayerNamespace: Set<Int>] = [:]
        /// Dropped keys with the reason.
        package var dropped: [(key: String, reason: DropReason)] = []
        package var hfPrefix = "backbone."
        /// Renamed tensors whose load dtype the rules change (the fp32 holder's F32), by internal name.
        package var loadDTypes: [String: DType] = [:]
        /// A PEFT-wrapped checkpoint's per-expert weights (kept per expert; see `PEFTExperts`).
        package var peftExperts: PEFTExperts?
    }

    /// Classifies every key; refuses collisions and expert ids beyond `n_routed_experts`.
    package static func classify(_ checkpoint: HFCheckpoint, _ adapter: NemotronV3Adapter) throws -> Layout {
        var out = Layout()
        var seen: [String: String] = [:]
        /// The first per-expert key of each layer (a layer may not mix it with stacked experts).
        var perExpert: [ExpertLayer: HFTensor] = [:]
        let nExperts = adapter.nRoutedExperts ?? 0
        out.hfPrefix = adapter.sourcePrefix(checkpoint.tensors.map(\.name))
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
                try noteRenamed(name, t, into: &out, adapter, checkpoint)
            case let .stackedExperts(slot, projection):
                if let other = perExpert[slot] { throw mixedForms(t, other, slot, checkpoint) }
                if let other = out.stacked[slot]?[projection] {
                    throw CheckpointError(path: checkpoint.path(ofFile: t.file),
                                          "\"\(t.name)\" and \"\(other.name)\" are both stacked transformers experts of layer \(slot.layer)'s \(projection.rawValue)")
                }
                let slices = try stackedSlices(t, projection, adapter, checkpoint)
                out.stacked[slot, default: [:]][projection] = t
                out.layersWithExperts[slot.namespace, default: []].insert(slot.layer)
                for (e, slice) in slices.enumerated() { out.experts[slot, default: [:]][projection, default: [:]][e] = slice }
            case let .expert(slot, expert, projection):
                if let stacked = out.stacked[slot]?.values.first { throw mixedForms(stacked, t, slot, checkpoint) }
                if perExpert[slot] == nil { perExpert[slot] = t }
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
        try checkStackedPairs(out, checkpoint)
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

    /// The refusal of a layer holding both stacked transformers experts and per-expert weights.
    private static func mixedForms(_ stacked: HFTensor, _ single: HFTensor, _ slot: ExpertLayer, _ checkpoint: HFCheckpoint) -> CheckpointError {
        CheckpointError(path: checkpoint.directory,
                        "layer \(slot.layer) mixes stacked transformers experts (\"\(stacked.name)\") with per-expert weights (\"\(single.name)\"); a checkpoint keeps each layer's experts in one form")
    }

    /// Checks one stacked transformers expert tensor (`[n_routed_experts, rows, cols]`, a float
    /// dtype, `moe_intermediate_size` in its place: dim 1 of `up_proj`, dim 2 of `down_proj`) and
    /// returns its slices, expert by expert, each one expert's weight as a per-expert key holds it.
    private static func stackedSlices(_ t: HFTensor, _ projection: Projection, _ adapter: NemotronV3Adapter,
                                      _ checkpoint: HFCheckpoint) throws -> [HFTensor] {
        let n = adapter.nRoutedExperts ?? 0
        func bad(_ why: String) -> CheckpointError {
            CheckpointError(path: checkpoint.path(ofFile: t.file), "\"\(t.name)\" (stacked transformers experts): \(why)")
        }
        guard t.shape.count == 3 else { throw bad("shape \(t.shape) is not [n_routed_experts, rows, cols]") }
        guard t.shape[0] == n else { throw bad("shape \(t.shape) holds \(t.shape[0]) experts but n_routed_experts is \(n)") }
        if t.dtype.isFloat8 { throw bad("\(t.dtype.rawValue) stacked experts are not supported (nemoshard dequantizes per-expert quantized weights only)") }
        guard t.dtype.kernelKind != nil else { throw bad("expert dtype \(t.dtype.rawValue) is not a float type (BF16, F16, F32)") }
        let interAxis = projection == .up ? 1 : 2
        if let inter = adapter.moeIntermediateSize, t.shape[interAxis] != inter {
            throw bad("shape \(t.shape) does not have moe_intermediate_size \(inter) as dim \(interAxis)")
        }
        let slice = t.shape[1] * t.shape[2] * t.dtype.size
        guard slice * n == t.byteCount else { throw bad("holds \(t.byteCount) bytes, not \(n) x \(slice)") }
        return (0..<n).map {
            HFTensor(name: t.name, file: t.file, dtype: t.dtype, shape: [t.shape[1], t.shape[2]], offset: t.offset + $0 * slice, byteCount: slice)
        }
    }

    /// Each layer's stacked `up_proj` has its stacked `down_proj` beside it, transposed: `[n, inter, in]`
    /// and `[n, in, inter]`, one dtype.
    private static func checkStackedPairs(_ layout: Layout, _ checkpoint: HFCheckpoint) throws {
        for slot in layout.stacked.keys.sorted() {
            let pair = layout.stacked[slot] ?? [:]
            guard let up = pair[.up], let down = pair[.down] else {
                guard let only = pair[.up] ?? pair[.down] else { continue }
                let missing = pair[.up] == nil ? Projection.up : .down
                throw CheckpointError(path: checkpoint.path(ofFile: only.file),
                                      "\"\(only.name)\" (stacked transformers experts) has no stacked \(missing.rawValue) of layer \(slot.layer) beside it")
            }
            guard down.shape == [up.shape[0], up.shape[2], up.shape[1]], down.dtype == up.dtype else {
                throw CheckpointError(path: checkpoint.path(ofFile: down.file),
                                      "\"\(down.name)\" (stacked transformers experts): \(down.dtype.rawValue) \(down.shape) does not match \"\(up.name)\" \(up.dtype.rawValue) \(up.shape) (want \(up.dtype.rawValue) \([up.shape[0], up.shape[2], up.shape[1]]))")
            }
        }
    }

    /// The reference's check that a rank's experts are all present, with its message.
    package func checkExperts(range: ExpertRange, rank: Int?) throws {
        for ns in [LayerNamespace.backbone, .mtp] {
            guard let layers = layout.layersWithExperts[ns], !layers.isEmpty else { continue }
            var missing: [String] = []
            let slots = layout.experts.keys.filter { $0.namespace == ns }
            let sortedLayers = layers.sorted()
            // A PEFT-wrapped checkpoint's experts stay per expert, under its prefix.
            let peft = ns == .backbone ? layout.peftExperts : nil
            for layer in sortedLayers {
                let prefixes = Set(slots.filter { $0.layer == layer }.map(\.prefix)).sorted()
                for prefix in prefixes.isEmpty ? [peft?.prefix ?? (ns == .mtp ? "mtp." : "model.")] : prefixes {
                    let slot = ExpertLayer(namespace: ns, prefix: prefix, layer: layer)
                    let shown = ns == .mtp ? String(prefix.dropFirst(4)) : prefix
                    for e in range.start..<range.end {
                        for proj in [Projection.up, .down] where layout.experts[slot]?[proj]?[e] == nil && peft?.has(layer, proj, e) != true {
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
                    + "Required experts: \(required). First few missing keys: \(first)\(more)" + missingExpertsHint())
            }
        }
    }

    /// Checks one layer's experts agree in shape and dtype and returns (dtype, inter, dim).
    package func expertGeometry(_ slot: ExpertLayer) throws -> (DType, Int, Int) {
        guard let ups = layout.experts[slot]?[.up], let downs = layout.experts[slot]?[.down],
              let any = ups.values.min(by: { $0.name < $1.name }) else {
            throw CheckpointError(path: checkpoint.directory, "layer \(slot.layer): experts lack up_proj or down_proj weights")
        }
        // A quantized expert's shape is the dequantized one (NVFP4 packs two values per byte).
        let anyShape = quantized(any)?.shape ?? any.shape
        let inter = anyShape.count == 2 ? anyShape[0] : -1
        let dim = anyShape.count == 2 ? anyShape[1] : -1
        let inFile = { (t: HFTensor) in self.checkpoint.path(ofFile: t.file) }
        for (proj, table) in [(Projection.up, ups), (.down, downs)] {
            let want = proj == .up ? [inter, dim] : [dim, inter]
            for t in table.values.sorted(by: { $0.name < $1.name }) {
                let q = quantized(t)
                if q == nil, t.dtype.isFloat8 {
                    throw CheckpointError(path: inFile(t), "\"\(t.name)\": \(t.dtype.rawValue) expert weights without a ModelOpt weight_scale need block dequantization, which nemoshard does not do yet")
                }
                guard q != nil || t.dtype.kernelKind != nil else {
                    throw CheckpointError(path: inFile(t), "\"\(t.name)\": expert dtype \(t.dtype.rawValue) is not a float type (BF16, F16, F32)")
                }
                guard q?.shape ?? t.shape == want, t.dtype == any.dtype else {
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
    package func globalTensors() throws -> [GlobalTensor] { try globalTensorsWithSources().map(\.tensor) }

    /// The global view sorted by name, each renamed tensor with its index in `layout.renamed`
    /// (so the plan finds its source without a table of a million names).
    private func globalTensorsWithSources() throws -> [(tensor: GlobalTensor, renamed: Int?)] {
        try checkQuantization()
        var out: [(tensor: GlobalTensor, renamed: Int?)] = layout.renamed.enumerated().map { i, r in
            let (dtype, shape) = outputForm(r.source)
            return (GlobalTensor(name: r.name, dtype: layout.loadDTypes[r.name] ?? dtype, shape: shape, expert: nil, hfKey: r.source.name,
                                 hfDType: recordedSourceDType(renamed: r.name, source: r.source)), i)
        }
        let n = adapter.nRoutedExperts ?? 0
        for slot in layout.experts.keys.sorted() {
            let (source, inter, dim) = try expertGeometry(slot)
            out.append((GlobalTensor(name: slot.groupedName(.up), dtype: expertDType, shape: [n, dim, inter],
                                     expert: ExpertSlot(layer: slot, projection: .up), hfKey: nil, hfDType: recordedSourceDType(grouped: source)), nil))
            out.append((GlobalTensor(name: slot.groupedName(.down), dtype: expertDType, shape: [n, inter, dim],
                                     expert: ExpertSlot(layer: slot, projection: .down), hfKey: nil, hfDType: recordedSourceDType(grouped: source)), nil))
        }
        return out.sorted { $0.tensor.name < $1.tensor.name }
    }

    /// The plan for the rank holding `range` (rank number for error messages only), and the
    /// global view it was cut from.
    package func plan(range: ExpertRange, rank: Int?) throws -> (plan: TransferPlan, globals: [GlobalTensor]) {
        try checkExperts(range: range, rank: rank)
        let view = try globalTensorsWithSources()
        var plan = TransferPlan(files: checkpoint.files.indices.map { checkpoint.path(ofFile: $0) },
                                fingerprints: Dictionary(uniqueKeysWithValues: checkpoint.fingerprints.enumerated().map { ($0, $1) }))
        plan.outputs.reserveCapacity(view.count)
        plan.pieces.reserveCapacity(view.count)
        for (g, index) in view {
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
                        transform: quantized(src).map { .dequantize($0.dequantization(to: expertDType, transpose: true)) }
                            ?? .transpose(rows: src.shape[0], cols: src.shape[1], from: src.dtype, to: expertDType),
                        output: out, destOffset: j * slice))
                }
            } else {
                guard let index else { continue }  // (classify refuses two renamed tensors of one name)
                let src = layout.renamed[index].source
                let (form, shape) = outputForm(src)
                let dtype = layout.loadDTypes[g.name] ?? form
                plan.outputs.append(TensorSpec(name: g.name, dtype: dtype, shape: shape))
                plan.pieces.append(Piece(source: SourceRange(file: src.file, offset: src.offset, count: src.byteCount),
                                         transform: quantized(src).map { .dequantize($0.dequantization(to: dtype, transpose: false)) }
                                            ?? (dtype == src.dtype ? .copy : .cast(count: src.byteCount / src.dtype.size, from: src.dtype, to: dtype)),
                                         output: out, destOffset: 0))
            }
        }
        try plan.validateCoverage()
        return (plan, view.map(\.tensor))
    }
}
