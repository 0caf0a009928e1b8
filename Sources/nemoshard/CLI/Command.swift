import NemoShardMPI

/// One subcommand, declared once: its name, help, grammar, whether it runs under MPI, and what it
/// does. `allCommands` lists every command; the parser, the help, dispatch and MPI start-up read
/// that list and nothing else.
///
/// A run has two steps. `validate` turns the parsed arguments into a `Request`, raising every
/// usage error (exit code 2) a command can find on its own; `run` does the work on `world`
/// (MPI's world for `runsUnderMPI` commands, started before parsing so every rank reports an
/// error the same way; a world of one otherwise) and returns the exit code. Commands are types
/// (caseless enums) with static members only; `SendableMetatype` lets `allCommands` be a global.
protocol Command: SendableMetatype {
    /// Everything `run` needs, checked by `validate`.
    associatedtype Request

    /// The word after `nemoshard`.
    static var name: String { get }
    /// One line for the top-level help's command table.
    static var summary: String { get }
    /// The usage line(s) of `COMMAND --help` and of usage errors.
    static var usage: String { get }
    /// Prose printed after the summary, before the options ("" for none).
    static var details: String { get }
    /// The positional arguments' names; exactly these many are required.
    static var positionals: [String] { get }
    /// Every option and flag the command accepts, as its help lists them.
    static var options: [OptionSpec] { get }
    /// Whether MPI starts before the arguments are parsed (a launcher may start many ranks);
    /// other commands refuse to run as more than one rank.
    static var runsUnderMPI: Bool { get }

    /// The request the arguments make, or a `UsageError`.
    static func validate(_ args: Arguments) throws -> Request
    /// Does the work; returns the exit code.
    static func run(_ request: Request, world: any Collective) throws -> Int32
}

extension Command {
    static var details: String { "" }
}

/// Every command, in the order the top-level help lists them.
let allCommands: [any Command.Type] = [
    SynthCommand.self,
    InspectCommand.self,
    ConvertCommand.self,
    LoadCommand.self,
    SaveHFCommand.self,
    ReshardCommand.self,
    ConsolidateCommand.self,
    VerifyCommand.self,
    BandwidthCommand.self,
]

/// The command called `name`, if there is one.
func command(named name: String) -> (any Command.Type)? {
    allCommands.first { $0.name == name }
}

/// Starts MPI if `command` runs under it and a launcher started this process, then parses,
/// validates and runs it with `argv` (the arguments after its name); returns the exit code.
/// Without a launcher the world is one process without MPI: OpenMPI would otherwise start a
/// singleton `orted` (a quarter of a second) for a world of one all the same.
func execute<C: Command>(_ command: C.Type, _ argv: [String]) throws -> Int32 {
    let world: any Collective = C.runsUnderMPI && Launcher.current.isLaunched ? try MPIRuntime.start() : SoloCollective()
    let args = try Arguments.parse(argv, for: C.self)
    return try C.run(try C.validate(args), world: world)
}
