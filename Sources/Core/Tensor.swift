import Glibc

/// Page-aligned bytes owned by one tensor (or one staging buffer). Buffers of 2 MiB or more are
/// their own anonymous mappings (returned to the system when freed); writers fault their pages in
/// with `populate` rather than one trap per page. They use 4 KiB pages unless `NEMOSHARD_HUGEPAGES=1`
/// asks for transparent huge pages: on virtual machines whose free memory is handed back to the host
/// (free page reporting), a fresh huge page measured 2-6x slower to fault in than 512 small ones.
///
/// Package-only: its `bytes` are a mutable pointer shared by every `Tensor` over the storage, so
/// it is `@unchecked Sendable` only for the layers that fill a tensor before handing it out.
package final class TensorStorage: @unchecked Sendable {
    package let bytes: UnsafeMutableRawBufferPointer
    private let block: Memory.Block

    package static let useHugePages = getenv("NEMOSHARD_HUGEPAGES").map { String(cString: $0) == "1" } ?? false

    private init(_ block: Memory.Block) {
        self.block = block
        bytes = block.bytes
    }

    /// Allocates `count` bytes, aligned as `Memory.allocate` aligns them, uninitialised (zero-filled when mapped), through
    /// `Memory.allocate`: failure is an `AllocationError` naming `purpose`. Every buffer whose size
    /// comes from the input must be made this way.
    package convenience init(count: Int, for purpose: @autoclosure () -> String) throws {
        self.init(try Memory.allocate(bytes: count, for: purpose(), hugePages: TensorStorage.useHugePages))
    }

    /// Allocates `count` bytes for a buffer whose size does NOT come from the input (a fixed
    /// scratch size, a test): failure ends the process. Use `init(count:for:)` for anything else.
    package convenience init(count: Int) {
        self.init(TensorStorage.allocateOrStop(count))
    }

    private static func allocateOrStop(_ count: Int) -> Memory.Block {
        do { return try Memory.allocate(bytes: count, for: "a \(count)-byte buffer", hugePages: useHugePages) } catch { fatalError("\(error)") }
    }

    /// A private copy-on-write mapping of `count` bytes at `offset` of `file`, its page tables filled
    /// at once for reading: the bytes are the page cache's own pages, no copy, no fresh pages, until
    /// a page is written (that page alone is then copied; the file never changes). Only that range
    /// (rounded out to pages) is mapped. Truncating the file while the tensor lives is undefined
    /// (SIGBUS), as with any mmap-based loader.
    package init(mapping file: SystemFile, offset: Int, count: Int) throws {
        let start = offset / Memory.pageSize * Memory.pageSize
        let length = offset + count - start
        // Not MAP_POPULATE: on a writable private mapping it pre-breaks copy-on-write, copying every page.
        guard count > 0,
              let raw = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, file.fd, off_t(start)),
              raw != MAP_FAILED else { throw IOError("mmap of \(count) bytes at \(offset)", path: file.path) }
        Memory.populate(raw, count: length, forWriting: false)
        block = Memory.Block(bytes: UnsafeMutableRawBufferPointer(start: raw + (offset - start), count: count), mapping: (raw, length))
        bytes = block.bytes
    }

    deinit { Memory.release(block) }
}

/// A dense row-major tensor in memory: a value. Its bytes are reached only inside a scope,
/// `withUnsafeBytes { }` to read and `withUnsafeMutableBytes { }` to write; writing to a tensor
/// whose storage another copy shares first gives it a copy of its own (copy on write), so a
/// tensor sent to another thread never changes under it. (That is why it may be `Sendable`
/// although its storage is a raw buffer; the package's own layers fill a tensor's storage
/// directly, only before handing the tensor out.)
public struct Tensor: @unchecked Sendable {
    public let dtype: DType
    public let shape: [Int]
    package private(set) var storage: TensorStorage

    /// An uninitialised tensor of `dtype` and `shape` whose size does not come from the input (a
    /// test, a fixed buffer): failure ends the process. Everything else uses `init(dtype:shape:for:)`.
    package init(dtype: DType, shape: [Int]) {
        self.dtype = dtype
        self.shape = shape
        storage = TensorStorage(count: shape.reduce(1, *) * dtype.size)
    }

    /// An uninitialised (zero-filled when large) tensor of `dtype` and `shape`; a shape too large
    /// to hold (or memory running out) is an `AllocationError` naming `purpose`.
    public init(dtype: DType, shape: [Int], for purpose: @autoclosure () -> String) throws {
        var count = dtype.size
        for s in shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: s)
            guard !overflow, s >= 0 else { throw AllocationError(bytes: Int.max, purpose: purpose()) }
            count = p
        }
        self.dtype = dtype
        self.shape = shape
        storage = try TensorStorage(count: count, for: purpose())
    }

    /// A tensor over existing storage.
    package init(dtype: DType, shape: [Int], storage: TensorStorage) {
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
    }

    /// A tensor holding a copy of `bytes` (tests; the count must match the shape).
    package init(dtype: DType, shape: [Int], bytes: [UInt8]) {
        self.init(dtype: dtype, shape: shape)
        precondition(bytes.count == storage.bytes.count, "byte count does not match shape")
        bytes.withUnsafeBytes { storage.bytes.copyMemory(from: $0) }
    }

    public var byteCount: Int { storage.bytes.count }
    public var elementCount: Int { shape.reduce(1, *) }

    /// The bytes as an array (a copy: for tests and small tensors).
    public var byteArray: [UInt8] { Array(storage.bytes) }

    /// Calls `body` with the tensor's bytes (row-major, `byteCount` of them), valid only inside it.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(storage.bytes))
    }

    /// Calls `body` with the tensor's bytes to change them, valid only inside it. If another
    /// tensor shares this one's storage, this one first gets its own copy (an `AllocationError`
    /// if memory runs out), so no other copy sees the change.
    public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        if !isKnownUniquelyReferenced(&storage) {
            let copy = try TensorStorage(count: storage.bytes.count, for: "a copy of a \(dtype.rawValue) tensor of shape \(shape)")
            copy.bytes.copyMemory(from: UnsafeRawBufferPointer(storage.bytes))
            storage = copy
        }
        return try body(storage.bytes)
    }
}
