import NemoShardCore

/// A `torch.distributed.checkpoint` directory in the Hugging Face safetensors layout, as
/// `HuggingFaceStorageWriter(save_distributed=True)` writes it: files
/// `shard-SSSSS-model-IIIII-of-NNNNN.safetensors` (rank S+1's chunks of the tensors that belong in
/// output file I of N), in the directory itself or under `sharded/` (never both). Each file's
/// `DCP_SHARDING_INFO` metadata gives every chunk's offsets in its global tensor (no entry: the
/// file holds whole tensors). `open` checks that every output file 1...N has shard files, that the
/// chunks of every tensor tile it exactly, and, where torch's consolidation sits beside the
/// shards, that the global shapes agree with it. Rank 0 opens it and sends it to the others whole
/// (`Codable`, fingerprints included).
public struct DCPCheckpoint: Sendable, Codable {
    /// One piece of a global tensor, stored whole in one file.
    package struct Chunk: Sendable, Equatable, Codable {
        /// File name inside `directory`.
        package let file: String
        package let offsets: [Int]
        package let shape: [Int]
        /// Absolute offset of the chunk's first byte in its file.
        package let dataOffset: Int
        package let byteCount: Int
    }

    /// A tensor as the chunks assemble it.
    public struct GlobalTensor: Sendable, Codable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// 1-based number of the output file it belongs in (the `model-IIIII` part of its files' names).
        package let fileIndex: Int
        package let chunks: [Chunk]

