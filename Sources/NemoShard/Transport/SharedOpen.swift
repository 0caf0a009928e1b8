import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

extension HFCheckpoint {
    /// Rank 0 reads the index, config and every header; the others receive the result.
    public static func openShared(_ directory: String, world: Collective) throws -> HFCheckpoint {
        try world.broadcast(try world.agreeOnRoot { try HFCheckpoint.open(directory) })
    }
}

extension ShardedCheckpoint {
    /// Rank 0 reads the manifest and sends it; every rank says which rank files it can see, each
    /// file gets one reader (its own rank when that rank sees it, else the lowest rank that does),
    /// which opens and checks it; the location tables are shared. So a per-rank checkpoint spread
    /// over node-local disks (each node holding its ranks' files and the manifest) opens, and the
    /// files a rank cannot see are read for it by their reader.
    public static func openShared(_ directory: String, world: Collective) throws -> ShardedCheckpoint {
        let bytes = try world.agreeOnRoot { Array(try Manifest.load(directory: directory).toJSON().serialized().utf8) }
        let manifest = try Manifest(json: try JSON.parse(try world.broadcast(bytes ?? [], root: 0)),
                                    path: FS.join(directory, Manifest.fileName))
        let sees = manifest.ranks.map { Int64(FS.exists(FS.join(directory, $0.file)) ? 1 : 0) }
        let all = try world.allgather(sees)
        let n = manifest.worldSize
        let visible = (0..<world.size).map { r in (0..<n).map { all[r * n + $0] == 1 } }
        let readers = (0..<n).map { f in f < world.size && visible[f][f] ? f : (0..<world.size).first { visible[$0][f] } ?? 0 }
        let mine = manifest.ranks.filter { readers[$0.rank] == world.rank }
        let tables = try world.agree {
            Dictionary(uniqueKeysWithValues: try mine.map { ($0.rank, try rankFile(of: $0, in: directory, manifest: manifest)) })
        }
        var locations = [[String: Location]](repeating: [:], count: n)
        var fingerprints = [FileFingerprint?](repeating: nil, count: n)
        for part in try world.allgather(tables) {
            for (r, facts) in part {
                guard r >= 0, r < n else { throw InternalError("location table of rank \(r)") }
                locations[r] = facts.locations
                fingerprints[r] = facts.fingerprint
            }
        }
        var checkpoint = ShardedCheckpoint(directory: FS.realPath(directory), manifest: manifest, locations: locations,
                                           fingerprints: fingerprints)
        checkpoint.visible = visible
        checkpoint.readers = readers
        return checkpoint
    }
}

extension DCPCheckpoint {
    /// Rank 0 reads every header and checks the chunks; the others receive the result.
    public static func openShared(_ directory: String, world: Collective) throws -> DCPCheckpoint {
        let opened = try world.agreeOnRoot { try DCPCheckpoint.open(directory) }
        let bytes = opened.map { Array($0.toJSON().serialized().utf8) }
        var checkpoint = try DCPCheckpoint(json: try JSON.parse(try world.broadcast(bytes ?? [], root: 0)))
        checkpoint.fingerprints = try world.broadcast(opened?.fingerprints ?? [:])
        return checkpoint
    }
}
