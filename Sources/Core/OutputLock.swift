import Glibc

/// An exclusive `flock` on `.NAME.nemoshard-lock` beside an output directory, held by one process
/// from prepare to commit: a second job on the same output fails at once. The file also records
/// what its holder creates (`staging`, `old` names), so that the next job can undo exactly what a
/// killed holder left behind, and nothing else. A clean finish unlinks it.
package final class OutputLock {
    package let path: String
    private let fd: Int32
    /// The record a killed holder left (empty when the previous job finished cleanly).
    package let leftover: [String: String]
    private var record: [(String, String)] = []

    /// Takes the lock or throws `OutputError` naming the holder's pid.
    package init(path: String, output: String) throws {
        self.path = path
        for _ in 0..<16 {
            let fd = retryingInterrupts { open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0o644) }
            guard fd >= 0 else {
                if errno == ELOOP, (try? FileStatus.of(path, followLinks: false))??.kind == .symbolicLink {
                    throw OutputError(path: output, "cannot be locked: its lock file \(path) is a symbolic link (nemoshard never follows one); remove the link")
                }
                throw IOError("open lock file", path: path)
            }
            let status: FileStatus
            do { status = try FileStatus.of(descriptor: fd, path: path) } catch { close(fd); throw error }
            guard status.kind == .regular else {
                close(fd)
                throw OutputError(path: output, "its lock file \(path) is \(status.kind.noun)")
            }
            if retryingInterrupts({ flock(fd, LOCK_EX | LOCK_NB) }) != 0 {
                let busy = errno == EWOULDBLOCK
                let holder = OutputLock.parse(OutputLock.read(fd))
                close(fd)
                guard busy else { throw IOError("flock", path: path) }
                let pid = holder["pid"] ?? "?"
                let host = holder["host"].map { $0 == hostName() ? "" : " on \($0)" } ?? ""
                throw OutputError(path: output, "is being written by another nemoshard job (pid \(pid)\(host))")
            }
            // A finishing holder unlinks the file: make sure the name still means this file.
            if let now = try? FileStatus.of(path, followLinks: false), now.isSameFile(as: status) {
                self.fd = fd
                leftover = OutputLock.parse(OutputLock.read(fd))
                return
            }
            close(fd)
        }
        throw OutputError(path: output, "could not take its lock \(path)")
    }

    /// Adds `value` under `key` to the record (fsynced before the step it announces).
    package func note(_ key: String, _ value: String) throws {
        record.append((key, value))
        let text = Array(record.map { "\($0.0) \($0.1)\n" }.joined().utf8)
        guard ftruncate(fd, 0) == 0 else { throw IOError("truncate lock file", path: path) }
        var done = 0
        while done < text.count {
            let n = text[done...].withUnsafeBytes { b in retryingInterrupts { pwrite(fd, b.baseAddress, b.count, off_t(done)) } }
            guard n > 0 else { throw IOError("write lock file", path: path) }
            done += n
        }
        guard fsync(fd) == 0 else { throw IOError("fsync lock file", path: path) }
    }

    /// Unlinks the lock file (while still holding it) and releases the lock.
    package func release() {
        unlink(path)
        close(fd)
    }

    private static func read(_ fd: Int32) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { b in retryingInterrupts { pread(fd, b.baseAddress, b.count, 0) } }
        return n > 0 ? Array(buffer[0..<n]) : []
    }

    private static func parse(_ bytes: [UInt8]) -> [String: String] {
        var out: [String: String] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let space = line.firstIndex(of: " ") else { continue }
            out[String(line[..<space])] = String(line[line.index(after: space)...])
        }
        return out
    }
}

/// This machine's host name.
package func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count - 1) == 0 else { return "?" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
