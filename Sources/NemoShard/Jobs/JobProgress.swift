import Synchronization
import NemoShardCore
import NemoShardMPI

/// A job's progress as its `progress` option reports it (`--progress`): this rank's bytes done,
/// scaled to the bytes of every rank's share (the shares are balanced by construction, so it is
/// an estimate), given to the callback as (done, total) over ALL ranks. Several executor runs add
/// up (`run()` reports on top of what earlier runs did), and `finish()` always ends at 100%, even
/// on a rank whose share was empty. Only the rank that sets the callback reports anything.
package final class JobProgress: Sendable {
    private let report: (@Sendable (Int, Int) -> Void)?
    /// This rank's bytes (at least 1, so an empty share divides safely).
    private let mine: Int
    /// Bytes of every rank's share.
    package let total: Int
    /// Bytes of the runs and steps already done.
    private let base = Mutex(0)

    /// Collective: every rank makes one (with or without a callback) and sums its `share`.
    package init(_ report: (@Sendable (Int, Int) -> Void)?, share: Int, world: Collective) throws {
        self.report = report
        mine = max(share, 1)
        total = Int(try world.allreduce(Int64(share), .sum))
    }

    /// The executor's callback for one run (it passes the run's cumulative bytes); nil without a
    /// callback. Call `add` with the run's bytes once it is over.
    package func run() -> (@Sendable (Int) -> Void)? {
        guard report != nil else { return nil }
        let before = base.withLock { $0 }
        return { done in self.show(before + done) }
    }

    /// `bytes` more of this rank's share are done (a run that finished, a tensor copied).
    package func add(_ bytes: Int) {
        let now = base.withLock { b -> Int in
            b += bytes
            return b
        }
        show(now)
    }

    /// The job is done: reports (total, total).
    package func finish() { report?(total, total) }

    private func show(_ done: Int) {
        guard let report else { return }
        report(min(Int(Double(done) / Double(mine) * Double(total)), total), total)
    }
}
