import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

extension HFCheckpoint {
    /// Rank 0 reads the index, config and every header; the others receive the result.
    package static func openShared(_ directory: String, world: Collective) throws -> HFCheckpoint {
        try world.broadcast(try world.agreeOnRoot { try HFCheckpoint.open(directory) })
    }
}

extension ShardedCheckpoint {
    /// Rank 0 reads the manifest and sends it; every rank says which rank files it can see, each
    /// file gets one reader (its own rank when that rank sees it, else the lowest rank that does),
    /// which opens and checks it; the location tables are shared. So a per-rank checkpoint spread
    /// over node-local disks (each node holding its ranks' files and the manifest) opens, and the
    /// files a rank cannot see are read for it by their reader.
    package static func openShared(_ directory: String, world: Collective) throws -> ShardedCheckpoint {
        let manifest = try world.broadcast(try world.agreeOnRoot { try Manifest.load(directory: directory) })
        let visible = try world.allgather(manifest.ranks.map { FS.exists(FS.join(directory, $0.file)) })
        let n = manifest.worldSize
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
    package static func openShared(_ directory: String, world: Collective) throws -> DCPCheckpoint {
        try world.broadcast(try world.agreeOnRoot { try DCPCheckpoint.open(directory) })
    }
}
