import NemoShard
import NemoShardCore
import NemoShardMPI
import NemoShardTools

/// `synth OUT`: a deterministic synthetic Nemotron-H checkpoint in the Hugging Face layout.
enum SynthCommand: Command {
    static let name = "synth"
    static let usage = "nemoshard synth OUT [--preset tiny|nano] [--pattern P] [--experts N] [--mtp P] [--shards N] [--expert-dtype bf16|f32] [--seed S] [--vocab N] [--model-prefix] [--embed-tokens] [--extra-tensors N] [--force]"
    static let summary = "write a deterministic synthetic Nemotron-H checkpoint in the HF layout"
    static let positionals = ["OUT"]
    static let runsUnderMPI = false
    static let options: [OptionSpec] = [
        .value(.preset), .value(.pattern), .value(.experts), .value(.mtp), .value(.shards), .value(.expertDType),
        .value(.seed), .value(.vocab), .flag(.modelPrefix), .flag(.embedTokens), .value(.extraTensors),
        .flag(.force, help: "replace an existing OUT"),
    ]

    struct Request {
        var options: SyntheticCheckpoint.Options
        var output: String
        var force: Bool
    }

    static func validate(_ args: Arguments) throws -> Request {
        var o = SyntheticCheckpoint.Options()
        let presetName = args.value(.preset) ?? "tiny"
        guard let preset = SyntheticCheckpoint.Preset.named(presetName) else { throw UsageError("--preset must be tiny or nano") }
        o.preset = preset
        if let p = args.value(.pattern) { o.preset.pattern = p }
        if let m = args.value(.mtp) { o.preset.mtpPattern = m }
        o.preset.experts = try args.int(.experts, default: preset.experts)
        o.preset.vocab = try args.int(.vocab, default: preset.vocab)
        guard o.preset.vocab > 0, o.preset.vocab <= 1 << 24 else { throw UsageError("--vocab must be between 1 and 16777216") }
        guard o.preset.experts > 0, o.preset.experts <= 4096 else { throw UsageError("--experts must be between 1 and 4096") }
        o.shards = try args.int(.shards, default: 2)
        if let seed = args.value(.seed) {
            guard let s = UInt64(seed) else { throw UsageError("--seed expects a non-negative integer, got \"\(seed)\"") }
            o.seed = s
        }
        o.expertDType = try dtypeOption(args, .expertDType) ?? .bf16
        o.modelPrefix = args.has(.modelPrefix)
        o.embedTokensName = args.has(.embedTokens)
        o.extraTensors = try args.int(.extraTensors, default: 0)
        guard (0...SyntheticCheckpoint.maxExtraTensors).contains(o.extraTensors) else {
            throw UsageError("--extra-tensors must be between 0 and \(SyntheticCheckpoint.maxExtraTensors)")
        }
        return Request(options: o, output: args.positionals[0], force: args.has(.force))
    }

    static func run(_ r: Request, world: any Collective) throws -> Int32 {
        let o = r.options
        let entries = try SyntheticCheckpoint.create(at: r.output, options: o, force: r.force)
        let bytes = entries.reduce(0) { $0 + $1.shape.reduce(1, *) * $1.dtype.size }
        print("wrote \(r.output): pattern \(o.preset.pattern)\(o.preset.mtpPattern.isEmpty ? "" : ", mtp \(o.preset.mtpPattern)"), "
              + "\(o.preset.experts) experts, \(entries.count) tensors, \(formatBytes(bytes))")
        return 0
    }
}
