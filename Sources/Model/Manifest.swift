import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// `nemoshard.json`: what a per-rank checkpoint holds and where it came from. The file is written
/// and read by `toJSON` and `init(json:path:)`; between ranks a manifest travels as `Codable`.
public struct Manifest: Sendable, Codable {
    package static let fileName = "nemoshard.json"
    package static let formatName = "nemoshard-per-rank"
    package static let version: Int64 = 2

    /// One rank's file and experts.
    public struct RankEntry: Sendable, Equatable, Codable {
        public let rank: Int
        package let file: String
        public let experts: ExpertRange

        package init(rank: Int, file: String, experts: ExpertRange) {
            self.rank = rank
            self.file = file
            self.experts = experts
        }
    }

    /// The rank entries of a checkpoint written by `worldSize` ranks over `mesh`: each rank's file
    /// and the experts the mesh gives it. The one way entries are made.
    package static func rankEntries(worldSize: Int, mesh: MeshShape, experts: Int) -> [RankEntry] {
        (0..<worldSize).map { RankEntry(rank: $0, file: rankFileName($0, of: worldSize), experts: mesh.expertRange(of: $0, experts: experts)) }
    }

    /// One internal tensor in the global view (what `from_hf` produces, what the manifest lists).
    public struct TensorEntry: Sendable, Equatable, Codable {
        public let name: String
        public let dtype: DType
        /// Global shape; dim 0 spans all experts when `expertSharded`.
        public let shape: [Int]
        /// For a grouped expert tensor, its MoE layer and projection.
        package let expert: ExpertSlot?
        /// The HF key a renamed tensor came from (restored on export where the rules say so).
        public let hfKey: String?
        /// For a non-expert tensor, the one rank whose file holds it; nil for expert-sharded ones.
        public package(set) var holder: Int?
        /// The dtype the source checkpoint stored it in (per expert, for grouped tensors) where that
        /// differs from `dtype` (`hf_dtype`: an upcast fp32-holder parameter, experts grouped in
        /// another dtype); nil: `dtype`. Exports that keep or follow the source's dtypes read it.
        package let hfDType: DType?

        /// Whether dim 0 is the expert axis (split over the ranks).
        public var expertSharded: Bool { expert != nil }

