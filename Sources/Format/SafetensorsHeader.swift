import NemoShardCore

/// One tensor entry of a safetensors header; offsets are relative to the data buffer.
public struct TensorInfo: Equatable, Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    package let begin: Int
    package let end: Int

    public var byteCount: Int { end - begin }
    package var elementCount: Int { shape.reduce(1, *) }
}

/// A validated safetensors header.
public struct SafetensorsHeader: Sendable {
    /// Largest header the reference implementation accepts.
    package static let maxHeaderSize = 100_000_000

    /// Tensors in header order.
    public let tensors: [TensorInfo]
    /// The optional `__metadata__` map.
    public let metadata: [(String, String)]
    /// Byte offset of the data buffer within the file (8 + header length).
    package let dataStart: Int

    private let index: [String: Int]

    package init(tensors: [TensorInfo], metadata: [(String, String)], dataStart: Int) {
        self.tensors = tensors
        self.metadata = metadata
        self.dataStart = dataStart
        var index: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { index[t.name] = i }
        self.index = index
    }

    /// The entry named `name`, or nil.
    public subscript(name: String) -> TensorInfo? { index[name].map { tensors[$0] } }

    /// Whether no two tensors share a name (a parsed header's always do not).
    package var namesAreDistinct: Bool { index.count == tensors.count }

    /// Product of dims, or nil on overflow or a negative dim.
    package static func elementCount(_ shape: [Int]) -> Int? {
        var n = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, o) = n.multipliedReportingOverflow(by: d)
            if o { return nil }
            n = p
        }
        return n
    }

    /// The header length from a file's first 8 bytes, checked against the limit and the file size.
    package static func headerLength(_ first8: [UInt8], fileSize: Int, path: String) throws -> Int {
        guard first8.count == 8, fileSize >= 8 else {
            throw SafetensorsError(path: path, .fileTooSmall(size: fileSize))
        }
        var length: UInt64 = 0
        for i in 0..<8 { length |= UInt64(first8[i]) << (8 * UInt64(i)) }
        guard length <= UInt64(maxHeaderSize) else {
            throw SafetensorsError(path: path, .headerTooLong(length: length, limit: maxHeaderSize))
        }
        guard Int(length) <= fileSize - 8 else {
            throw SafetensorsError(path: path, .headerPastEnd(length: length, fileSize: fileSize))
        }
        return Int(length)
    }

    /// Validates a whole file image in memory (what `SafetensorsFile` does with `pread`).
    package static func parse(fileImage: [UInt8], path: String) throws -> SafetensorsHeader {
        let n = try headerLength(Array(fileImage.prefix(8)), fileSize: fileImage.count, path: path)
        return try parse(headerBytes: Array(fileImage[8..<(8 + n)]), fileSize: fileImage.count, path: path)
    }

    /// Parses and validates header bytes against the file size, as the reference implementation does:
    /// a header as writers lay it out is read straight from its bytes (`canonical`), anything else
    /// by the general parser, which names what is wrong.
    package static func parse(headerBytes: [UInt8], fileSize: Int, path: String) throws -> SafetensorsHeader {
        if headerBytes.first == UInt8(ascii: "{"), let header = canonical(headerBytes: headerBytes, fileSize: fileSize) { return header }
        return try parseGeneral(headerBytes: headerBytes, fileSize: fileSize, path: path)
    }

    /// The general parser: a JSON document, then every rule checked entry by entry.
    package static func parseGeneral(headerBytes: [UInt8], fileSize: Int, path: String) throws -> SafetensorsHeader {
        func bad(_ reason: SafetensorsError.Reason, key: String? = nil) -> SafetensorsError {
            SafetensorsError(path: path, key: key, reason)
        }
        guard headerBytes.first == UInt8(ascii: "{") else { throw bad(.headerNotBrace) }
        let json: JSON
        do { json = try JSON.parse(headerBytes) } catch let e as JSONError {
            throw bad(.headerNotJSON("\(e)"))
        }
        guard let members = json.objectValue else { throw bad(.headerNotObject) }
        var tensors: [TensorInfo] = []
        var metadata: [(String, String)] = []
        tensors.reserveCapacity(members.count)
        for (name, value) in members {
            if name == "__metadata__" {
                guard let entries = value.objectValue else { throw bad(.metadataNotObject) }
                for (k, v) in entries {
                    guard let s = v.stringValue else { throw bad(.metadataValueNotString(key: k)) }
                    metadata.append((k, s))
                }
                continue
            }
            guard let fields = value.objectValue else { throw bad(.entryNotObject, key: name) }
            _ = fields
            guard let dtypeValue = value["dtype"] else { throw bad(.missingField("dtype"), key: name) }
            guard let dtypeName = dtypeValue.stringValue else { throw bad(.fieldWrongType("dtype", expected: "a string"), key: name) }
            guard let dtype = DType(rawValue: dtypeName) else { throw bad(.unknownDType(dtypeName), key: name) }
            guard let shapeValue = value["shape"] else { throw bad(.missingField("shape"), key: name) }
            guard let dims = shapeValue.arrayValue else { throw bad(.fieldWrongType("shape", expected: "an array"), key: name) }
            var shape: [Int] = []
            for d in dims {
                guard let i = d.intValue, i >= 0, i <= Int64(Int.max) else {
                    throw bad(.negativeShape, key: name)
                }
                shape.append(Int(i))
            }
            guard let offsetsValue = value["data_offsets"] else { throw bad(.missingField("data_offsets"), key: name) }
            guard let offsets = offsetsValue.arrayValue, offsets.count == 2,
                  let b = offsets[0].intValue, let e = offsets[1].intValue, b >= 0, e >= 0
            else { throw bad(.badOffsets, key: name) }
            guard e >= b else { throw bad(.offsetsReversed(begin: b, end: e), key: name) }
            guard let n = elementCount(shape) else { throw bad(.shapeOverflows(shape), key: name) }
            let (bytes, o) = n.multipliedReportingOverflow(by: dtype.size)
            guard !o else { throw bad(.shapeOverflows(shape), key: name) }
            guard Int(e - b) == bytes else {
                throw bad(.byteCountMismatch(bytes: e - b, shape: shape, dtype: dtype.rawValue, needed: bytes), key: name)
            }
            tensors.append(TensorInfo(name: name, dtype: dtype, shape: shape, begin: Int(b), end: Int(e)))
        }
        // Offsets must tile the buffer: sorted by begin, each starts where the last ended.
        let sorted = tensors.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var cursor = 0
        for t in sorted {
            if t.begin < cursor { throw bad(.overlap, key: t.name) }
            if t.begin > cursor { throw bad(.hole(at: cursor), key: t.name) }
            cursor = t.end
        }
        let dataStart = 8 + headerBytes.count
        let bufferSize = fileSize - dataStart
        guard cursor == bufferSize else {
            throw bad(.bufferLengthMismatch(end: cursor, bufferSize: bufferSize))
        }
        return SafetensorsHeader(tensors: tensors, metadata: metadata, dataStart: dataStart)
    }
}
