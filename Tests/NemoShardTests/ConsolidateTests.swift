import Foundation
import XCTest
@testable import NemoShard

/// `nemoshard consolidate` on torch DCP checkpoints (Fixtures/dcp: written by 2 gloo ranks with
/// HuggingFaceStorageWriter(save_distributed=True), and torch's own consolidation of them).
final class ConsolidateTests: XCTestCase {
    /// Every tensor of every safetensors file in `dir` (DCP outputs have no config.json).
    func readTensors(_ dir: String) throws -> [String: (DType, [Int], [UInt8])] {
        var out: [String: (DType, [Int], [UInt8])] = [:]
        for name in try FS.list(dir) where name.hasSuffix(".safetensors") {
            for (k, v) in try readAll(dir + "/" + name) {
                XCTAssertNil(out[k], "\(k) in two files")
                out[k] = v
            }
        }
        return out
    }

    func testEqualsTorchsConsolidationOnOneTwoAndThreeRanks() throws {
        let dcp = try fixtureCopy(self, "dcp")
        let want = try readTensors(dcp + "/consolidated")
        XCTAssertEqual(want.count, 7)
        let wantIndex = try JSON.parse(readWholeFile(dcp + "/consolidated/" + HFCheckpoint.indexName))
        let dir = temporaryDirectory(self)
        // The directory torch consolidated into (shards under sharded/), and sharded/ itself.
        for (ranks, source) in [(1, dcp), (2, dcp + "/sharded"), (3, dcp)] {
            let out = "\(dir)/out\(ranks)"
            let r = try ok(["consolidate", source, out, "--json"], ranks: ranks)
            XCTAssertEqual(r.json?["world_size"]?.intValue, Int64(ranks))
            let got = try readTensors(out)
            XCTAssertEqual(Set(got.keys), Set(want.keys), "\(ranks) ranks")
            for (key, (dtype, shape, bytes)) in want {
                XCTAssertEqual(got[key]?.0, dtype, key)
                XCTAssertEqual(got[key]?.1, shape, key)
                XCTAssertEqual(got[key]?.2, bytes, "\(ranks) ranks: \(key)")
            }
            let index = try JSON.parse(readWholeFile(out + "/" + HFCheckpoint.indexName))
            XCTAssertEqual(index["metadata"]?["total_size"], wantIndex["metadata"]?["total_size"])
            XCTAssertEqual(Dictionary(uniqueKeysWithValues: index["weight_map"]?.objectValue ?? []),
                           Dictionary(uniqueKeysWithValues: wantIndex["weight_map"]?.objectValue ?? []))
            XCTAssertEqual(try FS.list(out).sorted(), ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                                      HFCheckpoint.indexName])
        }
        // The input was left as it was.
        XCTAssertEqual(try FS.list(dcp + "/sharded").count, 4)
    }

    func testExpectedValuesIncludingColumnAndUnevenShards() throws {
        let dcp = try fixtureCopy(self, "dcp")
        let expected = try JSON.parse(readWholeFile(dcp + "/expected.json"))
        let out = temporaryDirectory(self) + "/out"
        try ok(["consolidate", dcp, out])
        let got = try readTensors(out)
        for name in ["uneven.rows", "vector.f32", "cols.bf16"] {
            let e = try XCTUnwrap(expected["tensors"]?[name])
            let values = try XCTUnwrap(e["values"]?.arrayValue).map { v -> Double in
                if case let .double(d) = v { return d }
                return Double(v.intValue ?? -1)
            }
            let t = try XCTUnwrap(got[name])
            XCTAssertEqual(t.1, try XCTUnwrap(e["shape"]?.arrayValue).map { Int($0.intValue ?? -1) }, name)
            let decoded: [Double] = t.0 == .f32 ? t.2.u32.map { Double(Float(bitPattern: $0)) }
                                                : t.2.u16.map { Double(Float(bitPattern: UInt32($0) << 16)) }
            XCTAssertEqual(decoded, values, name)
        }
        // Hand-made per-rank files: "w" split 2 + 2 rows, "b" only in the first.
        let hand = temporaryDirectory(self) + "/hand"
        try ok(["consolidate", dcp + "/handmade", hand])
        let h = try readTensors(hand)
        XCTAssertEqual(h["w"]?.1, [4, 3])
        XCTAssertEqual(h["w"]?.2.u32.map { Float(bitPattern: $0) }, (0..<12).map(Float.init))
        XCTAssertEqual(h["b"]?.2.u16, [0x3F00, 0xBFC0])
    }

    /// Writes `shard-S-model-1-of-1.safetensors` files from (name, dtype, shape, offsets) chunks.
    func writeDCP(_ dir: String, _ files: [[(String, DType, [Int], [Int]?)]], of count: Int = 1) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (i, chunks) in files.enumerated() {
            let tensors = chunks.map { ($0.0, Tensor(dtype: $0.1, shape: $0.2)) }
            let entries = chunks.compactMap { c in c.3.map { (c.0, JSON.object([("saved_offsets", .array($0.map { .int(Int64($0)) }))])) } }
            let meta = entries.isEmpty ? [] : [("DCP_SHARDING_INFO", JSON.object(entries).serialized())]
            try SafetensorsWriter.write(path: dir + "/shard-0000\(i + 1)-model-00001-of-0000\(count).safetensors", tensors: tensors, metadata: meta)
        }
    }

    func assertRejected(_ dir: String, _ parts: [String], ranks: Int? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        let out = temporaryDirectory(self) + "/out"
        let r = try CLI.run(["consolidate", dir, out], ranks: ranks, timeout: 60)
        XCTAssertEqual(r.code, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr, file: file, line: line)
        for p in parts { XCTAssertTrue(r.errorLines.first?.contains(p) ?? false, "\(p) not in \(r.stderr)", file: file, line: line) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), file: file, line: line)
    }

    func testBadChunksAreOneClearError() throws {
        let root = temporaryDirectory(self)
        try writeDCP(root + "/overlap", [[("w", .f32, [2, 3], [0, 0])], [("w", .f32, [2, 3], [1, 0])]])
        try assertRejected(root + "/overlap", ["tensor \"w\"", "overlaps", "shard-00002-model-00001-of-00001.safetensors"], ranks: 2)
        try writeDCP(root + "/columns", [[("w", .f32, [2, 3], [0, 0])], [("w", .f32, [2, 3], [0, 2])]])
        try assertRejected(root + "/columns", ["tensor \"w\"", "overlaps", "offsets [0, 2]"])
        try writeDCP(root + "/gap", [[("w", .f32, [1, 3], [0, 0])], [("w", .f32, [1, 3], [2, 0])]])
        try assertRejected(root + "/gap", ["tensor \"w\"", "6 of the 9 elements", "gap"])
        try writeDCP(root + "/dtype", [[("w", .f32, [1, 3], [0, 0])], [("w", .bf16, [1, 3], [1, 0])]])
        try assertRejected(root + "/dtype", ["tensor \"w\"", "dtype BF16, but F32", "shard-00002"])
        try writeDCP(root + "/noentry", [[("w", .f32, [1, 3], [0, 0]), ("b", .f32, [2], nil)]])
        try assertRejected(root + "/noentry", ["tensor \"b\" has no entry in metadata DCP_SHARDING_INFO", "shard-00001"])
        try writeDCP(root + "/rank", [[("w", .f32, [1, 3], [0])]])
        try assertRejected(root + "/rank", ["tensor \"w\"", "1 offsets [0] for a 2-D chunk"])
        try writeDCP(root + "/scalar", [[("s", .f32, [], [])], [("s", .f32, [], [])]])
        try assertRejected(root + "/scalar", ["tensor \"s\"", "overlaps"])
        try writeDCP(root + "/count", [[("w", .f32, [1, 3], [0, 0])], [("w", .f32, [1, 3], [1, 0])]])
        try FileManager.default.moveItem(atPath: root + "/count/shard-00002-model-00001-of-00001.safetensors",
                                         toPath: root + "/count/shard-00002-model-00001-of-00002.safetensors")
        try assertRejected(root + "/count", ["names 2 output files", "shard-00002-model-00001-of-00002"])
        try FileManager.default.createDirectory(atPath: root + "/empty", withIntermediateDirectories: true)
        try assertRejected(root + "/empty", ["no DCP shard files"], ranks: 2)
        try writeDCP(root + "/huge", [[("w", .f32, [1, 1], [2_000_000_000, 2_000_000_000])]])
        try assertRejected(root + "/huge", ["tensor \"w\"", "larger than nemoshard accepts"])
        // A 2 x 2 grid of chunks tiles [4, 6].
        try writeDCP(root + "/grid", [[("w", .f32, [2, 3], [0, 0])], [("w", .f32, [2, 3], [0, 3])],
                                      [("w", .f32, [2, 3], [2, 0])], [("w", .f32, [2, 3], [2, 3])]])
        try ok(["consolidate", root + "/grid", root + "/grid-out"], ranks: 2)
        XCTAssertEqual(try readTensors(root + "/grid-out")["w"]?.1, [4, 6])
        // Without any DCP_SHARDING_INFO a file holds whole tensors (as torch reads it).
        try writeDCP(root + "/plain", [[("w", .f32, [2, 3], nil)]])
        try ok(["consolidate", root + "/plain", root + "/plain-out"])
        XCTAssertEqual(try readTensors(root + "/plain-out")["w"]?.1, [2, 3])
    }

    func testFileNames() {
        XCTAssertTrue(DCPCheckpoint.parseFileName("shard-00002-model-00001-of-00003.safetensors")! == (2, 1, 3))
        for bad in ["shard-00002-model-00004-of-00003.safetensors", "shard-0-model-1-of-1.safetensors", "rank-00000-of-00001.safetensors",
                    "shard-00001-model-00001-of-00001.json", "shard--model-00001-of-00001.safetensors", "shard-+1-model-1-of-1.safetensors"] {
            XCTAssertNil(DCPCheckpoint.parseFileName(bad), bad)
        }
        XCTAssertEqual(DCPCheckpoint.outputFileName(2, of: 3), "model-00002-of-00003.safetensors")
    }

    /// `place` against a naive element-by-element copy, for chunks split on every dimension.
    func testPlaceMatchesANaiveCopy() {
        let global = [3, 4, 5]
        let total = global.reduce(1, *)
        for dim in 0..<3 {
            let cut = global[dim] / 2
            var out = [UInt16](repeating: 0, count: total)
            for (start, extent) in [(0, cut), (cut, global[dim] - cut)] {
                var shape = global, offsets = [0, 0, 0]
                shape[dim] = extent
                offsets[dim] = start
                // The chunk's values are the global linear indices of its elements.
                var chunk: [UInt16] = []
                for i in 0..<shape[0] { for j in 0..<shape[1] { for k in 0..<shape[2] {
                    chunk.append(UInt16(((i + offsets[0]) * global[1] + j + offsets[1]) * global[2] + k + offsets[2]))
                } } }
                chunk.withUnsafeBytes { c in
                    out.withUnsafeMutableBytes { g in
                        ChunkTiling.place(c, shape: shape, offsets: offsets, into: g, globalShape: global, elementSize: 2)
                    }
                }
            }
            XCTAssertEqual(out, (0..<total).map { UInt16($0) }, "split on dim \(dim)")
        }
    }
}