        package init(name: String, dtype: DType, shape: [Int], expert: ExpertSlot?, hfKey: String?, holder: Int? = nil,
                     hfDType: DType? = nil) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.expert = expert
            self.hfKey = hfKey
            self.holder = holder
            self.hfDType = hfDType == dtype ? nil : hfDType
        }
    }

    public let worldSize: Int
    public let mesh: MeshShape
    public let nRoutedExperts: Int
    public let ranks: [RankEntry]
    public let tensors: [TensorEntry]
    /// Source checkpoint: absolute directory, config.json content, HF prefix of expert keys,
    /// every HF key in the source's order, and its small non-weight files.
    package let sourceDirectory: String
    package let config: JSON
    package let hfPrefix: String
    package let hfKeys: [String]
    package let extraFiles: [String]
    /// The key rules the checkpoint was loaded with (`rules`; a manifest without it was written by
    /// the seed rules); save-hf, to-hf and reshard follow them.
    package let rules: Rules

    /// A manifest whose non-expert tensors are assigned to holders with `assignHolders`.
    package init(worldSize: Int, mesh: MeshShape, nRoutedExperts: Int, ranks: [RankEntry], tensors: [TensorEntry],
                sourceDirectory: String, config: JSON, hfPrefix: String, hfKeys: [String], extraFiles: [String],
                rules: Rules = .seed) {
        self.rules = rules
        self.worldSize = worldSize
        self.mesh = mesh
        self.nRoutedExperts = nRoutedExperts
        self.ranks = ranks
        self.tensors = Manifest.assignHolders(tensors, ranks: ranks)
        self.sourceDirectory = sourceDirectory
        self.config = config
        self.hfPrefix = hfPrefix
        self.hfKeys = hfKeys
        self.extraFiles = extraFiles
    }

    /// Ranks that hold data: the mesh's primary replicas of these entries (`DeviceMesh`'s rule,
    /// `MeshShape.primaryReplicas(of:)`); mesh replicas hold nothing of their own.
    package static func ownerRanks(_ ranks: [RankEntry]) -> [Int] {
        MeshShape.primaryReplicas(of: ranks.map(\.experts)).map { ranks[$0].rank }
    }

    /// Each non-expert tensor is stored once, by the owner rank with the fewest non-expert bytes so
    /// far (ties: the lowest rank), in tensor order (`Balancer`), so the ranks write about equal amounts.
    package static func assignHolders(_ tensors: [TensorEntry], ranks: [RankEntry]) -> [TensorEntry] {
        let owners = ownerRanks(ranks)
        let held = tensors.indices.filter { !tensors[$0].expertSharded }
        let bins = Balancer.assign(weights: held.map { tensors[$0].shape.reduce(1, *) * tensors[$0].dtype.size }, bins: owners.count)
        var out = tensors.map { t -> TensorEntry in
            var t = t
            t.holder = nil
            return t
        }
        guard !owners.isEmpty else { return out }
        for (k, i) in held.enumerated() { out[i].holder = owners[bins[k]] }
        return out
    }

    /// The tensors rank `rank`'s file holds: the grouped ones (sliced to its experts) and the
    /// non-expert tensors it is the holder of.
    package func fileTensors(rank: Int) -> Set<String> {
        Set(tensors.filter { $0.expertSharded || $0.holder == rank }.map(\.name))
    }

    /// The `__metadata__` of rank `rank`'s file: its rank, world size and experts, checked against
    /// the manifest when the checkpoint is opened.
    package static func rankMetadata(rank: Int, range: ExpertRange, world: Int) -> [(String, String)] {
        [("format", "pt"), ("nemoshard_rank", String(rank)), ("nemoshard_world_size", String(world)),
         ("nemoshard_experts", "\(range.start),\(range.end)")]
    }

    /// The whole `__metadata__` of rank `rank`'s file holding `specs`: `rankMetadata`, then
    /// `DCP_SHARDING_INFO` for every tensor in it, so torch DCP's `HuggingFaceStorageReader` reads
    /// the directory.
    package func rankFileMetadata(rank: Int, range: ExpertRange, specs: [TensorSpec]) -> [(String, String)] {
        let grouped = Set(tensors.filter(\.expertSharded).map(\.name))
        return Manifest.rankMetadata(rank: rank, range: range, world: worldSize)
            + [DCPShardingInfo.entry(specs: specs, grouped: grouped, firstExpert: range.start)]
    }

    /// `rank-00003-of-00008.safetensors`.
    package static func rankFileName(_ rank: Int, of world: Int) -> String {
        "rank-\(pad5(rank))-of-\(pad5(world)).safetensors"
    }

    public func tensor(_ name: String) -> TensorEntry? { tensors.first { $0.name == name } }

    package func toJSON() -> JSON {
        .object([
            ("format", .string(Manifest.formatName)),
            ("version", .int(Manifest.version)),
            ("rules", .string(rules.rawValue)),
            ("world_size", .int(Int64(worldSize))),
            ("mesh", .object([("shape", .array(mesh.sizes.map { .int(Int64($0)) })),
                              ("names", .array(mesh.names.map { .string($0) }))])),
            ("n_routed_experts", .int(Int64(nRoutedExperts))),
            ("ranks", .array(ranks.map { r in
                .object([("rank", .int(Int64(r.rank))), ("file", .string(r.file)),
                         ("experts", .array([.int(Int64(r.experts.start)), .int(Int64(r.experts.end))]))])
            })),
            ("tensors", .array(tensors.map { t in
                var m: [(String, JSON)] = [("name", .string(t.name)), ("dtype", .string(t.dtype.rawValue)),
                                           ("shape", .array(t.shape.map { .int(Int64($0)) })),
                                           ("expert_sharded", .bool(t.expertSharded))]
                if let k = t.hfKey { m.append(("hf_key", .string(k))) }
                if let d = t.hfDType { m.append(("hf_dtype", .string(d.rawValue))) }
                if let h = t.holder { m.append(("holder", .int(Int64(h)))) }
                return .object(m)
            })),
            ("source", .object([
                ("directory", .string(sourceDirectory)),
                ("hf_prefix", .string(hfPrefix)),
                ("hf_keys", .array(hfKeys.map { .string($0) })),
                ("extra_files", .array(extraFiles.map { .string($0) })),
                ("config", config),
            ])),
        ])
    }

    /// Parses and checks a manifest; `path` names it in errors.
    package init(json: JSON, path: String) throws {
        func bad(_ why: String) -> CheckpointError { CheckpointError(path: path, why) }
        guard json["format"]?.stringValue == Manifest.formatName else { throw bad("not a nemoshard per-rank manifest") }
        guard json["version"]?.intValue == Manifest.version else { throw bad("unsupported manifest version") }
        rules = try Manifest.rules(json["rules"], path: path)
        func int(_ v: JSON?, _ what: String) throws -> Int {
            guard let i = v?.intValue, i >= 0, i <= Int64(Int32.max) else { throw bad("\"\(what)\" must be a non-negative integer") }
            return Int(i)
        }
        func strings(_ v: JSON?, _ what: String) throws -> [String] {
            guard let a = v?.arrayValue else { throw bad("\"\(what)\" must be a list") }
            return try a.map { guard let s = $0.stringValue else { throw bad("\"\(what)\" must hold strings") }; return s }
        }
        worldSize = try int(json["world_size"], "world_size")
        guard let meshJSON = json["mesh"], let sizes = meshJSON["shape"]?.arrayValue else { throw bad("missing \"mesh\"") }
        do {
            mesh = try MeshShape(sizes: try sizes.map { try int($0, "mesh.shape") }, names: try strings(meshJSON["names"], "mesh.names"))
        } catch let e as UsageError { throw bad(e.message) }
        guard mesh.worldSize == worldSize else { throw bad("mesh \(mesh) does not have world_size \(worldSize) ranks") }
        let nExperts = try int(json["n_routed_experts"], "n_routed_experts")
        guard nExperts <= NemotronConfig.maxRoutedExperts else { throw bad("\"n_routed_experts\" is \(nExperts), more than \(NemotronConfig.maxRoutedExperts)") }
        nRoutedExperts = nExperts
        let world = worldSize
        let shape = mesh
        guard let rankList = json["ranks"]?.arrayValue, rankList.count == world else {
            throw bad("\"ranks\" must list \(world) ranks")
        }
        ranks = try rankList.enumerated().map { i, r in
            guard try int(r["rank"], "rank") == i, let file = r["file"]?.stringValue,
                  let e = r["experts"]?.arrayValue, e.count == 2 else { throw bad("rank entry \(i) is malformed") }
            if let why = ExtraFileName.plainNameRefusal(file) { throw bad("ranks[\(i)].file \(jsonQuoted(file)) \(why)") }
            let range = ExpertRange(start: try int(e[0], "experts"), end: try int(e[1], "experts"))
            guard range.start <= range.end, range.end <= nExperts else { throw bad("rank \(i) has expert range \(range) outside 0..<\(nExperts)") }
            let expected = shape.expertRange(of: i, experts: nExperts)
            guard range == expected else { throw bad("rank \(i) has expert range \(range), but mesh \(shape) gives it \(expected)") }
            guard file.hasSuffix(".safetensors"), !file.hasPrefix(".") else { throw bad("rank \(i)'s file \"\(file)\" is not a .safetensors name") }
            return RankEntry(rank: i, file: file, experts: range)
        }
        guard Set(ranks.map(\.file)).count == ranks.count else { throw bad("two ranks name the same file") }
        guard let tensorList = json["tensors"]?.arrayValue else { throw bad("missing \"tensors\"") }
        tensors = try tensorList.map { t in
            guard let name = t["name"]?.stringValue, let dt = t["dtype"]?.stringValue.flatMap(DType.init(rawValue:)),
                  let shape = t["shape"]?.arrayValue, let sharded = t["expert_sharded"]?.boolValue else {
                throw bad("tensor entry \(t.serialized()) is malformed")
            }
            let dims = try shape.map { try int($0, "shape") }
            guard let n = SafetensorsHeader.elementCount(dims), !n.multipliedReportingOverflow(by: dt.size).overflow else {
                throw bad("tensor \(name): shape overflows")
            }
            if sharded, dims.first != nExperts { throw bad("tensor \(name): dim 0 is not n_routed_experts") }
            var holder: Int?
            if !sharded {
                let h = try int(t["holder"], "holder")
                guard h < world else { throw bad("tensor \(name): holder \(h) is not a rank of \(world)") }
                holder = h
            } else if t["holder"] != nil {
                throw bad("tensor \(name): an expert-sharded tensor has no holder")
            }
            var expert: ExpertSlot?
            if sharded {
                guard let slot = ExpertSlot(groupedName: name) else { throw bad("tensor \(name) is expert_sharded but not a grouped expert tensor name") }
                expert = slot
            }
            let hfKey = try Manifest.hfKey(t["hf_key"], tensor: name, path: path)
            let hfDType = try Manifest.hfDType(t["hf_dtype"], dtype: dt, tensor: name, path: path)
            return TensorEntry(name: name, dtype: dt, shape: dims, expert: expert, hfKey: hfKey, holder: holder, hfDType: hfDType)
        }
        var names = Set<String>(), keys = Set<String>()
        for t in tensors {
            guard names.insert(t.name).inserted else { throw bad("tensor \"\(t.name)\" is listed twice") }
            if let k = t.hfKey, !keys.insert(k).inserted { throw bad("two tensors have hf_key \"\(k)\"") }
        }
        guard let source = json["source"], let dir = source["directory"]?.stringValue,
              let prefix = source["hf_prefix"]?.stringValue, let cfg = source["config"] else { throw bad("missing \"source\"") }
        sourceDirectory = try Manifest.checkSourceDirectory(dir, path: path)
        hfPrefix = try Manifest.checkHFPrefix(prefix, path: path)
        config = cfg
        hfKeys = try strings(source["hf_keys"], "source.hf_keys")
        try Manifest.checkHFKeys(hfKeys, path: path)
        extraFiles = try strings(source["extra_files"], "source.extra_files")
        try Manifest.checkExtraFileNames(extraFiles, path: path)
        let parsed: NemotronConfig
        do { parsed = try NemotronConfig(json: cfg, path: path) } catch let e as CheckpointError {
            throw bad("source.config: \(e.reason)")
        }
        try Manifest.checkExperts(tensors, nRoutedExperts: nExperts, config: parsed, hfKeys: hfKeys, rules: rules, path: path)
        try Manifest.checkExportKeys(tensors, config: parsed, hfPrefix: hfPrefix, rules: rules, path: path)
    }

    /// Reads `dir/nemoshard.json`.
    package static func load(directory: String) throws -> Manifest {
        let path = FS.join(directory, fileName)
        guard FS.exists(path) else { throw CheckpointError(path: directory, "no \(fileName): not a per-rank checkpoint") }
        let json: JSON
        do { json = try JSON.parse(try readWholeFile(path, limit: ReadLimit.index)) } catch let e as JSONError {
            throw CheckpointError(path: path, "not valid JSON: \(e)")
        }
        return try Manifest(json: json, path: path)
    }

    /// The config of the source checkpoint.
    package func nemotronConfig() throws -> NemotronConfig { try NemotronConfig(json: config, path: FS.join(sourceDirectory, "config.json")) }
}

