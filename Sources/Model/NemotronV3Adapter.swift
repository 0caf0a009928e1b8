import Foundation
import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// Where an MoE layer lives: the backbone or the multi-token-prediction head.
public enum LayerNamespace: String, Sendable, Hashable, Codable, Comparable {
    case backbone, mtp
    public static func < (a: Self, b: Self) -> Bool { a == .backbone && b == .mtp }
}

/// The two expert projections of a ReLU² (non-gated) MoE layer.
public enum Projection: String, Sendable, Hashable, Codable { case up = "up_proj", down = "down_proj" }

/// One MoE layer's grouped-expert slot: namespace, the key prefix before `layers.` and the layer index.
public struct ExpertLayer: Sendable, Hashable, Codable, Comparable {
    public let namespace: LayerNamespace
    /// Internal prefix before `layers.` (`model.` for the backbone, `mtp.` for MTP).
    package let prefix: String
    public let layer: Int

    /// Internal name of the grouped tensor for `projection`.
    public func groupedName(_ projection: Projection) -> String {
        "\(prefix)layers.\(layer).mixer.experts." + (projection == .up ? "gate_and_up_projs" : "down_projs")
    }

    public static func < (a: Self, b: Self) -> Bool { (a.namespace, a.prefix, a.layer) < (b.namespace, b.prefix, b.layer) }
}

/// Why `from_hf` drops a key.
public enum DropReason: Sendable, Equatable, CustomStringConvertible {
    /// A quantization scale (`..._scale_inv`) of a non-expert weight.
    case scaleInverse
    /// A backbone layer at or past `num_hidden_layers` (loading the first layers of a bigger model).
    case beyondNumHiddenLayers(layer: Int, limit: Int)
    /// An expert `gate_proj`: ReLU² experts are not gated. Carries the layer it belongs to.
    case gateProjection(ExpertLayer)
    /// A ModelOpt quantization tensor (`weight_scale`, `weight_scale_2`, `input_scale`, `k_scale`,
    /// `v_scale`), named by that last key component: consumed or dropped when loading dequantized.
    case quantizationTensor(String)

    public var description: String {
        switch self {
        case .scaleInverse: return "_scale_inv"
        case let .beyondNumHiddenLayers(layer, limit): return "layer \(layer) >= num_hidden_layers \(limit)"
        case .gateProjection: return "gate_proj of a non-gated expert"
        case let .quantizationTensor(kind): return "ModelOpt \(kind), not kept when dequantizing"
        }
    }
}

/// A grouped expert tensor's place: its MoE layer and which projection it holds.
package struct ExpertSlot: Sendable, Hashable, Codable {
    package let layer: ExpertLayer
    package let projection: Projection

    package init(layer: ExpertLayer, projection: Projection) {
        self.layer = layer
        self.projection = projection
    }

    /// The slot of an internal grouped name (`[mtp.][model.]layers.L.mixer.experts.gate_and_up_projs`
    /// or `...down_projs`); nil for any other name.
    package init?(groupedName name: String) {
        let projection: Projection
        let stem: Substring
        if name.hasSuffix(".mixer.experts.gate_and_up_projs") {
            projection = .up
            stem = name.dropLast(".mixer.experts.gate_and_up_projs".count)
        } else if name.hasSuffix(".mixer.experts.down_projs") {
            projection = .down
            stem = name.dropLast(".mixer.experts.down_projs".count)
        } else { return nil }
        guard let at = stem.range(ofSubstring: "layers.", backwards: true) else { return nil }
        let digits = stem[at.upperBound...]
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), digits.count < 10,
              digits.count == 1 || digits.first != "0", let layer = Int(digits) else { return nil }
        let prefix = String(stem[..<at.lowerBound])
        let slot = ExpertLayer(namespace: prefix.hasPrefix("mtp.") ? .mtp : .backbone, prefix: prefix, layer: layer)
        guard slot.groupedName(projection) == name else { return nil }
        self.init(layer: slot, projection: projection)
    }
}

