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
    /// How the routed experts are laid out: per expert as the source had them (default), or
    /// stacked as transformers 5 keeps them (`save_pretrained(save_original_format=False)`).
    public var format: HFExpertFormat = .original
    /// Write every tensor in its source checkpoint's dtype, nothing forced to F32 (a BF16 source
    /// comes back byte for byte); by default the manifest's rules choose (nemo-0.7: the source's
    /// dtypes, then F32 for Mamba `A_log`/`D`/`dt_bias` and `e_score_correction_bias`).
    public var keepSourceDTypes = false
    public init(output: String) { self.output = output }
}

/// Per-rank checkpoint -> Hugging Face checkpoint (`to_hf`), staged and committed by `StagedOutput`,
/// with any number of ranks: the shards are those the checkpoint's own world size would write
/// (`ExportLayout`: every old owner rank's share, split and numbered as before), dealt out over
/// this job's ranks in runs of about equal bytes; each shard is read from its old rank file by a
/// rank that can see it (on node-local disks, the file's reader), so the files are the same for
/// every world size. By default every rank writes its own shards (`.everyRankShared`: the output
/// must be on a filesystem every node shares; node-local storage is refused). With `gather`, only the ranks that
/// can write into rank 0's staging directory write (`.gathered`: rank 0's node, or every node on a
/// shared filesystem), and the others stream their shards to them.
public enum SaveHFJob {
    /// The per-rank checkpoint to read, and the export's options (reachable as `o.gather`, ...).
    @dynamicMemberLookup
    public struct Options {
        public var source: String
        public var export: HFExportOptions
        package var chunkBytes = PlanExecutor.defaultChunkBytes
        /// Called on each rank that sets it with (bytes done, total) over ALL ranks, as
        /// `LoadJob.Options.progress` is: this rank's fraction of its own share scaled to the
        /// total (an estimate), one call at a time; the last call is (total, total).
        public var progress: (@Sendable (Int, Int) -> Void)?
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
        // The export ranks form their own 1-D mesh, whatever mesh and world size wrote the checkpoint.
        let mesh = try DeviceMesh(shape: try world.agree { try MeshShape.expertParallel(world.size) }, world: world)
        let filter = try world.agree { try o.exclude.map { try KeyFilter(pattern: $0) } }
        if o.format == .fused {
            // A stacked tensor holds every rank's experts: its writer reads rows from every rank file.
            _ = try world.agree {
                for r in 0..<world.size { for f in m.ranks.indices where !source.canRead(rank: r, file: f) {
                    throw UsageError("--format fused reads each stacked expert tensor's rows from every rank file, but rank \(r) cannot read \(m.ranks[f].file) (node-local disks); export with --format original, or put the per-rank checkpoint on a filesystem every node shares")
                } }
            }
        }
        let layout = try world.agree { try ExportLayout(source: source, exclude: filter, maxShardBytes: o.maxShardBytes, format: o.format,
                                                             keepSourceDTypes: o.keepSourceDTypes) }
        let numbers = layout.assign(ranks: world.size, canRead: { source.canRead(rank: $0, file: $1) }) { file in
            source.readers.indices.contains(file) ? source.readers[file] : file
        }
        let mine = layout.plan(shards: numbers[world.rank])
        let inputs = [o.source] + source.inputPaths + [m.sourceDirectory] + m.extraFiles.map { FS.join(m.sourceDirectory, $0) }
        let executor = PlanExecutor(chunkBytes: o.chunkBytes, threads: o.threads, prefetch: true)
        let progress = try JobProgress(o.progress, share: mine.plan.bytesToRead, world: world)
        var report = try HFExport(manifest: m, mesh: mesh, maxShardBytes: o.maxShardBytes, gather: o.gather)
            .run(mine.plan, layout: HFExport.Layout(groups: mine.groups, numbers: numbers),
                 experts: layout.expertSpan(shards: numbers[world.rank]), output: o.output, force: o.force, inputs: inputs, started: t0) {
                let e = try executor.run($0, into: $1, progress: progress.run())
                progress.add(e.bytesRead)
                return e
            }
        progress.finish()
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
        let locate = { (name: String) in position[name].map { ExportPlanner.Location(file: $0, offset: 0) } }
        let writesExperts = loaded.mesh.isPrimaryReplica(experts: m.nRoutedExperts)
        var export = HFExport(manifest: m, mesh: loaded.mesh, maxShardBytes: o.maxShardBytes, gather: o.gather)
        let plan = try world.agree { () -> TransferPlan in
            var planner = ExportPlanner(manifest: m, exclude: filter)
            planner.keepSourceDTypes = o.keepSourceDTypes
            guard o.format == .fused else {
                return try planner.plan(rank: world.rank, writesExperts: writesExperts, sources: names, locate: locate)
            }
            // Every stacked tensor is rank 0's; the other ranks send it their rows.
            let share = try planner.fusedShare(rank: world.rank, owner: { _ in 0 }, sources: names, locate: locate) { r, name in
                r == world.rank ? locate(name) : nil
            }
            let rows = try planner.stackedRows(rank: world.rank, writesExperts: writesExperts, owner: { _ in 0 }, sources: names, locate: locate)
            export.stackedRows = StackedRowExchange(world: world, remote: share.remote, rows: rows.plan, offsets: rows.offsets)
            return share.plan
        }
        let tensors = loaded.tensors.map(\.1)
        let executor = PlanExecutor(threads: o.threads)
        var report = try export
            .run(plan, output: o.output, force: o.force, inputs: loaded.inputs, started: t0) {
                try executor.run($0, from: tensors, into: $1)
            }
        report.command = o.gather ? "to-hf from memory --gather" : "to-hf from memory"
        return report
    }
}
