import CKernels
import Glibc

package let ENOENT_CODE = ENOENT

/// Size caps for files read whole: a link to /dev/zero or a multi-GB file named like a config is
/// refused before any allocation.
package enum ReadLimit {
    /// config.json, generation config and other small JSON.
    package static let config = 16 << 20
    /// model.safetensors.index.json and nemoshard.json: a few MB for the largest real models; a
    /// million tensors make a 90 MB index and a manifest of about 300 MB.
    package static let index = 512 << 20
    /// /proc files.
    package static let procfs = 1 << 20
}

/// Runs a system call again while it fails with EINTR.
@inline(__always)
package func retryingInterrupts<T: BinaryInteger>(_ call: () -> T) -> T {
    while true {
        let r = call()
        if r >= 0 || errno != EINTR { return r }
    }
}

/// The whole content of a small regular file, at most `limit` bytes; a larger file is an error.
package func readWholeFile(_ path: String, limit: Int) throws -> [UInt8] {
    let f = try SystemFile(readingAt: path)
    var out: [UInt8] = []
    // procfs reports size 0: read until the end, never past the cap.
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { b in retryingInterrupts { Glibc.read(f.fd, b.baseAddress, b.count) } }
        if n < 0 { throw IOError("read", path: path) }
        if n == 0 { return out }
        guard out.count + n <= limit else {
            throw CheckpointError(path: path, "larger than the \(limit >> 20) MiB this file may have; refusing to read it")
        }
        out += buffer[0..<n]
    }
}

/// `dir/.name.tmp-PID` for `dir/name`: same directory, so the final rename is atomic.
package func temporaryName(for path: String) -> String {
    let slash = path.lastIndex(of: "/")
    let dir = slash.map { String(path[...$0]) } ?? ""
    let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
    return "\(dir).\(base).tmp-\(getpid())"
}

/// Writes `bytes` to `path` through a temporary name, fsync and rename.
package func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws {
    let tmp = temporaryName(for: path)
    do {
        let f = try SystemFile(creatingAt: tmp)
        try bytes.withUnsafeBytes { try f.write($0, at: 0) }
        try f.sync()
    } catch {
        unlink(tmp)
        throw error
    }
    guard rename(tmp, path) == 0 else {
        let e = IOError("rename to \(path)", path: tmp)
        unlink(tmp)
        throw e
    }
}

