extension HFCheckpoint {
    /// Rank 0 reads the index, config and every header; the others receive the result.
    public static func openShared(_ directory: String, world: Collective) throws -> HFCheckpoint {
        let bytes = try world.agreeOnRoot { Array(try HFCheckpoint.open(directory).toJSON().serialized().utf8) }
        return try HFCheckpoint(json: try JSON.parse(try world.broadcast(bytes ?? [], root: 0)))
    }
}

extension ShardedCheckpoint {
    /// Rank 0 reads the manifest and sends it; each rank opens and checks its own rank file (rank 0
    /// also those of ranks beyond this job's world), and the location tables are shared. So a
    /// per-rank checkpoint spread over node-local disks (each node holding its ranks' files and the
    /// manifest) opens as long as every rank runs where its file is.
    public static func openShared(_ directory: String, world: Collective) throws -> ShardedCheckpoint {
        let bytes = try world.agreeOnRoot { Array(try Manifest.load(directory: directory).toJSON().serialized().utf8) }
        let manifest = try Manifest(json: try JSON.parse(try world.broadcast(bytes ?? [], root: 0)),
                                    path: FS.join(directory, Manifest.fileName))
        let mine = manifest.ranks.filter { $0.rank == world.rank || (world.rank == 0 && $0.rank >= world.size) }
        let tables = try world.agree {
            JSON.array(try mine.map { .array([.int(Int64($0.rank)), tableJSON(try rankFileLocations(of: $0, in: directory, manifest: manifest))]) })
        }
        var locations = [[String: Location]](repeating: [:], count: manifest.worldSize)
        for part in try world.allgatherBytes(Array(tables.serialized().utf8)) {
            for item in try JSON.parse(part).arrayValue ?? [] {
                guard let pair = item.arrayValue, pair.count == 2, let r = pair[0].intValue, r >= 0, Int(r) < locations.count
                else { throw InternalError("malformed location table") }
                locations[Int(r)] = try table(json: pair[1])
            }
        }
        return ShardedCheckpoint(directory: FS.realPath(directory), manifest: manifest, locations: locations)
    }
}
