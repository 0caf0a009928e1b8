import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// What the load plan takes from the adapter's rule table beyond names: the fp32 holder's upcasts,
/// the per-expert weights a PEFT-wrapped checkpoint keeps, and the messages that say which rules
/// would read a checkpoint these rules do not.
extension LoadPlanner {
    /// The routed experts of a PEFT-wrapped checkpoint (`base_model.model.backbone.layers.L.mixer.experts.E.*`):
    /// 0.7.0 renames them under the PEFT prefix and keeps them per expert, every one on every rank
    /// (its expert pattern is anchored at the key's start), yet requires each rank's experts.
    package struct PEFTExperts: Sendable {
        /// The internal prefix before `layers.` (`base_model.model.model.`), as messages show it.
        package let prefix: String
        /// The experts present, by layer and projection.
        package var present: [Int: [Projection: Set<Int>]] = [:]

        /// Whether expert `expert`'s `projection` of `layer` is present.
        package func has(_ layer: Int, _ projection: Projection, _ expert: Int) -> Bool {
            present[layer]?[projection]?.contains(expert) == true
        }
    }

    /// Records what the rules say about renamed tensor `name` (source `t`): its load dtype where
    /// the rules change it (the fp32 holder's F32), and, for a PEFT expert weight, its layer.
    package static func noteRenamed(_ name: String, _ t: HFTensor, into out: inout Layout, _ adapter: NemotronV3Adapter,
                                    _ checkpoint: HFCheckpoint) throws {
        let dtype: DType
        do { dtype = try adapter.loadDType(name, source: t.dtype, key: t.name) } catch let e as CheckpointError where e.path == t.name {
            throw CheckpointError(path: checkpoint.path(ofFile: t.file), "\"\(t.name)\": \(e.reason)")
        }
        if dtype != t.dtype { out.loadDTypes[name] = dtype }
        guard let peft = adapter.table.peftPrefix, let m = adapter.peftExpert(name) else { return }
        var experts = out.peftExperts ?? PEFTExperts(prefix: peft + "model.")
        experts.present[m.layer, default: [:]][m.projection, default: []].insert(m.expert)
        out.peftExperts = experts
        out.layersWithExperts[.backbone, default: []].insert(m.layer)
    }

    /// The end of the missing-experts message when the rules cannot read what the checkpoint has:
    /// keys under a PEFT prefix these rules do not see through.
    package func missingExpertsHint() -> String {
        guard adapter.table.peftPrefix == nil, let peft = RuleTable.nemo07.peftPrefix,
              checkpoint.tensors.contains(where: { $0.name.hasPrefix(peft) }) else { return "" }
        return ". The checkpoint's keys carry the PEFT prefix \(peft), which the \(adapter.rules.rawValue) rules do not read (the \(Rules.nemo07.rawValue) rules do)"
    }

    /// The source dtype an internal tensor records (`hf_dtype`) where it differs from its own:
    /// a renamed tensor the rules upcast, and grouped experts cast from another float type
    /// (never a quantized source: dequantizing makes a plain checkpoint).
    package func recordedSourceDType(renamed name: String, source: HFTensor) -> DType? {
        layout.loadDTypes[name] == nil ? nil : source.dtype
    }

    /// The source dtype of grouped experts of `dtype` made from experts stored as `source`.
    package func recordedSourceDType(grouped source: DType) -> DType? {
        source != expertDType && source.kernelKind != nil ? source : nil
    }
}
