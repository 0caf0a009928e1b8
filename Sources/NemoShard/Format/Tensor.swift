import Glibc

/// Page-aligned bytes owned by one tensor (or one staging buffer).
public final class TensorStorage: @unchecked Sendable {
    public let bytes: UnsafeMutableRawBufferPointer

    /// Allocates `count` bytes, page-aligned, uninitialised.
    public init(count: Int) {
        var p: UnsafeMutableRawPointer?
        let rc = posix_memalign(&p, 4096, max(count, 1))
        guard rc == 0, let p else { fatalError("out of memory allocating \(count) bytes") }
        bytes = UnsafeMutableRawBufferPointer(start: p, count: count)
    }

    deinit { free(bytes.baseAddress) }
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
