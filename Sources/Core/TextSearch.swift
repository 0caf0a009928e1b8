import Glibc

/// Substring search and prefix tests over UTF-8 bytes, for tensor names: Python's `needle in key`,
/// `key.find(needle)` / `rfind` and `startswith`, which compare code points, as a byte search of
/// valid UTF-8 does. Foundation's `contains(_:)` and `range(of:)` on strings go through
/// `CFStringFind` (Unicode canonical equivalence, about 13,000 instructions per call on a tensor
/// name), and `Substring.hasPrefix` compares `Character`s one grapheme at a time; with a million
/// keys those made classifying them most of the planning time. Concrete `String` and `Substring`
/// versions, so no call goes through a protocol witness.
extension String {
    /// Whether the byte `b` occurs in this string's UTF-8 (a NUL, a `/`): `memchr`, where
    /// `utf8.contains` steps an index through the view.
    package func containsByte(_ b: UInt8) -> Bool {
        var s = self
        return s.withUTF8 { u in u.baseAddress.map { memchr($0, Int32(b), u.count) != nil } ?? false }
    }

    /// Whether `needle` occurs in this string (the empty needle occurs everywhere).
    package func hasSubstring(_ needle: String) -> Bool {
        var s = self
        return s.withUTF8 { TextSearch.offset(of: needle, in: $0, backwards: false) } != nil
    }

    /// The first (or with `backwards`, the last) occurrence of `needle`, as a range of this string.
    package func range(ofSubstring needle: String, backwards: Bool = false) -> Range<Index>? {
        var s = self
        guard let offset = s.withUTF8({ TextSearch.offset(of: needle, in: $0, backwards: backwards) }) else { return nil }
        let start = utf8.index(utf8.startIndex, offsetBy: offset)
        return start..<utf8.index(start, offsetBy: needle.utf8.count)
    }
}

extension Substring {
    /// Whether `needle` occurs in this substring.
    package func hasSubstring(_ needle: String) -> Bool {
        var s = self
        return s.withUTF8 { TextSearch.offset(of: needle, in: $0, backwards: false) } != nil
    }

    /// The first (or last) occurrence of `needle`, as a range of this substring.
    package func range(ofSubstring needle: String, backwards: Bool = false) -> Range<Index>? {
        var s = self
        guard let offset = s.withUTF8({ TextSearch.offset(of: needle, in: $0, backwards: backwards) }) else { return nil }
        let start = utf8.index(utf8.startIndex, offsetBy: offset)
        return start..<utf8.index(start, offsetBy: needle.utf8.count)
    }

    /// Whether this substring starts with `prefix`, byte for byte (Python's `startswith`).
    package func hasBytePrefix(_ prefix: String) -> Bool {
        var s = self
        return s.withUTF8 { h in
            var p = prefix
            return p.withUTF8 { n in n.count <= h.count && (n.isEmpty || memcmp(h.baseAddress!, n.baseAddress!, n.count) == 0) }
        }
    }
}

package enum TextSearch {
    /// The offset in `haystack` of the first (or last) occurrence of `needle`'s UTF-8.
    package static func offset(of needle: String, in haystack: UnsafeBufferPointer<UInt8>, backwards: Bool) -> Int? {
        var needle = needle
        return needle.withUTF8 { n -> Int? in
            guard n.count <= haystack.count else { return nil }
            guard let first = n.first, let h = haystack.baseAddress, let nBase = n.baseAddress else { return backwards ? haystack.count : 0 }
            let last = haystack.count - n.count
            if backwards {
                var i = last
                while i >= 0 {
                    if h[i] == first && memcmp(h + i, nBase, n.count) == 0 { return i }
                    i -= 1
                }
            } else {
                var i = 0
                while i <= last {
                    if h[i] == first && memcmp(h + i, nBase, n.count) == 0 { return i }
                    i += 1
                }
            }
            return nil
        }
    }

    /// The ASCII decimal digits at the start of `s` (Python's `\d+` on tensor names, whose digits
    /// are ASCII): how many bytes they take, or 0.
    package static func leadingDigits(_ s: Substring) -> Int {
        var n = 0
        for b in s.utf8 {
            guard b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") else { break }
            n += 1
        }
        return n
    }
}
