import NemoShardCore

/// `model.safetensors.index.json`: which shard file holds each key. The one reader and writer of
/// the index, and the one place shard files are named.
public struct HFIndex: Sendable {
    /// The index's file name.
    public static let fileName = "model.safetensors.index.json"
    /// The name of a checkpoint's only shard when there is no index.
    package static let singleFileName = "model.safetensors"

    /// (key, file) in document order.
    public package(set) var weightMap: [(String, String)]
    /// `metadata.total_size`: bytes of all tensors, when recorded.
    package var totalSize: Int?

    package init(weightMap: [(String, String)], totalSize: Int?) {
        self.weightMap = weightMap
        self.totalSize = totalSize
    }

    /// Shard `k` (1-based) of `n`: `model-0000k-of-0000n.safetensors`, as Hugging Face names them.
    package static func shardName(_ k: Int, of n: Int) -> String { "model-\(pad5(k))-of-\(pad5(n)).safetensors" }

    /// Parses an index. File names must stay inside the checkpoint directory; neither keys nor
    /// file names may hold a NUL (the C `open` would cut the name there and read another file).
    package static func parse(_ bytes: [UInt8], path: String) throws -> HFIndex {
        let json: JSON
        do { json = try JSON.parse(bytes) } catch let e as JSONError {
            throw CheckpointError(path: path, "not valid JSON: \(e)")
        }
        guard let map = json["weight_map"]?.objectValue else {
            throw CheckpointError(path: path, "missing \"weight_map\" object")
        }
        let weightMap = try map.map { key, value -> (String, String) in
            guard !key.containsByte(0) else {
                throw CheckpointError(path: path, "weight_map key \(jsonQuoted(key)) contains a NUL byte")
            }
            guard let file = value.stringValue else {
                throw CheckpointError(path: path, "weight_map entry \"\(key)\" is not a file name")
            }
            guard !file.containsByte(0) else {
                throw CheckpointError(path: path, "weight_map entry \"\(key)\" names a file with a NUL byte: \(jsonQuoted(file))")
            }
            guard !file.isEmpty, !file.containsByte(UInt8(ascii: "/")), !file.hasPrefix(".") else {
                throw CheckpointError(path: path, "weight_map entry \"\(key)\" names a file outside the checkpoint: \(file)")
            }
            return (key, file)
        }
        let total = json["metadata"]?["total_size"]?.intValue.map { Int($0) }
        return HFIndex(weightMap: weightMap, totalSize: total)
    }

    /// Reads `directory`'s index (capped like every index read).
    public static func read(directory: String) throws -> HFIndex {
        let path = FS.join(directory, fileName)
        return try parse(try readWholeFile(path, limit: ReadLimit.index), path: path)
    }

    /// The index as Hugging Face writes it (`metadata.total_size`, then `weight_map` with its keys
    /// sorted), indented.
    package func serialized() -> [UInt8] {
        var members: [(String, JSON)] = []
        if let totalSize { members.append(("metadata", .object([("total_size", .int(Int64(totalSize)))]))) }
        let sorted = weightMap.sorted { $0.0 < $1.0 }
        members.append(("weight_map", .object(sorted.map { ($0.0, .string($0.1)) })))
        return Array(JSON.object(members).serialized(indent: 2).utf8)
    }

    /// Writes the index into `directory` (through a temporary name).
    package func write(into directory: String) throws {
        try writeFileAtomically(FS.join(directory, HFIndex.fileName), serialized())
    }
}
