import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// Inputs the fuzzers found or that stress the parsers: each must parse or throw a typed error.
final class FuzzRegressionTests: XCTestCase {
    func replay(_ bytes: [UInt8]) {
        do { _ = try SafetensorsHeader.parse(fileImage: bytes, path: "x") } catch {
            XCTAssertTrue(error is SafetensorsError, "\(error)")
        }
        do { _ = try HFIndex.parse(bytes, path: "x") } catch { XCTAssertTrue(error is CheckpointError, "\(error)") }
        guard let json = try? JSON.parse(bytes) else { return }
        XCTAssertEqual(try JSON.parse(json.serialized()), json)
        do { _ = try NemotronConfig(json: json, path: "x") } catch { XCTAssertTrue(error is CheckpointError, "\(error)") }
        do { _ = try Manifest(json: json, path: "x") } catch { XCTAssertTrue(error is CheckpointError, "\(error)") }
    }

    func testCommittedCrashersAndSeeds() throws {
        let fixtures = try XCTUnwrap(Bundle.module.resourcePath) + "/Fixtures/crashers"
        let files = try FS.list(fixtures).filter { $0 != "README.md" }
        XCTAssertFalse(files.isEmpty)
        for f in files { replay(try readWholeFile(fixtures + "/" + f)) }
    }

    func testPathologicalInputs() {
        let cases: [[UInt8]] = [
            [],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7B],
            rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[9223372036854775807],"data_offsets":[0,0]}}"#, data: []),
            rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[],"data_offsets":[0,18446744073709551615]}}"#, data: []),
            rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[9223372036854775807,9223372036854775807]}}"#, data: []),
            Array(String(repeating: "[", count: 10_000).utf8),
            Array(#"{"weight_map":{"k":"../../etc/passwd"}}"#.utf8),
            Array(#"{"format":"nemoshard-per-rank","version":1,"world_size":2147483647,"mesh":{"shape":[2147483647],"names":["ep"]}}"#.utf8),
            Array(#"{"hybrid_override_pattern":"E","num_hidden_layers":1,"hidden_size":1,"n_routed_experts":-1}"#.utf8),
            Array("1e999999".utf8),
            Array(#""\udbff\udfff""#.utf8),
        ]
        for c in cases { replay(c) }
        XCTAssertThrowsError(try HFIndex.parse(Array(#"{"weight_map":{"k":"../x"}}"#.utf8), path: "i"))
    }
}
