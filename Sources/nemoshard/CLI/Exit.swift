import Glibc
import NemoShardCore
import NemoShardMPI

/// This process's rank as its launcher says (0 without one): before MPI starts, only rank 0 prints.
var worldRank: Int { Launcher.current.rank }

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
    exitGivingRankZeroAHeadStart(code)
}

/// Exits before MPI started; other ranks wait a moment so rank 0's one error line is out before
/// the launcher, seeing a rank fail, ends the job.
func exitGivingRankZeroAHeadStart(_ code: Int32) -> Never {
    if code != 0 && worldRank != 0 && Launcher.current.isLaunched { usleep(500_000) }
    exit(code)
}

/// Refuses (exit 2) to run `command` as one of several ranks when it runs in one process.
func refuseSingleProcessCommandUnderLauncher(_ command: any Command.Type, launcher: Launcher = .current) {
    guard !command.runsUnderMPI, launcher.size > 1 else { return }
    if launcher.rank == 0 {
        printToStandardError("nemoshard: error: '\(command.name)' runs in one process; start it without mpirun (this job has \(launcher.size) ranks)\n")
    }
    exitGivingRankZeroAHeadStart(2)
}

/// Prints `message` once (rank 0), lets every rank catch up, and exits with `code`.
func finish(_ message: String, code: Int32) -> Never {
    if currentRank() == 0 { printToStandardError(message) }
    terminate(code)
}

/// This process's rank: MPI's once started, else the launcher's.
func currentRank() -> Int { MPIRuntime.isStarted ? (try? MPIRuntime.start().rank) ?? worldRank : worldRank }

/// Ends the process with `code`. On failure under a launcher, rank 0 exits first: mpirun ends the
/// job at the first non-zero exit and may drop output still in flight from ranks it then kills,
/// so the other ranks give rank 0's message a head start.
func terminate(_ code: Int32) -> Never {
    let rank = currentRank()
    MPIRuntime.barrierIfStarted()
    MPIRuntime.stop()
    if code != 0 && rank != 0 && MPIRuntime.launchedByMPIRun { usleep(500_000) }
    exit(code)
}
