import CKernels
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

/// Bad input, a full disk and killed ranks: one clear error, nothing half-written, nothing lost.
final class FaultTests: XCTestCase {
    /// Runs a failing command and checks: exit `code`, one error line containing every fragment,
    /// and `parent` holding exactly `expected` afterwards (no output, staging or temporary).
    func assertFails(_ args: [String], ranks: Int? = 2, code: Int32 = 1, _ fragments: [String], parent: String,
                     expected: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try CLI.run(args, ranks: ranks)
        XCTAssertEqual(r.code, code, r.stderr, file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, "one error line:\n\(r.stderr)", file: file, line: line)
        for f in fragments {
            XCTAssertTrue(r.errorLines.first?.contains(f) ?? false, "\"\(r.errorLines.first ?? "")\" lacks \"\(f)\"", file: file, line: line)
        }
        XCTAssertFalse(r.stderr.contains("Fatal error"), "no Swift trap", file: file, line: line)
        XCTAssertEqual(try FS.list(parent), expected, "nothing committed, no temporaries", file: file, line: line)
    }

    func shard(_ hf: String) -> String { hf + "/model-00002-of-00002.safetensors" }

    func mutateHeader(_ path: String, _ edit: (inout String) -> Void) throws {
        var bytes = try readWholeFile(path)
        var n = 0
        for i in 0..<8 { n |= Int(bytes[i]) << (8 * i) }
        var header = String(decoding: bytes[8..<(8 + n)], as: UTF8.self)
        edit(&header)
        let h = Array(header.utf8)
        var len = UInt64(h.count)
        var prefix: [UInt8] = []
        for _ in 0..<8 { prefix.append(UInt8(len & 0xFF)); len >>= 8 }
        bytes = prefix + h + bytes[(8 + n)...]
        writeBytes(path, bytes)
    }

    func testCorruptSafetensorsFailOnEveryRankWithOneLine() throws {
        let corruptions: [(String, (String) throws -> Void)] = [
            ("exceeds the limit", { p in var b = try readWholeFile(p); b[0] = 0; b[1] = 0xC2; b[2] = 0xEB; b[3] = 0x0B; writeBytes(p, b) }),
            ("runs past the end", { p in
                var b = try readWholeFile(p)
                var n = b.count
                for i in 0..<8 { b[i] = UInt8(n & 0xFF); n >>= 8 }
                writeBytes(p, b)
            }),
            ("does not start with '{'", { p in var b = try readWholeFile(p); b[8] = UInt8(ascii: "x"); writeBytes(p, b) }),
            ("not valid JSON", { p in var b = try readWholeFile(p); b[10] = 0xFF; writeBytes(p, b) }),
            ("unknown dtype", { p in try self.mutateHeader(p) { $0 = $0.replacingOccurrences(of: "\"BF16\"", with: "\"BF17\"") } }),
            ("duplicate key", { p in try self.mutateHeader(p) { h in
                let first = h.dropFirst().prefix { $0 != ":" }
                h = "{" + first + ":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}," + h.dropFirst()
            } }),
            ("non-negative integers", { p in try self.mutateHeader(p) { $0 = $0.replacingOccurrences(of: "\"shape\":[", with: "\"shape\":[-1,", options: [], range: $0.range(of: "\"shape\":[")) } }),
            ("buffer holds", { p in let b = try readWholeFile(p); writeBytes(p, Array(b.dropLast(10))) }),
        ]
        for (fragment, corrupt) in corruptions {
            let hf = try synthCLI(["--shards", "2"])
            try corrupt(shard(hf))
            let parent = temporaryDirectory(self)
            try assertFails(["load", hf, "--out", parent + "/out"], [fragment, "model-00002-of-00002.safetensors"], parent: parent)
        }
    }

