import Glibc

/// The compact binary form `Codable` values take between ranks (`Collective.broadcast` and
/// `allgather`): a plan, a manifest or a checkpoint's tensor table of a million entries encodes and
/// decodes in linear time at a few hundred instructions per field, where Foundation's JSON coders
/// spend tens of thousands per entry.
///
/// The stream is a tagged value: `nil`, a boolean, an integer (zig-zag LEB128), a double (8 bytes),
/// a string (LEB128 length + UTF-8), an empty value (an `encode(to:)` that wrote nothing), or a
/// container: `keyedBegin`, then (`key` tag, length, UTF-8, value) entries, `end`; `unkeyedBegin`,
/// values, `end`. Containers are closed lazily: the next write at an outer level
/// (or the end of the encoding) first ends every container opened deeper, so a nested container
/// needs no length up front.
///
/// Decoding reads a keyed container in the order it was written (the order synthesized `Codable`
/// uses both ways): each lookup first tries the entry after the last one read, and only falls
/// back to a scan of the container (a key written out of order, an optional left out, `allKeys`
/// for an enum's case or a dictionary) when that is not it. The bytes come from another rank of
/// the same program; malformed input is a `DecodingError`, never a trap.
package enum WireFormat {
    /// `value` as bytes.
    package static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let writer = WireWriter()
        let mark = writer.bytes.count
        try value.encode(to: WireEncoder(writer, depth: 0))
        if writer.bytes.count == mark { writer.bytes.append(Tag.empty.rawValue) }
        writer.close(to: 0)
        return writer.bytes
    }

    /// The value `bytes` encode.
    package static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try decodeCountingScans(type, from: bytes).value
    }

    /// `decode`, and the entries it visited searching keyed containers from their start (a key
    /// out of the written order, an optional left out, `allKeys`): a few per struct value with
    /// synthesized `Codable`, so linear in the value's size, never per element of a large one.
    package static func decodeCountingScans<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> (value: T, scannedEntries: Int) {
        try bytes.withUnsafeBufferPointer { buffer in
            let reader = WireReader(buffer)
            let value = try T(from: WireDecoder(reader, at: 0))
            guard try reader.skip(0) == buffer.count else { throw reader.corrupt("trailing bytes after the value", at: 0) }
            return (value, reader.scannedEntries)
        }
    }

    /// The first byte of every value.
    enum Tag: UInt8 {
        case null = 0, falseValue, trueValue, int, uint, double, string, empty, keyedBegin, unkeyedBegin, end, key
    }
}

// MARK: encoding

/// The bytes being written and the number of containers still open.
final class WireWriter {
    var bytes: [UInt8] = []
    var depth = 0

    init() { bytes.reserveCapacity(1 << 12) }

    /// Ends every container opened below `level`.
    @inline(__always)
    func close(to level: Int) {
        while depth > level {
            bytes.append(WireFormat.Tag.end.rawValue)
            depth -= 1
        }
    }

    func open(_ tag: WireFormat.Tag, at level: Int) -> Int {
        close(to: level)
        bytes.append(tag.rawValue)
        depth = level + 1
        return depth
    }

    @inline(__always)
    func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// A keyed container's entry: the key tag and the key.
    func key(_ s: String) {
        bytes.append(WireFormat.Tag.key.rawValue)
        raw(s)
    }

