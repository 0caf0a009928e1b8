import NemoShardCore
import NemoShardFormat

/// Which reference's key rules the adapter follows (`--rules`). Each rule set is one `RuleTable`;
/// the adapter reads every HF key rule that differs between them from that table.
public enum Rules: String, Sendable, Codable, CaseIterable {
    /// NeMo AutoModel 0.7.0's `NemotronV3StateDictAdapter` as installed and run
    /// (`docs/nemo-0.7-rules.md`): the default.
    case nemo07 = "nemo-0.7"
    /// The rules of the documented reference page (`shared/docs/nemotron-v3-format.md`) that
    /// nemoshard followed before: stored dtypes and names kept, no PEFT prefixes.
    case seed

    /// The rules a job follows when none are asked for.
    public static let `default` = Rules.nemo07

    /// This rule set's table.
    package var table: RuleTable {
        switch self {
        case .seed: return .seed
        case .nemo07: return .nemo07
        }
    }
}

/// One rule set as data: every HF key rule on which the seed rules and 0.7.0 differ.
package struct RuleTable: Sendable {
    /// Renames of a backbone key's body (the text after `backbone.` / `model.`) on load; any
    /// other body is kept, under `model.`.
    package let loadRenames: [String: String]
    /// Renames of an internal body (after `model.`) on export, under the source's prefix.
    package let exportRenames: [String: String]
    /// Whether export restores the HF key a renamed tensor was loaded from (seed: so an
    /// `embed_tokens` source comes back as `embed_tokens`), or always writes the adapter's
    /// `to_hf` name (0.7.0: `{P}embeddings.weight` whatever the source called it).
    package let exportRestoresSourceKeys: Bool
    /// Mamba parameters held in float32 (`...mixer._fp32_params.NAME`, upcast on load); empty:
    /// no holder.
    package let fp32HolderNames: Set<String>
    /// Besides the fp32 holder's parameters, keys containing one of these are exported as F32
    /// (`forced_hf_dtype_mapping`).
    package let forcedF32KeyParts: [String]
    /// The dtype each exported key gets when the export is not asked to keep the source's.
    package let exportDTypes: ExportDTypes
    /// The grouped experts' dtype when the job names none.
    package let expertDType: ExpertDTypeDefault
    /// Which `_scale_inv` keys `from_hf` drops.
    package let scaleInverse: ScaleInversePolicy
    /// How the source's backbone prefix (restored on export) is found.
    package let prefixDetection: PrefixDetection
    /// A PEFT wrapper's outer prefix the renames see through (kept on the internal name); nil: none.
    package let peftPrefix: String?
    /// The prefix LoRA keys (`.lora_` in the key) are exported under instead of the source's; nil: the source's.
    package let loraExportPrefix: String?
    /// What `from_hf` does with LoRA keys of routed experts.
    package let loraExperts: LoRAExpertPolicy

    /// How an export chooses dtypes.
    package enum ExportDTypes: Sendable {
        /// Every tensor in its internal dtype (grouped experts: the grouped dtype).
        case internalDTypes
        /// Each key in its source checkpoint's dtype (0.7.0's consolidated export with the base
        /// model's snapshot at hand), then the forced F32 keys.
        case sourceThenForced
    }

    /// The grouped experts' default dtype.
    package enum ExpertDTypeDefault: Sendable {
        case bf16
        /// The config's `dtype` (`torch_dtype`), bf16 when absent (0.7.0's adapter dtype).
        case configDType
    }

    /// Which `_scale_inv` keys are dropped.
    package enum ScaleInversePolicy: Sendable {
        /// Every `_scale_inv` key when the config has routed experts; none in a dense config.
        case dropWhenConfigHasExperts
        /// Every `_scale_inv` key (0.7.0 with transformers' `NemotronHConfig`, whose
        /// `n_routed_experts` defaults to 8, so even a dense config takes the MoE path).
        case dropAll
    }

    /// How the source's backbone prefix is detected.
    package enum PrefixDetection: Sendable {
        /// The prefix of the first backbone expert key, else of the first backbone key.
        case firstExpertKey
        /// The first non-MTP key with no `lora_` component that is (after a PEFT prefix)
        /// `backbone.` or `model.`.
        case firstNonLoRAKey
    }

    /// What happens to LoRA keys of routed experts.
    package enum LoRAExpertPolicy: Sendable {
        /// Kept as they are (renamed like any key).
        case passThrough
        /// Refused: 0.7.0 merges them into grouped `lora_*` tensors, which nemoshard does not do.
        case refuse
    }

    /// The seed rules.
    package static let seed = RuleTable(
        loadRenames: ["norm_f.weight": "norm.weight", "embeddings.weight": "embed_tokens.weight"],
        exportRenames: ["norm.weight": "norm_f.weight", "embed_tokens.weight": "embeddings.weight"],
        exportRestoresSourceKeys: true, fp32HolderNames: [], forcedF32KeyParts: [], exportDTypes: .internalDTypes,
        expertDType: .bf16, scaleInverse: .dropWhenConfigHasExperts, prefixDetection: .firstExpertKey,
        peftPrefix: nil, loraExportPrefix: nil, loraExperts: .passThrough)

    /// NeMo AutoModel 0.7.0 (`state_dict_adapter.py`, `state_dict_mixin.py`, the consolidated export).
    package static let nemo07 = RuleTable(
        loadRenames: ["norm_f.weight": "norm.weight", "embeddings.weight": "embed_tokens.weight",
                      "embedding.weight": "embed_tokens.weight"],
        exportRenames: ["norm.weight": "norm_f.weight", "embed_tokens.weight": "embeddings.weight"],
        exportRestoresSourceKeys: false, fp32HolderNames: ["A_log", "D", "dt_bias"],
        forcedF32KeyParts: ["e_score_correction_bias"], exportDTypes: .sourceThenForced,
        expertDType: .configDType, scaleInverse: .dropAll, prefixDetection: .firstNonLoRAKey,
        peftPrefix: "base_model.model.", loraExportPrefix: "model.", loraExperts: .refuse)

    /// The backbone prefixes a key may carry (`^(?:backbone|model)\.`).
    package static let backbonePrefixes = ["backbone.", "model."]

    /// The name of the fp32 holder inside a Mamba mixer.
    package static let fp32Holder = "_fp32_params"
    /// `.` + `fp32Holder` + `.`, and `fp32Holder` + `.` (made once, not per key).
    package static let fp32HolderComponent = "." + fp32Holder + "."
    package static let fp32HolderPrefix = fp32Holder + "."
}

