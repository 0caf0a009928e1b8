import Glibc
import NemoShardCore

/// A tensor to be written: name, dtype, shape.
package struct TensorSpec: Equatable, Sendable {
    package let name: String
    package let dtype: DType
    package let shape: [Int]

    package init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    package var byteCount: Int { shape.reduce(1, *) * dtype.size }
}

/// Writes one safetensors file whose layout is fixed up front: the header is written first, then
/// tensor bytes land at their offsets with `pwrite` in any order. The file lives under a temporary
/// name in the target directory until `commit()` renames it into place.
package final class SafetensorsWriter {
    package let finalPath: String
    package let temporaryPath: String
    package let specs: [TensorSpec]
    /// Absolute file offset of each tensor's first byte, in `specs` order.
    package let offsets: [Int]
    package let fileSize: Int
    private let file: SystemFile
    private var committed = false

    /// The header bytes (8-byte length + JSON padded with spaces to a multiple of 8) for `specs`.
    package static func headerBytes(for specs: [TensorSpec], metadata: [(String, String)]) -> [UInt8] {
        var members: [(String, JSON)] = []
        if !metadata.isEmpty {
            members.append(("__metadata__", .object(metadata.map { ($0.0, .string($0.1)) })))
        }
        var cursor = 0
        for s in specs {
            let n = s.byteCount
            members.append((s.name, .object([
                ("dtype", .string(s.dtype.rawValue)),
                ("shape", .array(s.shape.map { .int(Int64($0)) })),
                ("data_offsets", .array([.int(Int64(cursor)), .int(Int64(cursor + n))])),
            ])))
            cursor += n
        }
        var json = Array(JSON.object(members).serialized().utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + json.count)
        var length = UInt64(json.count)
        for _ in 0..<8 { out.append(UInt8(length & 0xFF)); length >>= 8 }
        out += json
        return out
    }

    /// Header bytes, each tensor's absolute offset, and the file size for `specs`.
    package static func layout(_ specs: [TensorSpec], metadata: [(String, String)]) -> (header: [UInt8], offsets: [Int], fileSize: Int) {
        let header = headerBytes(for: specs, metadata: metadata)
        var offsets: [Int] = []
        var cursor = header.count
        for s in specs {
            offsets.append(cursor)
            cursor += s.byteCount
        }
        return (header, offsets, cursor)
    }

    /// Creates the temporary file beside `path` and writes the header.
    package init(path: String, specs: [TensorSpec], metadata: [(String, String)] = []) throws {
        finalPath = path
        temporaryPath = temporaryName(for: path)
        self.specs = specs
        let (header, offsets, size) = SafetensorsWriter.layout(specs, metadata: metadata)
        self.offsets = offsets
        fileSize = size
        file = try SystemFile(creatingAt: temporaryPath)
        do {
            try header.withUnsafeBytes { try file.write($0, at: 0) }
            if fileSize > header.count { try file.allocate(size: fileSize) }
        } catch {
            unlink(temporaryPath)
            throw error
        }
    }

    deinit { if !committed { unlink(temporaryPath) } }

    /// Writes `bytes` into tensor `i` starting `offset` bytes into it.
    package func write(tensor i: Int, offset: Int = 0, _ bytes: UnsafeRawBufferPointer) throws {
        precondition(offset + bytes.count <= specs[i].byteCount, "write past the end of \(specs[i].name)")
        try file.write(bytes, at: offsets[i] + offset)
        startWriteback(offsets[i] + offset, bytes.count)
    }

    /// Ranges at least this long start their writeback as soon as they are written; smaller ones
    /// are left to the kernel and `finish`.
    package static let writebackUnit = 1 << 20

    private func startWriteback(_ offset: Int, _ count: Int) {
        if count >= SafetensorsWriter.writebackUnit { file.startWriteback(offset: offset, count: count) }
    }

    /// Copies `count` bytes at `sourceOffset` of `source` into tensor `i` at `offset` with
    /// `copy_file_range` (in-kernel). Returns false if the kernel cannot do it for these files.
    package func copy(tensor i: Int, offset: Int, from source: SystemFile, at sourceOffset: Int, count: Int) throws -> Bool {
        precondition(offset + count <= specs[i].byteCount, "copy past the end of \(specs[i].name)")
        guard try file.copyRange(from: source, at: sourceOffset, to: offsets[i] + offset, count: count) else { return false }
        startWriteback(offsets[i] + offset, count)
        return true
    }

    /// fsyncs the temporary file; it stays under its temporary name.
    package func finish() throws { try file.sync() }

    /// Renames the temporary file to its final name.
    package func commit() throws {
        guard rename(temporaryPath, finalPath) == 0 else { throw IOError("rename to \(finalPath)", path: temporaryPath) }
        committed = true
    }

    /// Writes whole tensors to a new safetensors file at `path`, in the order given, with the
    /// optional `__metadata__`: under a temporary name first, fsynced, then renamed into place.
    package static func write(path: String, tensors: [(String, Tensor)], metadata: [(String, String)] = []) throws {
        let specs = tensors.map { TensorSpec(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) }
        let w = try SafetensorsWriter(path: path, specs: specs, metadata: metadata)
        for (i, (_, t)) in tensors.enumerated() { try w.write(tensor: i, UnsafeRawBufferPointer(t.storage.bytes)) }
        try w.finish()
        try w.commit()
    }
}
