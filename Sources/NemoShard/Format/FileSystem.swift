import Glibc

let ENOENT_CODE = ENOENT

/// The whole content of a (small) file.
public func readWholeFile(_ path: String) throws -> [UInt8] {
    let f = try SystemFile(readingAt: path)
    let size = try f.size()
    if size > 0 { return try f.readBytes(count: size, at: 0) }
    // procfs and pipes report size 0: read until the end.
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { Glibc.read(f.fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; throw IOError("read", path: path) }
        if n == 0 { return out }
        out += buffer[0..<n]
    }
}

/// Writes `bytes` to `path` through a temporary name, fsync and rename.
public func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws {
    let tmp = temporaryName(for: path)
    do {
        let f = try SystemFile(creatingAt: tmp, exclusive: false)
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

/// Small path and directory helpers over Glibc.
public enum FS {
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func join(_ a: String, _ b: String) -> String { a.hasSuffix("/") ? a + b : a + "/" + b }

    /// Creates `path` and missing parents.
    public static func makeDirectories(_ path: String) throws {
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
    public static func list(_ path: String) throws -> [String] {
        guard let d = opendir(path) else { throw IOError("opendir", path: path) }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Removes a file or a whole tree.
    public static func removeTree(_ path: String) {
        if isDirectory(path) {
            for name in (try? list(path)) ?? [] { removeTree(join(path, name)) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// The absolute, symlink-free form of an existing path (or `path` itself if that fails).
    public static func realPath(_ path: String) -> String {
        guard let p = realpath(path, nil) else { return path }
        defer { free(p) }
        return String(cString: p)
    }

    /// Copies a small file (read whole, write atomically).
    public static func copyFile(from: String, to: String) throws {
        try writeFileAtomically(to, try readWholeFile(from))
    }

    /// Whether `path` can be written into (a directory we may create files in).
    public static func isWritableDirectory(_ path: String) -> Bool { access(path, W_OK | X_OK) == 0 }

    /// The parent directory of `path`.
    public static func parent(_ path: String) -> String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        guard let slash = p.lastIndex(of: "/") else { return "." }
        return slash == p.startIndex ? "/" : String(p[..<slash])
    }
}
