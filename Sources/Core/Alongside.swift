import Dispatch
import Foundation

/// Runs `background` on a thread of its own while `foreground` runs on the calling thread, which
/// keeps any duty bound to it (MPI calls under `MPI_THREAD_FUNNELED`). Returns `background`'s
/// result once both are done; an error of either is rethrown only after both ended (the
/// foreground's first), so nothing either one uses is released under the other.
package func runAlongside<T>(_ background: () throws -> T, while foreground: () throws -> Void) throws -> T {
    try withoutActuallyEscaping(background) { work in
        let job = BackgroundJob(work)
        let thread = Thread { job.run() }
        thread.stackSize = 8 << 20
        thread.start()
        var failure: Error?
        do { try foreground() } catch { failure = error }
        job.finished.wait()
        if let failure { throw failure }
        guard let outcome = job.outcome else { throw InternalError("a background job ended without a result") }
        return try outcome.get()
    }
}

/// The work of `runAlongside`'s thread and its outcome (written by that thread before it signals
/// `finished`, read by the caller only after). The thread drops the work before it signals: the
/// closure must be gone when `withoutActuallyEscaping` ends, though the thread may not be yet.
private final class BackgroundJob<T>: @unchecked Sendable {
    private var work: (() throws -> T)?
    var outcome: Result<T, Error>?
    let finished = DispatchSemaphore(value: 0)

    init(_ work: @escaping () throws -> T) { self.work = work }

    func run() {
        if let work { outcome = Result { try work() } }
        work = nil
        finished.signal()
    }
}
