import NemoShardCore

/// A safetensors file opened for reading: the header is validated once, tensor bytes are read
/// on demand with `pread` into buffers the caller owns. Nothing is mapped.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let header: SafetensorsHeader
    package let file: SystemFile
    /// The file as it was when its header was read (a plan made from the header holds only for it).
    package let fingerprint: FileFingerprint

    /// Opens and validates `path`.
    public init(path: String) throws {
        self.path = path
        file = try SystemFile(readingAt: path)
        fingerprint = try file.fingerprint()
        header = try SafetensorsFile.readHeader(file: file, size: fingerprint.size)
    }

    /// Reads and validates just the header of an open file.
    package static func readHeader(file: SystemFile, size: Int) throws -> SafetensorsHeader {
        let path = file.path
        guard size >= 8 else { throw SafetensorsError(path: path, .fileTooSmall(size: size)) }
        let length = try SafetensorsHeader.headerLength(try file.readBytes(count: 8, at: 0), fileSize: size, path: path)
        let bytes = try file.readBytes(count: length, at: 8)
        return try SafetensorsHeader.parse(headerBytes: bytes, fileSize: size, path: path)
    }

    /// The entry for `name`, or an error naming the file and key.
    package func info(_ name: String) throws -> TensorInfo {
        guard let t = header[name] else { throw SafetensorsError(path: path, key: name, .notInFile) }
        return t
    }

    /// Absolute file offset of the first byte of `tensor`.
    package func fileOffset(of tensor: TensorInfo) -> Int { header.dataStart + tensor.begin }

    /// Reads the whole tensor into `buffer` (which must be exactly its size).
    public func read(_ name: String, into buffer: UnsafeMutableRawBufferPointer) throws {
        let t = try info(name)
        guard buffer.count == t.byteCount else {
            throw SafetensorsError(path: path, key: name, .bufferSize(given: buffer.count, needed: t.byteCount))
        }
        try file.read(into: buffer, at: fileOffset(of: t))
    }

    /// Reads rows `[rows.lowerBound, rows.upperBound)` of dim 0 into `buffer`.
    package func readRows(_ name: String, rows: Range<Int>, into buffer: UnsafeMutableRawBufferPointer) throws {
        let t = try info(name)
        guard let first = t.shape.first, rows.lowerBound >= 0, rows.upperBound <= first else {
            throw SafetensorsError(path: path, key: name, .rowsOutOfRange(rows, shape: t.shape))
        }
        let rowBytes = first == 0 ? 0 : t.byteCount / first
        guard buffer.count == rowBytes * rows.count else {
            throw SafetensorsError(path: path, key: name, .bufferSize(given: buffer.count, needed: rowBytes * rows.count))
        }
        try file.read(into: buffer, at: fileOffset(of: t) + rowBytes * rows.lowerBound)
    }

    /// Reads the whole tensor into a new `Tensor` (an `AllocationError` if it cannot be held).
    public func tensor(_ name: String) throws -> Tensor {
        let t = try info(name)
        let out = try Tensor(dtype: t.dtype, shape: t.shape, for: "tensor \"\(name)\" of \(path)")
        try read(name, into: out.storage.bytes)
        return out
    }
}