/// What `from_hf` does with one Hugging Face key.
public enum HFKeyRole: Sendable, Equatable {
    /// Dropped, with the reason.
    case drop(DropReason)
    /// Kept under this internal name, bytes unchanged.
    case rename(String)
    /// One expert's projection, merged into a grouped tensor.
    case expert(ExpertLayer, expert: Int, Projection)
    /// Every expert's projection of one layer in one tensor, as transformers 5 keeps them
    /// (`save_pretrained(save_original_format=False)`): `...layers.L.mixer.experts.up_proj`
    /// `[n, moe_intermediate, in]` or `...down_proj` `[n, in, moe_intermediate]`; slice `e` is
    /// expert `e`'s per-expert weight, merged like it.
    case stackedExperts(ExpertLayer, Projection)
}

/// The NemotronV3 state-dict mapping of NeMo AutoModel (`NemotronV3StateDictAdapter`), key by key.
/// Every Hugging Face key rule lives here: prefixes, renames, `mtp.` handling, expert matching,
/// drops, and the way back.
///
/// Mirrors, per `rules` (`NemotronV3Rules.swift` holds each rule set's table): NeMo AutoModel
/// 0.7.0's `nemo_automodel.components.models.nemotron_v3.state_dict_adapter` as installed
/// (`docs/nemo-0.7-rules.md`, the default), or the seed rules of the older reference page
/// (`shared/docs/nemotron-v3-format.md`). The README's "Which reference" says how they differ.
public struct NemotronV3Adapter: Sendable {
    package let numHiddenLayers: Int
    package let nRoutedExperts: Int?
    package let moeIntermediateSize: Int?
    /// The rule set every key rule that differs between the references is read from.
    package let rules: Rules
    /// Prefix the HF experts get on the way back (`backbone.` like the reference, or the source's).
    public var hfPrefix: String = "backbone."

    package init(numHiddenLayers: Int, nRoutedExperts: Int?, moeIntermediateSize: Int?, rules: Rules = .default) {
        self.numHiddenLayers = numHiddenLayers
        self.nRoutedExperts = nRoutedExperts
        self.moeIntermediateSize = moeIntermediateSize
        self.rules = rules
    }

    public init(config: NemotronConfig, rules: Rules = .default) {
        self.init(numHiddenLayers: config.numHiddenLayers, nRoutedExperts: config.nRoutedExperts,
                  moeIntermediateSize: config.moeIntermediateSize, rules: rules)
    }

    // MARK: from_hf

    /// Classifies one HF key exactly as the reference's `from_hf` treats it.
    public func classify(_ key: String) throws -> HFKeyRole {
        if numHiddenLayers > 0, let layer = backboneLayerIndex(key), layer >= numHiddenLayers {
            return .drop(.beyondNumHiddenLayers(layer: layer, limit: numHiddenLayers))
        }
        let isMTP = key.hasPrefix("mtp.")
        let stripped = isMTP ? String(key.dropFirst(4)) : nativeName(ofHF: key)
        let outName = holderName(isMTP ? key : stripped)
        try refuseLoRAExpertKey(key)
        guard nRoutedExperts != nil else {  // dense: pure renames
            return dropsScaleInverse(stripped) ? .drop(.scaleInverse) : .rename(outName)
        }
        if let m = NemotronV3Adapter.matchStackedExperts(stripped) {
            guard m.layer.count == 1 || m.layer.first != "0" else {
                throw CheckpointError(path: key, "layer index \"\(m.layer)\" of stacked transformers experts is not canonical decimal (a leading zero would merge it with another key)")
            }
            guard let layer = Int(m.layer) else { throw CheckpointError(path: key, "layer index of stacked transformers experts out of range") }
            let slot = ExpertLayer(namespace: isMTP ? .mtp : .backbone, prefix: (isMTP ? "mtp." : "") + m.prefix, layer: layer)
            return .stackedExperts(slot, m.projection == "up_proj" ? .up : .down)
        }
        if stripped.hasSubstring(".mixer.experts."), stripped.hasSuffix(".weight") {
            guard let m = NemotronV3Adapter.matchExpert(stripped) else { return .rename(outName) }
            for (what, digits) in [("layer index", m.layer), ("expert id", m.expert)] where digits.count > 1 && digits.first == "0" {
                throw CheckpointError(path: key, "\(what) \"\(digits)\" is not canonical decimal (a leading zero would merge it with another key)")
            }
            guard let layer = Int(m.layer), let expert = Int(m.expert) else {
                throw CheckpointError(path: key, "layer or expert index out of range")
            }
            let slot = ExpertLayer(namespace: isMTP ? .mtp : .backbone, prefix: (isMTP ? "mtp." : "") + m.prefix,
                                   layer: layer)
            if m.projection == "gate_proj" { return .drop(.gateProjection(slot)) }
            return .expert(slot, expert: expert, m.projection == "up_proj" ? .up : .down)
        }
        if dropsScaleInverse(stripped) { return .drop(.scaleInverse) }
        return .rename(outName)
    }

