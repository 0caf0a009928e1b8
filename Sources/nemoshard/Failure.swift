import NemoShardCore
import NemoShardMPI

/// The one place an error becomes the tool's exit code and its one error line: 2 for a job asked
/// for the wrong way, 1 for everything else (bad input, I/O, a difference). Library errors say
/// what is wrong in the library's terms; here the flag that would change it is named.
enum Failure {
    /// The exit code for `error`.
    static func exitCode(for error: Error) -> Int32 {
        NemoShardError(error).isUsage ? 2 : 1
    }

    /// The error line's text (without the `nemoshard: error:` prefix): the message, the flag that
    /// would fix it, and the failing rank when it is not rank 0.
    static func message(for error: Error) -> String {
        let typed = NemoShardError(error)
        var text = typed.description
        if case let .usage(u) = typed, let remedy = u.remedy { text += flagHint(remedy) }
        if let f = error as? JobFailure, f.rank > 0 { text += " (rank \(f.rank))" }
        return text
    }

    /// Whether the command's usage line belongs after the error (a usage error of the command
    /// line itself, not one a job found).
    static func showsUsage(_ error: Error) -> Bool { error is UsageError }

    private static func flagHint(_ remedy: UsageError.Remedy) -> String {
        switch remedy {
        case .force: return "; pass --force to replace it"
        case .gather: return "; use --gather to write it from rank 0's node"
        case .dequantize: return "; use --dequantize bf16|f32 to load them as floats"
        }
    }
}