// MARK: untrusted input

/// A manifest is untrusted input: it may have been edited, damaged or written by someone else.
/// These checks refuse anything `load` would never have written, each error naming the manifest
/// and the key.
extension Manifest {
    /// The prefixes `NemotronV3Adapter.detectPrefix` gives the backbone's HF keys: the only ones a
    /// manifest may name as `source.hf_prefix`.
    package static let hfPrefixes = ["backbone.", "model."]

    /// An HF key (`hf_key`, an entry of `source.hf_keys`) must be non-empty and hold no NUL.
    package static func keyRefusal(_ key: String) -> String? {
        if key.isEmpty { return "is empty" }
        if key.containsByte(0) { return "contains a NUL byte" }
        return nil
    }

    /// A tensor's optional `hf_key`: absent, or a string that is a valid HF key.
    package static func hfKey(_ value: JSON?, tensor: String, path: String) throws -> String? {
        guard let value else { return nil }
        guard let key = value.stringValue else {
            throw CheckpointError(path: path, "tensor \(jsonQuoted(tensor)): \"hf_key\" must be a string")
        }
        if let why = keyRefusal(key) {
            throw CheckpointError(path: path, "tensor \(jsonQuoted(tensor)): hf_key \(jsonQuoted(key)) \(why)")
        }
        return key
    }