    /// The prefix the source uses for backbone keys (restored on the way back): that of the first
    /// backbone expert key (per-expert or stacked), else of the first backbone key; `backbone.`
    /// when there is none.
    public static func detectPrefix(_ keys: [String]) -> String {
        let first = keys.first {
            $0.hasSubstring(".mixer.experts.") && ($0.hasSuffix(".weight") || $0.hasSuffix(".experts.up_proj") || $0.hasSuffix(".experts.down_proj"))
                && !$0.hasPrefix("mtp.")
        }
            ?? keys.first { $0.hasPrefix("model.") || $0.hasPrefix("backbone.") }
        return first?.hasPrefix("model.") == true ? "model." : "backbone."
    }

    /// The seed rules' renames (`nativeName(ofHF:)` follows the adapter's rules): `backbone.` ->
    /// `model.`, `model.norm_f.weight` -> `model.norm.weight`, `model.embeddings.weight` -> `model.embed_tokens.weight`.
    package static func renameFromHF(_ key: String) -> String {
        var k = key
        if k.hasPrefix("backbone.") { k = "model." + k.dropFirst("backbone.".count) }
        if k == "model.norm_f.weight" { k = "model.norm.weight" }
        if k == "model.embeddings.weight" { k = "model.embed_tokens.weight" }
        return k
    }

    /// `^(?:backbone|model)\.layers\.(\d+)\.` -> the index.
    package func backboneLayerIndex(_ key: String) -> Int? {
        // Byte offsets: the prefixes and digits are ASCII (a Character walk costs thousands of
        // instructions per key).
        let skip: Int
        if key.hasPrefix("backbone.layers.") { skip = "backbone.layers.".utf8.count }
        else if key.hasPrefix("model.layers.") { skip = "model.layers.".utf8.count }
        else { return nil }
        let rest = key[key.utf8.index(key.utf8.startIndex, offsetBy: skip)...]
        let n = TextSearch.leadingDigits(rest)
        let end = rest.utf8.index(rest.utf8.startIndex, offsetBy: n)
        guard n > 0, end < rest.utf8.endIndex, rest.utf8[end] == UInt8(ascii: ".") else { return nil }
        return Int(rest[..<end]) ?? Int.max
    }

    package struct ExpertMatch { let prefix: String; let layer: Substring; let expert: Substring; let projection: Substring }

    /// Python `re.match(r"((?:model\.)?(?:language_model\.)?)layers\.(\d+)\.mixer\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight", key)`.
    package static func matchExpert(_ key: String) -> ExpertMatch? {
        var rest = Substring(key)
        var prefix = ""
        for p in ["model.", "language_model."] where rest.hasPrefix(p) {
            prefix += p
            rest = rest.dropFirst(p.count)
        }
        func take(_ literal: String) -> Bool {
            guard rest.hasPrefix(literal) else { return false }
            rest = rest.dropFirst(literal.count)
            return true
        }
        func digits() -> Substring? {
            let d = rest.prefix { $0.isASCII && $0.isNumber }
            guard !d.isEmpty else { return nil }
            rest = rest.dropFirst(d.count)
            return d
        }
        guard take("layers."), let layer = digits(), take(".mixer.experts."), let expert = digits(), take(".") else {
            return nil
        }
        for proj in ["gate_proj", "up_proj", "down_proj"] where rest.hasPrefix(proj + ".weight") {
            return ExpertMatch(prefix: prefix, layer: layer, expert: expert, projection: Substring(proj))
        }
        return nil
    }