    func raw(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            varint(UInt64(utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }

    func null() { bytes.append(WireFormat.Tag.null.rawValue) }
    func bool(_ b: Bool) { bytes.append((b ? WireFormat.Tag.trueValue : .falseValue).rawValue) }
    func string(_ s: String) {
        bytes.append(WireFormat.Tag.string.rawValue)
        raw(s)
    }
    func int(_ i: Int64) {
        bytes.append(WireFormat.Tag.int.rawValue)
        varint(UInt64(bitPattern: (i << 1) ^ (i >> 63)))
    }
    func uint(_ u: UInt64) {
        if u <= UInt64(Int64.max) { int(Int64(u)); return }
        bytes.append(WireFormat.Tag.uint.rawValue)
        varint(u)
    }
    func double(_ d: Double) {
        bytes.append(WireFormat.Tag.double.rawValue)
        var bits = d.bitPattern
        for _ in 0..<8 {
            bytes.append(UInt8(truncatingIfNeeded: bits))
            bits >>= 8
        }
    }

    /// `value` at `level`, or the empty tag when its `encode(to:)` writes nothing.
    func value<T: Encodable>(_ value: T, at level: Int) throws {
        let mark = bytes.count
        try value.encode(to: WireEncoder(self, depth: level))
        if bytes.count == mark { bytes.append(WireFormat.Tag.empty.rawValue) }
    }
}

struct WireEncoder: Encoder {
    let writer: WireWriter
    let depth: Int
    var codingPath: [CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(_ writer: WireWriter, depth: Int) {
        self.writer = writer
        self.depth = depth
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(WireKeyedEncoder<Key>(writer: writer, level: writer.open(.keyedBegin, at: depth)))
    }

    func unkeyedContainer() -> UnkeyedEncodingContainer {
        WireUnkeyedEncoder(writer: writer, level: writer.open(.unkeyedBegin, at: depth))
    }

    func singleValueContainer() -> SingleValueEncodingContainer { WireSingleEncoder(writer: writer, level: depth) }
}

struct WireKeyedEncoder<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let writer: WireWriter
    let level: Int
    var codingPath: [CodingKey] { [] }

    private func key(_ key: Key) {
        writer.close(to: level)
        writer.key(key.stringValue)
    }

    mutating func encodeNil(forKey k: Key) throws { key(k); writer.null() }
    mutating func encode(_ v: Bool, forKey k: Key) throws { key(k); writer.bool(v) }
    mutating func encode(_ v: String, forKey k: Key) throws { key(k); writer.string(v) }
    mutating func encode(_ v: Double, forKey k: Key) throws { key(k); writer.double(v) }
    mutating func encode(_ v: Float, forKey k: Key) throws { key(k); writer.double(Double(v)) }
    mutating func encode(_ v: Int, forKey k: Key) throws { key(k); writer.int(Int64(v)) }
    mutating func encode(_ v: Int8, forKey k: Key) throws { key(k); writer.int(Int64(v)) }
    mutating func encode(_ v: Int16, forKey k: Key) throws { key(k); writer.int(Int64(v)) }
    mutating func encode(_ v: Int32, forKey k: Key) throws { key(k); writer.int(Int64(v)) }
    mutating func encode(_ v: Int64, forKey k: Key) throws { key(k); writer.int(v) }
    mutating func encode(_ v: UInt, forKey k: Key) throws { key(k); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt8, forKey k: Key) throws { key(k); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt16, forKey k: Key) throws { key(k); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt32, forKey k: Key) throws { key(k); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt64, forKey k: Key) throws { key(k); writer.uint(v) }
    mutating func encode<T: Encodable>(_ v: T, forKey k: Key) throws {
        key(k)
        try writer.value(v, at: level)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey k: Key) -> KeyedEncodingContainer<NestedKey> {
        key(k)
        return KeyedEncodingContainer(WireKeyedEncoder<NestedKey>(writer: writer, level: writer.open(.keyedBegin, at: level)))
    }

    mutating func nestedUnkeyedContainer(forKey k: Key) -> UnkeyedEncodingContainer {
        key(k)
        return WireUnkeyedEncoder(writer: writer, level: writer.open(.unkeyedBegin, at: level))
    }

    /// The superclass's encoding under the key `super` (it must write a value; nemoshard's types
    /// have no superclasses).
    mutating func superEncoder() -> Encoder {
        writer.close(to: level)
        writer.key("super")
        return WireEncoder(writer, depth: level)
    }

    mutating func superEncoder(forKey k: Key) -> Encoder {
        key(k)
        return WireEncoder(writer, depth: level)
    }
}

struct WireUnkeyedEncoder: UnkeyedEncodingContainer {
    let writer: WireWriter
    let level: Int
    private(set) var count = 0
    var codingPath: [CodingKey] { [] }

    init(writer: WireWriter, level: Int) {
        self.writer = writer
        self.level = level
    }

    private mutating func next() {
        writer.close(to: level)
        count += 1
    }

    mutating func encodeNil() throws { next(); writer.null() }
    mutating func encode(_ v: Bool) throws { next(); writer.bool(v) }
    mutating func encode(_ v: String) throws { next(); writer.string(v) }
    mutating func encode(_ v: Double) throws { next(); writer.double(v) }
    mutating func encode(_ v: Float) throws { next(); writer.double(Double(v)) }
    mutating func encode(_ v: Int) throws { next(); writer.int(Int64(v)) }
    mutating func encode(_ v: Int8) throws { next(); writer.int(Int64(v)) }
    mutating func encode(_ v: Int16) throws { next(); writer.int(Int64(v)) }
    mutating func encode(_ v: Int32) throws { next(); writer.int(Int64(v)) }
    mutating func encode(_ v: Int64) throws { next(); writer.int(v) }
    mutating func encode(_ v: UInt) throws { next(); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt8) throws { next(); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt16) throws { next(); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt32) throws { next(); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt64) throws { next(); writer.uint(v) }
    mutating func encode<T: Encodable>(_ v: T) throws {
        next()
        try writer.value(v, at: level)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        next()
        return KeyedEncodingContainer(WireKeyedEncoder<NestedKey>(writer: writer, level: writer.open(.keyedBegin, at: level)))
    }

    mutating func nestedUnkeyedContainer() -> UnkeyedEncodingContainer {
        next()
        return WireUnkeyedEncoder(writer: writer, level: writer.open(.unkeyedBegin, at: level))
    }

    mutating func superEncoder() -> Encoder {
        next()
        return WireEncoder(writer, depth: level)
    }
}

struct WireSingleEncoder: SingleValueEncodingContainer {
    let writer: WireWriter
    let level: Int
    var codingPath: [CodingKey] { [] }

    private func here() { writer.close(to: level) }

    mutating func encodeNil() throws { here(); writer.null() }
    mutating func encode(_ v: Bool) throws { here(); writer.bool(v) }
    mutating func encode(_ v: String) throws { here(); writer.string(v) }
    mutating func encode(_ v: Double) throws { here(); writer.double(v) }
    mutating func encode(_ v: Float) throws { here(); writer.double(Double(v)) }
    mutating func encode(_ v: Int) throws { here(); writer.int(Int64(v)) }
    mutating func encode(_ v: Int8) throws { here(); writer.int(Int64(v)) }
    mutating func encode(_ v: Int16) throws { here(); writer.int(Int64(v)) }
    mutating func encode(_ v: Int32) throws { here(); writer.int(Int64(v)) }
    mutating func encode(_ v: Int64) throws { here(); writer.int(v) }
    mutating func encode(_ v: UInt) throws { here(); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt8) throws { here(); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt16) throws { here(); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt32) throws { here(); writer.uint(UInt64(v)) }
    mutating func encode(_ v: UInt64) throws { here(); writer.uint(v) }
    mutating func encode<T: Encodable>(_ v: T) throws {
        here()
        try v.encode(to: WireEncoder(writer, depth: level))
    }
}

// MARK: decoding

/// The bytes being read; positions are byte offsets of tagged values.
final class WireReader {
    let bytes: UnsafeBufferPointer<UInt8>
    /// Entries visited by searches of keyed containers from their start.
    var scannedEntries = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    func corrupt(_ why: String, at position: Int) -> DecodingError {
        DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "wire format: \(why) at byte \(position)"))
    }

