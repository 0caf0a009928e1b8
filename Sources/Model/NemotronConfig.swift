import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// The kind of block a layer holds, one character of `hybrid_override_pattern`.
public enum BlockType: Character, Sendable, CaseIterable {
    case mamba = "M", attention = "*", mlp = "-", moe = "E"

    /// The word `layers_block_type` uses (the older spelling; see `words` for every accepted one).
    package var word: String {
        switch self {
        case .mamba: return "mamba"
        case .attention: return "attention"
        case .mlp: return "mlp"
        case .moe: return "moe"
        }
    }

    /// Every word `layers_block_type` may use for this block: the older configs' word and the one
    /// transformers 5 writes (`linear_attention` for mamba2, `full_attention` for attention).
    package var words: [String] {
        switch self {
        case .mamba: return ["mamba", "linear_attention"]
        case .attention: return ["attention", "full_attention"]
        case .mlp: return ["mlp"]
        case .moe: return ["moe"]
        }
    }

    /// The block a `layers_block_type` word names, in either spelling.
    package init?(word: String) {
        guard let b = BlockType.allCases.first(where: { $0.words.contains(word) }) else { return nil }
        self = b
    }

    /// Parses a pattern string such as `MEM*E`.
    package static func parse(pattern: String) -> [BlockType]? {
        var out: [BlockType] = []
        for c in pattern {
            guard let b = BlockType(rawValue: c) else { return nil }
            out.append(b)
        }
        return out
    }

    /// The pattern string of `blocks`.
    package static func pattern(_ blocks: [BlockType]) -> String { String(blocks.map(\.rawValue)) }
}

/// The fields of a Nemotron-H `config.json` that the layouts depend on.
public struct NemotronConfig: Sendable, Codable {
    public let layers: [BlockType]
    public let mtpLayers: [BlockType]
    public let numHiddenLayers: Int
    public let hiddenSize: Int
    public let nRoutedExperts: Int?
    public let moeIntermediateSize: Int?
    public let moeLatentSize: Int?
    /// The whole document, kept so it can be written back unchanged.
    package let json: JSON

    /// Width of an expert's input/output: `moe_latent_size` when set, else `hidden_size`.
    public var expertDim: Int { moeLatentSize ?? hiddenSize }
    /// Whether any layer (backbone or MTP) is a mixture of experts.
    package var hasExperts: Bool { layers.contains(.moe) || mtpLayers.contains(.moe) }

    /// Upper bound on `n_routed_experts` (real models have at most a few hundred): a corrupt value
    /// must not make every rank enumerate billions of experts.
    package static let maxRoutedExperts = 65_536

    /// Parses and checks a config document; `path` names the file in errors.
    package init(json: JSON, path: String) throws {
        func bad(_ reason: String) -> CheckpointError { CheckpointError(path: path, reason) }
        guard json.objectValue != nil else { throw bad("config is not a JSON object") }
        self.json = json

        func int(_ key: String, required: Bool) throws -> Int? {
            guard let v = json[key], !v.isNull else {
                if required { throw bad("missing \"\(key)\"") }
                return nil
            }
            guard let i = v.intValue, i >= 0, i <= Int64(Int32.max) else {
                throw bad("\"\(key)\" must be a non-negative integer")
            }
            return Int(i)
        }
        func pattern(_ key: String) throws -> [BlockType]? {
            guard let v = json[key], !v.isNull else { return nil }
            guard let s = v.stringValue else { throw bad("\"\(key)\" must be a string") }
            guard let b = BlockType.parse(pattern: s) else {
                throw bad("\"\(key)\" has a character other than M * - E: \"\(s)\"")
            }
            return b
        }
        func list(_ key: String) throws -> [BlockType]? {
            guard let v = json[key], !v.isNull else { return nil }
            guard let items = v.arrayValue else { throw bad("\"\(key)\" must be a list") }
            return try items.map { item in
                guard let w = item.stringValue, let b = BlockType(word: w) else {
                    throw bad("\"\(key)\" holds an unknown block type \(item.serialized())")
                }
                return b
            }
        }
        /// The pattern string and/or the word list (transformers 5 writes only the list); when a
        /// config has both they must name the same blocks.
        func blocks(patternKey: String, listKey: String) throws -> [BlockType]? {
            let p = try pattern(patternKey), l = try list(listKey)
            if let p, let l, p != l {
                throw bad("\"\(patternKey)\" is \(BlockType.pattern(p)) but \"\(listKey)\" is \(BlockType.pattern(l))")
            }
            return p ?? l
        }

        guard let layers = try blocks(patternKey: "hybrid_override_pattern", listKey: "layers_block_type") else {
            throw bad("missing \"hybrid_override_pattern\" (or \"layers_block_type\")")
        }
        self.layers = layers
        // transformers 5 writes no num_hidden_layers: the layer list is the count. When present it
        // must agree with the list.
        numHiddenLayers = try int("num_hidden_layers", required: false) ?? layers.count
        guard layers.count == numHiddenLayers else {
            throw bad("layer pattern has \(layers.count) layers but num_hidden_layers is \(numHiddenLayers)")
        }
        hiddenSize = try int("hidden_size", required: true) ?? 0
        // transformers 5 always writes mtp_layers_block_type, with num_nextn_predict_layers 0 when
        // the model has no MTP layers: only a positive count makes the MTP pattern count.
        let mtp = try blocks(patternKey: "mtp_hybrid_override_pattern", listKey: "mtp_layers_block_type") ?? []
        let nextn = try int("num_nextn_predict_layers", required: false) ?? 0
        mtpLayers = nextn == 0 ? [] : mtp
        let needsExperts = layers.contains(.moe) || mtpLayers.contains(.moe)
        nRoutedExperts = try int("n_routed_experts", required: needsExperts)
        moeIntermediateSize = try int("moe_intermediate_size", required: needsExperts)
        moeLatentSize = try int("moe_latent_size", required: false)
        if needsExperts, nRoutedExperts == 0 { throw bad("\"n_routed_experts\" is 0 but the pattern has MoE layers") }
        if let n = nRoutedExperts, n > NemotronConfig.maxRoutedExperts {
            throw bad("\"n_routed_experts\" is \(n), more than the \(NemotronConfig.maxRoutedExperts) nemoshard accepts")
        }
    }

    /// Sent between ranks as the document itself, checked again on arrival.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(json.serialized())
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        try self.init(json: try JSON.parse(text), path: "config.json")
    }

    /// Reads and parses `path`.
    public init(path: String) throws {
        let bytes: [UInt8]
        do { bytes = try readWholeFile(path, limit: ReadLimit.config) } catch let e as IOError where e.code == ENOENT_CODE {
            throw CheckpointError(path: path, "missing config.json")
        }
        let json: JSON
        do { json = try JSON.parse(bytes) } catch let e as JSONError {
            throw CheckpointError(path: path, "not valid JSON: \(e)")
        }
        try self.init(json: json, path: path)
    }
}
