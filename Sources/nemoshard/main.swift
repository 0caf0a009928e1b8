import Glibc
import NemoShard

/// Exit codes: 0 success, 1 failure (bad input, I/O, a difference for verify), 2 usage.
let argv = Array(CommandLine.arguments.dropFirst())
let worldRank = getenv("OMPI_COMM_WORLD_RANK").flatMap { Int(String(cString: $0)) } ?? 0

func fail(_ message: String, code: Int32) -> Never {
    printToStandardError("nemoshard: error: \(message)\n")
    exit(code)
}

guard let name = argv.first, name != "--help", name != "-h", name != "help" else {
    print(toolUsage)
    exit(argv.isEmpty ? 2 : 0)
}
guard let spec = commands.first(where: { $0.name == name }) else {
    if worldRank == 0 { printToStandardError("nemoshard: error: unknown command '\(name)'\n\(toolUsage)\n") }
    exit(2)
}
let rest = Array(argv.dropFirst())
if rest.contains("--help") || rest.contains("-h") {
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
    finish("nemoshard: error: \(f.message)\(f.rank > 0 ? " (rank \(f.rank))" : "")\n", code: f.isUsage ? 2 : 1)
} catch let u as UsageError {
    finish("nemoshard: error: \(u.message)\nusage: \(spec.usage)\n", code: 2)
} catch {
    finish("nemoshard: error: \(error)\n", code: 1)
}
