import Glibc

/// Page-aligned bytes owned by one tensor (or one staging buffer). Buffers of 2 MiB or more are
/// their own anonymous mappings (returned to the system when freed); writers fault their pages in
/// with `populate` rather than one trap per page. They use 4 KiB pages unless `NEMOSHARD_HUGEPAGES=1`
/// asks for transparent huge pages: on virtual machines whose free memory is handed back to the host
/// (free page reporting), a fresh huge page measured 2-6x slower to fault in than 512 small ones.
public final class TensorStorage: @unchecked Sendable {
    public let bytes: UnsafeMutableRawBufferPointer
    private let mapping: (UnsafeMutableRawPointer, Int)?

    static let hugePage = 2 << 20
    static let useHugePages = getenv("NEMOSHARD_HUGEPAGES").map { String(cString: $0) == "1" } ?? false

    /// Allocates `count` bytes, page-aligned, uninitialised (zero-filled when mapped).
    public init(count: Int) {
        if count >= TensorStorage.hugePage {
            let align = TensorStorage.useHugePages ? TensorStorage.hugePage : 0
            let length = count + align
            if let raw = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED {
                let start = align == 0 ? raw : raw.alignedUp(toMultipleOf: align)
                if align != 0 { madvise(start, count, MADV_HUGEPAGE) }
                mapping = (raw, length)
                bytes = UnsafeMutableRawBufferPointer(start: start, count: count)
                return
            }
        }
        var p: UnsafeMutableRawPointer?
        let rc = posix_memalign(&p, 4096, max(count, 1))
        guard rc == 0, let p else { fatalError("out of memory allocating \(count) bytes") }
        mapping = nil
        bytes = UnsafeMutableRawBufferPointer(start: p, count: count)
    }

    /// A private copy-on-write mapping of `count` bytes at `offset` of `file`, its page tables filled
    /// at once for reading: the bytes are the page cache's own pages, no copy, no fresh pages, until
    /// a page is written (that page alone is then copied; the file never changes). Only that range
    /// (rounded out to pages) is mapped. Truncating the file while the tensor lives is undefined
    /// (SIGBUS), as with any mmap-based loader.
    init(mapping file: SystemFile, offset: Int, count: Int) throws {
        let start = offset / Memory.pageSize * Memory.pageSize
        let length = offset + count - start
        // Not MAP_POPULATE: on a writable private mapping it pre-breaks copy-on-write, copying every page.
        guard count > 0,
              let raw = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, file.fd, off_t(start)),
              raw != MAP_FAILED else { throw IOError("mmap of \(count) bytes at \(offset)", path: file.path) }
        Memory.populate(raw, count: length, forWriting: false)
        mapping = (raw, length)
        bytes = UnsafeMutableRawBufferPointer(start: raw + (offset - start), count: count)
    }

    deinit {
        if let (raw, length) = mapping { munmap(raw, length) } else { free(bytes.baseAddress) }
    }
}

/// A dense row-major tensor in memory.
public struct Tensor: @unchecked Sendable {
    public let dtype: DType
    public let shape: [Int]
    public let storage: TensorStorage

    /// An uninitialised tensor of `dtype` and `shape`.
    public init(dtype: DType, shape: [Int]) {
        self.dtype = dtype
        self.shape = shape
        storage = TensorStorage(count: shape.reduce(1, *) * dtype.size)
    }

    /// A tensor over existing storage.
    public init(dtype: DType, shape: [Int], storage: TensorStorage) {
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
    }

    /// A tensor holding a copy of `bytes`.
    public init(dtype: DType, shape: [Int], bytes: [UInt8]) {
        self.init(dtype: dtype, shape: shape)
        precondition(bytes.count == storage.bytes.count, "byte count does not match shape")
        bytes.withUnsafeBytes { storage.bytes.copyMemory(from: $0) }
    }

    public var byteCount: Int { storage.bytes.count }
    public var elementCount: Int { shape.reduce(1, *) }

    /// The bytes as an array (for tests and small tensors).
    public var byteArray: [UInt8] { Array(storage.bytes) }
}
