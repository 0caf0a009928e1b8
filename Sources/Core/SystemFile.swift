import CKernels
import Glibc

/// An open file descriptor with whole-range `pread`/`pwrite` that retry short transfers.
package final class SystemFile: @unchecked Sendable {
    package let path: String
    package let fd: Int32

    /// Opens an existing regular file for reading. A symbolic link to a regular file is fine (the
    /// Hugging Face cache lays out snapshots that way); a FIFO, device, socket or directory is
    /// refused before anything is read: the open never blocks (O_NONBLOCK) and `fstat` decides.
    package init(readingAt path: String) throws {
        self.path = path
        let fd = retryingInterrupts { open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY) }
        guard fd >= 0 else { throw IOError("open", path: path) }
        do {
            let kind = try FileStatus.of(descriptor: fd, path: path).kind
            guard kind == .regular else { throw CheckpointError(path: path, "is \(kind.noun), not a regular file") }
        } catch {
            close(fd)
            throw error
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        self.fd = fd
    }

    /// Creates a new file (mode 0644) that must not exist yet; never follows a symbolic link.
    /// With `replacingStale`, a leftover of that name (a temporary of a killed process) is unlinked
    /// first: the name itself, never what a link points to.
    package init(creatingAt path: String, replacingStale: Bool = true) throws {
        self.path = path
        let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
        var fd = retryingInterrupts { open(path, flags, 0o644) }
        if fd < 0, errno == EEXIST, replacingStale, unlink(path) == 0 {
            fd = retryingInterrupts { open(path, flags, 0o644) }
        }
        guard fd >= 0 else { throw IOError("create", path: path) }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Size in bytes.
    package func size() throws -> Int {
        try FileStatus.of(descriptor: fd, path: path).size
    }

    /// Reads exactly `buffer.count` bytes at `offset`; a short file is an error.
    package func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < buffer.count {
            let n = retryingInterrupts { pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done)) }
            if n < 0 { throw IOError("read", path: path) }
            if n == 0 { throw IOError("read (file ends at \(offset + done), wanted \(offset + buffer.count))", path: path, code: EIO) }
            done += n
        }
    }

    /// Reads `count` bytes at `offset` into a new array.
    package func readBytes(count: Int, at offset: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return bytes
    }

    /// Largest single `pwrite`. Larger writes let the page cache allocate 2 MiB folios, and on
    /// virtual machines that hand free memory back to the host (free page reporting) a fresh 2 MiB
    /// block measured 2-3x slower to fill than smaller ones (2.4-2.7 s/GB against 0.4-1.3 s/GB).
    package static let writeUnit = 1 << 20

    /// Writes all of `buffer` at `offset`.
    package func write(_ buffer: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < buffer.count {
            let n = retryingInterrupts { pwrite(fd, buffer.baseAddress! + done, min(buffer.count - done, SystemFile.writeUnit), off_t(offset + done)) }
            if n < 0 { throw IOError("write", path: path) }
            done += n
        }
    }

    /// `copy_file_range` of `count` bytes from `source` at `sourceOffset` to this file at `offset`.
    /// Returns false (having copied nothing) where the kernel refuses this pair of files.
    package func copyRange(from source: SystemFile, at sourceOffset: Int, to offset: Int, count: Int) throws -> Bool {
        var inOff = Int64(sourceOffset), outOff = Int64(offset)
        var done = 0
        while done < count {
            let n = retryingInterrupts { ns_copy_file_range(source.fd, &inOff, fd, &outOff, count - done) }
            if n < 0 {
                if done == 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP || errno == EBADF) { return false }
                throw IOError("copy_file_range from \(source.path)", path: path)
            }
            if n == 0 { throw IOError("copy_file_range (\(source.path) ends early)", path: path, code: EIO) }
            done += Int(n)
        }
        return true
    }

    /// Sets the file length (so a later pwrite past a hole cannot fail half-way for lack of space
    /// only at the end, and readers see the final size).
    package func allocate(size: Int) throws {
        let rc = posix_fallocate(fd, 0, off_t(size))
        if rc != 0 && rc != EOPNOTSUPP && rc != EINVAL { throw IOError("allocate \(size) bytes", path: path, code: rc) }
        if rc != 0, ftruncate(fd, off_t(size)) != 0 { throw IOError("truncate", path: path) }
    }

    /// Starts writing back the dirty pages of `count` bytes at `offset` without waiting, so that
    /// the disk works while the job goes on and the final `sync` has only the tail left (and the
    /// kernel never throttles writers for having too much dirty data at once). Best effort.
    package func startWriteback(offset: Int, count: Int) {
        _ = ns_start_writeback(fd, Int64(offset), Int64(count))
    }

    /// Flushes data to stable storage.
    package func sync() throws {
        guard fsync(fd) == 0 else { throw IOError("fsync", path: path) }
    }

    /// Runs `body` on a read-only mapping of `count` bytes at `offset` (page tables filled at once,
    /// just that range, unmapped right after). Returns false, without calling `body`, where the
    /// range cannot be mapped (the caller then reads it).
    package func withMappedRange(offset: Int, count: Int, _ body: (UnsafeRawPointer) throws -> Void) throws -> Bool {
        let start = offset / Memory.pageSize * Memory.pageSize
        let length = offset + count - start
        guard count > 0, let m = mmap(nil, length, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, off_t(start)), m != MAP_FAILED else {
            return false
        }
        defer { munmap(m, length) }
        try body(UnsafeRawPointer(m) + (offset - start))
        return true
    }

    /// Starts reading `length` bytes at `offset` into the page cache in the background (one deep
    /// request for the disk instead of the read-ahead window at a time).
    package func adviseWillNeed(offset: Int, length: Int) {
        _ = posix_fadvise(fd, off_t(offset), off_t(length), POSIX_FADV_WILLNEED)
    }

    /// Hints that `length` bytes at `offset` will be read sequentially.
    package func adviseSequential(offset: Int = 0, length: Int = 0) {
        _ = posix_fadvise(fd, off_t(offset), off_t(length), POSIX_FADV_SEQUENTIAL)
    }
}
