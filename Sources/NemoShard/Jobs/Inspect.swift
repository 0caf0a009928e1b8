import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// A summary of a checkpoint directory (HF or per-rank), as JSON and as text.
public enum Inspect {
    /// What `nemoshard inspect DIR` prints: the summary of the checkpoint at `directory` as text
    /// lines, or with `json` as one JSON document (what `--json` prints).
    public static func summary(of directory: String, json: Bool = false) throws -> String {
        let j = try run(directory)
        return json ? j.serialized(indent: 2) : text(j)
    }

    /// The summary as a JSON value.
    package static func run(_ directory: String) throws -> JSON {
        if FS.exists(FS.join(directory, Manifest.fileName)) { return try perRank(directory) }
        return try huggingFace(directory)
    }

    package static func blockSummary(_ config: NemotronConfig) -> [(String, JSON)] {
        var counts: [(String, JSON)] = []
        for b in BlockType.allCases {
            counts.append((b.word, .int(Int64(config.layers.filter { $0 == b }.count))))
        }
        // transformers 5 configs name the blocks only with a word list (`linear_attention`, ...).
        let hasPattern = config.json["hybrid_override_pattern"].map { !$0.isNull } ?? false
        var out: [(String, JSON)] = [
            ("pattern", .string(BlockType.pattern(config.layers))),
            ("blocks_from", .string(hasPattern ? "hybrid_override_pattern" : "layers_block_type")),
            ("layers", .int(Int64(config.layers.count))),
            ("layers_by_block", .object(counts)),
            ("hidden_size", .int(Int64(config.hiddenSize))),
        ]
        if let e = config.nRoutedExperts { out.append(("n_routed_experts", .int(Int64(e)))) }
        if let m = config.moeIntermediateSize { out.append(("moe_intermediate_size", .int(Int64(m)))) }
        if let l = config.moeLatentSize { out.append(("moe_latent_size", .int(Int64(l)))) }
        out.append(("mtp_pattern", .string(BlockType.pattern(config.mtpLayers))))
        return out
    }

    package static func dtypeBytes(_ items: [(DType, Int)]) -> JSON {
        var totals: [DType: Int] = [:]
        for (d, n) in items { totals[d, default: 0] += n }
        return .object(totals.keys.map(\.rawValue).sorted().map { ($0, .int(Int64(totals[DType(rawValue: $0)!]!))) })
    }

    package static func huggingFace(_ directory: String) throws -> JSON {
        let ckpt = try HFCheckpoint.open(directory)
        let layout = try LoadPlanner(checkpoint: ckpt).layout
        // HF keys, not experts: a stacked transformers tensor is one key holding every expert.
        let expertKeys = Set(layout.experts.values.flatMap { $0.values.flatMap { $0.values.map(\.name) } }).count
        let moeLayers = layout.experts.keys.sorted().map { JSON.string("\($0.namespace == .mtp ? "mtp " : "")\($0.layer)") }
        var m: [(String, JSON)] = [("kind", .string("huggingface")), ("directory", .string(ckpt.directory))]
        m += blockSummary(ckpt.config)
        m += [
            ("files", .array(ckpt.files.map { .string($0) })),
            ("tensors", .int(Int64(ckpt.tensors.count))),
            ("expert_tensors", .int(Int64(expertKeys))),
            ("moe_layers_with_experts", .array(moeLayers)),
            ("mtp_tensors", .int(Int64(ckpt.tensors.filter { $0.name.hasPrefix("mtp.") }.count))),
            ("bytes", .int(Int64(ckpt.totalBytes))),
            ("bytes_by_dtype", dtypeBytes(ckpt.tensors.map { ($0.dtype, $0.byteCount) })),
            ("dropped_on_load", .int(Int64(layout.dropped.count))),
            ("extra_files", .array(ckpt.extraFiles.map { .string($0) })),
        ]
        if let q = try quantization(ckpt) { m.append(("quantization", q)) }
        return .object(m)
    }

    package static func perRank(_ directory: String) throws -> JSON {
        let sharded = try ShardedCheckpoint.open(directory)
        let manifest = sharded.manifest
        var m: [(String, JSON)] = [("kind", .string("per-rank")), ("directory", .string(directory))]
        m += blockSummary(try manifest.nemotronConfig())
        m += [
            ("rules", .string(manifest.rules.rawValue)),
            ("world_size", .int(Int64(manifest.worldSize))),
            ("mesh", .string(manifest.mesh.description)),
            ("ranks", .array(manifest.ranks.map { r in
                .object([("rank", .int(Int64(r.rank))), ("file", .string(r.file)),
                         ("experts", .array([.int(Int64(r.experts.start)), .int(Int64(r.experts.end))]))])
            })),
            ("tensors", .int(Int64(manifest.tensors.count))),
            ("grouped_expert_tensors", .int(Int64(manifest.tensors.filter(\.expertSharded).count))),
            ("global_bytes", .int(Int64(manifest.tensors.reduce(0) { $0 + $1.shape.reduce(1, *) * $1.dtype.size }))),
            ("global_bytes_by_dtype", dtypeBytes(manifest.tensors.map { ($0.dtype, $0.shape.reduce(1, *) * $0.dtype.size) })),
            ("source", .string(manifest.sourceDirectory)),
        ]
        return .object(m)
    }

    /// Human-readable lines of an inspect result.
    package static func text(_ j: JSON) -> String {
        guard let members = j.objectValue else { return j.serialized() }
        return members.map { k, v -> String in
            switch v {
            case .object where k == "quantization": return quantizationText(v)
            case let .string(s): return "\(k): \(s)"
            case let .int(i): return k.contains("bytes") ? "\(k): \(formatBytes(Int(i))) (\(i))" : "\(k): \(i)"
            case let .object(o) where k.contains("bytes"):
                return "\(k): " + o.map { "\($0.0) \(formatBytes(Int($0.1.intValue ?? 0)))" }.joined(separator: ", ")
            case let .array(a) where a.count > 12:
                return "\(k): \(a.count) entries, first \(JSON.array(Array(a.prefix(4))).serialized())"
            default: return "\(k): \(v.serialized())"
            }
        }.joined(separator: "\n")
    }
}
