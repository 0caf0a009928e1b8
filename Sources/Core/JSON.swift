/// A JSON value with object keys kept in document order.
///
/// The parser is strict: UTF-8 only, no byte order mark, no trailing garbage, no duplicate keys,
/// a nesting limit, and integers kept exact (so 64-bit offsets never pass through a Double).
/// Like Python's `json.loads` it reads `NaN`, `Infinity` and `-Infinity` (which `json.dumps`
/// writes by default, e.g. into a config.json) as doubles, and writing puts them back the same way.
/// Not `indirect`: arrays and objects already hold their elements out of line, and a boxed case
/// would cost one allocation per value (several per tensor of a safetensors header).
package enum JSON: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    package static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        // Documents, not arithmetic: a NaN field equals itself, so a round trip compares equal.
        case let (.double(x), .double(y)): return x == y || (x.isNaN && y.isNaN)
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// The member named `key` of an object, or nil.
    package subscript(key: String) -> JSON? {
        if case let .object(members) = self { return members.first { $0.0 == key }?.1 }
        return nil
    }

    package var stringValue: String? { if case let .string(s) = self { return s }; return nil }
    package var intValue: Int64? { if case let .int(i) = self { return i }; return nil }
    package var boolValue: Bool? { if case let .bool(b) = self { return b }; return nil }
    package var arrayValue: [JSON]? { if case let .array(a) = self { return a }; return nil }
    package var objectValue: [(String, JSON)]? { if case let .object(o) = self { return o }; return nil }
    package var isNull: Bool { if case .null = self { return true }; return false }
}

/// Why a JSON text was refused, with the byte offset where it went wrong.
package struct JSONError: Error, CustomStringConvertible, Equatable {
    package let message: String
    package let offset: Int
    /// The message already says where (a byte order mark is always at the start).
    package let messageSaysWhere: Bool

    package init(message: String, offset: Int, messageSaysWhere: Bool = false) {
        self.message = message
        self.offset = offset
        self.messageSaysWhere = messageSaysWhere
    }

    package var description: String { messageSaysWhere ? message : "\(message) at byte \(offset)" }

    /// A UTF-8 byte order mark before the value: named, rather than "unexpected character".
    package static let byteOrderMark = JSONError(message: "starts with a UTF-8 byte order mark (EF BB BF); JSON files must not",
                                         offset: 0, messageSaysWhere: true)
}

extension JSON {
    /// Parses one JSON document from UTF-8 bytes.
    package static func parse<C: Collection>(_ bytes: C, maxDepth: Int = 64) throws -> JSON where C.Element == UInt8 {
        try Array(bytes).withUnsafeBufferPointer { buffer in
            var parser = JSONParser(bytes: buffer, maxDepth: maxDepth)
            return try parser.document()
        }
    }

    /// Parses one JSON document from a string.
    package static func parse(_ text: String) throws -> JSON { try parse(Array(text.utf8)) }
}

private struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    let maxDepth: Int
    var pos = 0
    var depth = 0

    init(bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    func fail(_ message: String) -> JSONError { JSONError(message: message, offset: pos) }

    mutating func document() throws -> JSON {
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { throw JSONError.byteOrderMark }
        let value = try self.value()
        skipSpace()
        if pos != bytes.count { throw fail("trailing characters after the JSON value") }
        return value
    }

    mutating func skipSpace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x09, 0x0A, 0x0D: pos += 1
            default: return
            }
        }
    }

    mutating func value() throws -> JSON {
        skipSpace()
        guard pos < bytes.count else { throw fail("unexpected end of JSON") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "N"): try literal("NaN"); return .double(.nan)
        case UInt8(ascii: "I"): try literal("Infinity"); return .double(.infinity)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw fail("unexpected character")
        }
    }

    mutating func literal(_ word: String) throws {
        let w = Array(word.utf8)
        let n = w.count
        guard bytes.count - pos >= n, (0..<n).allSatisfy({ bytes[pos + $0] == w[$0] }) else {
            throw fail("invalid literal")
        }
        pos += n
    }

    mutating func enter() throws {
        depth += 1
        if depth > maxDepth { throw fail("JSON nested deeper than \(maxDepth)") }
    }

    mutating func object() throws -> JSON {
        try enter()
        pos += 1
        var members: [(String, JSON)] = []
        // Duplicate keys: a linear check while the object is small (a header entry, a config), a
        // set once it is large (a weight map of a million keys).
        var seen = Set<String>()
        skipSpace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") {
            pos += 1
            depth -= 1
            return .object(members)
        }
        while true {
            skipSpace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let keyStart = pos
            let key = try string()
            if members.count == JSONParser.smallObject { seen = Set(members.map(\.0)) }
            if members.count < JSONParser.smallObject ? members.contains(where: { $0.0 == key }) : !seen.insert(key).inserted {
                throw JSONError(message: "duplicate key \"\(key)\"", offset: keyStart)
            }
            skipSpace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            pos += 1
            members.append((key, try value()))
            skipSpace()
            guard pos < bytes.count else { throw fail("unexpected end of JSON in object") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "}") { pos += 1; break }
            throw fail("expected ',' or '}'")
        }
        depth -= 1
        return .object(members)
    }

    mutating func array() throws -> JSON {
        try enter()
        pos += 1
        var items: [JSON] = []
        skipSpace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") {
            pos += 1
            depth -= 1
            return .array(items)
        }
        while true {
            items.append(try value())
            skipSpace()
            guard pos < bytes.count else { throw fail("unexpected end of JSON in array") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "]") { pos += 1; break }
            throw fail("expected ',' or ']'")
        }
        depth -= 1
        return .array(items)
    }

    mutating func hex4() throws -> UInt32 {
        guard bytes.count - pos >= 4 else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }

    /// Objects with fewer members check for duplicate keys without a set.
    static let smallObject = 16

    mutating func string() throws -> String {
        pos += 1
        // Most strings (every tensor name) hold no escape: one validated copy of their bytes.
        var end = pos
        while end < bytes.count, bytes[end] != UInt8(ascii: "\""), bytes[end] != UInt8(ascii: "\\"), bytes[end] >= 0x20 { end += 1 }
        if end < bytes.count, bytes[end] == UInt8(ascii: "\"") {
            let start = pos
            pos = end + 1
            let raw = UnsafeBufferPointer(rebasing: bytes[start..<end])
            // ASCII is valid UTF-8 as it is (the generic validation costs about 1,000
            // instructions per name).
            if !raw.contains(where: { $0 >= 0x80 }) { return String(decoding: raw, as: UTF8.self) }
            guard let s = String(validating: raw, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
            return s
        }
        var out: [UInt8] = []
        while true {
            guard pos < bytes.count else { throw fail("unterminated string") }
            let c = bytes[pos]
            if c == UInt8(ascii: "\"") { pos += 1; break }
            if c < 0x20 { throw fail("control character in string") }
            if c != UInt8(ascii: "\\") { out.append(c); pos += 1; continue }
            pos += 1
            guard pos < bytes.count else { throw fail("unterminated escape") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    guard bytes.count - pos >= 6, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u")
                    else { throw fail("unpaired surrogate") }
                    pos += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw fail("unpaired surrogate") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw fail("unpaired surrogate")
                }
                guard let u = Unicode.Scalar(scalar) else { throw fail("invalid unicode escape") }
                out.append(contentsOf: Array(String(Character(u)).utf8))
            default: throw fail("invalid escape")
            }
        }
        guard let s = String(validating: out, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
        return s
    }

    mutating func number() throws -> JSON {
        let start = pos
        var isInteger = true
        if bytes[pos] == UInt8(ascii: "-") {
            if pos + 1 < bytes.count, bytes[pos + 1] == UInt8(ascii: "I") {
                try literal("-Infinity")
                return .double(-.infinity)
            }
            pos += 1
        }
        guard pos < bytes.count, isDigit(bytes[pos]) else { throw fail("invalid number") }
        if bytes[pos] == UInt8(ascii: "0") {
            pos += 1
            if pos < bytes.count, isDigit(bytes[pos]) { throw fail("leading zero in number") }
        } else {
            while pos < bytes.count, isDigit(bytes[pos]) { pos += 1 }
        }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: ".") {
            isInteger = false
            pos += 1
            guard pos < bytes.count, isDigit(bytes[pos]) else { throw fail("invalid number") }
            while pos < bytes.count, isDigit(bytes[pos]) { pos += 1 }
        }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
            isInteger = false
            pos += 1
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            guard pos < bytes.count, isDigit(bytes[pos]) else { throw fail("invalid number") }
            while pos < bytes.count, isDigit(bytes[pos]) { pos += 1 }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
        if isInteger, let i = Int64(text) { return .int(i) }
        // Larger than Int64 or fractional: a Double, which callers needing an exact size refuse.
        guard let d = Double(text), d.isFinite else { throw JSONError(message: "number out of range", offset: start) }
        return .double(d)
    }

    func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
}

// MARK: - Writing

extension JSON {
    /// Compact or indented JSON text; object members keep their order.
    package func serialized(indent: Int? = nil) -> String {
        var out = ""
        write(to: &out, indent: indent, level: 0)
        return out
    }

    private func write(to out: inout String, indent: Int?, level: Int) {
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(i): out += String(i)
        case let .double(d): out += JSON.number(d)
        case let .string(s): JSON.escape(s, into: &out)
        case let .array(items):
            if items.isEmpty { out += "[]"; return }
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                newline(&out, indent, level + 1)
                item.write(to: &out, indent: indent, level: level + 1)
            }
            newline(&out, indent, level)
            out += "]"
        case let .object(members):
            if members.isEmpty { out += "{}"; return }
            out += "{"
            for (i, (key, value)) in members.enumerated() {
                if i > 0 { out += "," }
                newline(&out, indent, level + 1)
                JSON.escape(key, into: &out)
                out += indent == nil ? ":" : ": "
                value.write(to: &out, indent: indent, level: level + 1)
            }
            newline(&out, indent, level)
            out += "}"
        }
    }

    /// A double as Python's `json.dumps` writes it: integral values keep a `.0`, `-0.0` its sign,
    /// and the non-finite values are `NaN`, `Infinity` and `-Infinity`.
    package static func number(_ d: Double) -> String {
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d < 0 ? "-Infinity" : "Infinity" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        if d == d.rounded(), abs(d) < 1e15 { return String(Int64(d)) + ".0" }
        return "\(d)"
    }

    private func newline(_ out: inout String, _ indent: Int?, _ level: Int) {
        guard let indent else { return }
        out += "\n" + String(repeating: " ", count: indent * level)
    }

    package static func escape(_ s: String, into out: inout String) {
        out += "\""
        // Most strings (every tensor name) need no escape: appended whole.
        var plain = s
        if plain.withUTF8({ !$0.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) }) {
            out += s
            out += "\""
            return
        }
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

/// `s` as a JSON string literal: quoted, with NUL and other control characters escaped, so a
/// hostile name prints on one line.
package func jsonQuoted(_ s: String) -> String { JSON.string(s).serialized() }

/// Zero-padded to five digits.
package func pad5(_ n: Int) -> String {
    let s = String(n)
    return s.count >= 5 ? s : String(repeating: "0", count: 5 - s.count) + s
}

/// FNV-1a of a string's UTF-8 bytes.
package func fnv1a(_ s: String) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return h
}