    /// The manifest's `rules`: absent means the seed rules (manifests written before there was a
    /// choice), else one of `Rules`' names.
    package static func rules(_ value: JSON?, path: String) throws -> Rules {
        guard let value else { return .seed }
        guard let name = value.stringValue, let rules = Rules(rawValue: name) else {
            throw CheckpointError(path: path, "\"rules\" is \(value.serialized()), not one of \(Rules.allCases.map { jsonQuoted($0.rawValue) }.joined(separator: ", "))")
        }
        return rules
    }

    /// A tensor's optional `hf_dtype`: absent, or the float type (BF16, F16, F32) its source had,
    /// for a tensor whose own dtype is one too (an export casts between them).
    package static func hfDType(_ value: JSON?, dtype: DType, tensor: String, path: String) throws -> DType? {
        guard let value else { return nil }
        guard let name = value.stringValue, let d = DType(rawValue: name), d.kernelKind != nil, dtype.kernelKind != nil else {
            throw CheckpointError(path: path, "tensor \(jsonQuoted(tensor)): \"hf_dtype\" \(value.serialized()) is not BF16, F16 or F32 for a \(dtype.rawValue) tensor")
        }
        return d
    }

    /// Every entry of `source.hf_keys` is a valid HF key.
    package static func checkHFKeys(_ keys: [String], path: String) throws {
        for (i, key) in keys.enumerated() {
            if let why = keyRefusal(key) { throw CheckpointError(path: path, "source.hf_keys[\(i)] \(jsonQuoted(key)) \(why)") }
        }
    }

