import NemoShard
import NemoShardMPI

/// `inspect DIR`: a summary of an HF or per-rank checkpoint.
enum InspectCommand: Command {
    static let name = "inspect"
    static let usage = "nemoshard inspect DIR [--json]"
    static let summary = "summarise an HF or per-rank checkpoint"
    static let positionals = ["DIR"]
    static let runsUnderMPI = false
    static let options: [OptionSpec] = [.flag(.json, help: "print one JSON object")]

    struct Request {
        var directory: String
        var json: Bool
    }

    static func validate(_ args: Arguments) throws -> Request {
        Request(directory: args.positionals[0], json: args.has(.json))
    }

    static func run(_ r: Request, world: any Collective) throws -> Int32 {
        print(try Inspect.summary(of: r.directory, json: r.json))
        return 0
    }
}
