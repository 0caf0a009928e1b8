import CKernels
import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// Compares two checkpoints of any kinds (HF or per-rank, any mesh) in the global internal view:
/// the same tensors, dtypes, shapes and bytes, checked with a CRC-32C per expert slice.
/// Under mpirun the ranks share the slices.
public enum VerifyJob {
    public struct Options {
        public var a: String
        public var b: String
        /// dtype of grouped experts when an HF checkpoint is viewed through `from_hf`; nil: the
        /// rules' default (as `load` without a dtype produces them).
        public var dtype: DType?
        /// The rules an HF checkpoint is viewed through; nil: those of the per-rank checkpoint
        /// compared with it (its manifest's), else `Rules.default`.
        public var rules: Rules?
        /// An HF checkpoint's ModelOpt-quantized weights are viewed dequantized into this dtype, as
        /// `load` with `LoadJob.Options.dequantize` produces them; nil refuses them.
        package var dequantize: DType?
        /// Count what the comparison otherwise ignores (keys `from_hf` drops, config.json) as differences.
        public var strict = false
        package var chunkBytes = PlanExecutor.defaultChunkBytes
        /// Called on each rank that sets it with (bytes done, total) over ALL ranks, as
        /// `LoadJob.Options.progress` is: this rank's fraction of its own share of both sides
        /// scaled to the total (an estimate), one call at a time; the last call is (total, total).
        public var progress: (@Sendable (Int, Int) -> Void)?
        public init(a: String, b: String) {
            self.a = a
            self.b = b
        }
    }

    /// One tensor of the logical view with its slice checksums.
    public struct TensorSum: Equatable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        package let grouped: Bool
        package var slices: [UInt32]