    func tag(at p: Int) throws -> WireFormat.Tag {
        guard p >= 0, p < bytes.count, let t = WireFormat.Tag(rawValue: bytes[p]) else { throw corrupt("no value", at: p) }
        return t
    }

    /// A LEB128 number at `p` and the position after it.
    func varint(at p: Int) throws -> (UInt64, Int) {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        var q = p
        while true {
            guard q < bytes.count, shift < 64 else { throw corrupt("bad number", at: p) }
            let b = bytes[q]
            v |= UInt64(b & 0x7F) << shift
            q += 1
            if b < 0x80 { return (v, q) }
            shift += 7
        }
    }

    /// A keyed container's entry at `p`: the key's bytes and the position of its value.
    func entry(at p: Int) throws -> (Range<Int>, Int) {
        guard try tag(at: p) == .key else { throw corrupt("no key", at: p) }
        return try rawRange(at: p + 1)
    }

    /// The byte range of a length-prefixed string at `p` (no tag), and the position after it.
    func rawRange(at p: Int) throws -> (Range<Int>, Int) {
        let (n, q) = try varint(at: p)
        guard n <= UInt64(bytes.count - q) else { throw corrupt("string past the end", at: p) }
        return (q..<(q + Int(n)), q + Int(n))
    }

    func string(_ r: Range<Int>) -> String { String(decoding: UnsafeBufferPointer(rebasing: bytes[r]), as: UTF8.self) }