        package var byteCount: Int { shape.reduce(1, *) * dtype.size }
    }

    /// The directory that holds the shard files (the given one, or its `sharded/`).
    public let directory: String
    /// N of `model-IIIII-of-NNNNN`: how many output files the tensors are spread over.
    package let fileCount: Int
    /// Every tensor, ordered by output file, then name.
    public let tensors: [GlobalTensor]
    /// Each shard file (by name) as it was when its header was read.
    package var fingerprints: [String: FileFingerprint] = [:]

    /// Every file a job reading this checkpoint reads, and the directory itself.
    package var inputPaths: [String] {
        [directory] + Set(tensors.flatMap { $0.chunks.map(\.file) }).sorted().map { FS.join(directory, $0) }
    }

    /// Where torch puts the shard files when it also consolidates (`enable_consolidation=True`).
    package static let shardsSubdirectory = "sharded"

    /// `shard-00001-model-00002-of-00003.safetensors` -> (1, 2, 3); nil for any other name.
    package static func parseFileName(_ name: String) -> (shard: Int, model: Int, of: Int)? {
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
    package static func outputFileName(_ index: Int, of count: Int) -> String {
        HFIndex.shardName(index, of: count)
    }

    /// Finds the shard files, reads every header and checks the chunks: that every output file
    /// 1...N has shard files, that the chunks of every tensor tile it, and, where the directory
    /// also holds torch's consolidation of the checkpoint (`model.safetensors.index.json`,
    /// `model-IIIII-of-NNNNN.safetensors`), that the tensors agree with it (`checkReference`).
    public static func open(_ path: String) throws -> DCPCheckpoint {
        let (directory, names) = try shardFiles(in: path)
        var chunks = ChunkCollector()
        for name in names { try chunks.add(file: name, in: directory, firstName: names[0]) }
        let count = chunks.fileCount ?? 1
        try checkEveryOutputFileHasShards(chunks.models, count: count, directory: directory)
        let tensors = try globalTensors(chunks, count: count, directory: directory)
        var checkpoint = DCPCheckpoint(directory: FS.realPath(directory), fileCount: count, tensors: tensors)
        checkpoint.fingerprints = chunks.fingerprints
        // torch's consolidation (enable_consolidation=True) sits beside sharded/.
        let reference = directory != path || FS.baseName(path) != shardsSubdirectory ? path : FS.parent(path)
        try checkpoint.checkReference(in: reference)
        return checkpoint
    }

    /// The directory holding the shard files (`path` or its `sharded/`) and their names, sorted.
    static func shardFiles(in path: String) throws -> (directory: String, names: [String]) {
        try FS.requireDirectory(path)
        var directory = path
        var names = try FS.list(path).filter { parseFileName($0) != nil }.sorted()
        let sub = FS.join(path, shardsSubdirectory)
        if FS.isDirectory(sub) {
            let inSub = try FS.list(sub).filter { parseFileName($0) != nil }
            if !inSub.isEmpty {
                // torch puts the shards under sharded/ or beside it, never both: a file beside it is
                // left from another checkpoint, and reading either set alone could give wrong tensors.
                if let stray = names.first {
                    throw CheckpointError(path: FS.join(path, stray), "a DCP shard file beside \(shardsSubdirectory)/, which holds shard files too: move one set away")
                }
                directory = sub
                names = inSub.sorted()
            }
        }
        guard !names.isEmpty else {
            throw CheckpointError(path: path, "no DCP shard files (shard-NNNNN-model-NNNNN-of-NNNNN.safetensors) here or under \(shardsSubdirectory)/")
        }
        return (directory, names)
    }

    /// Every shard file's chunks, grouped by tensor, checked for agreeing dtypes, files and ranks.
    struct ChunkCollector {
        var fileCount: Int?
        var models = Set<Int>()
        var collected: [String: (dtype: DType, fileIndex: Int, chunks: [Chunk])] = [:]
        var order: [String] = []
        var fingerprints: [String: FileFingerprint] = [:]

        mutating func add(file name: String, in directory: String, firstName: String) throws {
            guard let parsed = DCPCheckpoint.parseFileName(name) else { return }
            let filePath = FS.join(directory, name)
            if let n = fileCount, n != parsed.of {
                throw CheckpointError(path: filePath, "names \(parsed.of) output files, but \(firstName) names \(n)")
            }
            fileCount = parsed.of
            models.insert(parsed.model)
            let file = try SafetensorsFile(path: filePath)
            fingerprints[name] = file.fingerprint
            let metadata = Dictionary(file.header.metadata, uniquingKeysWith: { a, _ in a })
            let info = try metadata[DCPShardingInfo.metadataKey].map { try DCPShardingInfo.parse($0, path: filePath) }
            if let info {
                for key in info.keys.sorted() where file.header[key] == nil {
                    throw CheckpointError(path: filePath, "metadata \(DCPShardingInfo.metadataKey) names tensor \"\(key)\", which the file does not hold")
                }
            }
            for t in file.header.tensors {
                let offsets = try ChunkCollector.offsets(of: t, info: info, path: filePath)
                let chunk = Chunk(file: name, offsets: offsets, shape: t.shape, dataOffset: file.fileOffset(of: t), byteCount: t.byteCount)
                try add(chunk, of: t, model: parsed.model, path: filePath)
            }
        }

        /// Where chunk `t` starts in its global tensor (all zeros without sharding metadata).
        private static func offsets(of t: TensorInfo, info: [String: [Int]]?, path: String) throws -> [Int] {
            guard let info else { return [Int](repeating: 0, count: t.shape.count) }
            guard let o = info[t.name] else {
                throw CheckpointError(path: path, "tensor \"\(t.name)\" has no entry in metadata \(DCPShardingInfo.metadataKey)")
            }
            guard o.count == t.shape.count else {
                throw CheckpointError(path: path, "tensor \"\(t.name)\": \(o.count) offsets \(o) for a \(t.shape.count)-D chunk \(t.shape)")
            }
            return o
        }

        private mutating func add(_ chunk: Chunk, of t: TensorInfo, model: Int, path: String) throws {
            guard let seen = collected[t.name] else {
                collected[t.name] = (t.dtype, model, [chunk])
                order.append(t.name)
                return
            }
            let first = seen.chunks[0].file
            guard seen.dtype == t.dtype else {
                throw CheckpointError(path: path, "tensor \"\(t.name)\": dtype \(t.dtype.rawValue), but \(seen.dtype.rawValue) in \(first)")
            }
            guard seen.fileIndex == model else {
                throw CheckpointError(path: path, "tensor \"\(t.name)\" belongs in output file \(model), but in \(seen.fileIndex) by \(first)")
            }
            guard seen.chunks[0].shape.count == t.shape.count else {
                throw CheckpointError(path: path, "tensor \"\(t.name)\": a \(t.shape.count)-D chunk, but \(seen.chunks[0].shape.count)-D in \(first)")
            }
            collected[t.name]?.chunks.append(chunk)
        }
    }

    /// Every output file 1...N must have shard files (the N in the names says how many there are).
    static func checkEveryOutputFileHasShards(_ models: Set<Int>, count: Int, directory: String) throws {
        var expected = 1
        for m in models.sorted() {
            guard m == expected else { break }
            expected += 1
        }
        if expected <= count {
            let missing = outputFileName(expected, of: count).dropLast(".safetensors".count)
            throw CheckpointError(path: directory, "no shard file of \(missing) (shard-NNNNN-\(missing).safetensors): the checkpoint is incomplete")
        }
    }

    /// The global tensors the chunks tile (each checked), ordered by output file, then name.
    static func globalTensors(_ chunks: ChunkCollector, count: Int, directory: String) throws -> [GlobalTensor] {
        var tensors: [GlobalTensor] = []
        var total = 0
        for name in chunks.order {
            guard let c = chunks.collected[name] else { continue }
            let shape = try ChunkTiling.globalShape(of: c.chunks, dtype: c.dtype, tensor: name, directory: directory)
            try ChunkTiling.checkTiling(c.chunks, globalShape: shape, tensor: name, directory: directory)
            let t = GlobalTensor(name: name, dtype: c.dtype, shape: shape, fileIndex: c.fileIndex, chunks: c.chunks)
            // Bounded far below Int.max, so no sum of tensor bytes (with headers) downstream can overflow.
            let (sum, overflow) = total.addingReportingOverflow(t.byteCount)
            guard !overflow, sum <= ChunkTiling.maxGlobalBytes << 12 else {
                throw CheckpointError(path: directory, "tensor \"\(name)\": the tensors up to it hold more bytes than nemoshard accepts")
            }
            total = sum
            tensors.append(t)
        }
        let holding = Set(tensors.map(\.fileIndex))
        if let empty = (1...max(count, 1)).first(where: { !holding.contains($0) }) {
            let model = outputFileName(empty, of: count).dropLast(".safetensors".count)
            throw CheckpointError(path: directory, "the shard files of \(model) hold no tensor: the checkpoint is incomplete")
        }
        tensors.sort { ($0.fileIndex, $0.name) < ($1.fileIndex, $1.name) }
        return tensors
    }

    /// Checks the tensors against torch's consolidation of this checkpoint where `reference` holds
    /// one (torch writes it beside `sharded/`): each consolidated file
    /// `model-IIIII-of-NNNNN.safetensors` there must hold exactly the tensors of output file I, each
    /// with the global shape and dtype its chunks tile; the index (`model.safetensors.index.json`)
    /// must put every tensor in the output file its shard files name and no other tensor anywhere,
    /// and its `total_size` must be the tensors' bytes. So a shard file gone missing (which can
    /// leave a tensor that still tiles, only smaller) is caught wherever the global shapes are on
    /// record. Every error is one line naming the tensor.
    package func checkReference(in reference: String) throws {
        let byName = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for index in 1...max(fileCount, 1) {
            let name = DCPCheckpoint.outputFileName(index, of: fileCount)
            let path = FS.join(reference, name)
            guard FS.exists(path) else { continue }
            let file = try SafetensorsFile(path: path)
            var seen = Set<String>()
            for r in file.header.tensors {
                guard let t = byName[r.name], t.fileIndex == index else {
                    throw CheckpointError(path: path, "tensor \"\(r.name)\" is here, but in no shard file of \(name.dropLast(".safetensors".count))")
                }
                guard r.shape == t.shape, r.dtype == t.dtype else {
                    throw CheckpointError(path: path, "tensor \"\(r.name)\": \(r.dtype.rawValue) \(r.shape) here, but its chunks tile \(t.dtype.rawValue) \(t.shape)")
                }
                seen.insert(r.name)
            }
            if let absent = tensors.first(where: { $0.fileIndex == index && !seen.contains($0.name) }) {
                throw CheckpointError(path: path, "tensor \"\(absent.name)\" of the shard files of \(name.dropLast(".safetensors".count)) is not here")
            }
        }
        let indexPath = FS.join(reference, HFIndex.fileName)
        if FS.exists(indexPath) {
            let index = try HFIndex.parse(try readWholeFile(indexPath, limit: ReadLimit.index), path: indexPath)
            var listed = Set<String>()
            for (name, file) in index.weightMap {
                guard let t = byName[name] else {
                    throw CheckpointError(path: indexPath, "tensor \"\(name)\" (in \(file)) is in no shard file")
                }
                let want = DCPCheckpoint.outputFileName(t.fileIndex, of: fileCount)
                guard file == want else {
                    throw CheckpointError(path: indexPath, "tensor \"\(name)\" is in \(file), but its shard files put it in \(want)")
                }
                listed.insert(name)
            }
            if let unlisted = tensors.first(where: { !listed.contains($0.name) }) {
                throw CheckpointError(path: indexPath, "tensor \"\(unlisted.name)\" of the shard files is not in its weight_map")
            }
            let total = tensors.reduce(0) { $0 + $1.byteCount }  // no overflow: `open` checked the sum
            if let declared = index.totalSize, declared != total {
                throw CheckpointError(path: indexPath, "metadata total_size is \(declared) bytes, but the tensors the shard files tile hold \(total)")
            }
        }
    }

    package init(directory: String, fileCount: Int, tensors: [GlobalTensor]) {
        self.directory = directory
        self.fileCount = fileCount
        self.tensors = tensors
    }
}
