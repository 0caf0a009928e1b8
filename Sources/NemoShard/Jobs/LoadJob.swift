import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// HF checkpoint -> each rank's internal state dict (`from_hf` over a device mesh), held in memory
/// or written as a per-rank checkpoint. Rank 0 reads the index, config and headers once and sends
/// the plan; each rank then reads only its own experts and the non-expert tensors.
public enum LoadJob {
    public struct Options {
        public var source: String
        /// Per-rank checkpoint directory; nil keeps the state in memory.
        public var output: String?
        /// nil: a 1-D `ep` mesh over the whole world.
        public var mesh: MeshShape?
        public var dtype: DType = .bf16
        public var force = false
        public var threads = 1
        public var chunkBytes = PlanExecutor.defaultChunkBytes
        /// In-memory loads: non-expert tensors become private copy-on-write mappings of their byte
        /// ranges in the source files (as safetensors' own loader does) instead of fresh copies.
        public var mapNonExpertTensors = true
        /// Called on each rank that sets it with (bytes done, total) over ALL ranks, from the
        /// executor's workers, one call at a time. "Done" is this rank's fraction of its own share
        /// scaled to the total (the ranks' shares are balanced by construction): an estimate.
        public var progress: (@Sendable (Int, Int) -> Void)?

        public init(source: String) { self.source = source }
    }

    /// One rank's outcome.
    public struct Result {
        /// The mesh the state is laid over (its `ep` communicator carries it back with `ToHFJob`).
        public let mesh: DeviceMesh
        public let experts: ExpertRange
        /// The rank's internal state dict (empty when written to disk).
        public let tensors: [(String, Tensor)]
        public let manifest: Manifest
        public let report: JobReport
        /// Every directory and file the state was read from (an export must not replace them).
        package let inputs: [String]

        /// The state dict as a dictionary.
        public var stateDict: [String: Tensor] { Dictionary(tensors, uniquingKeysWith: { a, _ in a }) }
    }

    /// Runs the load on every rank of `world`. Every rank gets the same error if any fails.
    public static func run(_ o: Options, world: Collective) throws -> Result {
        let t0 = monotonicSeconds()
        let mesh = try DeviceMesh.resolve(o.mesh, world: world)
        let shape = mesh.shape
        // Plan: rank 0 reads every header once and broadcasts.
        let checkpoint = try HFCheckpoint.openShared(o.source, world: world)
        let nExperts = checkpoint.config.nRoutedExperts ?? 0
        let range = mesh.expertRange(experts: nExperts)
        let epRank = mesh.expertParallelRank
        let (plan, manifest) = try world.agree { () -> (TransferPlan, Manifest) in
            let planner = try LoadPlanner(checkpoint: checkpoint, expertDType: o.dtype)
            let (plan, globals) = try planner.plan(range: range, rank: epRank)
            let ranks = Manifest.rankEntries(worldSize: world.size, mesh: shape, experts: nExperts)
            let manifest = Manifest(
                worldSize: world.size, mesh: shape, nRoutedExperts: nExperts, ranks: ranks,
                tensors: globals,
                sourceDirectory: checkpoint.directory, config: checkpoint.config.json, hfPrefix: planner.layout.hfPrefix,
                hfKeys: checkpoint.tensors.map(\.name), extraFiles: checkpoint.extraFiles)
            return (plan, manifest)
        }
        let t1 = monotonicSeconds()
        Failpoint.hit("planned", rank: world.rank)

        var report = JobReport(command: o.output == nil ? "load (in memory)" : "load", mesh: shape, worldSize: world.size)
        report.outputPath = o.output
        var stats = RankStats()
        stats.rank = world.rank
        stats.experts = range
        stats.tensors = plan.outputs.count
        let executor = PlanExecutor(chunkBytes: o.chunkBytes, threads: o.threads)
        // A per-rank checkpoint stores each non-expert tensor once, in its holder's file.
        let inFile = manifest.fileTensors(rank: world.rank)
        let filePlan = plan.keeping { inFile.contains($0.name) }
        let allBytes = Int(try world.allreduce(Int64((o.output == nil ? plan : filePlan).bytesToRead), .sum))
        func progress(of plan: TransferPlan) -> (@Sendable (Int) -> Void)? {
            let mine = Double(max(plan.bytesToRead, 1))
            return o.progress.map { p in { @Sendable (done: Int) in p(Int(Double(done) / mine * Double(allBytes)), allBytes) } }
        }

        guard let outPath = o.output else {
            let sink = MemorySink(outputs: plan.outputs, mapWholeCopies: o.mapNonExpertTensors)
            let exec = try world.agree { try executor.run(plan, into: sink, progress: progress(of: plan)) }
            let t2 = monotonicSeconds()
            stats.bytesRead = exec.bytesRead
            stats.bytesProduced = exec.bytesProduced
            stats.peakRSS = ProcessFacts.peakResidentBytes()
            report.phases = [("plan", t1 - t0), ("read+merge", t2 - t1)]
            report.ranks = try RankStats.gather(stats, over: world)
            return Result(mesh: mesh, experts: range, tensors: sink.namedTensors, manifest: manifest, report: report,
                          inputs: [o.source] + checkpoint.inputPaths)
        }

        let written = try RankFileWriter.write(filePlan, manifest: manifest, range: range, to: outPath, force: o.force,
                                               inputs: [o.source] + checkpoint.inputPaths, world: world, stats: &stats) {
            try executor.run($0, into: $1, progress: progress(of: filePlan))
        }.writtenAt
        let t2 = monotonicSeconds()
        report.phases = [("plan", t1 - t0), ("read+merge+write", written - t1), ("sync+commit", t2 - written)]
        report.ranks = try RankStats.gather(stats, over: world)
        return Result(mesh: mesh, experts: range, tensors: [], manifest: manifest, report: report, inputs: [o.source] + checkpoint.inputPaths)
    }
}
