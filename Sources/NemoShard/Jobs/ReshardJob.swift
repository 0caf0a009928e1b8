/// Per-rank checkpoint on one mesh -> per-rank checkpoint on another, without a trip through HF:
/// each new rank reads only the row runs of the old grouped tensors that hold its experts, and the
/// non-expert tensors from one old rank file.
public enum ReshardJob {
    public struct Options {
        public var source: String
        public var output: String
        public var mesh: MeshShape?
        public var force = false
        public var threads = 1
        public var chunkBytes = PlanExecutor.defaultChunkBytes
        public init(source: String, output: String) {
            self.source = source
            self.output = output
        }
    }

    public static func run(_ o: Options, world: Collective) throws -> (Manifest, JobReport) {
        let t0 = monotonicSeconds()
        let mesh = try DeviceMesh.resolve(o.mesh, world: world)
        let shape = mesh.shape
        let source = try ShardedCheckpoint.openShared(o.source, world: world)
        let old = source.manifest
        let range = mesh.expertRange(experts: old.nRoutedExperts)
        let manifest = Manifest(
            worldSize: world.size, mesh: shape, nRoutedExperts: old.nRoutedExperts,
            ranks: (0..<world.size).map {
                .init(rank: $0, file: Manifest.rankFileName($0, of: world.size), experts: shape.expertRange(of: $0, experts: old.nRoutedExperts))
            },
            tensors: old.tensors, sourceDirectory: old.sourceDirectory, config: old.config, hfPrefix: old.hfPrefix,
            hfKeys: old.hfKeys, extraFiles: old.extraFiles)
        let inFile = manifest.fileTensors(rank: world.rank)
        let plan = try world.agree { try ReshardPlanner(source: source).plan(range: range).keeping { inFile.contains($0.name) } }
        let t1 = monotonicSeconds()
        var stats = RankStats()
        stats.rank = world.rank
        stats.experts = range
        stats.tensors = plan.outputs.count
        let staged = try StagedOutput.prepare(o.output, force: o.force, inputs: [o.source], world: world)
        let fileName = Manifest.rankFileName(world.rank, of: world.size)
        let exec = try staged.run(write: {
            let w = try SafetensorsWriter(path: staged.stagingPath(fileName), specs: plan.outputs,
                                          metadata: LoadJob.rankFileMetadata(rank: world.rank, range: range, world: world.size,
                                                                                     specs: plan.outputs, manifest: manifest))
            stats.bytesWritten = w.fileSize
            return (try PlanExecutor(chunkBytes: o.chunkBytes, threads: o.threads).run(plan, into: FileSink(writer: w)), [w])
        }, finish: {
            try writeFileAtomically(staged.stagingPath(Manifest.fileName), Array(manifest.toJSON().serialized(indent: 1).utf8))
        })
        let t2 = monotonicSeconds()
        stats.bytesRead = exec.bytesRead
        stats.bytesProduced = exec.bytesProduced
        stats.files = 1
        stats.peakRSS = peakRSSBytes()
        var report = JobReport(command: "reshard \(old.mesh) -> \(shape)", mesh: shape, worldSize: world.size)
        report.outputPath = o.output
        report.phases = [("plan", t1 - t0), ("read+write+commit", t2 - t1)]
        report.ranks = try RankStats.gather(stats, over: world)
        return (manifest, report)
    }
}