    /// `source.hf_prefix` is one of `hfPrefixes`.
    package static func checkHFPrefix(_ prefix: String, path: String) throws -> String {
        guard hfPrefixes.contains(prefix) else {
            throw CheckpointError(path: path, "source.hf_prefix \(jsonQuoted(prefix)) is not one of \(hfPrefixes.map(jsonQuoted).joined(separator: ", "))")
        }
        return prefix
    }

    /// `source.directory` is an absolute path without NUL (`load` writes the real path).
    package static func checkSourceDirectory(_ dir: String, path: String) throws -> String {
        guard dir.hasPrefix("/"), !dir.utf8.contains(0) else {
            throw CheckpointError(path: path, "source.directory \(jsonQuoted(dir)) is not an absolute path without NUL")
        }
        return dir
    }

    /// Every entry of `source.extra_files` is a name `HFCheckpoint.extraFiles` could have found
    /// (`ExtraFileName.refusal`), listed once.
    package static func checkExtraFileNames(_ names: [String], path: String) throws {
        var seen = Set<String>()
        for name in names {
            if let why = ExtraFileName.refusal(name) {
                throw CheckpointError(path: path, "source.extra_files entry \(jsonQuoted(name)) \(why)")
            }
            guard seen.insert(name).inserted else {
                throw CheckpointError(path: path, "source.extra_files lists \(jsonQuoted(name)) twice")
            }
        }
    }

    /// The grouped expert tensors agree with `source.config`: `n_routed_experts` is the config's,
    /// each grouped tensor is 3-D with `moe_intermediate_size` in its place and sits in an MoE
    /// layer of the config's pattern (its MTP pattern for `mtp.` tensors), no layer's projection
    /// is held twice, and every MoE layer has both projections (the MTP head's only when the
    /// source has `mtp.` keys, as `load` requires).
    package static func checkExperts(_ tensors: [TensorEntry], nRoutedExperts: Int, config: NemotronConfig,
                             hfKeys: [String], rules: Rules = .seed, path: String) throws {
        func bad(_ why: String) -> CheckpointError { CheckpointError(path: path, why) }
        let configured = config.nRoutedExperts ?? 0
        guard configured == nRoutedExperts else {
            throw bad("n_routed_experts is \(nRoutedExperts) but source.config's n_routed_experts is \(configured)")
        }
        var held: [LayerNamespace: [Int: Set<Projection>]] = [:]
        for t in tensors {
            guard let slot = t.expert else { continue }
            try checkGroupedTensor(t, slot: slot, config: config, path: path)
            guard held[slot.layer.namespace, default: [:]][slot.layer.layer, default: []].insert(slot.projection).inserted else {
                throw bad("tensor \(jsonQuoted(t.name)): another grouped tensor already holds \(patternKey(slot.layer.namespace)) layer \(slot.layer.layer)'s \(slot.projection.rawValue)")
            }
        }
        // A PEFT-wrapped checkpoint keeps its experts per expert (`LoadPlanner.PEFTExperts`).
        let adapter = NemotronV3Adapter(config: config, rules: rules)
        for t in tensors where !t.expertSharded {
            if let m = adapter.peftExpert(t.name) { held[.backbone, default: [:]][m.layer, default: []].insert(m.projection) }
        }
        let hasMTP = hfKeys.contains { $0.hasPrefix("mtp.") }
        for ns in [LayerNamespace.backbone, .mtp] where ns == .backbone || hasMTP {
            for (layer, block) in pattern(ns, config).enumerated() where block == .moe {
                for projection in [Projection.up, .down] where held[ns]?[layer]?.contains(projection) != true {
                    throw bad("source.config's \(patternKey(ns)) makes layer \(layer) an MoE layer, but no grouped tensor holds its experts' \(projection.rawValue)")
                }
            }
        }
    }

