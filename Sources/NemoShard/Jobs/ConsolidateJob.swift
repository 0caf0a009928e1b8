/// A torch DCP checkpoint in the HF safetensors layout (`shard-SSSSS-model-IIIII-of-NNNNN`, see
/// `DCPCheckpoint`) -> a standard Hugging Face checkpoint of full tensors
/// (`model-IIIII-of-NNNNN.safetensors` + `model.safetensors.index.json`), as torch's
/// `consolidate_safetensors_files` writes it. Rank 0 reads every header and checks that the chunks
/// tile each tensor; the output files are shared out over the ranks (balanced by bytes) and each
/// rank assembles and writes its own, through the usual staged output.
public enum ConsolidateJob {
    public struct Options {
        public var source: String
        public var output: String
        public var force = false

        public init(source: String, output: String) {
            self.source = source
            self.output = output
        }
    }

    /// Which rank writes output file i (1-based): largest files first, each to the rank with the
    /// fewest bytes so far (ties: lowest rank). The same on every rank.
    public static func assignFiles(_ checkpoint: DCPCheckpoint, ranks: Int) -> [Int: Int] {
        var bytes = [Int](repeating: 0, count: checkpoint.fileCount + 1)
        for t in checkpoint.tensors where t.fileIndex < bytes.count { bytes[t.fileIndex] += t.byteCount }
        let files = (1...max(checkpoint.fileCount, 1)).sorted { (bytes[$0], -$0) > (bytes[$1], -$1) }
        var load = [Int](repeating: 0, count: max(ranks, 1))
        var owner: [Int: Int] = [:]
        for f in files {
            let r = load.indices.min { (load[$0], $0) < (load[$1], $1) } ?? 0
            owner[f] = r
            load[r] += bytes[f]
        }
        return owner
    }

    public static func run(_ o: Options, world: Collective) throws -> JobReport {
        let t0 = monotonicSeconds()
        let checkpoint = try DCPCheckpoint.openShared(o.source, world: world)
        let owner = assignFiles(checkpoint, ranks: world.size)
        let mine = (1...max(checkpoint.fileCount, 1)).filter { owner[$0] == world.rank }
        let t1 = monotonicSeconds()
        var stats = RankStats()
        stats.rank = world.rank
        let staged = try StagedOutput.prepare(o.output, force: o.force, inputs: [o.source], world: world, writers: .everyRankShared)
        try staged.run(write: { () -> ((), [SafetensorsWriter]) in
            var writers: [SafetensorsWriter] = []
            var files: [String: SystemFile] = [:]
            for index in mine {
                let tensors = checkpoint.tensors.filter { $0.fileIndex == index }
                guard !tensors.isEmpty else { continue }
                let name = DCPCheckpoint.outputFileName(index, of: checkpoint.fileCount)
                let w = try SafetensorsWriter(path: staged.stagingPath(name),
                                              specs: tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) },
                                              metadata: [("format", "pt")])
                for (k, t) in tensors.enumerated() {
                    let whole = Tensor(dtype: t.dtype, shape: t.shape)
                    for c in t.chunks {
                        let path = FS.join(checkpoint.directory, c.file)
                        let file = try files[path] ?? SystemFile(readingAt: path)
                        files[path] = file
                        let piece = TensorStorage(count: c.byteCount)
                        try file.read(into: piece.bytes, at: c.dataOffset)
                        stats.bytesRead += c.byteCount
                        ChunkTiling.place(UnsafeRawBufferPointer(piece.bytes), shape: c.shape, offsets: c.offsets,
                                          into: whole.storage.bytes, globalShape: t.shape, elementSize: t.dtype.size)
                    }
                    if whole.byteCount > 0 { try w.write(tensor: k, UnsafeRawBufferPointer(whole.storage.bytes)) }
                    stats.bytesProduced += whole.byteCount
                    stats.tensors += 1
                }
                stats.bytesWritten += w.fileSize
                stats.files += 1
                writers.append(w)
            }
            return ((), writers)
        }, finish: {
            var weightMap = checkpoint.tensors.map { ($0.name, DCPCheckpoint.outputFileName($0.fileIndex, of: checkpoint.fileCount)) }
            weightMap.sort { $0.0 < $1.0 }
            let total = checkpoint.tensors.reduce(0) { $0 + $1.byteCount }
            let index = JSON.object([("metadata", .object([("total_size", .int(Int64(total)))])),
                                     ("weight_map", .object(weightMap.map { ($0.0, .string($0.1)) }))])
            try writeFileAtomically(staged.stagingPath(HFCheckpoint.indexName), Array(index.serialized(indent: 2).utf8))
        })
        let t2 = monotonicSeconds()
        stats.peakRSS = ProcessFacts.peakResidentBytes()
        var report = JobReport(command: "consolidate", mesh: nil, worldSize: world.size)
        report.outputPath = o.output
        report.phases = [("plan", t1 - t0), ("read+assemble+write+commit", t2 - t1)]
        report.ranks = try RankStats.gather(stats, over: world)
        report.notes = [("files", .int(Int64(checkpoint.fileCount))), ("tensors", .int(Int64(checkpoint.tensors.count)))]
        return report
    }
}
