import NemoShard
import NemoShardCore
import NemoShardMPI

/// `consolidate DCP_DIR OUT_DIR`: a torch DCP checkpoint assembled into a standard HF checkpoint.
enum ConsolidateCommand: Command {
    static let name = "consolidate"
    static let usage = "[mpirun -n N] nemoshard consolidate DCP_DIR OUT_DIR [--force] [--json]"
    static let summary = "assemble a torch DCP checkpoint (shard-*-model-*-of-*.safetensors) into a standard HF checkpoint"
    static let details = """
        DCP_DIR holds torch.distributed.checkpoint's HuggingFaceStorageWriter(save_distributed=True) files
        shard-SSSSS-model-IIIII-of-NNNNN.safetensors (or has them under sharded/); each file's
        DCP_SHARDING_INFO metadata places its chunks in the global tensors. The chunks must tile every
        tensor exactly. OUT_DIR gets model-IIIII-of-NNNNN.safetensors (full tensors, sorted by name) and
        model.safetensors.index.json; the output files are shared out over the ranks.
        """
    static let positionals = ["DCP_DIR", "OUT_DIR"]
    static let runsUnderMPI = true
    static let options: [OptionSpec] = [
        .flag(.force, help: "replace an existing OUT_DIR"),
        .flag(.json),
    ]

    struct Request {
        var job: ConsolidateJob.Options
        var json: Bool
    }

    static func validate(_ args: Arguments) throws -> Request {
        var o = ConsolidateJob.Options(source: args.positionals[0], output: args.positionals[1])
        o.force = args.has(.force)
        return Request(job: o, json: args.has(.json))
    }

    static func run(_ r: Request, world: any Collective) throws -> Int32 {
        emit(try ConsolidateJob.run(r.job, world: world), json: r.json, world: world)
        return 0
    }
}
