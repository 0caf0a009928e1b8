import NemoShardCore

/// `torch.distributed.checkpoint`'s description of a sharded safetensors file: the safetensors
/// metadata key `DCP_SHARDING_INFO` holds a JSON object naming, for every tensor of the file, where
/// its chunk starts in the global tensor (`{"name": {"saved_offsets": [o0, o1, ...]}, ...}`).
/// torch's `HuggingFaceStorageReader` reads a directory of such files as one checkpoint of global
/// tensors, so per-rank files that carry it can be loaded by DCP directly.
package enum DCPShardingInfo {
    /// The safetensors `__metadata__` key torch reads and writes.
    package static let metadataKey = "DCP_SHARDING_INFO"
    /// The member of each tensor's entry that holds its chunk's global offsets.
    package static let offsetsKey = "saved_offsets"

    /// The metadata entry of a per-rank file holding `specs`: tensors named in `grouped` (grouped
    /// experts, dim 0 the expert axis) start at `firstExpert` on dim 0 and at 0 elsewhere; every
    /// other tensor is whole, all zeros. Every tensor of the file gets an entry (torch requires it).
    package static func entry(specs: [TensorSpec], grouped: Set<String>, firstExpert: Int) -> (String, String) {
        let members: [(String, JSON)] = specs.map { s in
            var offsets = [Int](repeating: 0, count: s.shape.count)
            if grouped.contains(s.name), !offsets.isEmpty { offsets[0] = firstExpert }
            return (s.name, .object([(offsetsKey, .array(offsets.map { .int(Int64($0)) }))]))
        }
        return (metadataKey, JSON.object(members).serialized())
    }

    /// Parses the value of `DCP_SHARDING_INFO` into tensor name -> global offsets; `path` names the
    /// file in errors.
    package static func parse(_ value: String, path: String) throws -> [String: [Int]] {
        func bad(_ reason: String) -> CheckpointError { CheckpointError(path: path, "metadata \(metadataKey): \(reason)") }
        let json: JSON
        do { json = try JSON.parse(value) } catch { throw bad("not valid JSON: \(error)") }
        guard let members = json.objectValue else { throw bad("not a JSON object") }
        var out: [String: [Int]] = [:]
        for (name, entry) in members {
            guard let list = entry[offsetsKey]?.arrayValue else { throw bad("tensor \"\(name)\" has no \"\(offsetsKey)\" list") }
            out[name] = try list.map { v in
                guard let i = v.intValue, i >= 0, i <= Int64(Int32.max) else {
                    throw bad("tensor \"\(name)\": offset \(v.serialized()) is not a non-negative integer")
                }
                return Int(i)
            }
        }
        return out
    }
}