    func testCheckpointErrors() throws {
        func config(_ hf: String, _ edit: (inout [(String, JSON)]) -> Void) throws {
            var c = try JSON.parse(try readWholeFile(hf + "/config.json")).objectValue!
            edit(&c)
            try writeFileAtomically(hf + "/config.json", Array(JSON.object(c).serialized().utf8))
        }
        var cases: [(String, [String], (String) throws -> Void)] = []
        cases.append(("missing config", ["missing config.json"], { hf in try FileManager.default.removeItem(atPath: hf + "/config.json") }))
        cases.append(("missing index", ["no model.safetensors.index.json"], { hf in try FileManager.default.removeItem(atPath: hf + "/model.safetensors.index.json") }))
        cases.append(("missing shard", ["model-00002-of-00002.safetensors", "does not exist"], { hf in try FileManager.default.removeItem(atPath: self.shard(hf)) }))
        cases.append(("key not in file", ["\"backbone.extra.weight\"", "not in this file"], { hf in
            var idx = try JSON.parse(try readWholeFile(hf + "/model.safetensors.index.json")).objectValue!
            var map = idx.first { $0.0 == "weight_map" }!.1.objectValue!
            map.append(("backbone.extra.weight", .string("model-00001-of-00002.safetensors")))
            idx = idx.map { $0.0 == "weight_map" ? ($0.0, .object(map)) : $0 }
            try writeFileAtomically(hf + "/model.safetensors.index.json", Array(JSON.object(idx).serialized().utf8))
        }))
        cases.append(("wrong type", ["config.json", "\"num_hidden_layers\" must be a non-negative integer"], { hf in
            try config(hf) { $0 = $0.map { $0.0 == "num_hidden_layers" ? ($0.0, .string("5")) : $0 } }
        }))
        cases.append(("missing field", ["config.json", "missing \"hidden_size\""], { hf in try config(hf) { $0.removeAll { $0.0 == "hidden_size" } } }))
        cases.append(("pattern length", ["layer pattern has 4 layers but num_hidden_layers is 5"], { hf in
            try config(hf) { $0 = $0.map { $0.0 == "hybrid_override_pattern" ? ($0.0, .string("ME*-")) : $0 } }
        }))
        cases.append(("expert id", ["expert id 7 >= n_routed_experts 7"], { hf in
            try config(hf) { $0 = $0.map { $0.0 == "n_routed_experts" ? ($0.0, .int(7)) : $0 } }
        }))
        cases.append(("bad index JSON", ["model.safetensors.index.json", "not valid JSON"], { hf in writeBytes(hf + "/model.safetensors.index.json", Array("{\"weight_map\": ".utf8)) }))
        for (_, fragments, damage) in cases {
            let hf = try synthCLI(["--shards", "2"])
            try damage(hf)
            let parent = temporaryDirectory(self)
            try assertFails(["load", hf, "--out", parent + "/out"], fragments, parent: parent)
        }
    }

    func testExpertsOfOneLayerMustAgree() throws {
        let hf = try synthCLI(["--shards", "1", "--pattern", "ME"])
        var all = try readHF(hf)
        let key = "backbone.layers.1.mixer.experts.3.down_proj.weight"
        let (_, shape, bytes) = all[key]!
        all[key] = (.f16, shape, bytes)
        try SafetensorsWriter.write(path: hf + "/model.safetensors",
                                    tensors: all.keys.sorted().map { ($0, Tensor(dtype: all[$0]!.0, shape: all[$0]!.1, bytes: all[$0]!.2)) })
        let parent = temporaryDirectory(self)
        try assertFails(["load", hf, "--out", parent + "/out"], [key, "differs from the layer's other experts"], parent: parent)
        all[key] = (.bf16, [shape[1], shape[0]], bytes)
        try SafetensorsWriter.write(path: hf + "/model.safetensors",
                                    tensors: all.keys.sorted().map { ($0, Tensor(dtype: all[$0]!.0, shape: all[$0]!.1, bytes: all[$0]!.2)) })
        try assertFails(["load", hf, "--out", parent + "/out"], [key, "differs"], parent: parent)
        all[key] = (.f8e4m3, [bytes.count], bytes)
        try SafetensorsWriter.write(path: hf + "/model.safetensors",
                                    tensors: all.keys.sorted().map { ($0, Tensor(dtype: all[$0]!.0, shape: all[$0]!.1, bytes: all[$0]!.2)) })
        try assertFails(["load", hf, "--out", parent + "/out"], ["F8_E4M3", "block dequantization"], parent: parent)
    }

