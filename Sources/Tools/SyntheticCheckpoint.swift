import NemoShard
import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// Writes deterministic synthetic Nemotron-H checkpoints in the real Hugging Face layout.
package enum SyntheticCheckpoint {
    /// Model dimensions of a synthetic checkpoint.
    package struct Preset: Sendable {
        package var hidden: Int, vocab: Int, experts: Int, moeInter: Int, sharedInter: Int, mlpInter: Int
        package var mambaHeads: Int, mambaHeadDim: Int, nGroups: Int, ssmState: Int, convKernel: Int
        package var attentionHeads: Int, kvHeads: Int, headDim: Int
        package var pattern: String, mtpPattern: String
        package var latent: Int?

        /// Small enough for tests (tens of KB), with every block type.
        package static let tiny = Preset(hidden: 32, vocab: 64, experts: 8, moeInter: 16, sharedInter: 24, mlpInter: 48,
                                        mambaHeads: 4, mambaHeadDim: 8, nGroups: 2, ssmState: 8, convKernel: 4,
                                        attentionHeads: 4, kvHeads: 2, headDim: 8, pattern: "ME*-E", mtpPattern: "")
        /// Nemotron 3 Nano 30B-A3B shapes with a short pattern (for benchmarks).
        package static let nano = Preset(hidden: 2688, vocab: 131072, experts: 128, moeInter: 1856, sharedInter: 3712,
                                        mlpInter: 1856, mambaHeads: 64, mambaHeadDim: 64, nGroups: 8, ssmState: 128,
                                        convKernel: 4, attentionHeads: 32, kvHeads: 2, headDim: 128, pattern: "ME*E",
                                        mtpPattern: "")

        package static func named(_ name: String) -> Preset? {
            switch name {
            case "tiny": return .tiny
            case "nano": return .nano
            default: return nil
            }
        }
    }

    /// What to write.
    package struct Options: Sendable {
        package var preset: Preset = .tiny
        package var shards = 2
        package var expertDType: DType = .bf16
        package var seed: UInt64 = 0
        /// `model.` instead of `backbone.` as the key prefix.
        package var modelPrefix = false
        /// `embed_tokens` instead of `embeddings`.
        package var embedTokensName = false
        /// Small non-expert tensors added beside the model's own, spread round robin over the
        /// layers (`backbone.layers.L.mixer.extra_norms.K.weight`, 16 BF16 values each): checkpoints
        /// with many tensors, for measuring how planning scales with their number.
        package var extraTensors = 0
        package init() {}
    }

    /// One planned tensor of the checkpoint.
    package struct Entry: Sendable {
        package let name: String
        package let dtype: DType
        package let shape: [Int]
    }

    /// Elements of each extra tensor (`Options.extraTensors`).
    package static let extraTensorSize = 16
    /// Most extra tensors a checkpoint may have.
    package static let maxExtraTensors = 10_000_000

    /// Every tensor of the checkpoint in model order.
    package static func entries(_ o: Options) throws -> [Entry] {
        let p = o.preset
        guard let layers = BlockType.parse(pattern: p.pattern), !layers.isEmpty else {
            throw UsageError("--pattern must be a non-empty string of M * - E, got \"\(p.pattern)\"")
        }
        guard let mtp = BlockType.parse(pattern: p.mtpPattern) else {
            throw UsageError("--mtp must be a string of M * - E, got \"\(p.mtpPattern)\"")
        }
        guard p.experts > 0 else { throw UsageError("--experts must be positive") }
        guard (0...maxExtraTensors).contains(o.extraTensors) else {
            throw UsageError("--extra-tensors must be between 0 and \(maxExtraTensors)")
        }
        let root = o.modelPrefix ? "model." : "backbone."
        var out: [Entry] = []
        func add(_ name: String, _ shape: [Int], _ dtype: DType = .bf16) { out.append(Entry(name: name, dtype: dtype, shape: shape)) }
        let h = p.hidden
        let dInner = p.mambaHeads * p.mambaHeadDim
        let convDim = dInner + 2 * p.nGroups * p.ssmState
        let dim = p.latent ?? h
        func block(_ prefix: String, _ b: BlockType) {
            let m = prefix + "mixer."
            switch b {
            case .mamba:
                add(m + "in_proj.weight", [2 * dInner + 2 * p.nGroups * p.ssmState + p.mambaHeads, h])
                add(m + "conv1d.weight", [convDim, 1, p.convKernel])
                add(m + "conv1d.bias", [convDim])
                add(m + "A_log", [p.mambaHeads])
                add(m + "D", [p.mambaHeads])
                add(m + "dt_bias", [p.mambaHeads])
                add(m + "norm.weight", [dInner])
                add(m + "out_proj.weight", [h, dInner])
            case .attention:
                add(m + "q_proj.weight", [p.attentionHeads * p.headDim, h])
                add(m + "k_proj.weight", [p.kvHeads * p.headDim, h])
                add(m + "v_proj.weight", [p.kvHeads * p.headDim, h])
                add(m + "o_proj.weight", [h, p.attentionHeads * p.headDim])
            case .mlp:
                add(m + "up_proj.weight", [p.mlpInter, h])
                add(m + "down_proj.weight", [h, p.mlpInter])
            case .moe:
                add(m + "gate.weight", [p.experts, h])
                add(m + "gate.e_score_correction_bias", [p.experts], .f32)
                for e in 0..<p.experts {
                    add(m + "experts.\(e).up_proj.weight", [p.moeInter, dim], o.expertDType)
                    add(m + "experts.\(e).down_proj.weight", [dim, p.moeInter], o.expertDType)
                }
                add(m + "shared_experts.up_proj.weight", [p.sharedInter, h])
                add(m + "shared_experts.down_proj.weight", [h, p.sharedInter])
                if let latent = p.latent {
                    add(m + "fc1_latent_proj.weight", [latent, h])
                    add(m + "fc2_latent_proj.weight", [h, latent])
                }
            }
            add(prefix + "norm.weight", [h])
        }
        add(root + (o.embedTokensName ? "embed_tokens.weight" : "embeddings.weight"), [p.vocab, h])
        for (i, b) in layers.enumerated() {
            block(root + "layers.\(i).", b)
            for k in stride(from: i, to: o.extraTensors, by: layers.count) {
                add(root + "layers.\(i).mixer.extra_norms.\(k / layers.count).weight", [SyntheticCheckpoint.extraTensorSize])
            }
        }
        add(root + "norm_f.weight", [h])
        add("lm_head.weight", [p.vocab, h])
        for (i, b) in mtp.enumerated() {
            let prefix = "mtp.layers.\(i)."
            if i == 0 {
                add(prefix + "enorm.weight", [h])
                add(prefix + "hnorm.weight", [h])
                add(prefix + "eh_proj.weight", [h, 2 * h])
            }
            block(prefix, b)
            if i == mtp.count - 1 { add(prefix + "final_layernorm.weight", [h]) }
        }
        return out
    }

    /// The config.json document.
    package static func config(_ o: Options) -> JSON {
        let p = o.preset
        var m: [(String, JSON)] = [
            ("architectures", .array([.string("NemotronHForCausalLM")])),
            ("model_type", .string("nemotron_h")),
            ("hidden_size", .int(Int64(p.hidden))),
            ("num_hidden_layers", .int(Int64(p.pattern.count))),
            ("hybrid_override_pattern", .string(p.pattern)),
            ("vocab_size", .int(Int64(p.vocab))),
            ("n_routed_experts", .int(Int64(p.experts))),
            ("num_experts_per_tok", .int(Int64(min(6, p.experts)))),
            ("moe_intermediate_size", .int(Int64(p.moeInter))),
            ("moe_shared_expert_intermediate_size", .int(Int64(p.sharedInter))),
            ("intermediate_size", .int(Int64(p.mlpInter))),
            ("mamba_num_heads", .int(Int64(p.mambaHeads))),
            ("mamba_head_dim", .int(Int64(p.mambaHeadDim))),
            ("n_groups", .int(Int64(p.nGroups))),
            ("ssm_state_size", .int(Int64(p.ssmState))),
            ("conv_kernel", .int(Int64(p.convKernel))),
            ("num_attention_heads", .int(Int64(p.attentionHeads))),
            ("num_key_value_heads", .int(Int64(p.kvHeads))),
            ("head_dim", .int(Int64(p.headDim))),
            ("mlp_hidden_act", .string("relu2")),
            ("torch_dtype", .string("bfloat16")),
            ("tie_word_embeddings", .bool(false)),
            ("num_nextn_predict_layers", .int(Int64(p.mtpPattern.isEmpty ? 0 : 1))),
        ]
        if !p.mtpPattern.isEmpty { m.append(("mtp_hybrid_override_pattern", .string(p.mtpPattern))) }
        if let latent = p.latent { m.append(("moe_latent_size", .int(Int64(latent)))) }
        return .object(m)
    }

    /// Creates the checkpoint as a new output directory with the output protocol (lock, staging,
    /// atomic commit): a failure such as a full disk leaves nothing behind. Returns the entries.
    @discardableResult
    package static func create(at path: String, options o: Options, force: Bool) throws -> [Entry] {
        _ = try entries(o)
        let staged = try StagedOutput.prepare(path, force: force, inputs: [], world: SoloCollective())
        do {
            let all = try write(to: staged.staging, options: o)
            try staged.directory?.commit(force: force)
            return all
        } catch {
            staged.directory?.abandon()
            throw error
        }
    }

    /// Writes the checkpoint's files into `directory` (created if needed). Returns the tensor entries.
    @discardableResult
    package static func write(to directory: String, options o: Options) throws -> [Entry] {
        let all = try entries(o)
        guard o.shards >= 1 else { throw UsageError("--shards must be at least 1") }
        try FS.makeDirectories(directory)
        let total = all.reduce(0) { $0 + $1.shape.reduce(1, *) * $1.dtype.size }
        let shardCount = min(o.shards, all.count)
        // Consecutive runs of about total/shards bytes.
        var groups: [[Entry]] = [[]]
        var cumulative = 0
        for (i, e) in all.enumerated() {
            let limit = total * groups.count / shardCount
            let remaining = all.count - i
            if !groups[groups.count - 1].isEmpty, groups.count < shardCount,
               cumulative >= limit || remaining <= shardCount - groups.count {
                groups.append([])
            }
            groups[groups.count - 1].append(e)
            cumulative += e.shape.reduce(1, *) * e.dtype.size
        }
        var weightMap: [(String, String)] = []
        for (i, group) in groups.enumerated() {
            let name = groups.count == 1 ? HFIndex.singleFileName : HFIndex.shardName(i + 1, of: groups.count)
            let specs = group.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
            let writer = try SafetensorsWriter(path: FS.join(directory, name), specs: specs, metadata: [("format", "pt")])
            for (j, e) in group.enumerated() {
                try fill(writer: writer, tensor: j, entry: e, seed: o.seed)
                weightMap.append((e.name, name))
            }
            try writer.finish()
            try writer.commit()
        }
        if groups.count > 1 {
            try HFIndex(weightMap: weightMap, totalSize: total).write(into: directory)
        }
        try writeFileAtomically(FS.join(directory, "config.json"), Array(config(o).serialized(indent: 2).utf8))
        let generation = JSON.object([("bos_token_id", .int(1)), ("eos_token_id", .int(2)), ("_from_model_config", .bool(true))])
        try writeFileAtomically(FS.join(directory, "generation_config.json"), Array(generation.serialized(indent: 2).utf8))
        return all
    }

    /// Streams deterministic values for one tensor in 4 MiB pieces.
    package static func fill(writer: SafetensorsWriter, tensor: Int, entry: Entry, seed: UInt64) throws {
        var rng = SplitMix64(seed: seed ^ fnv1a(entry.name))
        let total = entry.shape.reduce(1, *) * entry.dtype.size
        let chunk = TensorStorage(count: max(1, min(4 << 20, total)))
        var done = 0
        while done < total {
            let n = min(chunk.bytes.count, total - done)
            fillRandom(UnsafeMutableRawBufferPointer(rebasing: chunk.bytes[0..<n]), dtype: entry.dtype, rng: &rng)
            try writer.write(tensor: tensor, offset: done, UnsafeRawBufferPointer(rebasing: chunk.bytes[0..<n]))
            done += n
        }
    }

    /// Finite random values of modest magnitude (no NaN/inf), full mantissas for f32.
    package static func fillRandom(_ buffer: UnsafeMutableRawBufferPointer, dtype: DType, rng: inout SplitMix64) {
        switch dtype.size {
        case 2:
            let p = buffer.bindMemory(to: UInt16.self)
            var i = 0
            while i < p.count {
                var r = rng.next()
                for _ in 0..<4 where i < p.count {
                    let u = UInt16(truncatingIfNeeded: r)
                    // sign, exponent 0x70...0x7E (bf16) -> |x| in [2^-15, 2^0); for f16 a normal range too
                    let exp: UInt16 = dtype == .f16 ? 0x08 + (u >> 7 & 0x0F) : 0x70 + (u >> 7 & 0x0F) % 15
                    p[i] = dtype == .f16 ? (u & 0x83FF) | (exp << 10) : (u & 0x807F) | (exp << 7)
                    r >>= 16
                    i += 1
                }
            }
        case 4:
            let p = buffer.bindMemory(to: UInt32.self)
            var i = 0
            while i < p.count {
                var r = rng.next()
                for _ in 0..<2 where i < p.count {
                    let u = UInt32(truncatingIfNeeded: r)
                    p[i] = (u & 0x807F_FFFF) | ((0x70 + (u >> 23 & 0x0F) % 15) << 23)
                    r >>= 32
                    i += 1
                }
            }
        default:
            for i in 0..<buffer.count { buffer[i] = UInt8(truncatingIfNeeded: rng.next()) }
        }
    }
}

/// A small, fast, deterministic generator.
package struct SplitMix64 {
    package var state: UInt64
    package init(seed: UInt64) { state = seed }
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
