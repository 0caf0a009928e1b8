import NemoShardCore
import NemoShardFormat

/// A quantized-weight format of NVIDIA ModelOpt's Hugging Face exports that nemoshard dequantizes.
package enum QuantizedFormat: String, Sendable, Codable, CaseIterable, Comparable {
    /// `weight` F8_E4M3 `[out, in]`, `weight_scale` one F32 per tensor: value = fp8 * weight_scale.
    case fp8 = "FP8"
    /// `weight` U8 `[out, in/2]` (two e2m1 values per byte, element 2j in the low nibble),
    /// `weight_scale` F8_E4M3 `[out, in/16]` (one per 16 values of a row), `weight_scale_2` one
    /// F32 per tensor: value = e2m1 * (weight_scale * weight_scale_2).
    case nvfp4 = "NVFP4"

    /// How messages name the weights of this format.
    package var weightsDescription: String {
        switch self {
        case .fp8: return "F8_E4M3 weights (ModelOpt FP8)"
        case .nvfp4: return "packed NVFP4 weights (ModelOpt NVFP4)"
        }
    }

    package static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// The quantization tensors of a ModelOpt export, by the last component of their key. None of
/// them is a weight of the model: dequantizing consumes the weight scales and drops the rest.
package enum QuantizationTensorKind: String, Sendable, Codable, CaseIterable {
    case weightScale = "weight_scale"
    case weightScale2 = "weight_scale_2"
    case inputScale = "input_scale"
    case kScale = "k_scale"
    case vScale = "v_scale"

    /// The kind of `key` (`...q_proj.input_scale`), or nil for any other key.
    package init?(key: String) {
        // Every kind ends in `scale` or `scale_2`: any other key is refused without a search.
        guard key.hasSuffix("scale") || key.hasSuffix("scale_2"), let dot = key.utf8.lastIndex(of: UInt8(ascii: ".")) else { return nil }
        self.init(rawValue: String(key[key.utf8.index(after: dot)...]))
    }
}

/// How a dequantizing piece turns quantized source bytes into floats: the format, the logical
/// `rows x cols` matrix (`[out, in]`, unpacked), where its scales are, and the destination.
package struct Dequantization: Sendable, Equatable {
    package let format: QuantizedFormat
    package let rows: Int
    package let cols: Int
    /// FP8: the F32 per-tensor `weight_scale` (4 bytes). NVFP4: the F8_E4M3 block scales
    /// (`rows * cols / 16` bytes).
    package let scales: SourceRange
    /// NVFP4: the F32 per-tensor `weight_scale_2` (4 bytes); nil for FP8.
    package let globalScale: SourceRange?
    package let to: DType
    /// Whether the destination is the `cols x rows` transpose (an expert merged into a grouped tensor).
    package let transpose: Bool

    package init(format: QuantizedFormat, rows: Int, cols: Int, scales: SourceRange, globalScale: SourceRange?,
                 to: DType, transpose: Bool) {
        self.format = format
        self.rows = rows
        self.cols = cols
        self.scales = scales
        self.globalScale = globalScale
        self.to = to
        self.transpose = transpose
    }

    /// Source bytes of the quantized weight itself.
    package var weightBytes: Int { format == .fp8 ? rows * cols : rows * cols / 2 }
}

/// One quantized weight of a checkpoint with its scale tensors (found by key and dtype).
package struct QuantizedWeight: Sendable {
    package let format: QuantizedFormat
    package let weight: HFTensor
    /// `weight_scale`.
    package let scale: HFTensor
    /// `weight_scale_2` (NVFP4).
    package let globalScale: HFTensor?

    /// The dequantized shape `[out, in]` (NVFP4 stores `in / 2` bytes per row).
    package var shape: [Int] {
        guard format == .nvfp4, weight.shape.count == 2 else { return weight.shape }
        return [weight.shape[0], weight.shape[1] * 2]
    }

    /// Checks the weight and its scales against the format; throws naming the file and key.
    /// `path` gives a tensor's file.
    package func validate(path: (HFTensor) -> String) throws {
        func bad(_ t: HFTensor, _ why: String) -> CheckpointError {
            CheckpointError(path: path(t), "\"\(t.name)\": \(why) (\(format.weightsDescription))")
        }
        func scalar(_ t: HFTensor) throws {
            guard t.dtype == .f32, t.shape.reduce(1, *) == 1, t.shape.count <= 1 else {
                throw bad(t, "\(t.dtype.rawValue) \(t.shape) is not one F32 per tensor; only per-tensor scales are supported")
            }
        }
        guard weight.shape.count == 2 else { throw bad(weight, "shape \(weight.shape) is not a matrix") }
        switch format {
        case .fp8:
            try scalar(scale)
            if let g = globalScale { throw bad(g, "an FP8 weight has no weight_scale_2") }
        case .nvfp4:
            let (out, inner) = (shape[0], shape[1])
            guard inner % 16 == 0 else { throw bad(weight, "\(inner) values per row are not whole blocks of 16") }
            guard scale.dtype == .f8e4m3, scale.shape == [out, inner / 16] else {
                throw bad(scale, "block scales are \(scale.dtype.rawValue) \(scale.shape), not F8_E4M3 [\(out), \(inner / 16)] (one per 16 values)")
            }
            guard let g = globalScale else { throw bad(weight, "no weight_scale_2 beside it") }
            try scalar(g)
        }
    }

    /// The dequantization of this weight into `to` (transposed or not), its scales located in
    /// their files.
    package func dequantization(to: DType, transpose: Bool) -> Dequantization {
        func range(_ t: HFTensor) -> SourceRange { SourceRange(file: t.file, offset: t.offset, count: t.byteCount) }
        return Dequantization(format: format, rows: shape[0], cols: shape[1], scales: range(scale),
                              globalScale: globalScale.map(range), to: to, transpose: transpose)
    }
}

/// The ModelOpt quantization found in a checkpoint's tensors: each quantized weight with its
/// scales, and every quantization tensor (`weight_scale`, `weight_scale_2`, `input_scale`,
/// `k_scale`, `v_scale`). A weight is FP8 when it is F8_E4M3 with a `weight_scale` beside it,
/// NVFP4 when it is U8 with an F8_E4M3 `weight_scale` beside it; an F8 weight without a
/// `weight_scale` is not ModelOpt's (DeepSeek-style block scales are `weight_scale_inv`).
package struct ModelOptTensors: Sendable {
    /// Quantized weights by HF key.
    package var weights: [String: QuantizedWeight] = [:]
    /// Every quantization tensor by HF key.
    package var scales: [String: QuantizationTensorKind] = [:]

    /// Whether the checkpoint has any quantized weight or quantization tensor.
    package var isEmpty: Bool { weights.isEmpty && scales.isEmpty }

    /// Quantized weights by format, keys sorted.
    package var keysByFormat: [QuantizedFormat: [String]] {
        var out: [QuantizedFormat: [String]] = [:]
        for (k, w) in weights { out[w.format, default: []].append(k) }
        return out.mapValues { $0.sorted() }
    }

    package init(_ tensors: [HFTensor]) {
        // Weights are matched with their scales by name; only quantization tensors are looked up,
        // so only they are indexed (a checkpoint without any builds no table of its keys).
        var byName: [String: HFTensor] = [:]
        for t in tensors {
            guard let kind = QuantizationTensorKind(key: t.name) else { continue }
            scales[t.name] = kind
            if byName[t.name] == nil { byName[t.name] = t }
        }
        guard !byName.isEmpty else { return }
        for t in tensors {
            guard t.name.hasSuffix(".weight") else { continue }  // (never a quantization tensor's name)
            let base = String(t.name.dropLast("weight".count))
            guard let scale = byName[base + QuantizationTensorKind.weightScale.rawValue] else { continue }
            let global = byName[base + QuantizationTensorKind.weightScale2.rawValue]
            switch t.dtype {
            case .f8e4m3: weights[t.name] = QuantizedWeight(format: .fp8, weight: t, scale: scale, globalScale: global)
            case .u8 where scale.dtype == .f8e4m3:
                weights[t.name] = QuantizedWeight(format: .nvfp4, weight: t, scale: scale, globalScale: global)
            default: continue
            }
        }
    }
}

/// What a checkpoint declares about its quantization: `config.json`'s `quantization_config`
/// and/or ModelOpt's `hf_quant_config.json`.
package struct QuantizationDeclaration: Sendable, Equatable {
    /// `quant_method` of `quantization_config` (`modelopt`), else the producer named by `hf_quant_config.json`.
    package var method: String?
    /// `quant_algo` (`FP8`, `NVFP4`, `MIXED_PRECISION`, ...).
    package var algorithm: String?
    /// `kv_cache_quant_algo`, when set.
    package var kvCacheAlgorithm: String?
    /// `group_size` (16 for NVFP4), when set.
    package var groupSize: Int?
    /// Where it was declared: `config.json quantization_config`, `hf_quant_config.json`.
    package var sources: [String] = []

    /// ModelOpt's own file beside the weights.
    package static let modelOptFileName = "hf_quant_config.json"

    /// Reads the declaration from `config` and, if present, `hf_quant_config` (its parsed JSON).
    package init(config: JSON, hfQuantConfig: JSON?) {
        if let q = config["quantization_config"], q.objectValue != nil {
            sources.append("config.json quantization_config")
            method = q["quant_method"]?.stringValue
            algorithm = q["quant_algo"]?.stringValue
            kvCacheAlgorithm = q["kv_cache_quant_algo"]?.stringValue
            groupSize = q["group_size"]?.intValue.map { Int($0) }
        }
        if let h = hfQuantConfig, h.objectValue != nil {
            sources.append(QuantizationDeclaration.modelOptFileName)
            let q = h["quantization"]
            method = method ?? h["producer"]?["name"]?.stringValue
            algorithm = algorithm ?? q?["quant_algo"]?.stringValue
            kvCacheAlgorithm = kvCacheAlgorithm ?? q?["kv_cache_quant_algo"]?.stringValue
            groupSize = groupSize ?? q?["group_size"]?.intValue.map { Int($0) }
        }
    }

    /// Whether anything was declared.
    package var isEmpty: Bool { sources.isEmpty }

    /// `config` without a ModelOpt `quantization_config` (what a dequantized checkpoint declares);
    /// any other quantization config is kept.
    package static func dequantizedConfig(_ config: JSON) -> JSON {
        guard let members = config.objectValue,
              config["quantization_config"]?["quant_method"]?.stringValue?.lowercased() == "modelopt" else { return config }
        return .object(members.filter { $0.0 != "quantization_config" })
    }
}
