/// The way back to Hugging Face, shared by `save-hf` (sources: rank files) and `toHF` (sources: a
/// state dict in memory). Each rank's share (an `ExportPlanner` plan) is split into shards as
/// `save_pretrained` does, with one global numbering agreed over the mesh's `ep` communicator;
/// every rank writes its own shards (shared filesystem) or, with `gather`, streams them one at a
/// time to the first `ep` rank, which alone writes. Rank 0 then writes the index, config.json and
/// the source's small files. Mesh replicas have an empty share and write nothing.
struct HFExport {
    let manifest: Manifest
    let mesh: DeviceMesh
    let maxShardBytes: Int
    let gather: Bool

    static let shardTag = 11
    /// The writer's "your turn" to one sender.
    static let turnTag = 14

    /// One line of the index's weight map, with the tensor's size.
    struct WeightEntry: Codable {
        let key: String
        let file: String
        let bytes: Int
    }

    /// One rank's shards and the numbering of all of them.
    struct Share {
        let plan: TransferPlan
        /// Output indices of each of this rank's shards.
        let groups: [[Int]]
        /// Shards per `ep` rank, and this rank's first global shard index.
        let counts: [Int]
        let first: Int
        /// Every `ep` rank's weight-map entries.
        let weightEntries: [[WeightEntry]]

        var total: Int { counts.reduce(0, +) }

        func shardName(_ i: Int) -> String { "model-\(pad5(i + 1))-of-\(pad5(total)).safetensors" }

        func shardPlan(_ k: Int) -> TransferPlan { plan.keeping(outputs: groups[k]) }
    }

    /// Splits `plan` into shards and agrees on the numbering. Collective over the `ep` communicator.
    func share(_ plan: TransferPlan) throws -> Share {
        let ep = mesh.expertGroup
        let groups = ExportPlanner.shardGroups(plan.outputs, maxBytes: maxShardBytes)
        let counts = try ep.allgather([Int64(groups.count)]).map(Int.init)
        let first = counts.prefix(ep.rank).reduce(0, +)
        let total = counts.reduce(0, +)
        let name = { (i: Int) in "model-\(pad5(i + 1))-of-\(pad5(total)).safetensors" }
        let mine = groups.enumerated().flatMap { k, g in
            g.map { WeightEntry(key: plan.outputs[$0].name, file: name(first + k), bytes: plan.outputs[$0].byteCount) }
        }
        let entries = try ep.allgather(mine)
        return Share(plan: plan, groups: groups, counts: counts, first: first, weightEntries: entries)
    }

