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

/// Every rank file `load --out` and `reshard` write carries torch DCP's `DCP_SHARDING_INFO`
/// (scripts/interop reads such directories with torch's `HuggingFaceStorageReader`).
final class DCPShardingInfoTests: XCTestCase {
    /// Checks every rank file of `dir`: one entry per tensor, grouped experts at the rank's first
    /// expert on dim 0, zeros elsewhere; the nemoshard_* metadata as before; and the grouped
    /// chunks of all files tile each expert axis exactly once.
    func assertShardingInfo(_ dir: String, _ label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let manifest = try Manifest.load(directory: dir)
        var covered: [String: [ExpertRange]] = [:]
        for r in manifest.ranks {
            let path = dir + "/" + r.file
            let f = try SafetensorsFile(path: path)
            let meta = Dictionary(f.header.metadata, uniquingKeysWith: { a, _ in a })
            for (k, v) in Manifest.rankMetadata(rank: r.rank, range: r.experts, world: manifest.worldSize) {
                XCTAssertEqual(meta[k], v, "\(label) rank \(r.rank) \(k)", file: file, line: line)
            }
            let value = try XCTUnwrap(meta[DCPShardingInfo.metadataKey], "\(label) rank \(r.rank)", file: file, line: line)
            let info = try DCPShardingInfo.parse(value, path: path)
            XCTAssertEqual(Set(info.keys), Set(f.header.tensors.map(\.name)), "\(label) rank \(r.rank)", file: file, line: line)
            for t in f.header.tensors {
                let entry = try XCTUnwrap(manifest.tensor(t.name))
                var want = [Int](repeating: 0, count: t.shape.count)
                if entry.expertSharded {
                    want[0] = r.experts.start
                    covered[t.name, default: []].append(r.experts)
                }
                XCTAssertEqual(info[t.name], want, "\(label) rank \(r.rank) \(t.name)", file: file, line: line)
            }
        }
        let grouped = manifest.tensors.filter(\.expertSharded)
        XCTAssertFalse(grouped.isEmpty, label, file: file, line: line)
        for t in grouped {
            let ranges = (covered[t.name] ?? []).sorted { $0.start < $1.start }
            var next = 0
            for r in ranges {
                XCTAssertEqual(r.start, next, "\(label) \(t.name): chunks must tile the expert axis", file: file, line: line)
                next = r.end
            }
            XCTAssertEqual(next, manifest.nRoutedExperts, "\(label) \(t.name)", file: file, line: line)
        }
    }

    func testLoadAndReshardWriteShardingInfo() throws {
        let hf = try fixtureCopy(self, "transformers5/moe")
        let dir = temporaryDirectory(self)
        try inThreads(["load", hf, "--out", dir + "/four"], ranks: 4)
        try assertShardingInfo(dir + "/four", "load 4")
        try ok(["reshard", dir + "/four", "--out", dir + "/two"], ranks: 2)
        try assertShardingInfo(dir + "/two", "reshard 4->2")
        try ok(["convert", hf, "--out", dir + "/one"])
        try assertShardingInfo(dir + "/one", "convert")
        // Seven ranks for six experts: rank 6 holds no expert and its file no grouped tensor.
        try inThreads(["load", hf, "--out", dir + "/seven"], ranks: 7)
        try assertShardingInfo(dir + "/seven", "load 7")
        // Still a valid per-rank checkpoint for every other command.
        try assertVerified(hf, dir + "/two", strict: true)
    }

    func testEntryAndParse() throws {
        let specs = [TensorSpec(name: "g", dtype: .bf16, shape: [2, 3, 4]), TensorSpec(name: "n", dtype: .f32, shape: [5]),
                     TensorSpec(name: "s", dtype: .f32, shape: [])]
        let (key, value) = DCPShardingInfo.entry(specs: specs, grouped: ["g"], firstExpert: 7)
        XCTAssertEqual(key, "DCP_SHARDING_INFO")
        XCTAssertEqual(value, #"{"g":{"saved_offsets":[7,0,0]},"n":{"saved_offsets":[0]},"s":{"saved_offsets":[]}}"#)
        XCTAssertEqual(try DCPShardingInfo.parse(value, path: "f"), ["g": [7, 0, 0], "n": [0], "s": []])
        // torch writes json.dumps' spacing
        XCTAssertEqual(try DCPShardingInfo.parse(#"{"a": {"saved_offsets": [0, 4]}}"#, path: "f"), ["a": [0, 4]])
        for (bad, message) in [("[]", "not a JSON object"), (#"{"a":{}}"#, #"tensor "a" has no "saved_offsets""#),
                               (#"{"a":{"saved_offsets":[-1]}}"#, "not a non-negative integer"),
                               (#"{"a":{"saved_offsets":[1.5]}}"#, "not a non-negative integer"), ("{", "not valid JSON")] {
            XCTAssertThrowsError(try DCPShardingInfo.parse(bad, path: "x.safetensors")) {
                XCTAssertTrue("\($0)".contains(message) && "\($0)".contains("x.safetensors"), "\(bad): \($0)")
            }
        }
    }
}
