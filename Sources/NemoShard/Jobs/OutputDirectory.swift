import Glibc

/// An output checkpoint directory that is committed all at once: every file is written into a
/// hidden staging directory beside the target, and only `commit()` (rank 0, after every rank
/// succeeded) swaps it into place. A failed or killed job leaves the target as it was.
public struct OutputDirectory: Sendable {
    /// Where the checkpoint ends up.
    public let path: String
    /// Where its files are written meanwhile.
    public let staging: String
    let old: String

    /// Names only; touches nothing.
    public init(path: String) {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        self.path = p
        let parent = FS.parent(p)
        let name = p.split(separator: "/").last.map(String.init) ?? p
        staging = FS.join(parent, ".\(name).nemoshard-staging")
        old = FS.join(parent, ".\(name).nemoshard-old")
    }

    /// Checks the target (exists without `force`, not writable, inside an input) and creates a
    /// fresh staging directory. Rank 0 only.
    public func prepare(force: Bool, inputs: [String]) throws {
        if FS.exists(path) {
            guard force else { throw UsageError("output directory \(path) exists; pass --force to replace it") }
            guard FS.isDirectory(path) else { throw UsageError("output \(path) exists and is not a directory") }
        }
        let parent = FS.parent(path)
        try FS.makeDirectories(parent)
        guard FS.isWritableDirectory(parent) else { throw UsageError("cannot write into \(parent)") }
        let target = FS.join(FS.realPath(parent), path.split(separator: "/").last.map(String.init) ?? path)
        for input in inputs {
            let source = FS.realPath(input)
            if target == source || target.hasPrefix(source + "/") {
                throw UsageError("output directory \(path) is inside the input \(input)")
            }
            if source.hasPrefix(target + "/") {
                throw UsageError("the input \(input) is inside the output directory \(path)")
            }
        }
        FS.removeTree(staging)  // a killed earlier run may have left one
        guard mkdir(staging, 0o755) == 0 else { throw IOError("mkdir", path: staging) }
    }

    /// Path of `name` inside the staging directory.
    public func stagingPath(_ name: String) -> String { FS.join(staging, name) }

    /// Swaps the staging directory into place (replacing an old checkpoint). Rank 0 only.
    public func commit() throws {
        FS.removeTree(old)
        let hadOld = FS.exists(path)
        if hadOld, rename(path, old) != 0 { throw IOError("rename to \(old)", path: path) }
        guard rename(staging, path) == 0 else {
            let e = IOError("rename to \(path)", path: staging)
            if hadOld { rename(old, path) }
            throw e
        }
        if hadOld { FS.removeTree(old) }
        syncDirectory(FS.parent(path))
    }

    /// Removes the staging directory. Rank 0 only.
    public func abandon() { FS.removeTree(staging) }
}

/// fsyncs a directory so renames in it are durable.
func syncDirectory(_ path: String) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return }
    fsync(fd)
    close(fd)
}
