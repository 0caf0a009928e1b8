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
        let wantIndex = try JSON.parse(readWholeFile(dcp + "/consolidated/" + HFIndex.fileName))
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
            let index = try JSON.parse(readWholeFile(out + "/" + HFIndex.fileName))
            XCTAssertEqual(index["metadata"]?["total_size"], wantIndex["metadata"]?["total_size"])
            XCTAssertEqual(Dictionary(uniqueKeysWithValues: index["weight_map"]?.objectValue ?? []),
                           Dictionary(uniqueKeysWithValues: wantIndex["weight_map"]?.objectValue ?? []))
            // (Any output also carries nemoshard's hidden output marker, where that is in place.)
            XCTAssertEqual(try FS.list(out).filter { $0 != ".nemoshard-output" }.sorted(),
                           ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", HFIndex.fileName])
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
        XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr, file: file, line: line)
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

    // MARK: completeness and global shapes

    /// Writes `shard-S-model-M-of-N.safetensors` in `dir` with real (deterministic) data.
    func writeShard(_ dir: String, shard: Int, model: Int, of count: Int, _ chunks: [(String, DType, [Int], [Int])]) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let tensors = chunks.map { c -> (String, Tensor) in
            let n = c.2.reduce(1, *) * c.1.size
            return (c.0, Tensor(dtype: c.1, shape: c.2, bytes: (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ shard) }))
        }
        let name = "shard-\(pad5(shard))-model-\(pad5(model))-of-\(pad5(count)).safetensors"
        try SafetensorsWriter.write(path: dir + "/" + name, tensors: tensors, metadata: dcpMetadata(chunks.map { ($0.0, $0.3) }))
    }

    func testEveryOutputFileNeedsShardFiles() throws {
        let root = temporaryDirectory(self)
        // of-3 with files for models 1 and 3 only: model 2 is missing, on any number of ranks.
        for m in [1, 3] { try writeShard(root + "/gap", shard: 1, model: m, of: 3, [("t\(m)", .f32, [2], [0])]) }
        try assertRejected(root + "/gap", ["model-00002-of-00003", "no shard file", "incomplete"])
        try assertRejected(root + "/gap", ["model-00002-of-00003"], ranks: 2)
        // The last one missing.
        for m in [1, 2] { try writeShard(root + "/last", shard: 1, model: m, of: 3, [("t\(m)", .f32, [2], [0])]) }
        try assertRejected(root + "/last", ["model-00003-of-00003"])
        // Complete: fine.
        try writeShard(root + "/last", shard: 2, model: 3, of: 3, [("t3", .f32, [2], [0])])
        try ok(["consolidate", root + "/last", root + "/last-out"])
        XCTAssertEqual(try FS.list(root + "/last-out").filter { $0.hasPrefix("model-") }.count, 3)
    }

    func testAStrayShardFileBesideShardedIsAnError() throws {
        let dcp = try fixtureCopy(self, "dcp")
        // A leftover shard file beside sharded/: today's code read it alone and ignored sharded/.
        let stray = "shard-00001-model-00001-of-00001.safetensors"
        try FileManager.default.copyItem(atPath: dcp + "/handmade/" + stray, toPath: dcp + "/" + stray)
        try assertRejected(dcp, [dcp + "/" + stray, "beside sharded/"])
        try assertRejected(dcp, [stray, "beside sharded/"], ranks: 2)
        // sharded/ itself, or the directory without the stray file, is fine.
        try ok(["consolidate", dcp + "/sharded", temporaryDirectory(self) + "/a"])
        try FileManager.default.removeItem(atPath: dcp + "/" + stray)
        try ok(["consolidate", dcp, temporaryDirectory(self) + "/b"])
    }

    /// torch's consolidation beside `sharded/` (as `enable_consolidation=True` lays it out) holds
    /// the global shapes: a missing shard file whose loss still tiles (the last rank's rows) is
    /// caught and named.
    func testGlobalShapesAreCheckedAgainstTorchsConsolidation() throws {
        let dcp = try fixtureCopy(self, "dcp")
        let x = temporaryDirectory(self) + "/x"
        try FileManager.default.createDirectory(atPath: x, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: dcp + "/sharded", toPath: x + "/sharded")
        for name in try FS.list(dcp + "/consolidated") {
            try FileManager.default.copyItem(atPath: dcp + "/consolidated/" + name, toPath: x + "/" + name)
        }
        // Complete: agrees with the reference, given the directory or its sharded/.
        try ok(["consolidate", x, temporaryDirectory(self) + "/o1"])
        try ok(["consolidate", x + "/sharded", temporaryDirectory(self) + "/o2"], ranks: 2)
        // Rank 2's file of model 2 gone: uneven.rows tiles [3, 3] (not [5, 3]), vector.f32 [3], cols.bf16 [2, 3].
        try FileManager.default.removeItem(atPath: x + "/sharded/shard-00002-model-00002-of-00002.safetensors")
        try assertRejected(x, ["model-00002-of-00002.safetensors", "tensor \"", "here, but its chunks tile"])
        try assertRejected(x + "/sharded", ["tensor \"", "here, but its chunks tile"], ranks: 2)
        // With only the index (no consolidated files): its total_size disagrees.
        for i in 1...2 { try FileManager.default.removeItem(atPath: x + "/model-0000\(i)-of-00002.safetensors") }
        try assertRejected(x, [HFIndex.fileName, "total_size is 572 bytes, but the tensors the shard files tile hold 524"])
        // An index that puts a tensor in another file, or lists one no shard file holds.
        try FileManager.default.copyItem(atPath: dcp + "/sharded/shard-00002-model-00002-of-00002.safetensors",
                                         toPath: x + "/sharded/shard-00002-model-00002-of-00002.safetensors")
        let indexPath = x + "/" + HFIndex.fileName
        let original = try readWholeFile(indexPath)
        func editIndex(_ edit: ([(String, JSON)]) -> [(String, JSON)]) throws {
            let o = try JSON.parse(original).objectValue ?? []
            let edited = o.map { k, v in k == "weight_map" ? (k, JSON.object(edit(v.objectValue ?? []))) : (k, v) }
            try writeFileAtomically(indexPath, Array(JSON.object(edited).serialized().utf8))
        }
        try editIndex { $0.map { $0.0 == "vector.f32" ? ($0.0, .string("model-00001-of-00002.safetensors")) : $0 } }
        try assertRejected(x, ["tensor \"vector.f32\" is in model-00001-of-00002.safetensors, but its shard files put it in model-00002-of-00002.safetensors"])
        try editIndex { $0 + [("ghost", .string("model-00001-of-00002.safetensors"))] }
        try assertRejected(x, ["tensor \"ghost\"", "is in no shard file"])
        try editIndex { $0.filter { $0.0 != "cols.bf16" } }
        try assertRejected(x, ["tensor \"cols.bf16\" of the shard files is not in its weight_map"])
        try writeFileAtomically(indexPath, original)
        try ok(["consolidate", x, temporaryDirectory(self) + "/o3"])
        // A consolidated file whose shape differs from the tiled one.
        try SafetensorsWriter.write(path: x + "/model-00002-of-00002.safetensors", tensors: [
            ("uneven.rows", Tensor(dtype: .f32, shape: [6, 3])), ("vector.f32", Tensor(dtype: .f32, shape: [6])),
            ("cols.bf16", Tensor(dtype: .bf16, shape: [2, 6])),
        ])
        try assertRejected(x, ["model-00002-of-00002.safetensors", "tensor \"uneven.rows\": F32 [6, 3] here, but its chunks tile F32 [5, 3]"])
    }

    // MARK: streaming

    /// Naive assembly of `t` from its chunk files (element by element).
    func naiveAssemble(_ t: DCPCheckpoint.GlobalTensor, directory: String) throws -> [UInt8] {
        let es = t.dtype.size
        var out = [UInt8](repeating: 0, count: t.byteCount)
        for c in t.chunks {
            let data = try readWholeFile(directory + "/" + c.file)
            let bytes = Array(data[c.dataOffset..<(c.dataOffset + c.byteCount)])
            let n = c.shape.reduce(1, *)
            for e in 0..<n {
                var rest = e, g = 0, step = 1
                for d in c.shape.indices.reversed() {
                    g += (rest % c.shape[d] + c.offsets[d]) * step
                    rest /= c.shape[d]
                    step *= t.shape[d]
                }
                for b in 0..<es { out[g * es + b] = bytes[e * es + b] }
            }
        }
        return out
    }

    /// `copyTensor` against a naive assembly, for chunks split on every dimension, uneven, 2-D
    /// grids, scalars and empty chunks, with windows from 1 byte (every run cut) to more than a tensor.
    func testStreamedCopyMatchesANaiveAssemblyForAnyWindow() throws {
        let dir = temporaryDirectory(self) + "/dcp"
        try writeShard(dir, shard: 1, model: 1, of: 1, [
            ("rows", .f32, [3, 3], [0, 0]), ("cols", .bf16, [2, 3], [0, 0]), ("grid", .f32, [2, 3], [0, 0]),
            ("d1", .bf16, [3, 2, 5], [0, 0, 0]), ("d2", .f16, [3, 4, 2], [0, 0, 0]), ("scalar", .f32, [], []),
            ("empty", .f32, [0, 3], [0, 0]), ("vec", .u8, [7], [0]),
        ])
        try writeShard(dir, shard: 2, model: 1, of: 1, [
            ("rows", .f32, [2, 3], [3, 0]), ("cols", .bf16, [2, 3], [0, 3]), ("grid", .f32, [2, 3], [0, 3]),
            ("d1", .bf16, [3, 2, 5], [0, 2, 0]), ("d2", .f16, [3, 4, 3], [0, 0, 2]), ("empty", .f32, [2, 3], [0, 0]),
            ("vec", .u8, [4], [7]),
        ])
        try writeShard(dir, shard: 3, model: 1, of: 1, [("grid", .f32, [2, 3], [2, 0]), ("grid2", .i64, [1, 1], [0, 0])])
        try writeShard(dir, shard: 4, model: 1, of: 1, [("grid", .f32, [2, 3], [2, 3]), ("grid2", .i64, [1, 2], [0, 1])])
        let checkpoint = try DCPCheckpoint.open(dir)
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: checkpoint.tensors.map { ($0.name, $0.shape) }),
                       ["rows": [5, 3], "cols": [2, 6], "grid": [4, 6], "d1": [3, 4, 5], "d2": [3, 4, 5], "scalar": [],
                        "empty": [2, 3], "vec": [11], "grid2": [1, 3]])
        var want: [String: [UInt8]] = [:]
        for t in checkpoint.tensors { want[t.name] = try naiveAssemble(t, directory: dir) }
        let out = temporaryDirectory(self)
        for size in [1, 2, 3, 5, 8, 13, 64, 4096] {
            let window = try TensorStorage(count: size, for: "test window")
            let scratch = try TensorStorage(count: size, for: "test scratch")
            let path = out + "/w\(size).safetensors"
            let w = try SafetensorsWriter(path: path, specs: checkpoint.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) })
            var files = ConsolidateJob.ShardFiles(directory: checkpoint.directory, fingerprints: checkpoint.fingerprints)
            var read = 0
            for (k, t) in checkpoint.tensors.enumerated() {
                read += try ConsolidateJob.copyTensor(t, into: w, tensor: k, sources: &files, window: window.bytes, scratch: scratch.bytes)
            }
            try w.finish()
            try w.commit()
            XCTAssertEqual(read, checkpoint.tensors.reduce(0) { $0 + $1.byteCount }, "window \(size)")
            let got = try readAll(path)
            for t in checkpoint.tensors {
                XCTAssertEqual(got[t.name]?.1, t.shape, "\(t.name), window \(size)")
                XCTAssertEqual(got[t.name]?.2, want[t.name], "\(t.name), window \(size)")
            }
        }
    }

    func testAShardFileThatShrankIsOneErrorNamingFileAndTensor() throws {
        let dir = temporaryDirectory(self) + "/dcp"
        try writeShard(dir, shard: 1, model: 1, of: 1, [("w", .f32, [2, 3], [0, 0])])
        try writeShard(dir, shard: 2, model: 1, of: 1, [("w", .f32, [2, 3], [2, 0])])
        let checkpoint = try DCPCheckpoint.open(dir)
        let shard = dir + "/shard-00002-model-00001-of-00001.safetensors"
        let size = try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: shard)[.size] as? Int)
        XCTAssertEqual(truncate(shard, off_t(size - 4)), 0)
        let t = try XCTUnwrap(checkpoint.tensors.first)
        let w = try SafetensorsWriter(path: temporaryDirectory(self) + "/o.safetensors", specs: [TensorSpec(name: "w", dtype: .f32, shape: t.shape)])
        let window = try TensorStorage(count: 64, for: "w"), scratch = try TensorStorage(count: 64, for: "s")
        // With the fingerprint the plan was made from, the change itself is named.
        var files = ConsolidateJob.ShardFiles(directory: checkpoint.directory, fingerprints: checkpoint.fingerprints)
        XCTAssertThrowsError(try ConsolidateJob.copyTensor(t, into: w, tensor: 0, sources: &files, window: window.bytes, scratch: scratch.bytes)) {
            XCTAssertTrue("\($0)".contains(FS.realPath(shard)) && "\($0)".contains("changed while the job ran"), "\($0)")
        }
        // Without one, the short read names the file and the tensor.
        var unchecked = ConsolidateJob.ShardFiles(directory: checkpoint.directory, fingerprints: [:])
        XCTAssertThrowsError(try ConsolidateJob.copyTensor(t, into: w, tensor: 0, sources: &unchecked, window: window.bytes, scratch: scratch.bytes)) {
            XCTAssertTrue("\($0)".contains(FS.realPath(shard)) && "\($0)".contains("tensor \"w\""), "\($0)")
        }
    }

    /// A tensor far larger than the memory cap consolidates through the window: memory is bounded
    /// by the window, not the tensor (row-split 512 MiB, column-split 64 MiB; markers checked).
    func testStreamsThroughAWindowNotATensor() throws {
        let root = temporaryDirectory(self)
        let dcp = root + "/dcp"
        try FileManager.default.createDirectory(atPath: dcp, withIntermediateDirectories: true)
        let rows = [32 << 20, 2]  // F32: 256 MiB each
        let cols = [4096, 2048]  // BF16: 16 MiB per chunk, 2 x 2 grid, 64 MiB
        var markers: [(tensor: String, element: Int, value: UInt32)] = []
        for s in 0..<4 {
            let name = dcp + "/shard-0000\(s + 1)-model-00001-of-00001.safetensors"
            var tensors: [(String, DType, [Int])] = [("cols", .bf16, cols)]
            var offsets: [(String, [Int])] = [("cols", [(s / 2) * cols[0], (s % 2) * cols[1]])]
            if s < 2 {
                tensors.insert(("rows", .f32, rows), at: 0)
                offsets.insert(("rows", [s * rows[0], 0]), at: 0)
            }
            let at = try writeSparseSafetensors(name, tensors, metadata: dcpMetadata(offsets))
            // Markers: the first and last element of every chunk.
            if s < 2 {
                let n = rows[0] * rows[1]
                try patchFile(name, at: at[0], [1, 0, 0, UInt8(s + 1)])
                try patchFile(name, at: at[0] + (n - 1) * 4, [2, 0, 0, UInt8(s + 1)])
                markers.append(("rows", s * n, UInt32(s + 1) << 24 | 1))
                markers.append(("rows", s * n + n - 1, UInt32(s + 1) << 24 | 2))
            }
            let c = at[s < 2 ? 1 : 0]
            try patchFile(name, at: c, [UInt8(s + 1), 0x10])
            try patchFile(name, at: c + (cols[0] * cols[1] - 1) * 2, [UInt8(s + 1), 0x20])
            let (r0, c0) = ((s / 2) * cols[0], (s % 2) * cols[1])
            markers.append(("cols", r0 * 2 * cols[1] + c0, UInt32(0x1000 | (s + 1))))
            markers.append(("cols", (r0 + cols[0] - 1) * 2 * cols[1] + c0 + cols[1] - 1, UInt32(0x2000 | (s + 1))))
        }
        let out = root + "/out"
        let r = try CLI.run(["consolidate", dcp, out, "--json"], env: ["NEMOSHARD_MAX_ALLOCATION": "24MiB"], timeout: 300)
        XCTAssertEqual(r.code, 0, r.stderr)
        let peak = try XCTUnwrap(r.json?["max_peak_rss"]?.intValue)
        XCTAssertLessThan(peak, 160 << 20, "peak RSS \(peak) for a 512 MiB + 64 MiB output")
        let f = try SafetensorsFile(path: out + "/model-00001-of-00001.safetensors")
        XCTAssertEqual(try f.info("rows").shape, [64 << 20, 2])
        XCTAssertEqual(try f.info("cols").shape, [8192, 4096])
        let handle = try XCTUnwrap(FileHandle(forReadingAtPath: out + "/model-00001-of-00001.safetensors"))
        defer { try? handle.close() }
        for m in markers {
            let t = try f.info(m.tensor)
            let size = t.dtype.size
            try handle.seek(toOffset: UInt64(f.fileOffset(of: t) + m.element * size))
            let bytes = [UInt8](try XCTUnwrap(handle.read(upToCount: size)))
            let value = bytes.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.1) << (8 * $1.0) }
            XCTAssertEqual(value, m.value, "\(m.tensor) element \(m.element)")
        }
    }
}