    /// Python `re.fullmatch(r"((?:model\.)?(?:language_model\.)?)layers\.(\d+)\.mixer\.experts\.(up_proj|down_proj)", key)`:
    /// a stacked expert tensor of transformers 5 (after `backbone.` -> `model.`).
    package static func matchStackedExperts(_ key: String) -> ExpertMatch? {
        // A full match ends in one of the two projections: every other key is refused at once.
        guard key.hasSuffix(".mixer.experts.up_proj") || key.hasSuffix(".mixer.experts.down_proj") else { return nil }
        var rest = Substring(key)
        var prefix = ""
        for p in ["model.", "language_model."] where rest.hasPrefix(p) {
            prefix += p
            rest = rest.dropFirst(p.count)
        }
        guard rest.hasPrefix("layers.") else { return nil }
        rest = rest.dropFirst("layers.".count)
        let layer = rest.prefix { $0.isASCII && $0.isNumber }
        guard !layer.isEmpty else { return nil }
        rest = rest.dropFirst(layer.count)
        for proj in ["up_proj", "down_proj"] where rest == ".mixer.experts." + proj {
            return ExpertMatch(prefix: prefix, layer: layer, expert: "", projection: Substring(proj))
        }
        return nil
    }

    // MARK: to_hf

    /// What `convert_single_tensor_to_hf` yields for one internal tensor: per-expert keys for a
    /// grouped tensor (expert ids `firstExpert ..< firstExpert + shape[0]`), else one renamed key.
    public enum HFOutput: Equatable {
        case split(keyForExpert: [String], projection: Projection)
        case renamed(String)
    }

    /// Maps an internal key (and its shape) to HF, with the reference's rules.
    public func toHF(_ fqn: String, shape: [Int], firstExpert: Int) -> HFOutput {
        let isMTP = fqn.hasPrefix("mtp.")
        if nRoutedExperts != nil, let layer = firstLayerNumber(fqn) {
            let prefix = isMTP ? "mtp." : hfPrefix
            var projection: Projection?
            if fqn.hasSubstring(".mixer.experts.gate_and_up_projs"), fqn.hasSuffix(".gate_and_up_projs") {
                projection = .up
            } else if fqn.hasSubstring(".mixer.experts.down_projs"), fqn.hasSuffix(".down_projs"),
                      shape.count == 3, shape[1] == moeIntermediateSize {
                projection = .down
            }
            if let projection {
                let n = shape.first ?? 0
                return .split(keyForExpert: (0..<n).map {
                    "\(prefix)layers.\(layer).mixer.experts.\(firstExpert + $0).\(projection.rawValue).weight"
                }, projection: projection)
            }
        }
        return .renamed(hfName(of: fqn))
    }

    /// The key transformers 5 stacks every expert of a grouped tensor's layer under
    /// (`save_pretrained(save_original_format=False)`): `model.layers.L.mixer.experts.up_proj`
    /// (`mtp.layers...` for the MTP head), with the projection; nil for any other tensor.
    package func stackedKey(_ fqn: String, shape: [Int]) -> (key: String, projection: Projection)? {
        guard case let .split(_, projection) = toHF(fqn, shape: shape, firstExpert: 0), let layer = firstLayerNumber(fqn) else {
            return nil
        }
        let prefix = fqn.hasPrefix("mtp.") ? "mtp." : "model."
        return ("\(prefix)layers.\(layer).mixer.experts.\(projection.rawValue)", projection)
    }

    /// transformers 5's name for an exported non-expert key in its own layout: the renaming its
    /// `from_pretrained` applies (`backbone.` -> `model.`), which `save_pretrained(save_original_format=False)`
    /// does not undo.
    package static func transformersName(_ key: String) -> String {
        key.hasPrefix("backbone.") ? "model." + key.dropFirst("backbone.".count) : key
    }

    /// The seed rules' way back (`hfName(of:)` follows the adapter's rules): `model.` -> prefix
    /// (default `backbone.`), `norm` -> `norm_f`, `embed_tokens` -> `embeddings`.
    package static func renameToHF(_ fqn: String, prefix: String = "backbone.") -> String {
        var k = fqn
        if k.hasPrefix("model.") { k = "backbone." + k.dropFirst("model.".count) }
        if k == "backbone.norm.weight" { k = "backbone.norm_f.weight" }
        if k == "backbone.embed_tokens.weight" { k = "backbone.embeddings.weight" }
        if prefix != "backbone.", k.hasPrefix("backbone.") { k = prefix + k.dropFirst("backbone.".count) }
        return k
    }

    /// `re.search(r"layers\.(\d+)", fqn)`.
    package func firstLayerNumber(_ fqn: String) -> Int? {
        var search = Substring(fqn)
        while let r = search.range(ofSubstring: "layers.") {
            let after = search[r.upperBound...]
            let d = after.prefix { $0.isASCII && $0.isNumber }
            if !d.isEmpty { return Int(d) }
            search = after
        }
        return nil
    }
}