    /// Every non-expert tensor's exported HF key (its `hf_key` where the rules restore it, else the
    /// adapter's `to_hf` name) reads back under `from_hf` as that very tensor, as every key `load`
    /// writes does. So no key is exported twice, none collides with an expert's key, and none is a
    /// key `load` drops.
    package static func checkExportKeys(_ tensors: [TensorEntry], config: NemotronConfig, hfPrefix: String, rules: Rules = .seed,
                                        path: String) throws {
        var adapter = NemotronV3Adapter(config: config, rules: rules)
        adapter.hfPrefix = hfPrefix
        for t in tensors where !t.expertSharded {
            guard case let .renamed(generated) = adapter.toHF(t.name, shape: t.shape, firstExpert: 0) else { continue }  // ExportPlanner refuses it
            // The key the export writes, and the recorded source key (which rules that do not
            // restore it still hold to: it is what the tensor was loaded from).
            let key = adapter.exportKey(generated: generated, recorded: t.hfKey)
            for k in [key] + (t.hfKey.map { $0 == key ? [] : [$0] } ?? []) {
                let what = "tensor \(jsonQuoted(t.name)): " + (k == t.hfKey ? "hf_key" : "its HF key") + " \(jsonQuoted(k))"
                let role: HFKeyRole
                do { role = try adapter.classify(k) } catch let e as CheckpointError {
                    throw CheckpointError(path: path, "\(what) is not a valid HF key: \(e.reason)")
                }
                switch role {
                case .rename(t.name): continue
                case let .rename(other): throw CheckpointError(path: path, "\(what) would load back as \(jsonQuoted(other)), not as this tensor")
                case let .drop(why): throw CheckpointError(path: path, "\(what) is a key load drops (\(why))")
                case .expert: throw CheckpointError(path: path, "\(what) is an expert weight's key")
                case .stackedExperts: throw CheckpointError(path: path, "\(what) is a key of stacked transformers experts")
                }
            }
        }
    }

    /// One grouped tensor against the config: its layer is an MoE layer, its shape is
    /// `[n, dim, moe_intermediate_size]` (up) or `[n, moe_intermediate_size, dim]` (down).
    package static func checkGroupedTensor(_ t: TensorEntry, slot: ExpertSlot, config: NemotronConfig, path: String) throws {
        let blocks = pattern(slot.layer.namespace, config), layer = slot.layer.layer
        guard layer < blocks.count, blocks[layer] == .moe else {
            throw CheckpointError(path: path, "tensor \(jsonQuoted(t.name)): layer \(layer) is not an MoE layer of source.config's \(patternKey(slot.layer.namespace)) \"\(BlockType.pattern(blocks))\"")
        }
        let interAxis = slot.projection == .up ? 2 : 1
        guard t.shape.count == 3, t.shape[interAxis] == config.moeIntermediateSize else {
            throw CheckpointError(path: path, "tensor \(jsonQuoted(t.name)): shape \(t.shape) does not have source.config's moe_intermediate_size \(config.moeIntermediateSize.map(String.init) ?? "null") as dim \(interAxis) of 3")
        }
    }

    /// The blocks of a namespace: the backbone pattern or the MTP head's.
    package static func pattern(_ ns: LayerNamespace, _ config: NemotronConfig) -> [BlockType] {
        ns == .mtp ? config.mtpLayers : config.layers
    }

    /// The config key naming a namespace's pattern, for messages.
    package static func patternKey(_ ns: LayerNamespace) -> String {
        ns == .mtp ? "mtp_hybrid_override_pattern" : "hybrid_override_pattern"
    }