    func testPerRankCheckpointThatDisagreesWithItsManifest() throws {
        let hf = try synthCLI(["--experts", "10"])
        let dir = temporaryDirectory(self)
        try inThreads(["load", hf, "--out", dir + "/sharded"], ranks: 2)
        let original = dir + "/original.json"
        try FS.copyFile(from: dir + "/sharded/nemoshard.json", to: original)
        var m = try JSON.parse(try readWholeFile(dir + "/sharded/nemoshard.json")).objectValue!
        m = m.map { k, v in
            k == "ranks" ? (k, .array([
                .object([("rank", .int(0)), ("file", .string("rank-00000-of-00002.safetensors")), ("experts", .array([.int(0), .int(4)]))]),
                .object([("rank", .int(1)), ("file", .string("rank-00001-of-00002.safetensors")), ("experts", .array([.int(4), .int(10)]))]),
            ])) : (k, v)
        }
        try writeFileAtomically(dir + "/sharded/nemoshard.json", Array(JSON.object(m).serialized().utf8))
        let parent = temporaryDirectory(self)
        // The ranges are the mesh's to decide: an edited range is caught before any rank file is read.
        try assertFails(["save-hf", dir + "/sharded", parent + "/out"], ["nemoshard.json", "rank 0 has expert range [0,4), but mesh ep=2 gives it [0,5)"], parent: parent)
        try assertFails(["reshard", dir + "/sharded", "--out", parent + "/out"], ["rank 0 has expert range [0,4)"], parent: parent)
        // A non-expert tensor is stored once: the manifest moving it to the other rank's file disagrees
        // with both files.
        var moved = try JSON.parse(try readWholeFile(original)).objectValue!
        var name = ""
        moved = moved.map { k, v in
            guard k == "tensors", let list = v.arrayValue else { return (k, v) }
            var done = false
            return (k, .array(list.map { t in
                guard !done, let h = t["holder"]?.intValue, var fields = t.objectValue else { return t }
                done = true
                name = t["name"]?.stringValue ?? ""
                fields = fields.map { $0.0 == "holder" ? ("holder", .int(1 - h)) : $0 }
                return .object(fields)
            }))
        }
        XCTAssertFalse(name.isEmpty)
        try writeFileAtomically(dir + "/sharded/nemoshard.json", Array(JSON.object(moved).serialized().utf8))
        try assertFails(["verify", dir + "/sharded", hf], [name], parent: parent)
        writeBytes(dir + "/sharded/nemoshard.json", Array("{\"format\": 3}".utf8))
        try assertFails(["save-hf", dir + "/sharded", parent + "/out"], ["nemoshard.json", "not a nemoshard per-rank manifest"], parent: parent)
        try assertFails(["inspect", dir + "/sharded"], ranks: nil, ["not a nemoshard per-rank manifest"], parent: parent)
    }

    func testOutputDirectoryRules() throws {
        let hf = try synthCLI()
        let parent = temporaryDirectory(self)
        try inThreads(["load", hf, "--out", parent + "/out"], ranks: 2)
        let before = try FS.list(parent + "/out")
        try assertFails(["load", hf, "--out", parent + "/out"], code: 2, ["exists; pass --force"], parent: parent, expected: ["out"])
        XCTAssertEqual(try FS.list(parent + "/out"), before)
        try assertFails(["load", hf, "--out", hf + "/inner"], code: 2, ["inside the input"], parent: parent, expected: ["out"])
        try assertFails(["save-hf", parent + "/out", parent + "/out/x"], code: 2, ["inside the input"], parent: parent, expected: ["out"])
        XCTAssertFalse(FS.exists(hf + "/inner"), "the input is never touched")
        writeBytes(parent + "/plainfile", [1])
        try assertFails(["load", hf, "--out", parent + "/plainfile/out"], code: 2, ["plainfile"], parent: parent, expected: ["out", "plainfile"])
        // a read-only filesystem (root bypasses permission bits, not this)
        let ro = parent + "/ro"
        try FS.makeDirectories(ro)
        try requireRoot("mounts a tmpfs (size=1m)")
        try mount(["-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", ro])
        defer { _ = try? unmount(ro) }
        let r = try CLI.run(["load", hf, "--out", ro + "/out"], ranks: 2)
        XCTAssertEqual(r.code, 2, r.stderr)
        XCTAssertEqual(r.errorLines, ["nemoshard: error: cannot write into \(ro)"])
    }

    func testDiskFullCleansUpAndKeepsThePreviousCheckpoint() throws {
        let hf = try synthCLI(["--experts", "10"])
        let sizeOfOne = try readHF(hf).values.reduce(0) { $0 + $1.2.count }
        let disk = temporaryDirectory(self) + "/disk"
        try FS.makeDirectories(disk)
        // room for one per-rank checkpoint of 2 ranks, not for a second one beside it
        try requireRoot("mounts a tmpfs (size=\(sizeOfOne * 2 * 12 / 10))")
        try mount(["-t", "tmpfs", "-o", "size=\(sizeOfOne * 2 * 12 / 10)", "tmpfs", disk])
        defer { _ = try? unmount(disk) }
        try inThreads(["load", hf, "--out", disk + "/out"], ranks: 2)
        let old = try FS.list(disk + "/out").map { ($0, digest(try readWholeFile(disk + "/out/" + $0))) }
        let r = try CLI.run(["load", hf, "--out", disk + "/out", "--force", "--dtype", "f32"], ranks: 2)
        XCTAssertEqual(r.code, 1, r.stderr)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        XCTAssertTrue(r.errorLines.first?.contains("No space left on device") ?? false, r.stderr)
        XCTAssertEqual(try FS.list(disk), ["out"], "temporaries removed")
        for (name, sum) in old { XCTAssertEqual(digest(try readWholeFile(disk + "/out/" + name)), sum, "\(name) intact") }
        try assertVerified(hf, disk + "/out")
    }

