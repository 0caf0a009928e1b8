/// A `torch.distributed.checkpoint` directory in the Hugging Face safetensors layout, as
/// `HuggingFaceStorageWriter(save_distributed=True)` writes it: files
/// `shard-SSSSS-model-IIIII-of-NNNNN.safetensors` (rank S+1's chunks of the tensors that belong in
/// output file I of N), in the directory itself or under `sharded/`. Each file's
/// `DCP_SHARDING_INFO` metadata gives every chunk's offsets in its global tensor (no entry: the
/// file holds whole tensors). `open` checks that the chunks of every tensor tile it exactly.
public struct DCPCheckpoint: Sendable {
    /// One piece of a global tensor, stored whole in one file.
    public struct Chunk: Sendable, Equatable {
        /// File name inside `directory`.
        public let file: String
        public let offsets: [Int]
        public let shape: [Int]
        /// Absolute offset of the chunk's first byte in its file.
        public let dataOffset: Int
        public let byteCount: Int
    }

    /// A tensor as the chunks assemble it.
    public struct GlobalTensor: Sendable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// 1-based number of the output file it belongs in (the `model-IIIII` part of its files' names).
        public let fileIndex: Int
        public let chunks: [Chunk]

        public var byteCount: Int { shape.reduce(1, *) * dtype.size }
    }

    /// The directory that holds the shard files (the given one, or its `sharded/`).
    public let directory: String
    /// N of `model-IIIII-of-NNNNN`: how many output files the tensors are spread over.
    public let fileCount: Int
    /// Every tensor, ordered by output file, then name.
    public let tensors: [GlobalTensor]

    /// Where torch puts the shard files when it also consolidates (`enable_consolidation=True`).
    public static let shardsSubdirectory = "sharded"

    /// `shard-00001-model-00002-of-00003.safetensors` -> (1, 2, 3); nil for any other name.
    public static func parseFileName(_ name: String) -> (shard: Int, model: Int, of: Int)? {
        guard name.hasSuffix(".safetensors") else { return nil }
        let parts = name.dropLast(".safetensors".count).split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == "shard", parts[2] == "model", parts[4] == "of" else { return nil }
        let numbers = [parts[1], parts[3], parts[5]].map { p -> Int? in
            guard !p.isEmpty, p.count <= 9, p.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            return Int(p)
        }
        guard let s = numbers[0], let m = numbers[1], let n = numbers[2], s >= 1, m >= 1, m <= n else { return nil }
        return (s, m, n)
    }

    /// The output file name torch's consolidation gives file `index` of `count`.
    public static func outputFileName(_ index: Int, of count: Int) -> String {
        "model-\(pad5(index))-of-\(pad5(count)).safetensors"
    }

    /// Finds the shard files, reads every header and checks the chunks.
    public static func open(_ path: String) throws -> DCPCheckpoint {
        try FS.requireDirectory(path)
        var directory = path
        var names = try FS.list(path).filter { parseFileName($0) != nil }
        let sub = FS.join(path, shardsSubdirectory)
        if names.isEmpty, FS.isDirectory(sub) {
            directory = sub
            names = try FS.list(sub).filter { parseFileName($0) != nil }
        }
        guard !names.isEmpty else {
            throw CheckpointError(path: path, "no DCP shard files (shard-NNNNN-model-NNNNN-of-NNNNN.safetensors) here or under \(shardsSubdirectory)/")
        }
        names.sort()
        var fileCount: Int?
        var collected: [String: (dtype: DType, fileIndex: Int, chunks: [Chunk])] = [:]
        var order: [String] = []
        for name in names {
            guard let parsed = parseFileName(name) else { continue }
            let filePath = FS.join(directory, name)
            if let n = fileCount, n != parsed.of {
                throw CheckpointError(path: filePath, "names \(parsed.of) output files, but \(names[0]) names \(n)")
            }
            fileCount = parsed.of
            let file = try SafetensorsFile(path: filePath)
            let metadata = Dictionary(file.header.metadata, uniquingKeysWith: { a, _ in a })
            let info = try metadata[DCPShardingInfo.metadataKey].map { try DCPShardingInfo.parse($0, path: filePath) }
            if let info {
                for key in info.keys.sorted() where file.header[key] == nil {
                    throw CheckpointError(path: filePath, "metadata \(DCPShardingInfo.metadataKey) names tensor \"\(key)\", which the file does not hold")
                }
            }
            for t in file.header.tensors {
                let offsets: [Int]
                if let info {
                    guard let o = info[t.name] else {
                        throw CheckpointError(path: filePath, "tensor \"\(t.name)\" has no entry in metadata \(DCPShardingInfo.metadataKey)")
                    }
                    guard o.count == t.shape.count else {
                        throw CheckpointError(path: filePath, "tensor \"\(t.name)\": \(o.count) offsets \(o) for a \(t.shape.count)-D chunk \(t.shape)")
                    }
                    offsets = o
                } else {
                    offsets = [Int](repeating: 0, count: t.shape.count)
                }
                let chunk = Chunk(file: name, offsets: offsets, shape: t.shape, dataOffset: file.fileOffset(of: t), byteCount: t.byteCount)
                if let seen = collected[t.name] {
                    let first = seen.chunks[0].file
                    guard seen.dtype == t.dtype else {
                        throw CheckpointError(path: filePath, "tensor \"\(t.name)\": dtype \(t.dtype.rawValue), but \(seen.dtype.rawValue) in \(first)")
                    }
                    guard seen.fileIndex == parsed.model else {
                        throw CheckpointError(path: filePath, "tensor \"\(t.name)\" belongs in output file \(parsed.model), but in \(seen.fileIndex) by \(first)")
                    }
                    guard seen.chunks[0].shape.count == t.shape.count else {
                        throw CheckpointError(path: filePath, "tensor \"\(t.name)\": a \(t.shape.count)-D chunk, but \(seen.chunks[0].shape.count)-D in \(first)")
                    }
                    collected[t.name]?.chunks.append(chunk)
                } else {
                    collected[t.name] = (t.dtype, parsed.model, [chunk])
                    order.append(t.name)
                }
            }
        }
        var tensors: [GlobalTensor] = []
        for name in order {
            guard let c = collected[name] else { continue }
            let shape = try ChunkTiling.globalShape(of: c.chunks, dtype: c.dtype, tensor: name, directory: directory)
            try ChunkTiling.checkTiling(c.chunks, globalShape: shape, tensor: name, directory: directory)
            tensors.append(GlobalTensor(name: name, dtype: c.dtype, shape: shape, fileIndex: c.fileIndex, chunks: c.chunks))
        }
        tensors.sort { ($0.fileIndex, $0.name) < ($1.fileIndex, $1.name) }
        return DCPCheckpoint(directory: FS.realPath(directory), fileCount: fileCount ?? 1, tensors: tensors)
    }

    public init(directory: String, fileCount: Int, tensors: [GlobalTensor]) {
        self.directory = directory
        self.fileCount = fileCount
        self.tensors = tensors
    }
}