    /// Writes this rank's shards into the staging directory; returns the summed execution stats
    /// and the writers still to be committed. `execute` runs a plan into a sink.
    func write(_ s: Share, staged: StagedOutput, stats: inout RankStats,
               execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> (ExecutionStats, [SafetensorsWriter]) {
        gather ? try writeGathered(s, staged: staged, stats: &stats, execute: execute)
               : try writeParallel(s, staged: staged, stats: &stats, execute: execute)
    }

    private static let shardMetadata = [("format", "pt")]

    /// Every rank writes its own shards in one pass over its plan.
    private func writeParallel(_ s: Share, staged: StagedOutput, stats: inout RankStats,
                               execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> (ExecutionStats, [SafetensorsWriter]) {
        var writers: [SafetensorsWriter] = []
        var map: [(writer: Int, tensor: Int)] = Array(repeating: (0, 0), count: s.plan.outputs.count)
        for (k, g) in s.groups.enumerated() {
            let w = try SafetensorsWriter(path: staged.stagingPath(s.shardName(s.first + k)),
                                          specs: g.map { s.plan.outputs[$0] }, metadata: HFExport.shardMetadata)
            for (j, i) in g.enumerated() { map[i] = (k, j) }
            writers.append(w)
            stats.bytesWritten += w.fileSize
        }
        let e = try execute(s.plan, FileSink(writers: writers, map: map))
        stats.files = writers.count
        return (e, writers)
    }

    /// The first `ep` rank writes everything; the others build one shard image at a time in memory
    /// and send it (or a one-byte failure marker, so the writer never waits for a shard that will
    /// not come). Senders take turns: each builds its first image, then sleeps until the writer
    /// says it is its turn, so no rank spins in a blocked send while the writer works (with more
    /// ranks than cores, spinning senders starved the writer).
    private func writeGathered(_ s: Share, staged: StagedOutput, stats: inout RankStats,
                               execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> (ExecutionStats, [SafetensorsWriter]) {
        let ep = mesh.expertGroup
        var sum = ExecutionStats()
        func add(_ e: ExecutionStats) {
            sum.bytesRead += e.bytesRead
            sum.bytesProduced += e.bytesProduced
        }
        var failure: Error?
        if ep.rank != 0 {
            var first: ImageSink?
            if !s.groups.isEmpty {
                do {
                    let sink = ImageSink(specs: s.shardPlan(0).outputs, metadata: HFExport.shardMetadata)
                    add(try execute(s.shardPlan(0), sink))
                    first = sink
                } catch { failure = error }
                _ = try ep.receiveQuietly(from: 0, tag: HFExport.turnTag)
            }
            for k in s.groups.indices {
                if k == 0, failure == nil, let sink = first {
                    try ep.sendStream(UnsafeRawBufferPointer(sink.image.bytes), to: 0, tag: HFExport.shardTag)
                    first = nil
                    continue
                }
                if failure == nil {
                    do {
                        let sink = ImageSink(specs: s.shardPlan(k).outputs, metadata: HFExport.shardMetadata)
                        add(try execute(s.shardPlan(k), sink))
                        try ep.sendStream(UnsafeRawBufferPointer(sink.image.bytes), to: 0, tag: HFExport.shardTag)
                        continue
                    } catch { failure = error }
                }
                try [UInt8(1)].withUnsafeBytes { try ep.sendStream($0, to: 0, tag: HFExport.shardTag) }
            }
            if let failure { throw failure }
            return (sum, [])
        }
        var writers: [SafetensorsWriter] = []
        for k in s.groups.indices {
            do {
                let p = s.shardPlan(k)
                let w = try SafetensorsWriter(path: staged.stagingPath(s.shardName(k)), specs: p.outputs, metadata: HFExport.shardMetadata)
                add(try execute(p, FileSink(writer: w)))
                writers.append(w)
                stats.bytesWritten += w.fileSize
            } catch { failure = failure ?? error }
        }
        for r in 1..<max(ep.size, 1) {
            let rFirst = s.counts.prefix(r).reduce(0, +)
            if s.counts[r] > 0 { try [UInt8(1)].withUnsafeBytes { try ep.send($0, to: r, tag: HFExport.turnTag) } }
            for k in 0..<s.counts[r] {
                // Each piece is written as it arrives: no whole image in memory, the next piece
                // arrives while the page cache takes the last.
                let path = staged.stagingPath(s.shardName(rFirst + k))
                var file: SystemFile?
                do {
                    let total = try ep.receiveStream(from: r, tag: HFExport.shardTag) { total, piece, offset in
                        guard failure == nil, total > 1 else { return }  // a failed sender reports its own error
                        if file == nil { file = try SystemFile(creatingAt: temporaryName(for: path)) }
                        try file?.write(piece, at: offset)
                    }
                    if let f = file {
                        try f.sync()
                        try renameFile(f.path, path)
                        stats.bytesWritten += total
                        stats.files += 1
                    }
                } catch {
                    if let f = file { FS.removeFile(f.path) }
                    failure = failure ?? error
                }
            }
        }
        stats.files += writers.count
        if let failure { throw failure }
        return (sum, writers)
    }

    /// Rank 0: the index (every weight sorted by key), config.json and the source's small files.
    func finish(_ s: Share, staged: StagedOutput) throws {
        var weightMap: [(String, String)] = []
        var totalSize = 0
        for e in s.weightEntries.joined() {
            weightMap.append((e.key, e.file))
            totalSize += e.bytes
        }
        weightMap.sort { $0.0 < $1.0 }
        let index = JSON.object([("metadata", .object([("total_size", .int(Int64(totalSize)))])),
                                 ("weight_map", .object(weightMap.map { ($0.0, .string($0.1)) }))])
        try writeFileAtomically(staged.stagingPath(HFCheckpoint.indexName), Array(index.serialized(indent: 2).utf8))
        try writeFileAtomically(staged.stagingPath("config.json"), Array(manifest.config.serialized(indent: 2).utf8))
        for name in manifest.extraFiles where !name.contains("/") {
            let from = FS.join(manifest.sourceDirectory, name)
            if FS.exists(from) { try FS.copyFile(from: from, to: staged.stagingPath(name)) }
        }
    }
}

extension HFExport {
    /// The whole export of this rank's `plan` into `output`: numbering, staged writes, index,
    /// commit, and the report. Collective over the mesh.
    func run(_ plan: TransferPlan, output: String, force: Bool, inputs: [String], started t0: Double,
             execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> JobReport {
        let world = mesh.world
        let s = try share(plan)
        let t1 = monotonicSeconds()
        var stats = RankStats()
        stats.rank = world.rank
        stats.experts = manifest.ranks[world.rank].experts
        stats.tensors = plan.outputs.count
        let staged = try StagedOutput.prepare(output, force: force, inputs: inputs, world: world,
                                              writers: gather ? .rankZero : .everyRankShared)
        let exec = try staged.run(write: { try write(s, staged: staged, stats: &stats, execute: execute) },
                                  finish: { try finish(s, staged: staged) })
        let t2 = monotonicSeconds()
        stats.bytesRead = exec.bytesRead
        stats.bytesProduced = exec.bytesProduced
        stats.peakRSS = ProcessFacts.peakResidentBytes()
        var report = JobReport(command: "save-hf", mesh: manifest.mesh, worldSize: world.size)
        report.outputPath = output
        report.phases = [("plan", t1 - t0), ("read+split+write+commit", t2 - t1)]
        report.ranks = try RankStats.gather(stats, over: world)
        report.notes = [("shards", .int(Int64(s.total)))]
        return report
    }
}