    /// Whether the bytes at `r` are `key`'s UTF-8.
    func matches(_ r: Range<Int>, _ key: String) -> Bool {
        var key = key
        return key.withUTF8 { k in
            k.count == r.count && (k.count == 0 || memcmp(k.baseAddress!, bytes.baseAddress! + r.lowerBound, k.count) == 0)
        }
    }

    /// The position just after the value at `p`.
    func skip(_ p: Int) throws -> Int {
        var q = p
        var open = 0  // containers entered and not yet ended
        repeat {
            switch try tag(at: q) {
            case .key: q = try rawRange(at: q + 1).1
            case .null, .falseValue, .trueValue, .empty: q += 1
            case .int, .uint: q = try varint(at: q + 1).1
            case .double:
                guard q + 9 <= bytes.count else { throw corrupt("double past the end", at: q) }
                q += 9
            case .string: q = try rawRange(at: q + 1).1
            case .keyedBegin, .unkeyedBegin:
                open += 1
                q += 1
            case .end:
                guard open > 0 else { throw corrupt("end without a container", at: q) }
                open -= 1
                q += 1
            }
        } while open > 0
        return q
    }

    func int(at p: Int) throws -> Int64 {
        switch try tag(at: p) {
        case .int:
            let z = try varint(at: p + 1).0
            return Int64(bitPattern: (z >> 1) ^ (0 &- (z & 1)))
        case .uint: throw corrupt("integer larger than Int64", at: p)
        default: throw corrupt("not an integer", at: p)
        }
    }

    func uint(at p: Int) throws -> UInt64 {
        switch try tag(at: p) {
        case .uint: return try varint(at: p + 1).0
        case .int:
            let i = try int(at: p)
            guard i >= 0 else { throw corrupt("negative where an unsigned integer belongs", at: p) }
            return UInt64(i)
        default: throw corrupt("not an integer", at: p)
        }
    }

    func exactly<T: FixedWidthInteger>(_ type: T.Type, at p: Int) throws -> T {
        if T.isSigned {
            guard let v = T(exactly: try int(at: p)) else { throw corrupt("integer out of range for \(T.self)", at: p) }
            return v
        }
        guard let v = T(exactly: try uint(at: p)) else { throw corrupt("integer out of range for \(T.self)", at: p) }
        return v
    }

    func bool(at p: Int) throws -> Bool {
        switch try tag(at: p) {
        case .trueValue: return true
        case .falseValue: return false
        default: throw corrupt("not a boolean", at: p)
        }
    }

    func string(at p: Int) throws -> String {
        guard try tag(at: p) == .string else { throw corrupt("not a string", at: p) }
        return string(try rawRange(at: p + 1).0)
    }

    func double(at p: Int) throws -> Double {
        guard try tag(at: p) == .double, p + 9 <= bytes.count else { throw corrupt("not a double", at: p) }
        var bits: UInt64 = 0
        for k in 0..<8 { bits |= UInt64(bytes[p + 1 + k]) << (8 * UInt64(k)) }
        return Double(bitPattern: bits)
    }
}

