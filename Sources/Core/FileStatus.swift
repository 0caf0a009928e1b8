import Glibc

/// What kind of object a path names.
package enum FileKind: Sendable, Equatable {
    case regular, directory, symbolicLink, fifo, socket, characterDevice, blockDevice, other

    package init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFDIR: self = .directory
        case S_IFLNK: self = .symbolicLink
        case S_IFIFO: self = .fifo
        case S_IFSOCK: self = .socket
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        default: self = .other
        }
    }

    /// "a FIFO", "a directory", ... for error messages.
    package var noun: String {
        switch self {
        case .regular: return "a regular file"
        case .directory: return "a directory"
        case .symbolicLink: return "a symbolic link"
        case .fifo: return "a FIFO"
        case .socket: return "a socket"
        case .characterDevice: return "a character device"
        case .blockDevice: return "a block device"
        case .other: return "a special file"
        }
    }
}

/// The `stat` facts the safety checks use.
package struct FileStatus: Sendable, Equatable {
    package let kind: FileKind
    package let size: Int
    package let device: UInt64
    package let inode: UInt64
    /// Last modification, nanoseconds since the epoch.
    package let modifiedNanoseconds: Int64

    package init(_ st: stat) {
        kind = FileKind(mode: st.st_mode)
        size = Int(st.st_size)
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        modifiedNanoseconds = Int64(st.st_mtim.tv_sec) &* 1_000_000_000 &+ Int64(st.st_mtim.tv_nsec)
    }

    /// The status of `path` (of a final symbolic link itself unless `followLinks`); nil when nothing
    /// is there. Other failures (a link loop, no permission) throw with the system's reason.
    package static func of(_ path: String, followLinks: Bool) throws -> FileStatus? {
        var st = stat()
        let rc = followLinks ? stat(path, &st) : lstat(path, &st)
        if rc == 0 { return FileStatus(st) }
        if errno == ENOENT || (followLinks && errno == ENOTDIR) { return nil }
        throw IOError("stat", path: path)
    }

    /// The status of an open descriptor.
    package static func of(descriptor fd: Int32, path: String) throws -> FileStatus {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw IOError("stat", path: path) }
        return FileStatus(st)
    }

    /// Same file system object.
    package func isSameFile(as other: FileStatus) -> Bool { device == other.device && inode == other.inode }

    /// The object's identity on this machine.
    package var identity: FileIdentity { FileIdentity(device: device, inode: inode) }
}

/// A file system object's identity: `(st_dev, st_ino)`. Two paths name the same object exactly
/// when their identities are equal, whatever links, `..` or bind mounts they pass through.
package struct FileIdentity: Hashable, Sendable, Codable {
    package let device: UInt64
    package let inode: UInt64
}
