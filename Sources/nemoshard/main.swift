import Glibc
import NemoShard
import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine
import NemoShardTools

/// Exit codes: 0 success, 1 failure (bad input, I/O, a difference for verify), 2 usage.
let argv = Array(CommandLine.arguments.dropFirst())
let worldRank = getenv("OMPI_COMM_WORLD_RANK").flatMap { Int(String(cString: $0)) } ?? 0

/// `message` kept to one line: a newline from a path or pattern the user gave (or from a library
/// message) would split one error over several, so line breaks and other control characters are
/// shown escaped.
func oneLine(_ message: String) -> String {
    var out = ""
    for scalar in message.unicodeScalars {
        switch scalar {
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += " "
        default:
            if scalar.value < 0x20 || scalar.value == 0x7F {
                out += "\\x" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out
}

/// One error line on rank 0's stderr, then exit with `code` (before MPI starts).
func fail(_ message: String, code: Int32, then extra: String = "") -> Never {
    if worldRank == 0 { printToStandardError("nemoshard: error: \(oneLine(message))\n\(extra)") }
    exit(code)
}

if argv.first == "--version" {
    guard argv.count == 1 else { fail("--version takes no arguments", code: 2) }
    print("nemoshard \(NemoShardVersion.string)")
    exit(0)
}
guard let name = argv.first, name != "--help", name != "-h", name != "help" else {
    print(toolUsage)
    exit(argv.isEmpty ? 2 : 0)
}
guard let spec = commands.first(where: { $0.name == name }) else {
    fail("unknown command '\(name)'", code: 2, then: toolUsage + "\n")
}
let rest = Array(argv.dropFirst())
// After `--` everything is a positional, even `--help`.
if rest.prefix(while: { $0 != "--" }).contains(where: { $0 == "--help" || $0 == "-h" }) {
    print(helpText(spec))
    exit(0)
}

/// Commands that run under mpirun start MPI first, so every error path can wait for rank 0's message.
let mpiCommands: Set<String> = ["load", "save-hf", "reshard", "verify", "bandwidth", "consolidate"]

/// Ranks in the job that started this process (1 without mpirun).
let launchedWorldSize = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"].compactMap { (name: String) -> Int? in
    getenv(name).flatMap { Int(String(cString: $0)) }
}.first ?? 1

// Before MPI starts any thread: SIGINT/SIGTERM/SIGHUP remove this job's staging directory.
Interruption.install { signal in
    guard worldRank == 0 else { return }
    let name = [SIGINT: "SIGINT", SIGTERM: "SIGTERM", SIGHUP: "SIGHUP"][signal] ?? "signal \(signal)"
    printToStandardError("nemoshard: error: interrupted by \(name); the unfinished output was removed\n")
}

if !mpiCommands.contains(spec.name), launchedWorldSize > 1 {
    if worldRank == 0 {
        printToStandardError("nemoshard: error: '\(spec.name)' runs in one process; start it without mpirun (this job has \(launchedWorldSize) ranks)\n")
    }
    exit(2)
}

/// Prints `message` once (rank 0), lets every rank catch up, and exits with `code`.
func finish(_ message: String, code: Int32) -> Never {
    if currentRank() == 0 { printToStandardError(message) }
    terminate(code)
}

func currentRank() -> Int { MPIRuntime.isStarted ? (try? MPIRuntime.start().rank) ?? worldRank : worldRank }

/// Ends the process with `code`. On failure under mpirun, rank 0 exits first: mpirun ends the job
/// at the first non-zero exit and may drop output still in flight from ranks it then kills, so the
/// other ranks give rank 0's message a head start.
func terminate(_ code: Int32) -> Never {
    let rank = currentRank()
    MPIRuntime.barrierIfStarted()
    MPIRuntime.stop()
    if code != 0 && rank != 0 && MPIRuntime.launchedByMPIRun { usleep(500_000) }
    exit(code)
}

do {
    if mpiCommands.contains(spec.name) { try MPIRuntime.start() }
    let args = try Arguments.parse(rest, spec: spec)
    terminate(try run(spec.name, args))
} catch let f as JobFailure {
    finish("nemoshard: error: \(oneLine(f.message))\(f.rank > 0 ? " (rank \(f.rank))" : "")\n", code: f.isUsage ? 2 : 1)
} catch let u as UsageError {
    finish("nemoshard: error: \(oneLine(u.message))\nusage: \(spec.usage)\n", code: 2)
} catch {
    finish("nemoshard: error: \(oneLine(String(describing: error)))\n", code: 1)
}