struct WireDecoder: Decoder {
    let reader: WireReader
    let position: Int
    var codingPath: [CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(_ reader: WireReader, at position: Int) {
        self.reader = reader
        self.position = position
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard try reader.tag(at: position) == .keyedBegin else { throw reader.corrupt("not a keyed container", at: position) }
        return KeyedDecodingContainer(WireKeyedDecoder<Key>(reader: reader, start: position + 1))
    }

    func unkeyedContainer() throws -> UnkeyedDecodingContainer {
        guard try reader.tag(at: position) == .unkeyedBegin else { throw reader.corrupt("not an unkeyed container", at: position) }
        return WireUnkeyedDecoder(reader: reader, cursor: position + 1)
    }

    func singleValueContainer() throws -> SingleValueDecodingContainer { WireSingleDecoder(reader: reader, position: position) }
}

struct WireKeyedDecoder<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let reader: WireReader
    /// Position of the first entry.
    let start: Int
    /// Position of the entry after the last one found (the next one in written order).
    final class Cursor { var position: Int; init(_ p: Int) { position = p } }
    let cursor: Cursor
    var codingPath: [CodingKey] { [] }

    init(reader: WireReader, start: Int) {
        self.reader = reader
        self.start = start
        cursor = Cursor(start)
    }

    /// Every entry: key bytes and value position, in written order.
    private func entries() throws -> [(key: Range<Int>, value: Int)] {
        var out: [(Range<Int>, Int)] = []
        var q = start
        while try reader.tag(at: q) != .end {
            let (key, value) = try reader.entry(at: q)
            out.append((key, value))
            reader.scannedEntries += 1
            q = try reader.skip(value)
        }
        return out
    }

    /// The value position of `key`, or nil; moves the cursor past it.
    private func find(_ key: Key) throws -> Int? {
        let name = key.stringValue
        let q = cursor.position
        if try reader.tag(at: q) != .end {
            let (k, value) = try reader.entry(at: q)
            if reader.matches(k, name) {
                cursor.position = try reader.skip(value)
                return value
            }
        }
        for e in try entries() where reader.matches(e.key, name) {
            cursor.position = try reader.skip(e.value)
            return e.value
        }
        return nil
    }

    /// Like `find`, without moving the cursor.
    private func peek(_ key: Key) throws -> Int? {
        let name = key.stringValue
        let q = cursor.position
        if try reader.tag(at: q) != .end {
            let (k, value) = try reader.entry(at: q)
            if reader.matches(k, name) { return value }
        }
        return try entries().first { reader.matches($0.key, name) }?.value
    }

    private func value(_ key: Key) throws -> Int {
        guard let p = try find(key) else {
            throw DecodingError.keyNotFound(key, .init(codingPath: [], debugDescription: "wire format: no \"\(key.stringValue)\""))
        }
        return p
    }

    var allKeys: [Key] { ((try? entries()) ?? []).compactMap { Key(stringValue: reader.string($0.key)) } }
    func contains(_ key: Key) -> Bool { ((try? peek(key)) ?? nil) != nil }

    func decodeNil(forKey key: Key) throws -> Bool {
        guard let p = try peek(key) else { return true }
        return try reader.tag(at: p) == .null
    }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try reader.bool(at: try value(key)) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try reader.string(at: try value(key)) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try reader.double(at: try value(key)) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { Float(try reader.double(at: try value(key))) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try reader.exactly(Int.self, at: try value(key)) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try reader.exactly(Int8.self, at: try value(key)) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try reader.exactly(Int16.self, at: try value(key)) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try reader.exactly(Int32.self, at: try value(key)) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try reader.exactly(Int64.self, at: try value(key)) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try reader.exactly(UInt.self, at: try value(key)) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try reader.exactly(UInt8.self, at: try value(key)) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try reader.exactly(UInt16.self, at: try value(key)) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try reader.exactly(UInt32.self, at: try value(key)) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try reader.exactly(UInt64.self, at: try value(key)) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try T(from: WireDecoder(reader, at: try value(key))) }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try WireDecoder(reader, at: try value(key)).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> UnkeyedDecodingContainer {
        try WireDecoder(reader, at: try value(key)).unkeyedContainer()
    }

