import NemoShardCore

extension SafetensorsHeader {
    /// The header as every safetensors writer lays it out, read straight from its bytes: an object
    /// of `"name":{"dtype":"..","shape":[..],"data_offsets":[b,e]}` entries (those three fields in
    /// that order) and an optional `"__metadata__"` object of strings (read by the JSON parser:
    /// a per-rank file's `DCP_SHARDING_INFO` is one long escaped string), plain decimal integers,
    /// names without escapes, JSON whitespace anywhere between tokens. Reading a million tensors
    /// this way skips building and freeing a JSON tree of several values per tensor (about
    /// two thirds of the cost of a header).
    ///
    /// Returns a header only when it is valid by every rule of `parse(headerBytes:fileSize:path:)`
    /// (the same tensors, metadata and checks), and nil for anything else, valid or not: the
    /// general parser then reads it and names what is wrong, exactly as it always did.
    package static func canonical(headerBytes: [UInt8], fileSize: Int) -> SafetensorsHeader? {
        headerBytes.withUnsafeBufferPointer { bytes -> SafetensorsHeader? in
            var reader = CanonicalHeaderReader(bytes: bytes)
            guard let (tensors, metadata) = reader.read() else { return nil }
            // The data offsets tile the buffer (sorted by begin, each where the last ended).
            var ordered = tensors
            if zip(tensors, tensors.dropFirst()).contains(where: { ($1.begin, $1.end) < ($0.begin, $0.end) }) {
                ordered.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
            }
            var cursor = 0
            for t in ordered {
                guard t.begin == cursor else { return nil }
                cursor = t.end
            }
            let dataStart = 8 + bytes.count
            guard cursor == fileSize - dataStart else { return nil }
            let header = SafetensorsHeader(tensors: tensors, metadata: metadata, dataStart: dataStart)
            return header.namesAreDistinct ? header : nil
        }
    }
}

/// The reader behind `SafetensorsHeader.canonical`: every method returns nil (or false) at the
/// first byte it does not expect.
struct CanonicalHeaderReader {
    let bytes: UnsafeBufferPointer<UInt8>
    var pos = 0

    /// Integers of more digits may not fit the general parser's Int64: left to it.
    static let maxDigits = 18

    mutating func read() -> (tensors: [TensorInfo], metadata: [(String, String)])? {
        var tensors: [TensorInfo] = []
        var metadata: [(String, String)]?
        guard bytes.first == UInt8(ascii: "{"), take(UInt8(ascii: "{")) else { return nil }  // (no space before it)
        if take(UInt8(ascii: "}")) { return end() ? ([], []) : nil }
        repeat {
            guard let name = string(), take(UInt8(ascii: ":")) else { return nil }
            if name == "__metadata__" {
                guard metadata == nil, let m = stringObject() else { return nil }
                metadata = m
            } else {
                guard let t = entry(name) else { return nil }
                tensors.append(t)
            }
        } while take(UInt8(ascii: ","))
        guard take(UInt8(ascii: "}")), end() else { return nil }
        return (tensors, metadata ?? [])
    }

    /// `{"dtype":"X","shape":[..],"data_offsets":[b,e]}`, valid as the general parser checks it.
    mutating func entry(_ name: String) -> TensorInfo? {
        guard take(UInt8(ascii: "{")), key("dtype"), let dtypeName = string(), let dtype = DType(rawValue: dtypeName),
              take(UInt8(ascii: ",")), key("shape"), let shape = integers(),
              take(UInt8(ascii: ",")), key("data_offsets"), let offsets = integers(), offsets.count == 2,
              take(UInt8(ascii: "}")) else { return nil }
        let (b, e) = (offsets[0], offsets[1])
        guard e >= b, let n = SafetensorsHeader.elementCount(shape) else { return nil }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, e - b == bytes else { return nil }
        return TensorInfo(name: name, dtype: dtype, shape: shape, begin: b, end: e)
    }

