import NemoShard
import NemoShardCore
import NemoShardMPI

/// `consolidate DCP_DIR OUT_DIR`: a torch DCP checkpoint assembled into a standard HF checkpoint.
enum ConsolidateCommand: Command {
    static let name = "consolidate"
    static let usage = "[mpirun -n N] nemoshard consolidate DCP_DIR OUT_DIR [--progress] [--force] [--json]"
    static let summary = "assemble a torch DCP checkpoint (shard-*-model-*-of-*.safetensors) into a standard HF checkpoint"
    static let details = """
        DCP_DIR holds torch.distributed.checkpoint's HuggingFaceStorageWriter(save_distributed=True) files
        shard-SSSSS-model-IIIII-of-NNNNN.safetensors (or has them under sharded/); each file's
        DCP_SHARDING_INFO metadata places its chunks in the global tensors. The chunks must tile every
        tensor exactly. OUT_DIR gets model-IIIII-of-NNNNN.safetensors (full tensors, sorted by name) and
        model.safetensors.index.json; the output files are shared out over the ranks. config.json and the
        small files beside it (generation config, tokenizer) are copied from DCP_DIR or, if it has no
        config.json, from its parent, so the output is a complete Hugging Face checkpoint.
        """
    static let positionals = ["DCP_DIR", "OUT_DIR"]
    static let runsUnderMPI = true
    static let options: [OptionSpec] = [
        .flag(.force, help: "replace an existing OUT_DIR"),
        .flag(.progress),
        .flag(.json),
    ]

    struct Request {
        var job: ConsolidateJob.Options
        var json: Bool
        var progress = false
    }

    static func validate(_ args: Arguments) throws -> Request {
        var o = ConsolidateJob.Options(source: args.positionals[0], output: args.positionals[1])
        o.force = args.has(.force)
        return Request(job: o, json: args.has(.json), progress: args.has(.progress))
    }

    static func run(_ r: Request, world: any Collective) throws -> Int32 {
        var job = r.job
        job.progress = progressLine("consolidate", world: world, forced: r.progress)
        emit(try ConsolidateJob.run(job, world: world), json: r.json, world: world)
        return 0
    }
}
