extension HFCheckpoint {
    /// Rank 0 reads the index, config and every header; the others receive the result.
    public static func openShared(_ directory: String, world: Collective) throws -> HFCheckpoint {
        let bytes = try world.agreeOnRoot { Array(try HFCheckpoint.open(directory).toJSON().serialized().utf8) }
        return try HFCheckpoint(json: try JSON.parse(try world.broadcast(bytes ?? [], root: 0)))
    }
}

extension ShardedCheckpoint {
    /// Rank 0 reads the manifest and every rank file's header; the others receive the result.
    public static func openShared(_ directory: String, world: Collective) throws -> ShardedCheckpoint {
        let bytes = try world.agreeOnRoot { Array(try ShardedCheckpoint.open(directory).toJSON().serialized().utf8) }
        return try ShardedCheckpoint(json: try JSON.parse(try world.broadcast(bytes ?? [], root: 0)))
    }
}

extension DCPCheckpoint {
    /// Rank 0 reads every header and checks the chunks; the others receive the result.
    public static func openShared(_ directory: String, world: Collective) throws -> DCPCheckpoint {
        let bytes = try world.agreeOnRoot { Array(try DCPCheckpoint.open(directory).toJSON().serialized().utf8) }
        return try DCPCheckpoint(json: try JSON.parse(try world.broadcast(bytes ?? [], root: 0)))
    }
}
