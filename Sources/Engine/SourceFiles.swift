import Glibc
import Synchronization
import NemoShardCore
import NemoShardFormat
import NemoShardModel

/// A plan's source files, opened when first needed and kept open within a bounded number of
/// descriptors (the least recently used is closed first; a worker still reading it keeps it open
/// until done), so a checkpoint of hundreds of shards runs under a small `ulimit -n`. Each open
/// checks the file against the fingerprint the plan was made from, and the pieces' extent against
/// its size; `verifyUnchanged` checks every file read once more at the end.
package final class SourceFiles: Sendable {
    private let paths: [String]
    private let expected: [Int: FileFingerprint]
    /// The end of the last byte any piece reads, per file.
    private let extents: [Int: Int]
    private let limit: Int

    private struct State {
        var open: [Int: SystemFile] = [:]
        var lastUse: [Int: UInt64] = [:]
        var clock: UInt64 = 0
        /// What each file was at its first open (for files the plan has no fingerprint of).
        var seen: [Int: FileFingerprint] = [:]
    }
    private let state = Mutex(State())

    package init(_ plan: TransferPlan, limit: Int = SourceFiles.defaultLimit) {
        paths = plan.files
        expected = plan.fingerprints
        var extents: [Int: Int] = [:]
        for p in plan.pieces {
            for r in [p.source] + p.transform.auxiliarySources { extents[r.file] = max(extents[r.file] ?? 0, r.end) }
        }
        self.extents = extents
        self.limit = max(limit, 1)
    }

    /// At most this many source files open at once: a quarter of the soft descriptor limit, between 4 and 256.
    package static var defaultLimit: Int {
        var r = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &r) == 0, r.rlim_cur != rlim_t.max else { return 256 }
        return min(max(Int(r.rlim_cur) / 4, 4), 256)
    }

    /// The fingerprint file `i` must match: the plan's, or what it was when this job first opened it.
    package func fingerprint(_ i: Int) -> FileFingerprint? {
        expected[i] ?? state.withLock { $0.seen[i] }
    }

    /// File `i`, open and checked.
    package func file(_ i: Int) throws -> SystemFile {
        guard paths.indices.contains(i) else { throw InternalError("a piece reads file \(i) of a plan with \(paths.count)") }
        if let f = state.withLock({ s -> SystemFile? in
            s.clock += 1
            if s.open[i] != nil { s.lastUse[i] = s.clock }
            return s.open[i]
        }) { return f }
        let f = try SystemFile(readingAt: paths[i])
        let now = try f.fingerprint()
        if let want = expected[i] { try want.check(FileStatus.of(descriptor: f.fd, path: f.path), path: f.path) }
        if let end = extents[i], end > now.size { throw IOError.shortFile(paths[i], size: now.size) }
        f.adviseSequential()
        return state.withLock { s in
            if s.seen[i] == nil { s.seen[i] = now }
            if let other = s.open[i] { return other }
            if s.open.count >= limit, let victim = s.lastUse.min(by: { $0.value < $1.value })?.key {
                s.open[victim] = nil
                s.lastUse[victim] = nil
            }
            s.clock += 1
            s.open[i] = f
            s.lastUse[i] = s.clock
            return f
        }
    }

    /// Checks every file this job read against its fingerprint once more (by path: a file
    /// replaced, truncated or rewritten since it was opened is an error).
    package func verifyUnchanged() throws {
        let opened = state.withLock { s in s.seen }
        for i in opened.keys.sorted() {
            guard let want = expected[i] ?? opened[i] else { continue }
            guard let now = try FileStatus.of(paths[i], followLinks: true) else {
                throw InputChangedError(path: paths[i], "it was removed")
            }
            try want.check(now, path: paths[i])
        }
    }

    /// Closes every file.
    package func closeAll() { state.withLock { $0.open.removeAll() } }
}
