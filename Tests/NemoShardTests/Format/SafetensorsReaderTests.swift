import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// Every rule of the untrusted-header validation, one file each.
final class SafetensorsReaderTests: XCTestCase {
    func open(_ bytes: [UInt8]) throws -> SafetensorsFile {
        let path = temporaryDirectory(self) + "/x.safetensors"
        writeBytes(path, bytes)
        return try SafetensorsFile(path: path)
    }

    /// Rejected with a message containing `fragment` and, where given, exactly `reason`.
    func assertRejected(_ bytes: [UInt8], _ fragment: String, _ reason: SafetensorsError.Reason? = nil,
                        file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try open(bytes), file: file, line: line) { error in
            XCTAssertTrue(error is SafetensorsError, "\(error)", file: file, line: line)
            if let reason { XCTAssertEqual((error as? SafetensorsError)?.reason, reason, file: file, line: line) }
            XCTAssertTrue("\(error)".contains(fragment), "\"\(error)\" lacks \"\(fragment)\"", file: file, line: line)
            XCTAssertTrue("\(error)".contains("x.safetensors"), "error names no file: \(error)", file: file, line: line)
        }
    }

    let good = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#

    func testValidFileReads() throws {
        let f = try open(rawSafetensors(header: good, data: [1, 0, 0, 0, 2, 0, 0, 0]))
        XCTAssertEqual(f.header.tensors.map(\.name), ["a"])
        XCTAssertEqual(try f.tensor("a").byteArray, [1, 0, 0, 0, 2, 0, 0, 0])
    }

    func testTooSmallForHeader() { assertRejected([1, 2, 3], "too small", .fileTooSmall(size: 3)) }

    func testHeaderLengthAboveLimit() {
        assertRejected(rawSafetensors(header: good, data: [UInt8](repeating: 0, count: 8), declaredLength: 100_000_001), "exceeds the limit", .headerTooLong(length: 100_000_001, limit: 100_000_000))
    }

    func testHeaderLengthBeyondFile() {
        assertRejected(rawSafetensors(header: good, data: [], declaredLength: 4096), "past the end")
    }

    func testHeaderNotJSON() { assertRejected(rawSafetensors(header: "{nope", data: []), "not valid JSON") }
    func testHeaderNotObject() { assertRejected(rawSafetensors(header: "[1,2]", data: []), "does not start with '{'", .headerNotBrace) }

    func testHeaderNotUTF8() {
        var h = Array(#"{"a\#u{00}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#.utf8)
        h[3] = 0xFF
        var n = UInt64(h.count)
        var bytes: [UInt8] = []
        for _ in 0..<8 { bytes.append(UInt8(n & 0xFF)); n >>= 8 }
        assertRejected(bytes + h, "not valid JSON")
    }

    func testMissingFields() {
        assertRejected(rawSafetensors(header: #"{"a":{"shape":[2],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "missing \"dtype\"", .missingField("dtype"))
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "missing \"shape\"", .missingField("shape"))
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[2]}}"#, data: [UInt8](repeating: 0, count: 8)), "missing \"data_offsets\"", .missingField("data_offsets"))
    }

    func testWrongTypes() {
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":3,"shape":[2],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "not a string", .fieldWrongType("dtype", expected: "a string"))
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "not an array", .fieldWrongType("shape", expected: "an array"))
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#, data: [UInt8](repeating: 0, count: 8)), "two non-negative integers", .badOffsets)
        assertRejected(rawSafetensors(header: #"{"a":[1]}"#, data: []), "not an object", .entryNotObject)
        assertRejected(rawSafetensors(header: #"{"__metadata__":{"k":1}}"#, data: []), "not a string", .metadataValueNotString(key: "k"))
    }

    func testUnknownDType() {
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "unknown dtype", .unknownDType("F12"))
    }

    func testNegativeAndFractionalDims() {
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "non-negative integers", .negativeShape)
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "non-negative integers")
    }

    func testShapeProductOverflow() {
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "overflows")
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "overflows")
    }

    func testReversedOffsets() {
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: [UInt8](repeating: 0, count: 8)), "before begin", .offsetsReversed(begin: 8, end: 0))
    }

    func testOverlappingOffsets() {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        assertRejected(rawSafetensors(header: h, data: [UInt8](repeating: 0, count: 12)), "overlap", .overlap)
    }

    func testHoleBetweenTensors() {
        let h = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
        assertRejected(rawSafetensors(header: h, data: [UInt8](repeating: 0, count: 12)), "hole")
    }

    func testDataNotEndingAtFileEnd() {
        assertRejected(rawSafetensors(header: good, data: [UInt8](repeating: 0, count: 12)), "buffer holds 12 bytes", .bufferLengthMismatch(end: 8, bufferSize: 12))
    }

    func testTruncatedFile() {
        assertRejected(rawSafetensors(header: good, data: [UInt8](repeating: 0, count: 5)), "buffer holds 5 bytes")
    }

    func testByteLengthMismatch() {
        assertRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "needs 12", .byteCountMismatch(bytes: 8, shape: [3], dtype: "F32", needed: 12))
    }

    func testDuplicateKeys() {
        let h = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        assertRejected(rawSafetensors(header: h, data: [UInt8](repeating: 0, count: 8)), "duplicate key")
    }

    func testReadRowsReadsOnlyThoseRows() throws {
        let h = #"{"m":{"dtype":"U8","shape":[4,3],"data_offsets":[0,12]}}"#
        let f = try open(rawSafetensors(header: h, data: Array(0..<12)))
        var buf = [UInt8](repeating: 0, count: 6)
        try buf.withUnsafeMutableBytes { try f.readRows("m", rows: 1..<3, into: $0) }
        XCTAssertEqual(buf, [3, 4, 5, 6, 7, 8])
        XCTAssertThrowsError(try buf.withUnsafeMutableBytes { try f.readRows("m", rows: 3..<5, into: $0) })
    }
}
