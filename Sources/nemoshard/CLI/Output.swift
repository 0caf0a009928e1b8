import Glibc
import NemoShard
import NemoShardCore
import NemoShardMPI

/// Rank 0 prints `report`: as JSON with `json`, else as text.
func emit(_ report: JobReport, json: Bool, world: any Collective) {
    guard world.rank == 0 else { return }
    print(json ? report.json().serialized() : report.text())
}

/// Rank 0's single updating progress line on stderr: with `--progress` (under mpirun the ranks'
/// stderr is never a terminal), or by itself when stderr is a terminal. Bytes done over all ranks
/// (estimated from rank 0's share), GB/s and time left.
func progressLine(_ label: String, world: any Collective, forced: Bool) -> (@Sendable (Int, Int) -> Void)? {
    guard world.rank == 0, forced || isatty(2) != 0 else { return nil }
    /// The executor calls one at a time (under its lock).
    final class State: @unchecked Sendable {
        var percent = -1
        let start = monotonicSeconds()
    }
    let state = State()
    let ranks = world.size
    return { done, total in
        let pct = total > 0 ? min(done * 100 / total, 100) : 100
        guard pct != state.percent else { return }
        state.percent = pct
        let elapsed = monotonicSeconds() - state.start
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let left = rate > 0 ? Double(total - done) / rate : 0
        printToStandardError("\r\(label): \(pct)% of \(formatBytes(total)) (est. over \(ranks) rank\(ranks == 1 ? "" : "s")), "
                             + "\(format2(rate / 1e9)) GB/s, " + (pct == 100 ? "done in \(format2(elapsed)) s\n" : "about \(format2(left)) s left   "))
    }
}