// MARK: the adapter's rules

extension NemotronV3Adapter {
    /// The table of `rules`.
    package var table: RuleTable { rules.table }

    /// `_hf_key_to_native` of a backbone key: an optional PEFT prefix kept, `backbone.` / `model.`
    /// -> `model.`, the body renamed by the table (`norm_f`, `embeddings`, 0.7.0's `embedding`).
    /// A key with neither prefix (`lm_head.weight`) is unchanged.
    package func nativeName(ofHF key: String) -> String {
        let (outer, rest) = splitPEFT(key)
        guard let root = RuleTable.backbonePrefixes.first(where: { rest.hasBytePrefix($0) }) else { return key }
        let body = String(rest[rest.utf8.index(rest.utf8.startIndex, offsetBy: root.utf8.count)...])  // (ASCII: byte offsets)
        return outer + "model." + (table.loadRenames[body] ?? body)
    }

    /// `(PEFT prefix or "", the rest)` of a key.
    package func splitPEFT(_ key: String) -> (String, Substring) {
        if let p = table.peftPrefix, key.hasPrefix(p) { return (p, key.dropFirst(p.count)) }
        return ("", Substring(key))
    }

    /// `_route_mamba_fp32_holder_key`: a key whose text after its last `.mixer.` is a holder
    /// parameter (`A_log`, `D`, `dt_bias`) moves into the holder,
    /// `HEAD.mixer._fp32_params.NAME`; any other key (and one already in a holder) is unchanged.
    package func holderName(_ key: String) -> String {
        guard !table.fp32HolderNames.isEmpty, !key.hasSubstring(RuleTable.fp32HolderComponent),
              let at = key.range(ofSubstring: ".mixer.", backwards: true),
              table.fp32HolderNames.contains(String(key[at.upperBound...])) else { return key }
        return key[..<at.upperBound] + RuleTable.fp32Holder + "." + key[at.upperBound...]
    }