/// Path and directory helpers over Glibc. Nothing here follows a symbolic link when removing.
package enum FS {
    /// Whether anything (even a dangling or looping link) has this name.
    package static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// Whether `path` is a directory (following links).
    package static func isDirectory(_ path: String) -> Bool {
        (try? FileStatus.of(path, followLinks: true))??.kind == .directory
    }

    /// Throws unless `path` is a directory (following links), with the system's reason (no such
    /// file, a link loop, no permission) or what it is instead.
    package static func requireDirectory(_ path: String) throws {
        guard let s = try FileStatus.of(path, followLinks: true) else {
            throw CheckpointError(path: path, "does not exist")
        }
        guard s.kind == .directory else { throw CheckpointError(path: path, "is \(s.kind.noun), not a directory") }
    }

    package static func join(_ a: String, _ b: String) -> String { a.hasSuffix("/") ? a + b : a + "/" + b }

    /// The last component of `path`.
    package static func baseName(_ path: String) -> String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p.split(separator: "/").last.map(String.init) ?? p
    }

    /// Creates `path` and missing parents.
    package static func makeDirectories(_ path: String) throws {
        if isDirectory(path) { return }
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/") {
            prefix += part
            if !isDirectory(prefix), mkdir(prefix, 0o755) != 0, errno != EEXIST {
                throw IOError("mkdir", path: prefix)
            }
            prefix += "/"
        }
    }

    /// Names in `path` (without . and ..), sorted.
    package static func list(_ path: String) throws -> [String] {
        guard let d = opendir(path) else { throw IOError("opendir", path: path) }
        defer { closedir(d) }
        return entries(of: d)
    }

    private static func entries(of d: OpaquePointer) -> [String] {
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Removes `path` and, if it is a real directory, everything below it. A symbolic link (at the
    /// top or anywhere inside) is unlinked itself; its target is never touched. Returns whether
    /// `path` is gone.
    @discardableResult
    package static func removeTree(_ path: String) -> Bool {
        let parentFD = open(parent(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard parentFD >= 0 else { return !exists(path) }
        defer { close(parentFD) }
        removeEntry(baseName(path), in: parentFD)
        return !exists(path)
    }

    private static func removeEntry(_ name: String, in dirFD: Int32) {
        // Files, links, FIFOs and sockets go with unlinkat; Linux answers EISDIR for a directory.
        if unlinkat(dirFD, name, 0) == 0 || errno == ENOENT { return }
        guard errno == EISDIR || errno == EPERM else { return }
        let fd = openat(dirFD, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return }
        guard let d = fdopendir(fd) else { close(fd); return }
        for child in entries(of: d) { removeEntry(child, in: fd) }
        closedir(d)
        unlinkat(dirFD, name, AT_REMOVEDIR)
    }

    /// The absolute, symlink-free form of an existing path (or `path` itself if that fails).
    package static func realPath(_ path: String) -> String {
        guard let p = realpath(path, nil) else { return path }
        defer { free(p) }
        return String(cString: p)
    }

    /// Copies a regular file (streamed, any size) to `to` through a temporary name.
    package static func copyFile(from: String, to: String) throws {
        let source = try SystemFile(readingAt: from)
        let size = try source.size()
        let tmp = temporaryName(for: to)
        do {
            let out = try SystemFile(creatingAt: tmp)
            if size > 0, try !out.copyRange(from: source, at: 0, to: 0, count: size) {
                var buffer = [UInt8](repeating: 0, count: 1 << 20)
                var done = 0
                while done < size {
                    let n = min(buffer.count, size - done)
                    try buffer.withUnsafeMutableBytes { b in
                        try source.read(into: UnsafeMutableRawBufferPointer(rebasing: b[0..<n]), at: done)
                        try out.write(UnsafeRawBufferPointer(rebasing: b[0..<n]), at: done)
                    }
                    done += n
                }
            }
            try out.sync()
            try renameFile(tmp, to)
        } catch {
            unlink(tmp)
            throw error
        }
    }

    /// Creates one new directory (mode 0755); an existing name is an error.
    package static func makeDirectory(_ path: String) throws {
        guard mkdir(path, 0o755) == 0 else { throw IOError("mkdir", path: path) }
    }

    /// Unlinks `path` (the name itself, never what a link points to); a missing name is fine.
    package static func removeFile(_ path: String) { unlink(path) }

    /// Atomically swaps two existing paths (`renameat2(RENAME_EXCHANGE)`). False, having changed
    /// nothing, where the file system cannot (or `NEMOSHARD_NO_RENAME_EXCHANGE=1` says so, for tests).
    package static func exchange(_ a: String, _ b: String) throws -> Bool {
        if ProcessFacts.flag("NEMOSHARD_NO_RENAME_EXCHANGE") { return false }
        if ns_renameat2(a, b, UInt32(NS_RENAME_EXCHANGE)) == 0 { return true }
        if errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP { return false }
        throw IOError("exchange with \(b)", path: a)
    }

    /// What `renameWithoutReplacing` did.
    package enum RenameOutcome { case renamed, targetExists }

    /// Renames `from` to `to` unless `to` exists (`RENAME_NOREPLACE`; plain `rename` where the file
    /// system lacks it).
    package static func renameWithoutReplacing(_ from: String, _ to: String) throws -> RenameOutcome {
        if ns_renameat2(from, to, UInt32(NS_RENAME_NOREPLACE)) == 0 { return .renamed }
        if errno == EEXIST || errno == ENOTEMPTY { return .targetExists }
        guard errno == EINVAL || errno == ENOSYS else { throw IOError("rename to \(to)", path: from) }
        try renameFile(from, to)
        return .renamed
    }

    /// Whether `path` can be written into (a directory we may create files in).
    package static func isWritableDirectory(_ path: String) -> Bool { access(path, W_OK | X_OK) == 0 }

    /// The parent directory of `path`.
    package static func parent(_ path: String) -> String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        guard let slash = p.lastIndex(of: "/") else { return "." }
        return slash == p.startIndex ? "/" : String(p[..<slash])
    }

    /// fsyncs a directory so renames in it are durable.
    package static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }
}

/// Writes `text` to file descriptor 2 (unbuffered, safe from any thread).
package func printToStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes[done...].withUnsafeMutableBytes { b in retryingInterrupts { Glibc.write(2, b.baseAddress, b.count) } }
        if n <= 0 { return }
        done += n
    }
}

/// rename(2) with an error naming both paths.
package func renameFile(_ from: String, _ to: String) throws {
    guard rename(from, to) == 0 else { throw IOError("rename to \(to)", path: from) }
}
