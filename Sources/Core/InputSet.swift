import Glibc

/// The file system objects a job reads, by identity `(st_dev, st_ino)`: every input directory and
/// file (links resolved, so a Hugging Face cache snapshot's links count as the blobs they point
/// to), and every directory that holds one. An output is compared with it before anything is
/// created, so no spelling of a path (`..`, links, bind mounts) can make an output replace,
/// contain or lie inside an input.
package struct InputSet {
    /// The inputs themselves, with the path the job named each by.
    private var objects: [FileIdentity: String] = [:]
    /// Every directory above an input's real path, with the input it holds.
    private var holders: [FileIdentity: String] = [:]

    /// Records `paths` (directories or files; missing ones are skipped: they are not read).
    package init(_ paths: [String]) throws {
        for path in paths { try add(path) }
    }

    private mutating func add(_ path: String) throws {
        guard let status = try FileStatus.of(path, followLinks: true) else { return }
        if objects[status.identity] == nil { objects[status.identity] = path }
        var dir = FS.realPath(path)
        while dir != "/" {
            dir = FS.parent(dir)
            guard let s = try FileStatus.of(dir, followLinks: true) else { continue }
            if holders[s.identity] == nil { holders[s.identity] = path }
        }
    }

    /// Whether the directory at `path` (not followed if a link) is, or holds, an input.
    package func touches(_ path: String) -> Bool {
        guard let s = try? FileStatus.of(path, followLinks: false) else { return false }
        return objects[s.identity] != nil || holders[s.identity] != nil
    }

    /// Throws a `UsageError` if the output at `target` (an absolute path whose existing part has no
    /// links, see `FS.resolveForCreation`) is an input, holds one, or lies inside an input
    /// directory. `given` is the output as the user named it.
    package func check(output target: String, given: String) throws {
        if let s = try FileStatus.of(target, followLinks: false) {
            if let input = objects[s.identity] {
                throw UsageError("output \(given) is the input \(input); nemoshard never replaces its input")
            }
            if let input = holders[s.identity] {
                throw UsageError("output \(given) holds the input \(input) (replacing it would delete the input)")
            }
        }
        var dir = target
        while dir != "/" {
            dir = FS.parent(dir)
            guard let s = try FileStatus.of(dir, followLinks: true) else { continue }
            if let input = objects[s.identity] {
                throw UsageError("output \(given) is inside the input \(input)")
            }
        }
    }
}

extension FS {
    /// The absolute form of `path` for creating it: every existing directory on the way resolved
    /// (links followed), the components still to be created normalised lexically (`.` dropped,
    /// `..` going up), the last component kept as named (it is what is created or replaced, and is
    /// never followed). `newdir/../hf` is `hf` of the working directory, as the kernel will see it
    /// once `newdir` exists.
    package static func resolveForCreation(_ path: String) throws -> String {
        var parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard let last = parts.popLast() else { return "/" }
        var current = path.hasPrefix("/") ? "/" : try currentDirectory()
        for part in parts {
            switch part {
            case ".": continue
            case "..": current = FS.parent(current)
            default:
                let next = FS.join(current, part)
                guard let s = try FileStatus.of(next, followLinks: false) else {
                    current = next  // to be created: a real directory, so `..` below it comes back here
                    continue
                }
                switch s.kind {
                case .directory: current = next
                case .symbolicLink:
                    guard let t = try FileStatus.of(next, followLinks: true) else {
                        throw UsageError("cannot create the output under \(next): it is a dangling symbolic link")
                    }
                    guard t.kind == .directory else {
                        throw UsageError("cannot create the output under \(next): it links to \(t.kind.noun)")
                    }
                    current = realPath(next)
                default:
                    throw UsageError("cannot create the output under \(next): it is \(s.kind.noun)")
                }
            }
        }
        return FS.join(current, last)
    }

    /// The process's working directory, resolved.
    package static func currentDirectory() throws -> String {
        guard let p = getcwd(nil, 0) else { throw IOError("getcwd", path: ".") }
        defer { free(p) }
        return String(cString: p)
    }
}