    /// `_is_mamba_fp32_state_key`: the text after the last `.mixer.` is a holder parameter, bare
    /// or inside the holder.
    package func isFP32ParameterKey(_ key: String) -> Bool {
        guard !table.fp32HolderNames.isEmpty, let at = key.range(ofSubstring: ".mixer.", backwards: true) else { return false }
        var tail = key[at.upperBound...]
        if tail.hasBytePrefix(RuleTable.fp32HolderPrefix) { tail = tail.dropFirst(RuleTable.fp32Holder.count + 1) }
        return table.fp32HolderNames.contains(String(tail))
    }

    /// `_strip_mamba_fp32_holder_key`: `.mixer._fp32_params.` -> `.mixer.`.
    package func strippingHolder(_ key: String) -> String {
        table.fp32HolderNames.isEmpty || !key.hasSubstring(".mixer.\(RuleTable.fp32Holder).") ? key
            : key.replacingOccurrences(of: ".mixer.\(RuleTable.fp32Holder).", with: ".mixer.")
    }

    /// The dtype `from_hf` gives the renamed tensor `name` stored as `source` in the checkpoint:
    /// F32 for a floating fp32-holder parameter (an F32 source is unchanged), else `source`.
    /// `key` names the tensor in errors.
    package func loadDType(_ name: String, source: DType, key: String) throws -> DType {
        guard isFP32ParameterKey(name), source.isFloatingPoint, source != .f32 else { return source }
        guard source.kernelKind != nil else {
            throw CheckpointError(path: key, "\(source.rawValue) Mamba parameter: the \(rules.rawValue) rules hold it in float32, and nemoshard converts only BF16 and F16 to F32")
        }
        return .f32
    }

    /// Refuses a LoRA key of routed experts where the rules would merge it (0.7.0: per-expert
    /// `experts.E.{up,down}_proj.lora_{A,B}.weight` and PEFT ParamWrapper
    /// `experts.[base_layer.]lora_{A,B}.weight` become grouped `lora_*` tensors).
    package func refuseLoRAExpertKey(_ key: String) throws {
        guard table.loraExperts == .refuse, key.hasSubstring(".lora_"), key.hasSubstring(".mixer.experts."),
              key.split(separator: ".").contains(where: { $0.hasPrefix("lora_") }) else { return }
        let under = table.peftPrefix.flatMap { key.hasPrefix($0) ? " under the PEFT prefix \($0)" : nil } ?? ""
        throw CheckpointError(path: key, "PEFT LoRA expert keys\(under) are not supported: NeMo AutoModel 0.7.0 merges them into grouped lora_* tensors, which nemoshard does not do (the base weights load; drop the adapter's expert LoRA keys or merge them first)")
    }

    /// Whether `from_hf` drops the `_scale_inv` key `stem` (after renames; MTP keys without `mtp.`).
    package func dropsScaleInverse(_ stem: String) -> Bool {
        guard stem.hasSuffix("_scale_inv") else { return false }
        switch table.scaleInverse {
        case .dropAll: return true
        case .dropWhenConfigHasExperts: return nRoutedExperts != nil
        }
    }

    /// The prefix the source uses for backbone keys (restored on export), as the rules find it.
    package func sourcePrefix(_ keys: [String]) -> String {
        switch table.prefixDetection {
        case .firstExpertKey:
            return NemotronV3Adapter.detectPrefix(keys)
        case .firstNonLoRAKey:
            for key in keys where !key.hasPrefix("mtp.") {
                if key.split(separator: ".").contains(where: { $0.hasPrefix("lora_") }) { continue }
                let (_, rest) = splitPEFT(key)
                if let p = RuleTable.backbonePrefixes.first(where: { rest.hasPrefix($0) }) { return p }
            }
            return "backbone."
        }
    }

    /// One routed expert's per-expert weight under the PEFT prefix (`base_model.model.model.layers.L.mixer.experts.E.{up,down}_proj.weight`,
    /// an internal name): 0.7.0 keeps it per expert on every rank (its expert pattern is anchored at
    /// the key's start) and still requires each rank's experts. nil for any other name.
    package func peftExpert(_ name: String) -> (layer: Int, expert: Int, projection: Projection)? {
        let (outer, rest) = splitPEFT(name)
        guard !outer.isEmpty, rest.hasPrefix("model."), let m = NemotronV3Adapter.matchExpert(String(rest)),
              m.prefix == "model.", m.projection != "gate_proj", let layer = Int(m.layer), let expert = Int(m.expert) else { return nil }
        return (layer, expert, m.projection == "up_proj" ? .up : .down)
    }