    func testKilledRankCommitsNothingAndARerunSucceeds() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E"])
        let parent = temporaryDirectory(self)
        for point in ["written:1", "committed:0", "written:3"] {
            let r = try CLI.run(["load", hf, "--out", parent + "/out"], ranks: 4, env: ["NEMOSHARD_FAILPOINT": point])
            XCTAssertNotEqual(r.code, 0, point)
            XCTAssertFalse(FS.exists(parent + "/out"), "\(point): no committed checkpoint")
            XCTAssertFalse(try FS.list(parent).contains { $0.hasSuffix(".safetensors") || $0 == "nemoshard.json" })
        }
        try ok(["load", hf, "--out", parent + "/out", "--force"], ranks: 4)
        try assertVerified(hf, parent + "/out")
        XCTAssertEqual(try FS.list(parent), ["out"], "the rerun cleared the killed run's staging directory")

        let exportParent = temporaryDirectory(self)
        for point in ["written:2", "committed:0"] {
            let r = try CLI.run(["save-hf", parent + "/out", exportParent + "/hf"], ranks: 4, env: ["NEMOSHARD_FAILPOINT": point])
            XCTAssertNotEqual(r.code, 0)
            XCTAssertFalse(FS.exists(exportParent + "/hf"), "\(point): no index, no shards")
        }
        try ok(["save-hf", parent + "/out", exportParent + "/hf", "--force"], ranks: 4)
        try assertVerified(hf, exportParent + "/hf")
    }

    func testForceReplacesOnlyAtTheCommitPoint() throws {
        let hf = try synthCLI(["--experts", "10"])
        let parent = temporaryDirectory(self)
        try inThreads(["load", hf, "--out", parent + "/out"], ranks: 2)
        func state() throws -> [String] { try FS.list(parent + "/out").map { "\($0) \(digest(try readWholeFile(parent + "/out/" + $0)))" } }
        let before = try state()
        // Killed before every rank's file is complete, or rank 0 killed before the swap: the old one stays.
        for point in ["written:0", "written:3", "committed:0"] {
            let r = try CLI.run(["load", hf, "--out", parent + "/out", "--force", "--mesh", "dp=1,ep=4"], ranks: 4,
                                env: ["NEMOSHARD_FAILPOINT": point])
            XCTAssertNotEqual(r.code, 0)
            XCTAssertEqual(try state(), before, "\(point): old checkpoint intact")
            try assertVerified(hf, parent + "/out")
        }
        // A rank that dies after every file was committed in staging: the commit is collective (on
        // node-local disks every node must have finished), so the old checkpoint stays, complete and
        // valid, never a mixture; the next job removes what the killed one left.
        let r = try CLI.run(["load", hf, "--out", parent + "/out", "--force", "--mesh", "dp=1,ep=4"], ranks: 4,
                            env: ["NEMOSHARD_FAILPOINT": "committed:1"])
        XCTAssertNotEqual(r.code, 0)
        XCTAssertEqual(try state(), before, "committed:1: old checkpoint intact")
        try assertVerified(hf, parent + "/out")
        try ok(["load", hf, "--out", parent + "/out", "--force", "--mesh", "dp=1,ep=4"], ranks: 4)
        XCTAssertEqual(try Manifest.load(directory: parent + "/out").worldSize, 4)
        try assertVerified(hf, parent + "/out")
        XCTAssertEqual(try FS.list(parent), ["out"])
    }
}

/// CRC-32C of a byte array (compact assertions on file contents).
func digest(_ bytes: [UInt8]) -> String {
    String(bytes.withUnsafeBytes { ns_crc32c(0, $0.baseAddress, $0.count) }, radix: 16) + "/\(bytes.count)"
}

/// mount(8) / umount(8) for the tests that need a small or read-only filesystem (the tests run as root).
func mount(_ args: [String]) throws {
    let p = try Process.run(URL(fileURLWithPath: "/bin/mount"), arguments: args)
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw UsageError("mount \(args) failed") }
}

func unmount(_ path: String) throws {
    let p = try Process.run(URL(fileURLWithPath: "/bin/umount"), arguments: [path])
    p.waitUntilExit()
}
