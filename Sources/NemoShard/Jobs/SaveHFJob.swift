import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// Where and how a Hugging Face export is written; shared by `save-hf` and `to-hf`.
public struct HFExportOptions {
    public var output: String
    /// Only the ranks that can write into rank 0's staging directory write (rank 0's node, or every
    /// node on a shared filesystem); the others stream their shards to them (`StagedOutput.Writers.gathered`).
    public var gather = false
    /// Hugging Face's default of 5GB.
    public var maxShardBytes = 5_000_000_000
    /// Drop HF keys this regular expression matches at their start.
    public var exclude: String?
    public var force = false
    public var threads = 1
    public init(output: String) { self.output = output }
}

/// Per-rank checkpoint -> Hugging Face checkpoint (`to_hf`), staged and committed by `StagedOutput`.
/// By default every rank writes its own shards (`.everyRankShared`: the output must be on a
/// filesystem every node shares; node-local storage is refused). With `gather`, only the ranks that
/// can write into rank 0's staging directory write (`.gathered`: rank 0's node, or every node on a
/// shared filesystem), and the others stream their shards to them. Mesh replicas write no experts.
public enum SaveHFJob {
    /// The per-rank checkpoint to read, and the export's options (reachable as `o.gather`, ...).
    @dynamicMemberLookup
    public struct Options {
        public var source: String
        public var export: HFExportOptions
        public var chunkBytes = PlanExecutor.defaultChunkBytes
        public init(source: String, output: String) {
            self.source = source
            export = HFExportOptions(output: output)
        }

        public subscript<T>(dynamicMember path: WritableKeyPath<HFExportOptions, T>) -> T {
            get { export[keyPath: path] }
            set { export[keyPath: path] = newValue }
        }
    }

    public static func run(_ o: Options, world: Collective) throws -> JobReport {
        let t0 = monotonicSeconds()
        let source = try ShardedCheckpoint.openShared(o.source, world: world)
        let m = source.manifest
        _ = try world.agree {
            guard m.worldSize == world.size else {
                throw UsageError("\(o.source) was written by \(m.worldSize) ranks but this job has \(world.size); export it with \(m.worldSize) ranks")
            }
        }
        let mesh = try DeviceMesh(shape: m.mesh, world: world)
        let filter = try world.agree { try o.exclude.map { try KeyFilter(pattern: $0) } }
        let rankFile = source.path(ofRank: world.rank)
        var plan = try world.agree {
            try ExportPlanner(manifest: m, exclude: filter).plan(rank: world.rank, writesExperts: mesh.isPrimaryReplica(experts: m.nRoutedExperts), sources: [rankFile]) { name in
                source.locations[world.rank][name].map { ExportPlanner.Location(file: 0, offset: $0.offset) }
            }
        }
        if source.fingerprints.indices.contains(world.rank), let recorded = source.fingerprints[world.rank] { plan.fingerprints[0] = recorded }
        let inputs = [o.source] + source.inputPaths + [m.sourceDirectory] + m.extraFiles.map { FS.join(m.sourceDirectory, $0) }
        let executor = PlanExecutor(chunkBytes: o.chunkBytes, threads: o.threads)
        var report = try HFExport(manifest: m, mesh: mesh, maxShardBytes: o.maxShardBytes, gather: o.gather)
            .run(plan, output: o.output, force: o.force, inputs: inputs, started: t0) { try executor.run($0, into: $1) }
        report.command = o.gather ? "save-hf --gather" : "save-hf"
        return report
    }
}

/// The way back from memory: a `LoadJob.Result` held on every rank of its mesh is written as a
/// Hugging Face checkpoint without a per-rank checkpoint in between (`to_hf` of each rank's state
/// dict: experts transposed back under their global ids, non-expert tensors written once).
public enum ToHFJob {
    public typealias Options = HFExportOptions

    /// Collective over `loaded.mesh`.
    public static func run(_ loaded: LoadJob.Result, _ o: Options) throws -> JobReport {
        let t0 = monotonicSeconds()
        let world = loaded.mesh.world
        let m = loaded.manifest
        let names = loaded.tensors.map(\.0)
        let position = Dictionary(names.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let filter = try world.agree { try o.exclude.map { try KeyFilter(pattern: $0) } }
        let plan = try world.agree {
            try ExportPlanner(manifest: m, exclude: filter).plan(rank: world.rank, writesExperts: loaded.mesh.isPrimaryReplica(experts: m.nRoutedExperts), sources: names) { name in
                position[name].map { ExportPlanner.Location(file: $0, offset: 0) }
            }
        }
        let tensors = loaded.tensors.map(\.1)
        let executor = PlanExecutor(threads: o.threads)
        var report = try HFExport(manifest: m, mesh: loaded.mesh, maxShardBytes: o.maxShardBytes, gather: o.gather)
            .run(plan, output: o.output, force: o.force, inputs: loaded.inputs, started: t0) {
                try executor.run($0, from: tensors, into: $1)
            }
        report.command = o.gather ? "to-hf from memory --gather" : "to-hf from memory"
        return report
    }
}