    /// `_native_key_to_hf` of an internal non-MTP, non-grouped name: holder stripped, `model.` ->
    /// the source's prefix (LoRA keys: the table's LoRA prefix), a PEFT prefix kept, and the body
    /// renamed (`norm` -> `norm_f`, `embed_tokens` -> `embeddings`) only without a PEFT prefix
    /// (0.7.0's renames are anchored at the key's start).
    package func hfName(of fqn: String) -> String {
        let key = strippingHolder(fqn)
        if key.hasPrefix("mtp.") { return key }
        let (outer, rest) = splitPEFT(key)
        guard rest.hasBytePrefix("model.") else { return key }
        let body = String(rest[rest.utf8.index(rest.utf8.startIndex, offsetBy: "model.".utf8.count)...])
        let prefix = key.hasSubstring(".lora_") ? table.loraExportPrefix ?? hfPrefix : hfPrefix
        return outer + prefix + (outer.isEmpty ? table.exportRenames[body] ?? body : body)
    }

    /// The HF key a non-expert tensor is exported under: its recorded source key where the rules
    /// restore it, else the adapter's `to_hf` name `generated`.
    package func exportKey(generated: String, recorded: String?) -> String {
        table.exportRestoresSourceKeys ? recorded ?? generated : generated
    }

    /// Whether the rules export HF key `key` as F32 whatever its dtype (`forced_hf_dtype_mapping`).
    package func forcesF32(_ key: String) -> Bool {
        isFP32ParameterKey(key) || table.forcedF32KeyParts.contains { key.hasSubstring($0) }
    }

    /// The dtype HF key `key` is exported in: an internal tensor of `held`, loaded from a source of
    /// `source` (nil: the same). `keepSource` writes the source's dtype, nothing forced.
    package func exportDType(_ key: String, held: DType, source: DType?, keepSource: Bool) -> DType {
        if keepSource { return source ?? held }
        if forcesF32(key), held.isFloatingPoint { return .f32 }
        switch table.exportDTypes {
        case .internalDTypes: return held
        case .sourceThenForced: return source ?? held
        }
    }

    /// The grouped experts' dtype: `requested`, else the rules' default. Under 0.7.0 that is the
    /// config's `dtype` (`torch_dtype`; bf16 when absent), which must then be bf16, f16 or f32.
    package func expertDType(requested: DType?, config: NemotronConfig, path: String) throws -> DType {
        if let requested { return requested }
        switch table.expertDType {
        case .bf16: return .bf16
        case .configDType:
            let field = ["dtype", "torch_dtype"].first { config.json[$0]?.stringValue != nil }
            guard let field, let name = config.json[field]?.stringValue else { return .bf16 }
            let bare = name.hasPrefix("torch.") ? String(name.dropFirst("torch.".count)) : name
            if let d = DType(torchName: bare) { return d }
            throw CheckpointError(path: path, "\"\(field)\" is \"\(name)\": the \(rules.rawValue) rules group the experts in the config's dtype, and nemoshard groups them only as bfloat16, float16 or float32 (choose the grouped dtype explicitly)")
        }
    }
}

extension DType {
    /// A floating-point element type (torch's `is_floating_point`).
    package var isFloatingPoint: Bool {
        switch self {
        case .f16, .bf16, .f32, .f64, .f8e4m3, .f8e5m2: return true
        default: return false
        }
    }

    /// The grouped dtypes a config's `torch_dtype` may name, in torch's spellings
    /// (`dtype_from_str`: `float32`, `float`, `bfloat16`, `bf16`, `float16`, `half`).
    package init?(torchName: String) {
        switch torchName.lowercased() {
        case "float32", "float": self = .f32
        case "bfloat16", "bf16": self = .bf16
        case "float16", "half": self = .f16
        default: return nil
        }
    }
}

extension Transform {
    /// A cast of `count` elements from `from` to `to`, keeping their order: a transpose of one row.
    package static func cast(count: Int, from: DType, to: DType) -> Transform {
        .transpose(rows: 1, cols: count, from: from, to: to)
    }
}

extension Manifest {
    /// The adapter the checkpoint was loaded with: its config, its rules and its source's prefix.
    package func adapter() throws -> NemotronV3Adapter {
        var a = NemotronV3Adapter(config: try nemotronConfig(), rules: rules)
        a.hfPrefix = hfPrefix
        return a
    }
}