        /// One checksum for the whole tensor (CRC-32C of the slice CRCs, little-endian).
        public var checksum: UInt32 {
            var bytes: [UInt8] = []
            for c in slices { for k in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: c >> (8 * UInt32(k)))) } }
            return bytes.withUnsafeBytes { ns_crc32c(0, $0.baseAddress, $0.count) }
        }
    }

    /// The verdict.
    public struct Result {
        public let a: [TensorSum]
        public let b: [TensorSum]
        public let differences: [String]
        /// What the internal view does not show but the two checkpoints do not share: keys one side
        /// has that `from_hf` drops, and config.json fields. Differences under `strict`.
        public let ignored: [String]
        public let report: JobReport
        public var equal: Bool { differences.isEmpty }

        package func json() -> JSON {
            func sums(_ list: [TensorSum]) -> JSON {
                .object(list.map { ($0.name, .string(hex($0.checksum))) })
            }
            return .object([("equal", .bool(equal)), ("tensors_a", .int(Int64(a.count))), ("tensors_b", .int(Int64(b.count))),
                            ("differences", .array(differences.prefix(100).map { .string($0) })),
                            ("difference_count", .int(Int64(differences.count))),
                            ("ignored", .array(ignored.map { .string($0) })),
                            ("checksums_a", sums(a)), ("checksums_b", sums(b)), ("report", report.json())])
        }
    }

    /// A checkpoint opened for verification: its plan for the whole global view.
    package struct View {
        package let plan: TransferPlan
        package let grouped: [Bool]
        /// Source HF keys that `from_hf` drops, with the reason.
        package let dropped: [String: String]
        package let config: JSON
        /// The per-rank checkpoint behind a per-rank view (its files may be spread over nodes).
        package var sharded: ShardedCheckpoint?
        /// The rules the view follows (a per-rank checkpoint's: its manifest's).
        package var rules = Rules.default
    }

    /// The HF keys of `keys` that `adapter` drops, with the reason.
    package static func droppedKeys(_ keys: [String], _ adapter: NemotronV3Adapter) -> [String: String] {
        var out: [String: String] = [:]
        for k in keys { if case let .drop(why)? = try? adapter.classify(k) { out[k] = why.description } }
        return out
    }

    package static func view(_ path: String, dtype: DType?, dequantize: DType? = nil, rules: Rules? = nil, world: Collective) throws -> View {
        if isPerRank(path) {
            let s = try ShardedCheckpoint.openShared(path, world: world)
            let all = ExpertRange(start: 0, end: s.manifest.nRoutedExperts)
            let plan = try ReshardPlanner(source: s).plan(range: all)
            let sharded = Set(s.manifest.tensors.filter(\.expertSharded).map(\.name))
            let adapter = try s.manifest.adapter()
            return View(plan: plan, grouped: plan.outputs.map { sharded.contains($0.name) },
                        dropped: droppedKeys(s.manifest.hfKeys, adapter), config: s.manifest.config, sharded: s, rules: s.manifest.rules)
        }
        let rules = rules ?? .default
        let c = try HFCheckpoint.openShared(path, world: world)
        let (planner, plan, globals) = try world.agree { () -> (LoadPlanner, TransferPlan, [LoadPlanner.GlobalTensor]) in
            let planner = try LoadPlanner(checkpoint: c, expertDType: dtype, dequantize: dequantize, rules: rules)
            let (plan, globals) = try planner.plan(range: ExpertRange(start: 0, end: c.config.nRoutedExperts ?? 0), rank: nil)
            return (planner, plan, globals)
        }
        let grouped = Set(globals.filter(\.expertSharded).map(\.name))
        let dropped = Dictionary(planner.layout.dropped.map { ($0.key, $0.reason.description) }, uniquingKeysWith: { a, _ in a })
        return View(plan: plan, grouped: plan.outputs.map { grouped.contains($0.name) }, dropped: dropped, config: planner.outputConfig,
                    rules: rules)
    }

    /// Whether `path` is a per-rank checkpoint (it holds `nemoshard.json`).
    package static func isPerRank(_ path: String) -> Bool { FS.exists(FS.join(path, Manifest.fileName)) }

    /// The slices each output of `v` is checksummed in: one per expert of a grouped tensor, else one.
    package static func sliceCounts(_ v: View) -> [Int] {
        v.plan.outputs.indices.map { v.grouped[$0] ? v.plan.outputs[$0].shape.first ?? 0 : 1 }
    }

    /// The rank of `ranks` that checksums slice `s` of the tensor `name`.
    package static func sliceOwner(_ name: String, _ s: Int, ranks: Int) -> Int { Int((fnv1a(name) &+ UInt64(s)) % UInt64(ranks)) }

    /// Rank `rank`'s share of `v` among `ranks`: the pieces of the slices it owns.
    package static func share(_ v: View, of rank: Int, ranks: Int) -> TransferPlan {
        let outs = v.plan.outputs
        let slices = sliceCounts(v)
        func owner(_ o: Int, _ s: Int) -> Int { sliceOwner(outs[o].name, s, ranks: ranks) }
        var share = TransferPlan(files: v.plan.files, fingerprints: v.plan.fingerprints, outputs: outs)
        for p in v.plan.pieces {
            let sliceBytes = slices[p.output] > 0 ? outs[p.output].byteCount / slices[p.output] : 0
            let outBytes = p.transform.outputBytes(sourceBytes: p.source.count)
            if v.grouped[p.output], p.transform == .copy, sliceBytes > 0, outBytes > sliceBytes {
                // a run of several experts: one piece per expert
                share.pieces += p.split(max: sliceBytes).filter { owner(p.output, $0.destOffset / sliceBytes) == rank }
                continue
            }
            let s = sliceBytes > 0 ? p.destOffset / sliceBytes : 0
            if owner(p.output, s) == rank { share.pieces.append(p) }
        }
        return share
    }

    /// This rank's share of `view`: slices whose (name, slice) hash falls on it; returns checksums.
    /// `progress` counts the bytes this rank reads.
    package static func checksum(_ v: View, world: Collective, chunkBytes: Int, stats: inout RankStats,
                                 progress: JobProgress? = nil) throws -> [TensorSum] {
        let outs = v.plan.outputs
        let slices = sliceCounts(v)
        func owner(_ o: Int, _ s: Int) -> Int { sliceOwner(outs[o].name, s, ranks: world.size) }
        func share(of rank: Int) -> TransferPlan { VerifyJob.share(v, of: rank, ranks: world.size) }
        let sink = ChecksumSink(outputs: outs, slices: slices)
        let executor = PlanExecutor(chunkBytes: chunkBytes)
        let e = try v.sharded.map { source in
            // Rank files on other nodes' disks are read there and their slices sent here.
            try RowExchange(source: source, world: world, plans: (0..<world.size).map(share(of:)))
                .run(executor: executor, into: sink, progress: progress?.run())
        } ?? executor.run(share(of: world.rank), into: sink, progress: progress?.run())
        progress?.add(e.bytesRead)
        stats.bytesRead += e.bytesRead
        // Combine: slice s of output o comes from its owner.
        var mine: [UInt32] = []
        for o in outs.indices { for s in 0..<slices[o] where owner(o, s) == world.rank { mine.append(sink.checksums(o)[s]) } }
        let decoded = try world.allgather(mine)
        var cursors = [Int](repeating: 0, count: world.size)
        return outs.indices.map { o in
            let sums = (0..<slices[o]).map { s -> UInt32 in
                let r = owner(o, s)
                defer { cursors[r] += 1 }
                return decoded[r][cursors[r]]
            }
            return TensorSum(name: outs[o].name, dtype: outs[o].dtype, shape: outs[o].shape, grouped: v.grouped[o], slices: sums)
        }
    }

    public static func run(_ o: Options, world: Collective) throws -> Result {
        let t0 = monotonicSeconds()
        // A per-rank side is opened first: an HF side is viewed through its rules.
        let bFirst = isPerRank(o.b) && !isPerRank(o.a)
        let first = try view(bFirst ? o.b : o.a, dtype: o.dtype, dequantize: o.dequantize, rules: o.rules, world: world)
        let second = try view(bFirst ? o.a : o.b, dtype: o.dtype, dequantize: o.dequantize, rules: o.rules ?? first.rules, world: world)
        let (va, vb) = bFirst ? (second, first) : (first, second)
        let t1 = monotonicSeconds()
        var stats = RankStats()
        stats.rank = world.rank
        let mine = [va, vb].reduce(0) { $0 + share($1, of: world.rank, ranks: world.size).bytesToRead }
        let progress = try JobProgress(o.progress, share: mine, world: world)
        let (sa, sb) = try world.agree { () -> ([TensorSum], [TensorSum]) in
            (try checksum(va, world: world, chunkBytes: o.chunkBytes, stats: &stats, progress: progress),
             try checksum(vb, world: world, chunkBytes: o.chunkBytes, stats: &stats, progress: progress))
        }
        progress.finish()
        let t2 = monotonicSeconds()
        stats.peakRSS = ProcessFacts.peakResidentBytes()
        var report = JobReport(command: "verify", mesh: nil, worldSize: world.size)
        report.phases = [("plan", t1 - t0), ("read+checksum", t2 - t1)]
        report.ranks = try RankStats.gather(stats, over: world)
        let ignored = ignoredDifferences(va, vb)
        return Result(a: sa, b: sb, differences: compare(sa, sb) + (o.strict ? ignored : []), ignored: ignored, report: report)
    }

    /// Dropped keys only one side has, and config.json fields that differ.
    package static func ignoredDifferences(_ a: View, _ b: View) -> [String] {
        var out: [String] = []
        for (side, mine, theirs) in [("A", a.dropped, b.dropped), ("B", b.dropped, a.dropped)] {
            for k in mine.keys.sorted() where theirs[k] == nil {
                out.append("\(k): only in \(side), dropped by from_hf (\(mine[k] ?? ""))")
            }
        }
        let ca = a.config.objectValue ?? [], cb = b.config.objectValue ?? []
        let ma = Dictionary(ca, uniquingKeysWith: { x, _ in x }), mb = Dictionary(cb, uniquingKeysWith: { x, _ in x })
        let fields = (ca.map(\.0) + cb.map(\.0).filter { ma[$0] == nil }).filter { ma[$0] != mb[$0] }
        if !fields.isEmpty { out.append("config.json differs in \(fields.map { "\"\($0)\"" }.joined(separator: ", "))") }
        return out
    }

    /// Differences between two logical views, in name order.
    package static func compare(_ a: [TensorSum], _ b: [TensorSum]) -> [String] {
        let ma = Dictionary(a.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
        let mb = Dictionary(b.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
        var out: [String] = []
        for name in Set(ma.keys).union(mb.keys).sorted() {
            guard let x = ma[name] else { out.append("\(name): only in B"); continue }
            guard let y = mb[name] else { out.append("\(name): only in A"); continue }
            if x.dtype != y.dtype { out.append("\(name): dtype \(x.dtype.rawValue) vs \(y.dtype.rawValue)"); continue }
            if x.shape != y.shape { out.append("\(name): shape \(x.shape) vs \(y.shape)"); continue }
            for s in x.slices.indices where x.slices[s] != y.slices[s] {
                if x.grouped {
                    out.append("\(name): expert \(s) differs (crc32c \(hex(x.slices[s])) vs \(hex(y.slices[s])))")
                } else {
                    out.append("\(name): bytes differ (crc32c \(hex(x.slices[s])) vs \(hex(y.slices[s])))")
                }
            }
        }
        return out
    }
}

/// Eight hex digits (a CRC-32C as printed by `verify`).
package func hex(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 8 - s.count) + s
}