    func superDecoder() throws -> Decoder {
        guard let p = try entries().first(where: { reader.matches($0.key, "super") })?.value else {
            throw reader.corrupt("no superclass value", at: start)
        }
        return WireDecoder(reader, at: p)
    }

    func superDecoder(forKey key: Key) throws -> Decoder { WireDecoder(reader, at: try value(key)) }
}

struct WireUnkeyedDecoder: UnkeyedDecodingContainer {
    let reader: WireReader
    var cursor: Int
    private(set) var currentIndex = 0
    var codingPath: [CodingKey] { [] }
    var count: Int? { nil }
    var isAtEnd: Bool { ((try? reader.tag(at: cursor)) ?? .end) == .end }

    init(reader: WireReader, cursor: Int) {
        self.reader = reader
        self.cursor = cursor
    }

    /// The next value's position; moves past it.
    private mutating func next() throws -> Int {
        guard try reader.tag(at: cursor) != .end else {
            throw DecodingError.valueNotFound(Any.self, .init(codingPath: [], debugDescription: "wire format: the list has no more values"))
        }
        let p = cursor
        cursor = try reader.skip(p)
        currentIndex += 1
        return p
    }

    mutating func decodeNil() throws -> Bool {
        guard try reader.tag(at: cursor) == .null else { return false }
        _ = try next()
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try reader.bool(at: try next()) }
    mutating func decode(_ type: String.Type) throws -> String { try reader.string(at: try next()) }
    mutating func decode(_ type: Double.Type) throws -> Double { try reader.double(at: try next()) }
    mutating func decode(_ type: Float.Type) throws -> Float { Float(try reader.double(at: try next())) }
    mutating func decode(_ type: Int.Type) throws -> Int { try reader.exactly(Int.self, at: try next()) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try reader.exactly(Int8.self, at: try next()) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try reader.exactly(Int16.self, at: try next()) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try reader.exactly(Int32.self, at: try next()) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try reader.exactly(Int64.self, at: try next()) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try reader.exactly(UInt.self, at: try next()) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try reader.exactly(UInt8.self, at: try next()) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try reader.exactly(UInt16.self, at: try next()) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try reader.exactly(UInt32.self, at: try next()) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try reader.exactly(UInt64.self, at: try next()) }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try T(from: WireDecoder(reader, at: try next())) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try WireDecoder(reader, at: try next()).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> UnkeyedDecodingContainer {
        try WireDecoder(reader, at: try next()).unkeyedContainer()
    }

    mutating func superDecoder() throws -> Decoder { WireDecoder(reader, at: try next()) }
}

struct WireSingleDecoder: SingleValueDecodingContainer {
    let reader: WireReader
    let position: Int
    var codingPath: [CodingKey] { [] }

    func decodeNil() -> Bool { ((try? reader.tag(at: position)) ?? .empty) == .null }
    func decode(_ type: Bool.Type) throws -> Bool { try reader.bool(at: position) }
    func decode(_ type: String.Type) throws -> String { try reader.string(at: position) }
    func decode(_ type: Double.Type) throws -> Double { try reader.double(at: position) }
    func decode(_ type: Float.Type) throws -> Float { Float(try reader.double(at: position)) }
    func decode(_ type: Int.Type) throws -> Int { try reader.exactly(Int.self, at: position) }
    func decode(_ type: Int8.Type) throws -> Int8 { try reader.exactly(Int8.self, at: position) }
    func decode(_ type: Int16.Type) throws -> Int16 { try reader.exactly(Int16.self, at: position) }
    func decode(_ type: Int32.Type) throws -> Int32 { try reader.exactly(Int32.self, at: position) }
    func decode(_ type: Int64.Type) throws -> Int64 { try reader.exactly(Int64.self, at: position) }
    func decode(_ type: UInt.Type) throws -> UInt { try reader.exactly(UInt.self, at: position) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try reader.exactly(UInt8.self, at: position) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try reader.exactly(UInt16.self, at: position) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try reader.exactly(UInt32.self, at: position) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try reader.exactly(UInt64.self, at: position) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try T(from: WireDecoder(reader, at: position)) }
}
