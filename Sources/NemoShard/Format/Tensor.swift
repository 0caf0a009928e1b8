import Glibc

/// Page-aligned bytes owned by one tensor (or one staging buffer). Large buffers are anonymous
/// mappings aligned to 2 MiB and advised for transparent huge pages: first touch then faults once
/// per 2 MiB instead of once per 4 KiB.
public final class TensorStorage: @unchecked Sendable {
    public let bytes: UnsafeMutableRawBufferPointer
    private let mapping: (UnsafeMutableRawPointer, Int)?

    static let hugePage = 2 << 20

    /// Allocates `count` bytes, page-aligned, uninitialised (zero-filled when mapped).
    public init(count: Int) {
        if count >= TensorStorage.hugePage, getenv("NEMOSHARD_NO_HUGEPAGES") == nil {
            let length = count + TensorStorage.hugePage
            if let raw = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED {
                let aligned = (Int(bitPattern: raw) + TensorStorage.hugePage - 1) & ~(TensorStorage.hugePage - 1)
                let start = UnsafeMutableRawPointer(bitPattern: aligned)!
                madvise(start, count, MADV_HUGEPAGE)
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

    /// A private copy-on-write mapping of `count` bytes at `offset` of `file`, populated at once:
    /// the bytes come straight from the page cache, no copy, no fresh pages. Only that range (rounded
    /// out to pages) is mapped. Truncating the file while the tensor lives is undefined (SIGBUS),
    /// as with any mmap-based loader.
    public init(mapping file: SystemFile, offset: Int, count: Int) throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        let length = offset + count - start
        guard count > 0,
              let raw = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_POPULATE, file.fd, off_t(start)),
              raw != MAP_FAILED else { throw IOError("mmap of \(count) bytes at \(offset)", path: file.path) }
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
