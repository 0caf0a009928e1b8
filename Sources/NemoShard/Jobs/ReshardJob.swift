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
        /// The new mesh `run(_:world:)` lays over the world; nil: a 1-D `ep` mesh over the whole
        /// world. (`run(_:mesh:)` takes a `DeviceMesh` instead: this must then be nil or its shape.)
        public var mesh: MeshShape?
        public var force = false
        public var threads = 1
        package var chunkBytes = PlanExecutor.defaultChunkBytes
        /// Called on each rank that sets it with (bytes done, total) over ALL ranks, as
        /// `LoadJob.Options.progress` is: this rank's fraction of its own share scaled to the
        /// total (an estimate), one call at a time; the last call is (total, total).
        public var progress: (@Sendable (Int, Int) -> Void)?
        public init(source: String, output: String) {
            self.source = source
            self.output = output
        }
    }

    /// Reshards onto a mesh of `o.mesh` (or a 1-D `ep` mesh) over every rank of `world`; returns
    /// the new checkpoint's manifest and the report. Collective.
    public static func run(_ o: Options, world: Collective) throws -> (Manifest, JobReport) {
        let t0 = monotonicSeconds()
        return try run(o, mesh: try DeviceMesh.resolve(o.mesh, world: world), started: t0)
    }

    /// Reshards onto the caller's `mesh`, on every rank of `mesh.world`; `o.mesh` must be nil or
    /// `mesh.shape`. Collective.
    public static func run(_ o: Options, mesh: DeviceMesh) throws -> (Manifest, JobReport) {
        let t0 = monotonicSeconds()
        try mesh.require(o.mesh, else: "the options ask for mesh \(o.mesh.map(\.description) ?? "-") but the job was given a DeviceMesh of \(mesh.shape)")
        return try run(o, mesh: mesh, started: t0)
    }

    private static func run(_ o: Options, mesh: DeviceMesh, started t0: Double) throws -> (Manifest, JobReport) {
        let world = mesh.world
        let shape = mesh.shape
        let source = try ShardedCheckpoint.openShared(o.source, world: world)
        let old = source.manifest
        let range = mesh.expertRange(experts: old.nRoutedExperts)
        let manifest = Manifest(
            worldSize: world.size, mesh: shape, nRoutedExperts: old.nRoutedExperts,
            ranks: Manifest.rankEntries(worldSize: world.size, mesh: shape, experts: old.nRoutedExperts),
            tensors: old.tensors, sourceDirectory: old.sourceDirectory, config: old.config, hfPrefix: old.hfPrefix,
            hfKeys: old.hfKeys, extraFiles: old.extraFiles, rules: old.rules)
        // Every rank's plan (the same on every rank): pieces a rank cannot read travel over MPI.
        // Where every rank reads every old file (a shared filesystem) nothing travels, and only
        // this rank's plan is made (all of them would cost world size x tensors on every rank).
        let readsEverything = (0..<world.size).allSatisfy { r in old.ranks.indices.allSatisfy { source.canRead(rank: r, file: $0) } }
        let plans = try world.agree {
            try (0..<world.size).map { r -> TransferPlan in
                guard r == world.rank || !readsEverything else { return TransferPlan(files: []) }
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
        let executor = PlanExecutor(chunkBytes: o.chunkBytes, threads: o.threads, prefetch: true)
        let exchange = RowExchange(source: source, world: world, plans: plans)
        let progress = try JobProgress(o.progress, share: plan.bytesToRead, world: world)
        _ = try RankFileWriter.write(plan, manifest: manifest, range: range, to: o.output, force: o.force, inputs: [o.source] + source.inputPaths,
                                     world: world, stats: &stats) { _, sink in try exchange.run(executor: executor, into: sink, progress: progress.run()) }
        progress.finish()
        let t2 = monotonicSeconds()
        var report = JobReport(command: "reshard \(old.mesh) -> \(shape)", mesh: shape, worldSize: world.size)
        report.outputPath = o.output
        report.phases = [("plan", t1 - t0), ("read+write+commit", t2 - t1)]
        report.ranks = try RankStats.gather(stats, over: world)
        return (manifest, report)
    }
}