    /// `"key":`.
    mutating func key(_ expected: StaticString) -> Bool {
        skipSpace()
        let n = expected.utf8CodeUnitCount
        guard pos + n + 2 <= bytes.count, bytes[pos] == UInt8(ascii: "\""), bytes[pos + n + 1] == UInt8(ascii: "\"") else { return false }
        let p = expected.utf8Start
        for i in 0..<n where bytes[pos + 1 + i] != p[i] { return false }
        pos += n + 2
        return take(UInt8(ascii: ":"))
    }

    /// `{"k":"v",...}`: the object's extent found here, its text read by the (strict) JSON
    /// parser, which refuses duplicate keys; every value must be a string.
    mutating func stringObject() -> [(String, String)]? {
        skipSpace()
        guard pos < bytes.count, bytes[pos] == UInt8(ascii: "{") else { return nil }
        let start = pos
        var depth = 0
        var inString = false
        while pos < bytes.count {
            let c = bytes[pos]
            pos += 1
            if inString {
                if c == UInt8(ascii: "\\") { pos += 1 } else if c == UInt8(ascii: "\"") { inString = false }
            } else if c == UInt8(ascii: "\"") {
                inString = true
            } else if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") {
                depth += 1
            } else if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") {
                depth -= 1
                if depth == 0 { break }
            }
        }
        guard depth == 0, pos <= bytes.count,
              let members = (try? JSON.parse(UnsafeBufferPointer(rebasing: bytes[start..<pos])))?.objectValue else { return nil }
        var out: [(String, String)] = []
        out.reserveCapacity(members.count)
        for (k, v) in members {
            guard let s = v.stringValue else { return nil }
            out.append((k, s))
        }
        return out
    }

    /// `[d, d, ...]` of plain non-negative decimals (no sign, no leading zero, no fraction).
    mutating func integers() -> [Int]? {
        guard take(UInt8(ascii: "[")) else { return nil }
        var out: [Int] = []
        if take(UInt8(ascii: "]")) { return out }
        repeat {
            skipSpace()
            let start = pos
            var v = 0
            while pos < bytes.count, bytes[pos] >= UInt8(ascii: "0"), bytes[pos] <= UInt8(ascii: "9") {
                guard pos - start < CanonicalHeaderReader.maxDigits else { return nil }  // (before it could overflow)
                v = v * 10 + Int(bytes[pos] - UInt8(ascii: "0"))
                pos += 1
            }
            guard pos > start, pos - start == 1 || bytes[start] != UInt8(ascii: "0") else { return nil }
            out.append(v)
        } while take(UInt8(ascii: ","))
        return take(UInt8(ascii: "]")) ? out : nil
    }

    /// A string without escapes or control characters, valid UTF-8.
    mutating func string() -> String? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = pos
        var ascii = true
        while pos < bytes.count, bytes[pos] != UInt8(ascii: "\"") {
            let c = bytes[pos]
            guard c >= 0x20, c != UInt8(ascii: "\\") else { return nil }
            if c >= 0x80 { ascii = false }
            pos += 1
        }
        guard pos < bytes.count else { return nil }
        let raw = UnsafeBufferPointer(rebasing: bytes[start..<pos])
        pos += 1
        return ascii ? String(decoding: raw, as: UTF8.self) : String(validating: raw, as: UTF8.self)
    }

    /// Skips JSON whitespace, then takes `byte` if it is next.
    mutating func take(_ byte: UInt8) -> Bool {
        skipSpace()
        guard pos < bytes.count, bytes[pos] == byte else { return false }
        pos += 1
        return true
    }

    /// Only whitespace is left (writers pad the header with spaces).
    mutating func end() -> Bool {
        skipSpace()
        return pos == bytes.count
    }

    mutating func skipSpace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x09, 0x0A, 0x0D: pos += 1
            default: return
            }
        }
    }
}
