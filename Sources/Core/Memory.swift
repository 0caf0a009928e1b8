import Glibc

/// Memory that could not be had: how much, what it was for, and the system's reason. Its
/// description is one line, e.g. `cannot allocate 40.0 GiB for tensor "x" (in memory): Cannot
/// allocate memory`.
public struct AllocationError: Error, CustomStringConvertible, Codable, Sendable {
    public let bytes: Int
    /// What the memory was for ("tensor \"x\" (in memory)", "the copy window of ...").
    public let purpose: String
    /// errno-style reason (ENOMEM when the system or `NEMOSHARD_MAX_ALLOCATION` refused).
    public let code: Int32

    package init(bytes: Int, purpose: String, code: Int32 = ENOMEM) {
        self.bytes = bytes
        self.purpose = purpose
        self.code = code
    }

    public var description: String {
        "cannot allocate \(AllocationError.format(bytes)) for \(purpose): \(String(cString: strerror(code)))"
    }

    /// Binary units with one decimal: `512 B`, `16.0 MiB`, `40.0 GiB`.
    package static func format(_ n: Int) -> String {
        let units: [(Int, String)] = [(1 << 50, "PiB"), (1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        for (scale, unit) in units where n >= scale {
            let tenths = Int((Double(n) / Double(scale) * 10).rounded())
            return "\(tenths / 10).\(tenths % 10) \(unit)"
        }
        return "\(n) B"
    }
}

/// The process's one allocator for large buffers, and page-table helpers for buffers the executor
/// is about to fill or read.
package enum Memory {
    package static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Buffers of at least this many bytes are their own anonymous mappings (returned to the
    /// system when freed); smaller ones come from `posix_memalign`.
    package static let mappingThreshold = 2 << 20

    /// Test-only cap on a single allocation (`NEMOSHARD_MAX_ALLOCATION`, bytes or with a
    /// KiB/MiB/GiB suffix): a larger request fails as if the system had refused it, so tests of
    /// the out-of-memory path do not depend on the machine's RAM or overcommit policy.
    package static let allocationCap: Int? = ProcessFacts.environment("NEMOSHARD_MAX_ALLOCATION").flatMap(parseCap)

    package static func parseCap(_ text: String) -> Int? {
        let units: [(String, Int)] = [("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10), ("G", 1 << 30), ("M", 1 << 20),
                                      ("K", 1 << 10), ("B", 1)]
        let upper = text.uppercased()
        for (suffix, scale) in units where upper.hasSuffix(suffix) {
            guard let n = Int(upper.dropLast(suffix.count)), n >= 0 else { return nil }
            let (v, overflow) = n.multipliedReportingOverflow(by: scale)
            return overflow ? nil : v
        }
        return Int(text).flatMap { $0 >= 0 ? $0 : nil }
    }

    /// Bytes from `allocate`, and how to give them back (`release`).
    package struct Block {
        package let bytes: UnsafeMutableRawBufferPointer
        /// The whole mapping (start, length) when the bytes are (inside) an mmap; nil for the heap.
        package let mapping: (UnsafeMutableRawPointer, Int)?
    }

    /// Allocates `count` bytes, page-aligned (64-byte aligned below a page: a page each for a
    /// million tensors of a few bytes would be 4 GiB), uninitialised (zero-filled when mapped). Failure is
    /// an `AllocationError` naming `purpose`, never a trap: the caller's error path (abandoning a
    /// staged output, agreeing with the other ranks) runs as for any other error. With
    /// `hugePages` a mapping is aligned to 2 MiB and advised `MADV_HUGEPAGE`.
    package static func allocate(bytes count: Int, for purpose: @autoclosure () -> String, hugePages: Bool = false) throws -> Block {
        guard count >= 0 else { throw AllocationError(bytes: count, purpose: purpose(), code: EINVAL) }
        if let cap = allocationCap, count > cap { throw AllocationError(bytes: count, purpose: purpose()) }
        if count >= mappingThreshold {
            let align = hugePages ? mappingThreshold : 0
            let (length, overflow) = count.addingReportingOverflow(align)
            guard !overflow else { throw AllocationError(bytes: count, purpose: purpose()) }
            guard let raw = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED else {
                throw AllocationError(bytes: count, purpose: purpose(), code: errno)
            }
            let start = align == 0 ? raw : raw.alignedUp(toMultipleOf: align)
            if align != 0 { madvise(start, count, MADV_HUGEPAGE) }
            return Block(bytes: UnsafeMutableRawBufferPointer(start: start, count: count), mapping: (raw, length))
        }
        var p: UnsafeMutableRawPointer?
        let rc = posix_memalign(&p, count >= pageSize ? pageSize : 64, max(count, 1))
        guard rc == 0, let p else { throw AllocationError(bytes: count, purpose: purpose(), code: rc == 0 ? ENOMEM : rc) }
        return Block(bytes: UnsafeMutableRawBufferPointer(start: p, count: count), mapping: nil)
    }

    /// Gives back a block from `allocate` (or a file mapping recorded the same way).
    package static func release(_ block: Block) {
        if let (raw, length) = block.mapping { munmap(raw, length) } else { free(block.bytes.baseAddress) }
    }

    /// Faults in the pages under `count` bytes at `start` with one system call
    /// (`MADV_POPULATE_WRITE` / `MADV_POPULATE_READ`) instead of one trap per page. Reading leaves
    /// private file pages shared with the page cache. Best effort: on a kernel without it (before
    /// Linux 5.14) the pages fault in on first use, as they otherwise would.
    package static func populate(_ start: UnsafeMutableRawPointer, count: Int, forWriting: Bool = true) {
        // Below a page a fault is as cheap as the call (a million tiny tensors: a million calls).
        guard count >= pageSize else { return }
        let first = Int(bitPattern: start) / pageSize * pageSize
        let length = Int(bitPattern: start) + count - first
        _ = madvise(UnsafeMutableRawPointer(bitPattern: first), length, forWriting ? populateWrite : populateRead)
    }

    private static let populateRead: Int32 = 22
    private static let populateWrite: Int32 = 23
}
