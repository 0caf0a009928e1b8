/// What a job recorded of an input file when it planned from it: which object it was, where, its
/// size and modification time. Every rank that opens the file later checks it against this, so a
/// shard replaced, truncated or rewritten mid-job is an error instead of a mixed output.
package struct FileFingerprint: Codable, Sendable, Equatable {
    /// The host that recorded it: `(st_dev, st_ino)` and the clock only mean something there.
    package let host: String
    package let identity: FileIdentity
    package let size: Int
    package let modifiedNanoseconds: Int64

    package init(_ status: FileStatus) {
        host = FileFingerprint.thisHost
        identity = status.identity
        size = status.size
        modifiedNanoseconds = status.modifiedNanoseconds
    }

    private static let thisHost = hostName()

    /// Throws `InputChangedError` unless `now` (the status of the file at `path` as this process
    /// sees it) is still the file planned from. On another host (node-local copies of the same
    /// checkpoint) only the size can be compared.
    package func check(_ now: FileStatus, path: String) throws {
        if now.size != size {
            throw InputChangedError(path: path, "its size was \(size) bytes when the job planned from it, now \(now.size)")
        }
        guard host == FileFingerprint.thisHost else { return }
        if now.identity != identity {
            throw InputChangedError(path: path, "it is another file than the one the job planned from (replaced)")
        }
        if now.modifiedNanoseconds != modifiedNanoseconds {
            throw InputChangedError(path: path, "it was modified after the job planned from it")
        }
    }
}

extension SystemFile {
    /// This open file's fingerprint.
    package func fingerprint() throws -> FileFingerprint { FileFingerprint(try FileStatus.of(descriptor: fd, path: path)) }

    /// Throws `InputChangedError` unless this open file is still the one `expected` describes.
    package func check(against expected: FileFingerprint) throws {
        try expected.check(try FileStatus.of(descriptor: fd, path: path), path: path)
    }
}
