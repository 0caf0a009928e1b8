import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

final class JSONTests: XCTestCase {
    func testParsesAndKeepsOrder() throws {
        let j = try JSON.parse(#"{"b": [1, -2, 3.5, true, null], "a": "x\u00e9\n", "n": 9007199254740993}"#)
        XCTAssertEqual(j.objectValue?.map(\.0), ["b", "a", "n"])
        XCTAssertEqual(j["a"]?.stringValue, "xé\n")
        XCTAssertEqual(j["n"]?.intValue, 9_007_199_254_740_993, "integers stay exact")
        XCTAssertEqual(j["b"], .array([.int(1), .int(-2), .double(3.5), .bool(true), .null]))
        XCTAssertEqual(try JSON.parse(j.serialized()), j, "round trip")
    }

    func testRejects() {
        for bad in [#"{"a":1,"a":2}"#, "{", "[1,]", "01", #"{"a" 1}"#, "tru", #""\ud800""#, "1 2", "\"\u{01}\""] {
            XCTAssertThrowsError(try JSON.parse(bad), bad)
        }
        XCTAssertThrowsError(try JSON.parse(String(repeating: "[", count: 100) + String(repeating: "]", count: 100)))
    }
}
