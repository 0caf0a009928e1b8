import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

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
            ranks: Manifest.rankEntries(worldSize: world.size, mesh: shape, experts: old.nRoutedExperts),
            tensors: old.tensors, sourceDirectory: old.sourceDirectory, config: old.config, hfPrefix: old.hfPrefix,
            hfKeys: old.hfKeys, extraFiles: old.extraFiles)
        // Every rank's plan (the same on every rank): pieces a rank cannot read travel over MPI.
        let plans = try world.agree {
            try (0..<world.size).map { r -> TransferPlan in
                let inFile = manifest.fileTensors(rank: r)
                return try ReshardPlanner(source: source).plan(range: shape.expertRange(of: r, experts: old.nRoutedExperts))
                    .keeping { inFile.contains($0.name) }
            }
        }
        let plan = plans[world.rank]
        let t1 = monotonicSeconds()
        var stats = RankStats()
        stats.rank = world.rank
        stats.experts = range
        stats.tensors = plan.outputs.count
        let executor = PlanExecutor(chunkBytes: o.chunkBytes, threads: o.threads)
        let exchange = RowExchange(source: source, world: world, plans: plans)
        _ = try RankFileWriter.write(plan, manifest: manifest, range: range, to: o.output, force: o.force, inputs: [o.source] + source.inputPaths,
                                     world: world, stats: &stats) { _, sink in try exchange.run(executor: executor, into: sink) }
        let t2 = monotonicSeconds()
        var report = JobReport(command: "reshard \(old.mesh) -> \(shape)", mesh: shape, worldSize: world.size)
        report.outputPath = o.output
        report.phases = [("plan", t1 - t0), ("read+write+commit", t2 - t1)]
        report.ranks = try RankStats.gather(stats, over: world)
        return (manifest, report)
    }
}
