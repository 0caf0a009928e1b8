import NemoShardCore
import NemoShardFormat
import NemoShardModel

/// `inspect`'s quantization summary of an HF checkpoint: what `config.json`'s
/// `quantization_config` and ModelOpt's `hf_quant_config.json` declare, and what the tensors are
/// (quantized weights by format and dtype, expert or not, and the quantization tensors).
extension Inspect {
    /// The summary, or nil when the checkpoint neither declares nor holds any quantization.
    package static func quantization(_ ckpt: HFCheckpoint) throws -> JSON? {
        let declared = QuantizationDeclaration(config: ckpt.config.json, hfQuantConfig: try hfQuantConfig(ckpt))
        let found = ModelOptTensors(ckpt.tensors)
        let unscaled = ckpt.tensors.filter { $0.dtype.isFloat8 && found.weights[$0.name] == nil && $0.name.hasSuffix(".weight") }
        guard !declared.isEmpty || !found.isEmpty || !unscaled.isEmpty else { return nil }
        var m: [(String, JSON)] = []
        if let v = declared.method { m.append(("method", .string(v))) }
        if let v = declared.algorithm { m.append(("algorithm", .string(v))) }
        if let v = declared.kvCacheAlgorithm { m.append(("kv_cache_algorithm", .string(v))) }
        if let v = declared.groupSize { m.append(("group_size", .int(Int64(v)))) }
        m.append(("declared_in", .array(declared.sources.map { .string($0) })))
        let weights = found.weights.values
        let experts = weights.filter { $0.weight.name.contains(".mixer.experts.") }.count
        m += [
            ("quantized_weights", .int(Int64(weights.count))),
            ("formats", counts(weights.map(\.format.rawValue))),
            ("weight_dtypes", counts(weights.map(\.weight.dtype.rawValue))),
            ("expert_weights", .int(Int64(experts))),
            ("other_weights", .int(Int64(weights.count - experts))),
            ("with_weight_scale_2", .int(Int64(weights.filter { $0.globalScale != nil }.count))),
            ("with_input_scale", .int(Int64(weights.filter { found.scales[inputScaleKey($0.weight.name)] != nil }.count))),
            ("quantization_tensors", counts(found.scales.values.map(\.rawValue))),
        ]
        if !unscaled.isEmpty { m.append(("float8_weights_without_weight_scale", .int(Int64(unscaled.count)))) }
        return .object(m)
    }

    /// `hf_quant_config.json` beside the weights, parsed, if the checkpoint has one.
    private static func hfQuantConfig(_ ckpt: HFCheckpoint) throws -> JSON? {
        guard ckpt.extraFiles.contains(QuantizationDeclaration.modelOptFileName) else { return nil }
        let path = FS.join(ckpt.directory, QuantizationDeclaration.modelOptFileName)
        do { return try JSON.parse(try readWholeFile(path, limit: ReadLimit.config)) } catch let e as JSONError {
            throw CheckpointError(path: path, "not valid JSON: \(e)")
        }
    }

    /// `...up_proj.weight` -> `...up_proj.input_scale`.
    private static func inputScaleKey(_ weightKey: String) -> String {
        String(weightKey.dropLast("weight".count)) + QuantizationTensorKind.inputScale.rawValue
    }

    /// How many times each name occurs, names sorted.
    private static func counts(_ names: [String]) -> JSON {
        var n: [String: Int] = [:]
        for x in names { n[x, default: 0] += 1 }
        return .object(n.keys.sorted().map { ($0, .int(Int64(n[$0] ?? 0))) })
    }

    /// The summary as text lines (`quantization: ...`, `quantized_weights: ...`, ...).
    package static func quantizationText(_ q: JSON) -> String {
        func list(_ key: String) -> String {
            (q[key]?.objectValue ?? []).map { "\($0.0) \($0.1.intValue ?? 0)" }.joined(separator: ", ")
        }
        func int(_ key: String) -> Int64 { q[key]?.intValue ?? 0 }
        let declared = (q["declared_in"]?.arrayValue ?? []).compactMap(\.stringValue)
        var head = [q["method"]?.stringValue, q["algorithm"]?.stringValue].compactMap { $0 }.joined(separator: " ")
        if head.isEmpty { head = "undeclared" }
        var notes = ["declared in " + (declared.isEmpty ? "neither config.json nor hf_quant_config.json" : declared.joined(separator: ", "))]
        if let kv = q["kv_cache_algorithm"]?.stringValue { notes.append("kv cache \(kv)") }
        if let g = q["group_size"]?.intValue { notes.append("group size \(g)") }
        var lines = ["quantization: \(head) (\(notes.joined(separator: "; ")))"]
        lines.append("quantized_weights: \(int("quantized_weights")) (\(list("formats")); \(int("expert_weights")) expert, "
                     + "\(int("other_weights")) other; dtypes \(list("weight_dtypes")); with weight_scale_2 \(int("with_weight_scale_2")), "
                     + "with input_scale \(int("with_input_scale")))")
        lines.append("quantization_tensors: " + (list("quantization_tensors").isEmpty ? "none" : list("quantization_tensors")))
        if let n = q["float8_weights_without_weight_scale"]?.intValue {
            lines.append("float8_weights_without_weight_scale: \(n) (not ModelOpt's layout; not dequantized)")
        }
        return lines.joined(separator: "\n")
    }
}
