import Foundation
import Glibc
import Synchronization

/// SIGINT, SIGTERM and SIGHUP end a job cleanly: `install()` blocks them in every thread and a
/// dedicated thread waits for them; on one, it removes every staging directory and temporary file
/// this process registered, runs the report hook (one line, rank 0), and exits with 128 + signal.
/// The registry's lock is held while cleaning, and a commit unregisters its paths first, so a
/// signal either cleans before a commit starts or leaves the commit's recorded state to the next
/// job, never half of each.
package enum Interruption {
    private struct Registry {
        var directories: [String] = []
        var locks: [String] = []
        var report: (@Sendable (Int32) -> Void)?
    }

    private static let registry = Mutex(Registry())
    private static let installed = Mutex(false)

    /// Blocks the signals in the calling thread (call it before starting any other thread, MPI's
    /// included, so they inherit the mask) and starts the waiting thread. `report` runs once.
    package static func install(report: (@Sendable (Int32) -> Void)? = nil) {
        guard installed.withLock({ let was = $0; $0 = true; return !was }) else { return }
        registry.withLock { $0.report = report }
        var set = signalSet()
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let thread = Thread {
            var set = signalSet()
            var signal: Int32 = 0
            while sigwait(&set, &signal) != 0 {}
            registry.withLock { r in
                var clean = true
                for d in r.directories { clean = removeWithRetries(d) && clean }
                // A lock file records what its job left; it goes only when that is gone.
                if clean { for f in r.locks { unlink(f) } }
                r.report?(signal)
                _exit(128 + signal)
            }
        }
        thread.start()
    }

    private static func signalSet() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&set, s) }
        return set
    }

    /// Other ranks may still be adding files while the directory is removed: try a few times.
    private static func removeWithRetries(_ path: String) -> Bool {
        for _ in 0..<50 {
            if FS.removeTree(path) { return true }
            usleep(20_000)
        }
        return false
    }

    /// Removes `path` (a staging directory) if the process is interrupted.
    package static func register(directory path: String) { registry.withLock { $0.directories.append(path) } }
    package static func unregister(directory path: String) { registry.withLock { $0.directories.removeAll { $0 == path } } }
    /// Unlinks the lock file `path` if the process is interrupted (after its directories are gone).
    package static func register(lock path: String) { registry.withLock { $0.locks.append(path) } }
    package static func unregister(lock path: String) { registry.withLock { $0.locks.removeAll { $0 == path } } }
}
