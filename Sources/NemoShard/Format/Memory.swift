import Glibc

/// Page-table helpers for buffers the executor is about to fill or read.
enum Memory {
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Faults in the pages under `count` bytes at `start` with one system call
    /// (`MADV_POPULATE_WRITE` / `MADV_POPULATE_READ`) instead of one trap per page. Reading leaves
    /// private file pages shared with the page cache. Best effort: on a kernel without it (before
    /// Linux 5.14) the pages fault in on first use, as they otherwise would.
    static func populate(_ start: UnsafeMutableRawPointer, count: Int, forWriting: Bool = true) {
        guard count > 0 else { return }
        let first = Int(bitPattern: start) / pageSize * pageSize
        let length = Int(bitPattern: start) + count - first
        _ = madvise(UnsafeMutableRawPointer(bitPattern: first), length, forWriting ? populateWrite : populateRead)
    }

    private static let populateRead: Int32 = 22
    private static let populateWrite: Int32 = 23
}
