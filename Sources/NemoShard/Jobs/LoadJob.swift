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
        /// The mesh `run(_:world:)` lays over the world; nil: a 1-D `ep` mesh over the whole world.
        /// (`run(_:mesh:)` takes a `DeviceMesh` instead: this must then be nil or its shape.)
        public var mesh: MeshShape?
        /// dtype of the grouped experts; nil: the rules' default (nemo-0.7: the config's `dtype`,
        /// bf16 when absent; seed: bf16).
        public var dtype: DType?
        /// The key rules (`Rules`): NeMo AutoModel 0.7.0's by default, or the seed rules. The
        /// manifest records them; save-hf, to-hf and reshard follow it.
        public var rules = Rules.default
        /// dtype ModelOpt-quantized weights (FP8, NVFP4) are dequantized into (bf16 or f32; grouped
        /// experts get `dtype`); nil refuses a quantized checkpoint. The loaded state is a plain
        /// checkpoint: no scale tensors, and its config without the ModelOpt `quantization_config`.
        public var dequantize: DType?
        public var force = false
        public var threads = 1
        package var chunkBytes = PlanExecutor.defaultChunkBytes
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

    /// Runs the load on every rank of `world`, over a mesh of `o.mesh` (or a 1-D `ep` mesh).
    /// Collective; every rank gets the same error if any fails.
    public static func run(_ o: Options, world: Collective) throws -> Result {
        let t0 = monotonicSeconds()
        return try run(o, mesh: try DeviceMesh.resolve(o.mesh, world: world), started: t0)
    }

    /// Runs the load over the caller's `mesh`, on every rank of `mesh.world`: the mesh decides
    /// which experts each rank reads, and the result keeps it (`ToHFJob` writes back over it).
    /// `o.mesh` must be nil or `mesh.shape`. Collective; every rank gets the same error if any fails.
    public static func run(_ o: Options, mesh: DeviceMesh) throws -> Result {
        let t0 = monotonicSeconds()
        try mesh.require(o.mesh, else: "the options ask for mesh \(o.mesh.map(\.description) ?? "-") but the job was given a DeviceMesh of \(mesh.shape)")
        return try run(o, mesh: mesh, started: t0)
    }

    private static func run(_ o: Options, mesh: DeviceMesh, started t0: Double) throws -> Result {
        let world = mesh.world
        let shape = mesh.shape
        // Plan: rank 0 reads every header once and broadcasts.
        let checkpoint = try HFCheckpoint.openShared(o.source, world: world)
        let nExperts = checkpoint.config.nRoutedExperts ?? 0
        let range = mesh.expertRange(experts: nExperts)
        let epRank = mesh.expertParallelRank
        let (plan, manifest) = try world.agree { () -> (TransferPlan, Manifest) in
            let planner = try LoadPlanner(checkpoint: checkpoint, expertDType: o.dtype, dequantize: o.dequantize, rules: o.rules)
            let (plan, globals) = try planner.plan(range: range, rank: epRank)
            let ranks = Manifest.rankEntries(worldSize: world.size, mesh: shape, experts: nExperts)
            let manifest = Manifest(
                worldSize: world.size, mesh: shape, nRoutedExperts: nExperts, ranks: ranks,
                tensors: globals,
                sourceDirectory: checkpoint.directory, config: planner.outputConfig, hfPrefix: planner.layout.hfPrefix,
                hfKeys: checkpoint.tensors.map(\.name), extraFiles: planner.outputExtraFiles, rules: o.rules)
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
