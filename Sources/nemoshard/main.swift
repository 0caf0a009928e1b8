import Glibc
import NemoShardCore

// The tool's flow: --version and --help, the command by name, its own --help, the refusal to run a
// single-process command as many ranks, then the command (see `Command` and `allCommands`).
// Exit codes: 0 success, 1 failure (bad input, I/O, a difference for verify), 2 usage.
let argv = Array(CommandLine.arguments.dropFirst())

if argv.first == "--version" {
    guard argv.count == 1 else { fail("--version takes no arguments", code: 2) }
    print("nemoshard \(NemoShardVersion.string)")
    exit(0)
}
guard let name = argv.first, name != "--help", name != "-h", name != "help" else {
    print(toolUsage)
    exit(argv.isEmpty ? 2 : 0)
}
guard let spec = command(named: name) else {
    fail("unknown command '\(name)'", code: 2, then: toolUsage + "\n")
}
let rest = Array(argv.dropFirst())
if asksForHelp(rest) {
    print(helpText(spec))
    exit(0)
}

// Before MPI starts any thread: SIGINT/SIGTERM/SIGHUP remove this job's staging directory.
Interruption.install { signal in
    guard worldRank == 0 else { return }
    let name = [SIGINT: "SIGINT", SIGTERM: "SIGTERM", SIGHUP: "SIGHUP"][signal] ?? "signal \(signal)"
    printToStandardError("nemoshard: error: interrupted by \(name); the unfinished output was removed\n")
}

refuseSingleProcessCommandUnderLauncher(spec)

do {
    terminate(try execute(spec, rest))
} catch {
    let usage = Failure.showsUsage(error) ? "usage: \(spec.usage)\n" : ""
    finish("nemoshard: error: \(oneLine(Failure.message(for: error)))\n" + usage, code: Failure.exitCode(for: error))
}