    /// The source's extra files to copy into an export, as (name, path), checked just before
    /// anything is written and again when they are copied. The manifest's word alone does not
    /// make a directory a checkpoint: `source.directory` must still be a directory holding a
    /// Nemotron-H `config.json` (so a manifest naming `/etc` and `passwd` copies nothing), and
    /// every extra file must still be there as a regular file (a moved or half-deleted source
    /// is an error, never an export that silently lacks its tokenizer). With no extra files
    /// the source is not needed at all.
    package func extraFileSources() throws -> [(name: String, path: String)] {
        guard !extraFiles.isEmpty else { return [] }
        try requireSourceCheckpoint()
        return try extraFiles.map { name in
            let from = FS.join(sourceDirectory, name)
            guard let s = try FileStatus.of(from, followLinks: true) else {
                throw CheckpointError(path: from, "listed in \(Manifest.fileName) source.extra_files but no longer exists (was the source checkpoint changed or moved?)")
            }
            guard s.kind == .regular else {
                throw CheckpointError(path: from, "listed in \(Manifest.fileName) source.extra_files but is \(s.kind.noun), not a regular file")
            }
            return (name, from)
        }
    }

    /// `source.directory` still exists, is a directory and holds a Nemotron-H `config.json`.
    package func requireSourceCheckpoint() throws {
        let dir = sourceDirectory
        let list = extraFiles.map(jsonQuoted).joined(separator: ", ")
        guard let s = try FileStatus.of(dir, followLinks: true) else {
            throw CheckpointError(path: dir, "source.directory of \(Manifest.fileName) no longer exists, so its extra files (\(list)) cannot be copied (was the source checkpoint moved?)")
        }
        guard s.kind == .directory else {
            throw CheckpointError(path: dir, "source.directory of \(Manifest.fileName) is \(s.kind.noun), not a directory")
        }
        let config = FS.join(dir, "config.json")
        guard (try FileStatus.of(config, followLinks: true))?.kind == .regular else {
            throw CheckpointError(path: dir, "source.directory of \(Manifest.fileName) holds no config.json: it is not the Hugging Face checkpoint the manifest was written from, so its extra files (\(list)) are not copied")
        }
        do { _ = try NemotronConfig(path: config) } catch let e as CheckpointError {
            throw CheckpointError(path: dir, "source.directory of \(Manifest.fileName) is not a Hugging Face Nemotron-H checkpoint (\(e.description)), so its extra files (\(list)) are not copied")
        }
    }
}

/// The rules for the names of a checkpoint's small extra files (tokenizer, generation config,
/// ...), shared by the scan of an HF directory (`HFCheckpoint.extraFiles`) and the check of a
/// manifest's `source.extra_files`: a plain name, not hidden, not a file the export writes, and
/// not weights of any format.
package enum ExtraFileName {
    /// Weights of any format (or, followed by `.index.json`, their index): never an extra file.
    package static let weightSuffixes = [".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt"]

    /// The names an HF export (or a per-rank checkpoint) writes itself.
    package static let ownNames: Set<String> = [HFIndex.fileName, HFIndex.singleFileName, "config.json", Manifest.fileName]

    /// Why `name` cannot be an extra file, or nil when it can be.
    package static func refusal(_ name: String) -> String? {
        if let why = plainNameRefusal(name) { return why }
        if name.hasPrefix(".") { return "is a hidden name (nemoshard's own markers and temporaries are hidden)" }
        if ownNames.contains(name) || isShardName(name) { return "is a file the export writes itself" }
        if isWeights(name) { return "is a weights file or a weights index, not a small extra file" }
        return nil
    }

    /// Why `name` is not one plain file name inside a directory, or nil when it is.
    package static func plainNameRefusal(_ name: String) -> String? {
        if name.isEmpty { return "is empty" }
        if name.utf8.contains(0) { return "contains a NUL byte" }
        if name.contains("/") { return "contains '/'" }
        if name == "." || name == ".." { return "is not a file name" }
        return nil
    }

    /// `model-XXXXX-of-XXXXX.safetensors` (any digits): an export's shard name.
    package static func isShardName(_ name: String) -> Bool {
        guard name.hasPrefix("model-"), name.hasSuffix(".safetensors") else { return false }
        let parts = name.dropFirst("model-".count).dropLast(".safetensors".count).split(separator: "-", omittingEmptySubsequences: false)
        return parts.count == 3 && parts[1] == "of" && [parts[0], parts[2]].allSatisfy { !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }
    }

    /// Weights (`*.bin`, `*.pt`, `*.gguf`, ...) or a weights index (`pytorch_model.bin.index.json`),
    /// case-insensitively.
    package static func isWeights(_ name: String) -> Bool {
        let lower = name.lowercased()
        let stem = lower.hasSuffix(".index.json") ? String(lower.dropLast(".index.json".count)) : lower
        return weightSuffixes.contains { stem.hasSuffix($0) }
    }
}
