import Glibc

/// Per-rank checkpoint -> Hugging Face checkpoint (`to_hf`), written by every rank in parallel
/// (shared filesystem) or, with `gather`, streamed to rank 0 one shard at a time.
public enum SaveHFJob {
    public struct Options {
        public var source: String
        public var output: String
        public var gather = false
        /// Hugging Face's default of 5GB.
        public var maxShardBytes = 5_000_000_000
        public var exclude: String?
        public var force = false
        public var threads = 1
        public var chunkBytes = PlanExecutor.defaultChunkBytes
        public init(source: String, output: String) {
            self.source = source
            self.output = output
        }
    }

    static let shardTag = 11

    public static func run(_ o: Options, world: Collective) throws -> JobReport {
        let t0 = monotonicSeconds()
        let source = try ShardedCheckpoint.openShared(o.source, world: world)
        let m = source.manifest
        _ = try world.agree {
            guard m.worldSize == world.size else {
                throw UsageError("\(o.source) was written by \(m.worldSize) ranks but this job has \(world.size); run save-hf with -n \(m.worldSize)")
            }
        }
        let filter = try world.agree { try o.exclude.map { try KeyFilter(pattern: $0) } }
        let (outputs, plan) = try world.agree { try ExportPlanner(source: source, exclude: filter).plan(rank: world.rank) }
        let specs = outputs.map(\.spec)
        let groups = ExportPlanner.shardGroups(specs, maxBytes: o.maxShardBytes)
        // One global numbering: rank r's shards follow those of ranks < r.
        let counts = try world.allgather([Int64(groups.count)]).map(Int.init)
        let total = counts.reduce(0, +)
        let first = counts.prefix(world.rank).reduce(0, +)
        func shardName(_ i: Int) -> String { "model-\(pad5(i + 1))-of-\(pad5(total)).safetensors" }
        let weightEntries = try world.allgatherBytes(Array(JSON.array(groups.enumerated().flatMap { k, g in
            g.map { JSON.array([.string(specs[$0].name), .string(shardName(first + k)), .int(Int64(specs[$0].byteCount))]) }
        }).serialized().utf8))
        let t1 = monotonicSeconds()

        var stats = RankStats()
        stats.rank = world.rank
        stats.experts = m.ranks[world.rank].experts
        stats.tensors = specs.count
        let staged = try StagedOutput.prepare(o.output, force: o.force, inputs: [o.source], world: world)
        let executor = PlanExecutor(chunkBytes: o.chunkBytes, threads: o.threads)

        func subPlan(_ group: [Int]) -> TransferPlan {
            var p = TransferPlan(files: plan.files, outputs: group.map { specs[$0] })
            let position = Dictionary(uniqueKeysWithValues: group.enumerated().map { ($1, $0) })
            for piece in plan.pieces {
                if let i = position[piece.output] {
                    p.pieces.append(Piece(source: piece.source, transform: piece.transform, output: i, destOffset: piece.destOffset))
                }
            }
            return p
        }

        let exec = try staged.run(write: { () -> (ExecutionStats, [SafetensorsWriter]) in
            var sum = ExecutionStats()
            func add(_ e: ExecutionStats) {
                sum.bytesRead += e.bytesRead
                sum.bytesProduced += e.bytesProduced
            }
            if !o.gather {
                var writers: [SafetensorsWriter] = []
                var map: [(writer: Int, tensor: Int)] = Array(repeating: (0, 0), count: specs.count)
                for (k, g) in groups.enumerated() {
                    let w = try SafetensorsWriter(path: staged.stagingPath(shardName(first + k)),
                                                  specs: g.map { specs[$0] }, metadata: [("format", "pt")])
                    for (j, i) in g.enumerated() { map[i] = (k, j) }
                    writers.append(w)
                    stats.bytesWritten += w.fileSize
                }
                add(try executor.run(plan, into: FileSink(writers: writers, map: map)))
                stats.files = writers.count
                return (sum, writers)
            }
            // --gather: rank 0 writes everything; the others send one shard image at a time.
            if world.rank != 0 {
                var failure: Error?
                for g in groups {
                    var message: [UInt8] = [0]
                    if failure == nil {
                        do {
                            let sink = ImageSink(specs: g.map { specs[$0] }, metadata: [("format", "pt")])
                            add(try executor.run(subPlan(g), into: sink))
                            try world.send(UnsafeRawBufferPointer(sink.image.bytes), to: 0, tag: shardTag)
                            continue
                        } catch { failure = error; message = [1] }
                    }
                    try message.withUnsafeBytes { try world.send($0, to: 0, tag: shardTag) }
                }
                if let failure { throw failure }
                return (sum, [])
            }
            var writers: [SafetensorsWriter] = []
            var failure: Error?
            for (k, g) in groups.enumerated() {
                do {
                    let w = try SafetensorsWriter(path: staged.stagingPath(shardName(k)),
                                                  specs: g.map { specs[$0] }, metadata: [("format", "pt")])
                    add(try executor.run(subPlan(g), into: FileSink(writer: w)))
                    writers.append(w)
                    stats.bytesWritten += w.fileSize
                } catch { failure = failure ?? error }
            }
            for r in 1..<max(world.size, 1) {
                let rFirst = counts.prefix(r).reduce(0, +)
                for k in 0..<counts[r] {
                    let image = try world.receive(from: r, tag: shardTag)
                    guard failure == nil else { continue }
                    guard image.count > 1 else { continue }  // that rank failed; it reports its own error
                    do {
                        let path = staged.stagingPath(shardName(rFirst + k))
                        let tmp = temporaryName(for: path)
                        let f = try SystemFile(creatingAt: tmp)
                        try image.withUnsafeBytes { try f.write($0, at: 0) }
                        try f.sync()
                        try renameFile(tmp, path)
                        stats.bytesWritten += image.count
                        stats.files += 1
                    } catch { failure = error }
                }
            }
            stats.files += writers.count
            if let failure { throw failure }
            return (sum, writers)
        }, finish: {
            var weightMap: [(String, String)] = []
            var totalSize = 0
            for part in weightEntries {
                for e in (try JSON.parse(part)).arrayValue ?? [] {
                    guard let a = e.arrayValue, let k = a[0].stringValue, let f = a[1].stringValue, let n = a[2].intValue else { continue }
                    weightMap.append((k, f))
                    totalSize += Int(n)
                }
            }
            weightMap.sort { $0.0 < $1.0 }
            let index = JSON.object([("metadata", .object([("total_size", .int(Int64(totalSize)))])),
                                     ("weight_map", .object(weightMap.map { ($0.0, .string($0.1)) }))])
            try writeFileAtomically(staged.stagingPath(HFCheckpoint.indexName), Array(index.serialized(indent: 2).utf8))
            try writeFileAtomically(staged.stagingPath("config.json"), Array(m.config.serialized(indent: 2).utf8))
            for name in m.extraFiles where !name.contains("/") {
                let from = FS.join(m.sourceDirectory, name)
                if FS.exists(from) { try FS.copyFile(from: from, to: staged.stagingPath(name)) }
            }
        })
        let t2 = monotonicSeconds()
        stats.bytesRead = exec.bytesRead
        stats.bytesProduced = exec.bytesProduced
        stats.peakRSS = peakRSSBytes()
        var report = JobReport(command: o.gather ? "save-hf --gather" : "save-hf", mesh: m.mesh, worldSize: world.size)
        report.outputPath = o.output
        report.phases = [("plan", t1 - t0), ("read+split+write+commit", t2 - t1)]
        report.ranks = try RankStats.gather(stats, over: world)
        report.notes = [("shards", .int(Int64(total)))]
        return report
    }
}
