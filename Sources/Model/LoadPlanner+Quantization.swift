import NemoShardCore
import NemoShardFormat

/// Loading a ModelOpt-quantized checkpoint (FP8, NVFP4): without `dequantize` its quantized
/// weights are refused; with it every quantized weight (expert or not) becomes a float tensor of
/// its dequantized shape, the quantization tensors are not kept, and the checkpoint the state
/// describes declares no ModelOpt quantization.
extension LoadPlanner {
    /// `t` as a quantized weight this planner dequantizes, or nil (not quantized, or no `dequantize`).
    package func quantized(_ t: HFTensor) -> QuantizedWeight? {
        guard dequantize != nil, let q = quantization.weights[t.name], q.weight == t else { return nil }
        return q
    }

    /// The dtype and shape `t` has in the loaded state (a renamed tensor: its own, or dequantized).
    package func outputForm(_ t: HFTensor) -> (DType, [Int]) {
        guard let q = quantized(t), let to = dequantize else { return (t.dtype, t.shape) }
        return (to, q.shape)
    }

    /// Refuses quantized weights without `dequantize` (a usage error naming the formats, the first
    /// key and the directory, with the `dequantize` remedy); with it, checks every quantized weight
    /// against its format.
    package func checkQuantization() throws {
        let byFormat = quantization.keysByFormat
        guard dequantize != nil else {
            guard !byFormat.isEmpty else { return }
            let formats = byFormat.keys.sorted()
            let first = formats.compactMap { byFormat[$0]?.first }.first ?? ""
            let count = byFormat.values.reduce(0) { $0 + $1.count }
            let what = formats.map(\.weightsDescription).joined(separator: " and ")
            throw UsageError("\(checkpoint.directory): \(count) \(what) (first \(jsonQuoted(first))) are quantized",
                             remedy: .dequantize)
        }
        for key in quantization.weights.keys.sorted() {
            try quantization.weights[key]?.validate { checkpoint.path(ofFile: $0.file) }
        }
    }

    /// Moves every quantization tensor the adapter kept (as a renamed tensor) to the dropped keys.
    package static func dropQuantizationTensors(_ layout: inout Layout, _ quantization: ModelOptTensors) {
        guard !quantization.scales.isEmpty else { return }
        var kept: [(name: String, source: HFTensor)] = []
        for entry in layout.renamed {
            if let kind = quantization.scales[entry.source.name] {
                layout.dropped.append((entry.source.name, .quantizationTensor(kind.rawValue)))
            } else {
                kept.append(entry)
            }
        }
        layout.renamed = kept
    }

    /// The `config.json` the loaded state describes: without a ModelOpt `quantization_config`
    /// when dequantizing.
    package var outputConfig: JSON {
        dequantize == nil ? checkpoint.config.json : QuantizationDeclaration.dequantizedConfig(checkpoint.config.json)
    }

    /// The source's small files an export carries along: not ModelOpt's `hf_quant_config.json`
    /// when dequantizing (the export is a plain checkpoint).
    package var outputExtraFiles: [String] {
        dequantize == nil ? checkpoint.extraFiles : checkpoint.extraFiles.filter { $0 != QuantizationDeclaration.modelOptFileName }
    }
}
