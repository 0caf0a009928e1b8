/// `nemoshard.json`: what a per-rank checkpoint holds and where it came from.
public struct Manifest: Sendable {
    public static let fileName = "nemoshard.json"
    public static let formatName = "nemoshard-per-rank"
    public static let version: Int64 = 2

    /// One rank's file and experts.
    public struct RankEntry: Sendable, Equatable {
        public let rank: Int
        public let file: String
        public let experts: ExpertRange
    }

    /// One internal tensor in the global view (what `from_hf` produces, what the manifest lists).
    public struct TensorEntry: Sendable, Equatable {
        public let name: String
        public let dtype: DType
        /// Global shape; dim 0 spans all experts when `expertSharded`.
        public let shape: [Int]
        /// For a grouped expert tensor, its MoE layer and projection.
        public let expert: ExpertSlot?
        /// The HF key a renamed tensor came from (restored on export).
        public let hfKey: String?
        /// For a non-expert tensor, the one rank whose file holds it; nil for expert-sharded ones.
        public var holder: Int?

        /// Whether dim 0 is the expert axis (split over the ranks).
        public var expertSharded: Bool { expert != nil }

        public init(name: String, dtype: DType, shape: [Int], expert: ExpertSlot?, hfKey: String?, holder: Int? = nil) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.expert = expert
            self.hfKey = hfKey
            self.holder = holder
        }
    }

    public let worldSize: Int
    public let mesh: MeshShape
    public let nRoutedExperts: Int
    public let ranks: [RankEntry]
    public let tensors: [TensorEntry]
    /// Source checkpoint: absolute directory, config.json content, HF prefix of expert keys,
    /// every HF key in the source's order, and its small non-weight files.
    public let sourceDirectory: String
    public let config: JSON
    public let hfPrefix: String
    public let hfKeys: [String]
    public let extraFiles: [String]

    /// A manifest whose non-expert tensors are assigned to holders with `assignHolders`.
    public init(worldSize: Int, mesh: MeshShape, nRoutedExperts: Int, ranks: [RankEntry], tensors: [TensorEntry],
                sourceDirectory: String, config: JSON, hfPrefix: String, hfKeys: [String], extraFiles: [String]) {
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

    /// Ranks that hold data: the lowest rank of each distinct expert range (mesh replicas hold nothing
    /// of their own).
    public static func ownerRanks(_ ranks: [RankEntry]) -> [Int] {
        var seen = Set<[Int]>()
        return ranks.filter { seen.insert([$0.experts.start, $0.experts.end]).inserted }.map(\.rank)
    }

    /// Each non-expert tensor is stored once, by the owner rank with the fewest non-expert bytes so
    /// far (ties: the lowest rank), in tensor order, so the ranks write about equal amounts.
    public static func assignHolders(_ tensors: [TensorEntry], ranks: [RankEntry]) -> [TensorEntry] {
        let owners = ownerRanks(ranks)
        var load = [Int](repeating: 0, count: owners.count)
        return tensors.map { t in
            var t = t
            guard !t.expertSharded, !owners.isEmpty else { t.holder = nil; return t }
            let k = load.indices.min { (load[$0], $0) < (load[$1], $1) }!
            load[k] += t.shape.reduce(1, *) * t.dtype.size
            t.holder = owners[k]
            return t
        }
    }

    /// The tensors rank `rank`'s file holds: the grouped ones (sliced to its experts) and the
    /// non-expert tensors it is the holder of.
    public func fileTensors(rank: Int) -> Set<String> {
        Set(tensors.filter { $0.expertSharded || $0.holder == rank }.map(\.name))
    }

    /// The `__metadata__` of rank `rank`'s file: its rank, world size and experts, checked against
    /// the manifest when the checkpoint is opened.
    static func rankMetadata(rank: Int, range: ExpertRange, world: Int) -> [(String, String)] {
        [("format", "pt"), ("nemoshard_rank", String(rank)), ("nemoshard_world_size", String(world)),
         ("nemoshard_experts", "\(range.start),\(range.end)")]
    }

    /// The whole `__metadata__` of rank `rank`'s file holding `specs`: `rankMetadata`, then
    /// `DCP_SHARDING_INFO` for every tensor in it, so torch DCP's `HuggingFaceStorageReader` reads
    /// the directory.
    func rankFileMetadata(rank: Int, range: ExpertRange, specs: [TensorSpec]) -> [(String, String)] {
        let grouped = Set(tensors.filter(\.expertSharded).map(\.name))
        return Manifest.rankMetadata(rank: rank, range: range, world: worldSize)
            + [DCPShardingInfo.entry(specs: specs, grouped: grouped, firstExpert: range.start)]
    }

    /// `rank-00003-of-00008.safetensors`.
    public static func rankFileName(_ rank: Int, of world: Int) -> String {
        "rank-\(pad5(rank))-of-\(pad5(world)).safetensors"
    }

    public func tensor(_ name: String) -> TensorEntry? { tensors.first { $0.name == name } }

    public func toJSON() -> JSON {
        .object([
            ("format", .string(Manifest.formatName)),
            ("version", .int(Manifest.version)),
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
    public init(json: JSON, path: String) throws {
        func bad(_ why: String) -> CheckpointError { CheckpointError(path: path, why) }
        guard json["format"]?.stringValue == Manifest.formatName else { throw bad("not a nemoshard per-rank manifest") }
        guard json["version"]?.intValue == Manifest.version else { throw bad("unsupported manifest version") }
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
            guard try int(r["rank"], "rank") == i, let file = r["file"]?.stringValue, !file.contains("/"),
                  let e = r["experts"]?.arrayValue, e.count == 2 else { throw bad("rank entry \(i) is malformed") }
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
            return TensorEntry(name: name, dtype: dt, shape: dims, expert: expert, hfKey: t["hf_key"]?.stringValue, holder: holder)
        }
        var names = Set<String>(), keys = Set<String>()
        for t in tensors {
            guard names.insert(t.name).inserted else { throw bad("tensor \"\(t.name)\" is listed twice") }
            if let k = t.hfKey, !keys.insert(k).inserted { throw bad("two tensors have hf_key \"\(k)\"") }
        }
        guard let source = json["source"], let dir = source["directory"]?.stringValue,
              let prefix = source["hf_prefix"]?.stringValue, let cfg = source["config"] else { throw bad("missing \"source\"") }
        sourceDirectory = dir
        hfPrefix = prefix
        config = cfg
        hfKeys = try strings(source["hf_keys"], "source.hf_keys")
        extraFiles = try strings(source["extra_files"], "source.extra_files")
    }

    /// Reads `dir/nemoshard.json`.
    public static func load(directory: String) throws -> Manifest {
        let path = FS.join(directory, fileName)
        guard FS.exists(path) else { throw CheckpointError(path: directory, "no \(fileName): not a per-rank checkpoint") }
        let json: JSON
        do { json = try JSON.parse(try readWholeFile(path, limit: ReadLimit.index)) } catch let e as JSONError {
            throw CheckpointError(path: path, "not valid JSON: \(e)")
        }
        return try Manifest(json: json, path: path)
    }

    /// The config of the source checkpoint.
    public func nemotronConfig() throws -> NemotronConfig { try NemotronConfig(json: config, path: FS.join(sourceDirectory, "config.json")) }
}

/// Zero-padded to five digits.
func pad5(_ n: Int) -> String {
    let s = String(n)
    return s.count >= 5 ? s : String(repeating: "0", count: 5 - s.count) + s
}
