import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// The way back to Hugging Face, shared by `save-hf` (sources: rank files) and `toHF` (sources: a
/// state dict in memory). Each rank's share (an `ExportPlanner` plan) is split into shards as
/// `save_pretrained` does, with one global numbering agreed over the mesh's `ep` communicator
/// (or given: `save-hf` numbers the shards of its `ExportLayout` before it starts);
/// every rank writes its own shards (shared filesystem) or, with `gather`, only ranks that can
/// write into rank 0's staging directory write and the others stream their shards to them.
/// Rank 0 then writes the index, config.json and the source's small files. Mesh replicas have
/// an empty share and write nothing.
package struct HFExport {
    package let manifest: Manifest
    package let mesh: DeviceMesh
    package let maxShardBytes: Int
    package let gather: Bool
    /// A fused export from memory: how the stacked expert tensors' rows reach rank 0.
    package var stackedRows: StackedRowExchange? = nil

    package static let shardTag = 11

    /// One line of the index's weight map, with the tensor's size.
    package struct WeightEntry: Codable {
        package let key: String
        package let file: String
        package let bytes: Int
    }

    /// One rank's shards and the numbering of all of them.
    package struct Share {
        package let plan: TransferPlan
        /// Output indices of each of this rank's shards.
        package let groups: [[Int]]
        /// Every `ep` rank's global shard indices (0-based, ascending, one per group of that rank).
        package let numbers: [[Int]]
        /// Shards of the whole export.
        package let total: Int
        /// This rank's position on the `ep` communicator.
        package let rank: Int
        /// Every `ep` rank's weight-map entries (agreed once the numbering is).
        package var weightEntries: [[WeightEntry]] = []

        /// Global index of this rank's `k`-th shard.
        package func number(_ k: Int) -> Int { numbers[rank][k] }

        package func shardName(_ i: Int) -> String { HFIndex.shardName(i + 1, of: total) }

        package func shardPlan(_ k: Int) -> TransferPlan { plan.keeping(outputs: groups[k]) }
    }

    /// A numbering decided before the export (`ExportLayout`: the same files for any number of
    /// ranks): this rank's shards as output groups of its plan, and every `ep` rank's global
    /// shard indices; together they number `0..<total` once each.
    package struct Layout {
        package let groups: [[Int]]
        package let numbers: [[Int]]

        package init(groups: [[Int]], numbers: [[Int]]) {
            self.groups = groups
            self.numbers = numbers
        }
    }

    /// Splits `plan` into shards and agrees on the numbering (each `ep` rank's shards follow the
    /// lower ranks'), or takes `layout`'s. Collective over the `ep` communicator.
    package func share(_ plan: TransferPlan, layout: Layout? = nil) throws -> Share {
        let ep = mesh.expertGroup
        let groups: [[Int]], numbers: [[Int]]
        if let layout {
            guard layout.numbers.count == ep.size, layout.groups.count == layout.numbers[ep.rank].count,
                  layout.numbers.joined().sorted() == Array(0..<layout.numbers.joined().count) else {
                throw InternalError("an export layout must number every shard once")
            }
            (groups, numbers) = (layout.groups, layout.numbers)
        } else {
            groups = ExportPlanner.shardGroups(plan.outputs, maxBytes: maxShardBytes)
            let counts = try ep.allgather(groups.count)
            numbers = counts.indices.map { r in Array(counts.prefix(r).reduce(0, +)..<counts.prefix(r + 1).reduce(0, +)) }
        }
        var s = Share(plan: plan, groups: groups, numbers: numbers, total: numbers.reduce(0) { $0 + $1.count }, rank: ep.rank)
        let mine = groups.enumerated().flatMap { k, g in
            g.map { WeightEntry(key: plan.outputs[$0].name, file: s.shardName(s.number(k)), bytes: plan.outputs[$0].byteCount) }
        }
        s.weightEntries = try ep.allgather(mine)
        return s
    }

    /// Writes this rank's shards into the staging directory; returns the summed execution stats
    /// and the writers still to be committed. `execute` runs a plan into a sink.
    package func write(_ s: Share, staged: StagedOutput, stats: inout RankStats,
               execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> (ExecutionStats, [SafetensorsWriter]) {
        guard let stackedRows else {
            return gather ? try writeGathered(s, staged: staged, stats: &stats, execute: execute)
                          : try writeParallel(s, staged: staged, stats: &stats, execute: execute)
        }
        // A fused export from memory: rank 0's stacked tensors get the other ranks' rows after
        // the shards are written, and the streams run (or are drained) even after a failure.
        var failure: Error?
        var result = (ExecutionStats(), [SafetensorsWriter]())
        do {
            result = gather ? try writeGathered(s, staged: staged, stats: &stats, execute: execute)
                            : try writeParallel(s, staged: staged, stats: &stats, execute: execute)
        } catch { failure = error }
        do {
            let rows = try stackedRows.run(s, writers: result.1, failed: failure != nil, execute: execute)
            result.0.bytesRead += rows.bytesRead
            result.0.bytesProduced += rows.bytesProduced
        } catch { failure = failure ?? error }
        if let failure { throw failure }
        return result
    }

    private static let shardMetadata = [("format", "pt")]

    /// Every rank writes its own shards in one pass over its plan.
    private func writeParallel(_ s: Share, staged: StagedOutput, stats: inout RankStats,
                               execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> (ExecutionStats, [SafetensorsWriter]) {
        var writers: [SafetensorsWriter] = []
        var map: [(writer: Int, tensor: Int)] = Array(repeating: (0, 0), count: s.plan.outputs.count)
        for (k, g) in s.groups.enumerated() {
            let w = try SafetensorsWriter(path: staged.stagingPath(s.shardName(s.number(k))),
                                          specs: g.map { s.plan.outputs[$0] }, metadata: HFExport.shardMetadata)
            for (j, i) in g.enumerated() { map[i] = (k, j) }
            writers.append(w)
            stats.bytesWritten += w.fileSize
        }
        let e = try execute(s.plan, FileSink(writers: writers, map: map))
        stats.files = writers.count
        return (e, writers)
    }

    /// Only ranks that can write into rank 0's staging directory write (`StagedOutput.canWrite`:
    /// rank 0's node, or all ranks on a shared filesystem). Each writer receives the shards of the
    /// senders assigned to it (round robin, in `ep` rank order), writing each piece as it arrives,
    /// while a thread of its own writes the writer's own shards: the link carries bytes from the
    /// start instead of after the writer's own part. A sender streams its shards in file order,
    /// window by window (`ImageWindows`), holding two windows at a time, never a whole shard.
    private func writeGathered(_ s: Share, staged: StagedOutput, stats: inout RankStats,
                               execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> (ExecutionStats, [SafetensorsWriter]) {
        let ep = mesh.expertGroup
        let canWrite = try ep.allgather(staged.canWrite)
        let writers = canWrite.indices.filter { canWrite[$0] }
        let senders = canWrite.indices.filter { !canWrite[$0] }
        if writers.isEmpty, let r = senders.first(where: { !s.numbers[$0].isEmpty }) {
            throw UsageError("no rank of the ep group can write into \(staged.staging); rank \(r) has shards to write")
        }
        let writerOf = writers.isEmpty ? [:]
            : Dictionary(uniqueKeysWithValues: senders.enumerated().map { i, r in (r, writers[i % writers.count]) })
        if let writer = writerOf[ep.rank] {
            return (try sendShards(s, to: writer, execute: execute), [])
        }
        var own = RankStats()
        var received = RankStats()
        let result = try runAlongside({ try writeParallel(s, staged: staged, stats: &own, execute: execute) }, while: {
            var failure: Error?
            for r in senders where writerOf[r] == ep.rank {
                for n in s.numbers[r] {
                    do {
                        try receiveShard(from: r, path: staged.stagingPath(s.shardName(n)), failed: failure != nil, stats: &received)
                    } catch { failure = failure ?? error }
                }
            }
            if let failure { throw failure }
        })
        stats.bytesWritten += own.bytesWritten + received.bytesWritten
        stats.files += own.files + received.files
        return result
    }

    /// Streams each of this rank's shards to `writer`. After a failure, each remaining shard is
    /// announced and abandoned at once, so the writer never waits for bytes that will not come.
    private func sendShards(_ s: Share, to writer: Int,
                            execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> ExecutionStats {
        let ep = mesh.expertGroup
        var sum = ExecutionStats()
        var failure: Error?
        for k in s.groups.indices {
            var image: ImageWindows?
            if failure == nil {
                do {
                    image = try ImageWindows(plan: s.shardPlan(k), metadata: HFExport.shardMetadata, windowBytes: Communicator.streamUnit)
                } catch { failure = error }
            }
            do {
                try ep.sendStream(count: image?.fileSize ?? 1, to: writer, tag: HFExport.shardTag) { stream in
                    guard let image else { throw failure ?? InternalError("shard \(k) has no layout") }
                    try stream.emit(count: image.header.count) { buffer in image.header.withUnsafeBytes { buffer.copyMemory(from: $0) } }
                    for w in image.windows {
                        try stream.emit(count: w.range.count) { buffer in
                            sum.bytesRead += try execute(w.plan, WindowSink(buffer: buffer, window: w.range, offsets: image.offsets)).bytesRead
                        }
                        try Failpoint.check("streamed", rank: mesh.world.rank)
                    }
                }
                sum.bytesProduced += (image?.fileSize ?? 0) - (image?.header.count ?? 0)
            } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
        return sum
    }

    /// Receives one streamed shard into `path` (a temporary name, then renamed), each piece written
    /// as it arrives. With `failed`, the stream is only drained.
    private func receiveShard(from r: Int, path: String, failed: Bool, stats: inout RankStats) throws {
        var file: SystemFile?
        do {
            let total = try mesh.expertGroup.receiveStream(from: r, tag: HFExport.shardTag) { piece, offset in
                guard !failed else { return }
                if file == nil { file = try SystemFile(creatingAt: temporaryName(for: path)) }
                try file?.write(piece, at: offset)
                if piece.count >= SafetensorsWriter.writebackUnit { file?.startWriteback(offset: offset, count: piece.count) }
            }
            if let f = file {
                try f.sync()
                try renameFile(f.path, path)
                stats.bytesWritten += total
                stats.files += 1
            }
        } catch {
            if let f = file { FS.removeFile(f.path) }
            throw error
        }
    }

    /// Rank 0: the index (every weight sorted by key), config.json and the source's small files
    /// (checked again as they are copied: `Manifest.extraFileSources`).
    package func finish(_ s: Share, staged: StagedOutput) throws {
        var weightMap: [(String, String)] = []
        var totalSize = 0
        for e in s.weightEntries.joined() {
            weightMap.append((e.key, e.file))
            totalSize += e.bytes
        }
        try HFIndex(weightMap: weightMap, totalSize: totalSize).write(into: staged.staging)
        try writeFileAtomically(staged.stagingPath("config.json"), Array(manifest.config.serialized(indent: 2).utf8))
        for (name, from) in try manifest.extraFileSources() {
            try FS.copyFile(from: from, to: staged.stagingPath(name))
        }
    }
}

extension HFExport {
    /// The whole export of this rank's `plan` into `output`: the source's small files checked,
    /// numbering (`layout`'s, if given), staged writes, index, commit, and the report. `experts`:
    /// what the report lists for this rank (default: its range in the manifest). Collective over the mesh.
    package func run(_ plan: TransferPlan, layout: Layout? = nil, experts: ExpertRange? = nil, output: String, force: Bool,
                     inputs: [String], started t0: Double,
                     execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> JobReport {
        let world = mesh.world
        // The source's small files are checked before anything is written: a moved source or a
        // manifest naming a directory that is no checkpoint fails here, not after the shards.
        _ = try world.agreeOnRoot { try manifest.extraFileSources() }
        let s = try share(plan, layout: layout)
        let t1 = monotonicSeconds()
        var stats = RankStats()
        stats.rank = world.rank
        stats.experts = experts ?? (manifest.ranks.indices.contains(world.rank) ? manifest.ranks[world.rank].experts : ExpertRange(start: 0, end: 0))
        stats.tensors = plan.outputs.count
        let staged = try StagedOutput.prepare(output, force: force, inputs: inputs, world: world,
                                              writers: gather ? .gathered : .everyRankShared)
        let exec = try staged.run(write: { try write(s, staged: staged, stats: &stats, execute: execute) },
                                  finish: { try finish(s, staged: staged) })
        let t2 = monotonicSeconds()
        stats.bytesRead = exec.bytesRead
        stats.bytesProduced = exec.bytesProduced
        stats.peakRSS = ProcessFacts.peakResidentBytes()
        var report = JobReport(command: "save-hf", mesh: mesh.shape, worldSize: world.size)
        report.outputPath = output
        report.phases = [("plan", t1 - t0), ("read+split+write+commit", t2 - t1)]
        report.ranks = try RankStats.gather(stats, over: world)
        report.notes = [("shards", .int(Int64(s.total)))]
        return report
    }
}

