import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// A per-rank checkpoint directory (`nemoshard.json` + one safetensors file per rank: the rank's
/// grouped experts and the non-expert tensors it holds), with every rank file's header validated
/// against the manifest.
public struct ShardedCheckpoint: Sendable {
    /// Where one tensor's bytes are in a rank file.
    package struct Location: Sendable, Equatable, Codable {
        package let offset: Int
        package let byteCount: Int
    }

    public let directory: String
    public let manifest: Manifest
    /// `locations[rank][name]`.
    package let locations: [[String: Location]]
    /// Each rank file as it was when its reader checked it (nil where this job has no record).
    package let fingerprints: [FileFingerprint?]
    /// Which rank files each rank of the job that opened it can read (`visible[rank][file rank]`),
    /// and the rank that reads each file for the others. All true and identity on a shared filesystem.
    package var visible: [[Bool]] = []
    package var readers: [Int] = []

    /// Whether `rank` of the opening job can read rank file `file` itself.
    package func canRead(rank: Int, file: Int) -> Bool { visible.isEmpty || visible[rank][file] }

    public func path(ofRank r: Int) -> String { FS.join(directory, manifest.ranks[r].file) }

    /// Reads the manifest and every rank file's header; checks that each file holds exactly the
    /// tensors the manifest says, with the right shapes (dim 0 of a grouped tensor = its expert count).
    public static func open(_ directory: String) throws -> ShardedCheckpoint {
        let manifest = try Manifest.load(directory: directory)
        let facts = try manifest.ranks.map { try rankFile(of: $0, in: directory, manifest: manifest) }
        return ShardedCheckpoint(directory: FS.realPath(directory), manifest: manifest, locations: facts.map(\.locations),
                                 fingerprints: facts.map(\.fingerprint))
    }

    /// What a rank file's reader learned of it: where its tensors are, and the file as it was then.
    package struct RankFileFacts: Codable, Sendable {
        package let locations: [String: Location]
        package let fingerprint: FileFingerprint
    }

    /// Every file a job reading this checkpoint may read, and the directory itself.
    package var inputPaths: [String] {
        [directory, FS.join(directory, Manifest.fileName)] + manifest.ranks.map { path(ofRank: $0.rank) }
    }

    /// Opens rank `r`'s file and checks it against the manifest: its metadata, and exactly the
    /// tensors the manifest puts there with the right dtypes and shapes. Returns their locations.
    package static func rankFile(of r: Manifest.RankEntry, in directory: String, manifest: Manifest) throws -> RankFileFacts {
        let path = FS.join(directory, r.file)
        guard FS.exists(path) else { throw CheckpointError(path: path, "rank \(r.rank)'s file is missing") }
        let file = try SafetensorsFile(path: path)
        try checkRankMetadata(file.header.metadata, of: r, worldSize: manifest.worldSize, path: path)
        var table: [String: Location] = [:]
        for t in manifest.tensors {
            if t.expertSharded && r.experts.isEmpty {
                if file.header[t.name] != nil { throw CheckpointError(path: path, "tensor \"\(t.name)\": rank \(r.rank) holds no experts but the file has it") }
                continue
            }
            if !t.expertSharded && t.holder != r.rank {
                if file.header[t.name] != nil {
                    throw CheckpointError(path: path, "tensor \"\(t.name)\": \(Manifest.fileName) puts it in rank \(t.holder ?? -1)'s file, but rank \(r.rank)'s file has it")
                }
                continue
            }
            guard let info = file.header[t.name] else {
                throw CheckpointError(path: path, "tensor \"\(t.name)\" listed in \(Manifest.fileName) is missing")
            }
            var want = t.shape
            if t.expertSharded { want[0] = r.experts.count }
            guard info.dtype == t.dtype else {
                throw CheckpointError(path: path, "tensor \"\(t.name)\": dtype \(info.dtype.rawValue), manifest says \(t.dtype.rawValue)")
            }
            guard info.shape == want else {
                if t.expertSharded, info.shape.count == want.count, Array(info.shape.dropFirst()) == Array(want.dropFirst()) {
                    throw CheckpointError(path: path, "tensor \"\(t.name)\": dim 0 is \(info.shape[0]) but rank \(r.rank) holds experts \(r.experts) (\(r.experts.count))")
                }
                throw CheckpointError(path: path, "tensor \"\(t.name)\": shape \(info.shape), expected \(want)")
            }
            table[t.name] = Location(offset: file.fileOffset(of: info), byteCount: info.byteCount)
        }
        let extra = file.header.tensors.count - table.count
        if extra > 0 { throw CheckpointError(path: path, "holds \(extra) tensor(s) the manifest does not list") }
        return RankFileFacts(locations: table, fingerprint: file.fingerprint)
    }

    /// A rank file names its rank, world size and experts in its metadata (written by load and
    /// reshard); they must be the manifest's, so swapped or stray files are caught.
    package static func checkRankMetadata(_ metadata: [(String, String)], of r: Manifest.RankEntry, worldSize: Int, path: String) throws {
        let m = Dictionary(metadata, uniquingKeysWith: { a, _ in a })
        let want = Manifest.rankMetadata(rank: r.rank, range: r.experts, world: worldSize)
        for (key, value) in want where key.hasPrefix("nemoshard_") && m[key] != value {
            throw CheckpointError(path: path, "metadata \(key) is \(m[key].map { "\"\($0)\"" } ?? "missing"), but \(Manifest.fileName) says rank \(r.rank) of \(worldSize) with experts \(r.experts) (\"\(value)\")")
        }
    }

    /// Ranks that write for their expert range: the lowest rank of each distinct range (replicas skip).
    package var ownerRanks: [Int] { Manifest.ownerRanks(manifest.ranks) }

    package init(directory: String, manifest: Manifest, locations: [[String: Location]], fingerprints: [FileFingerprint?]) {
        self.directory = directory
        self.manifest = manifest
        self.locations = locations
        self.fingerprints = fingerprints
    }
}