extension DCPCheckpoint {
    /// The plan as JSON, so rank 0 can send it to the others.
    public func toJSON() -> JSON {
        func ints(_ a: [Int]) -> JSON { .array(a.map { .int(Int64($0)) }) }
        return .object([
            ("directory", .string(directory)),
            ("file_count", .int(Int64(fileCount))),
            ("tensors", .array(tensors.map { t in
                .object([("name", .string(t.name)), ("dtype", .string(t.dtype.rawValue)), ("shape", ints(t.shape)),
                         ("file_index", .int(Int64(t.fileIndex))),
                         ("chunks", .array(t.chunks.map { c in
                             .array([.string(c.file), ints(c.offsets), ints(c.shape), .int(Int64(c.dataOffset)), .int(Int64(c.byteCount))])
                         }))])
            })),
        ])
    }

    public init(json: JSON) throws {
        func bad() -> CheckpointError { CheckpointError(path: "<plan>", "malformed DCP plan") }
        func ints(_ j: JSON?) throws -> [Int] {
            guard let a = j?.arrayValue else { throw bad() }
            return try a.map { guard let i = $0.intValue else { throw bad() }; return Int(i) }
        }
        guard let dir = json["directory"]?.stringValue, let n = json["file_count"]?.intValue,
              let list = json["tensors"]?.arrayValue else { throw bad() }
        directory = dir
        fileCount = Int(n)
        tensors = try list.map { t in
            guard let name = t["name"]?.stringValue, let d = t["dtype"]?.stringValue, let dtype = DType(rawValue: d),
                  let index = t["file_index"]?.intValue, let chunks = t["chunks"]?.arrayValue else { throw bad() }
            return GlobalTensor(name: name, dtype: dtype, shape: try ints(t["shape"]), fileIndex: Int(index),
                                chunks: try chunks.map { c in
                guard let a = c.arrayValue, a.count == 5, let f = a[0].stringValue, let o = a[3].intValue, let b = a[4].intValue
                else { throw bad() }
                return Chunk(file: f, offsets: try ints(a[1]), shape: try ints(a[2]), dataOffset: Int(o), byteCount: Int(b))
            })
        }
    }
}
