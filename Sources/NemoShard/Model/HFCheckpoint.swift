/// One tensor of a Hugging Face checkpoint: where its bytes are.
public struct HFTensor: Sendable, Equatable {
    public let name: String
    /// Index into `HFCheckpoint.files`.
    public let file: Int
    public let dtype: DType
    public let shape: [Int]
    /// Absolute offset of the first byte in its file.
    public let offset: Int
    public let byteCount: Int
}

/// A Hugging Face checkpoint directory: config, shard files and every tensor's location.
/// Built once by reading the index and every header; cheap to serialise and send to other ranks.
public struct HFCheckpoint: Sendable {
    public static let indexName = "model.safetensors.index.json"
    public static let singleName = "model.safetensors"

    public let directory: String
    public let config: NemotronConfig
    /// Shard file names relative to `directory`.
    public let files: [String]
    /// Tensors in weight-map order.
    public let tensors: [HFTensor]
    /// Small non-weight files (tokenizer, generation config, ...) to carry along on export.
    public let extraFiles: [String]

    public func path(ofFile i: Int) -> String { FS.join(directory, files[i]) }

    /// Reads the config, the index (or the single file) and every header, validating all of them.
    public static func open(_ directory: String) throws -> HFCheckpoint {
        try FS.requireDirectory(directory)
        let config = try NemotronConfig(path: FS.join(directory, "config.json"))
        let indexPath = FS.join(directory, indexName)
        var weightMap: [(String, String)] = []
        if FS.exists(indexPath) {
            weightMap = try parseIndex(try readWholeFile(indexPath, limit: ReadLimit.index), path: indexPath)
        } else if FS.exists(FS.join(directory, singleName)) {
            let f = try SafetensorsFile(path: FS.join(directory, singleName))
            weightMap = f.header.tensors.map { ($0.name, singleName) }
        } else {
            throw CheckpointError(path: directory, "no \(indexName) and no \(singleName)")
        }

        var files: [String] = []
        var fileIndex: [String: Int] = [:]
        var headers: [SafetensorsHeader] = []
        var tensors: [HFTensor] = []
        tensors.reserveCapacity(weightMap.count)
        for (key, file) in weightMap {
            let i: Int
            if let known = fileIndex[file] {
                i = known
            } else {
                let path = FS.join(directory, file)
                guard FS.exists(path) else {
                    throw CheckpointError(path: indexPath, "weight_map names \(file) (for \"\(key)\"), which does not exist")
                }
                let sf = try SafetensorsFile(path: path)
                i = files.count
                files.append(file)
                fileIndex[file] = i
                headers.append(sf.header)
            }
            guard let info = headers[i][key] else {
                throw CheckpointError(path: FS.join(directory, file), "tensor \"\(key)\" listed in the index is not in this file")
            }
            tensors.append(HFTensor(name: key, file: i, dtype: info.dtype, shape: info.shape,
                                    offset: headers[i].dataStart + info.begin, byteCount: info.byteCount))
        }
        guard !tensors.isEmpty else { throw CheckpointError(path: FS.join(directory, weightMap.isEmpty ? indexName : singleName), "lists no tensors") }
        let extras = try extraFiles(in: directory)
        return HFCheckpoint(directory: FS.realPath(directory), config: config, files: files, tensors: tensors,
                            extraFiles: extras)
    }

    /// The small files carried along on export (tokenizer, generation config, ...): the regular
    /// files of `directory` other than weights, index, config and manifest. Subdirectories are
    /// skipped; a FIFO, device, socket or dangling link is an error (it would hang or never end).
    static func extraFiles(in directory: String) throws -> [String] {
        try FS.list(directory).filter { name in
            guard !name.hasSuffix(".safetensors"), name != indexName, name != "config.json", name != Manifest.fileName,
                  !name.hasPrefix(".") else { return false }
            let path = FS.join(directory, name)
            guard let s = try FileStatus.of(path, followLinks: true) else {
                throw CheckpointError(path: path, "is a dangling symbolic link")
            }
            switch s.kind {
            case .regular: return true
            case .directory: return false
            default: throw CheckpointError(path: path, "is \(s.kind.noun); a checkpoint directory may hold only regular files and directories")
            }
        }
    }

    /// The weight map of `model.safetensors.index.json`: (key, file) in document order. File names
    /// must stay inside the checkpoint directory.
    public static func parseIndex(_ bytes: [UInt8], path: String) throws -> [(String, String)] {
        let json: JSON
        do { json = try JSON.parse(bytes) } catch let e as JSONError {
            throw CheckpointError(path: path, "not valid JSON: \(e)")
        }
        guard let map = json["weight_map"]?.objectValue else {
            throw CheckpointError(path: path, "missing \"weight_map\" object")
        }
        return try map.map { key, value in
            guard let file = value.stringValue else {
                throw CheckpointError(path: path, "weight_map entry \"\(key)\" is not a file name")
            }
            guard !file.isEmpty, !file.contains("/"), !file.hasPrefix(".") else {
                throw CheckpointError(path: path, "weight_map entry \"\(key)\" names a file outside the checkpoint: \(file)")
            }
            return (key, file)
        }
    }

    /// Total bytes of all tensors.
    public var totalBytes: Int { tensors.reduce(0) { $0 + $1.byteCount } }
}

// MARK: - Serialisation (rank 0 sends the plan to the others)

extension HFCheckpoint {
    public func toJSON() -> JSON {
        .object([
            ("directory", .string(directory)),
            ("config", config.json),
            ("files", .array(files.map { .string($0) })),
            ("extra_files", .array(extraFiles.map { .string($0) })),
            ("tensors", .array(tensors.map { t in
                .array([.string(t.name), .int(Int64(t.file)), .string(t.dtype.rawValue),
                        .array(t.shape.map { .int(Int64($0)) }), .int(Int64(t.offset)), .int(Int64(t.byteCount))])
            })),
        ])
    }

    public init(json: JSON) throws {
        func bad() -> CheckpointError { CheckpointError(path: "<plan>", "malformed checkpoint plan") }
        guard let dir = json["directory"]?.stringValue, let cfg = json["config"],
              let files = json["files"]?.arrayValue, let extras = json["extra_files"]?.arrayValue,
              let list = json["tensors"]?.arrayValue else { throw bad() }
        directory = dir
        config = try NemotronConfig(json: cfg, path: FS.join(dir, "config.json"))
        self.files = try files.map { guard let s = $0.stringValue else { throw bad() }; return s }
        extraFiles = try extras.map { guard let s = $0.stringValue else { throw bad() }; return s }
        tensors = try list.map { item in
            guard let a = item.arrayValue, a.count == 6, let name = a[0].stringValue, let file = a[1].intValue,
                  let dt = a[2].stringValue.flatMap(DType.init(rawValue:)), let shape = a[3].arrayValue,
                  let offset = a[4].intValue, let count = a[5].intValue else { throw bad() }
            return HFTensor(name: name, file: Int(file), dtype: dt, shape: try shape.map {
                guard let i = $0.intValue else { throw bad() }; return Int(i)
            }, offset: Int(offset), byteCount: Int(count))
        }
    }
}
