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

/// `save-hf` with any number of ranks: the export is laid out as the checkpoint's own world size
/// writes it (`ExportLayout`), so every world size writes the same files, byte for byte.
final class SaveHFAnyRanksTests: XCTestCase {
    /// Every visible file of an export directory (the hidden output marker aside), by name.
    func exportFiles(_ dir: String) throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for name in try FS.list(dir) where !name.hasPrefix(".") { out[name] = try readWholeFile(dir + "/" + name) }
        return out
    }

    /// Asserts that two exports hold the same file names with the same bytes (index included).
    func assertSameFiles(_ a: String, _ b: String, _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try exportFiles(a), y = try exportFiles(b)
        XCTAssertEqual(x.keys.sorted(), y.keys.sorted(), what, file: file, line: line)
        XCTAssertTrue(x.keys.contains(HFIndex.fileName), what, file: file, line: line)
        for (name, bytes) in x where y[name] != bytes {
            XCTFail("\(what): \(name) differs", file: file, line: line)
        }
    }

    func shardCount(_ dir: String) throws -> Int { try FS.list(dir).filter { $0.hasSuffix(".safetensors") }.count }

    /// The export's tensor bytes, as its index records them.
    func totalSize(_ dir: String) throws -> Int64 {
        try XCTUnwrap(JSON.parse(readWholeFile(dir + "/" + HFIndex.fileName))["metadata"]?["total_size"]?.intValue)
    }

    /// The acceptance case: 8 rank files exported with 2, 3 and 8 ranks give identical files, and
    /// those are the files the 8-rank in-memory way back (`load --to-hf`, which never went through
    /// the new layout) writes; with small shards, 1 and 12 ranks too.
    func testEightRankFilesExportIdenticallyWithTwoThreeAndEightRanks() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E", "--shards", "3"])
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/eight"], ranks: 8)
        try ok(["load", hf, "--to-hf", dir + "/reference"], ranks: 8)
        for w in [2, 3, 8] {
            try ok(["save-hf", dir + "/eight", dir + "/w\(w)"], ranks: w)
            try assertSameFiles(dir + "/reference", dir + "/w\(w)", "\(w) ranks vs load --to-hf on 8")
        }
        XCTAssertEqual(try shardCount(dir + "/w3"), 8, "one shard per old rank at the default size")
        try ok(["verify", hf, dir + "/w3", "--strict"])
        // Small shards: several per old share, so a share's shards are split between new ranks.
        var bytesRead: [Int: Int64] = [:]
        for w in [8, 1, 2, 3, 12] {
            let r = try ok(["save-hf", dir + "/eight", dir + "/small\(w)", "--max-shard-size", "6kB", "--json"], ranks: w)
            let ranks = try XCTUnwrap(r.json?["ranks"]?.arrayValue)
            XCTAssertEqual(ranks.count, w)
            bytesRead[w] = ranks.compactMap { $0["bytes_read"]?.intValue }.reduce(0, +)
            if w <= 3 { XCTAssertTrue(ranks.allSatisfy { ($0["files"]?.intValue ?? 0) > 0 }, "\(w) ranks: every rank writes shards") }
            if w != 8 { try assertSameFiles(dir + "/small8", dir + "/small\(w)", "\(w) ranks vs 8, 6kB shards") }
        }
        XCTAssertGreaterThan(try shardCount(dir + "/small8"), 16, "more shards than old ranks")
        let total = try totalSize(dir + "/small8")
        for (w, read) in bytesRead { XCTAssertEqual(read, total, "\(w) ranks read every byte once in all") }
    }

    /// A 2-D mesh (dp replicas hold copies and write nothing of their own), `--gather`, `--exclude`
    /// and fewer experts than old ranks (empty expert ranges) all give the same files for any W.
    func testMeshReplicasGatherExcludeAndEmptyRanges() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E"])
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/mesh", "--mesh", "dp=2,ep=4"], ranks: 8)
        try ok(["load", hf, "--to-hf", dir + "/reference", "--mesh", "dp=2,ep=4"], ranks: 8)
        try ok(["save-hf", dir + "/mesh", dir + "/w3"], ranks: 3)
        try assertSameFiles(dir + "/reference", dir + "/w3", "dp=2,ep=4 on 3 ranks vs load --to-hf")
        let options = ["--gather", "--exclude", "mtp\\.", "--max-shard-size", "5kB"]
        try ok(["save-hf", dir + "/mesh", dir + "/g8"] + options, ranks: 8)
        for w in [3, 5] {
            try ok(["save-hf", dir + "/mesh", dir + "/g\(w)"] + options, ranks: w)
            try assertSameFiles(dir + "/g8", dir + "/g\(w)", "--gather --exclude on \(w) ranks")
        }
        XCTAssertFalse(try readHF(dir + "/g5").keys.contains { $0.hasPrefix("mtp.") }, "excluded")

        let three = try synthCLI(["--experts", "3"])
        try ok(["load", three, "--out", dir + "/empty"], ranks: 8)
        try ok(["save-hf", dir + "/empty", dir + "/e8", "--max-shard-size", "4kB"], ranks: 8)
        for w in [1, 5] {
            try ok(["save-hf", dir + "/empty", dir + "/e\(w)", "--max-shard-size", "4kB"], ranks: w)
            try assertSameFiles(dir + "/e8", dir + "/e\(w)", "3 experts over 8 old ranks, \(w) new")
        }
        try ok(["verify", three, dir + "/e5", "--strict"])
    }

    /// A rank file nobody can read is one error line naming it, and nothing is written.
    func testAMissingRankFileIsNamed() throws {
        let hf = try synthCLI(["--experts", "10"])
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/eight"], ranks: 8)
        let gone = dir + "/eight/" + Manifest.rankFileName(5, of: 8)
        FS.removeFile(gone)
        let r = try CLI.run(["save-hf", dir + "/eight", dir + "/out"], ranks: 3)
        XCTAssertEqual(r.code, 1, r.stderr)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        XCTAssertTrue(r.errorLines.first?.contains(gone) ?? false, r.stderr)
        XCTAssertTrue(r.errorLines.first?.contains("rank 5's file is missing") ?? false, r.stderr)
        XCTAssertFalse(try FS.list(dir).contains { $0.contains("out") }, "no output, staging or lock")
    }

    /// The layout itself: with the old world size each shard goes to its own rank; with another,
    /// every shard goes to exactly one rank, in ascending runs of about equal bytes; a shard whose
    /// file a rank cannot see goes to the file's reader; and one rank's plan covers its shards.
    func testLayoutDealsShardsOutOnceAndToRanksThatSeeTheirFiles() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E"])
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/eight"], ranks: 8)
        let source = try ShardedCheckpoint.open(dir + "/eight")
        let maxShard = 6000
        let layout = try ExportLayout(source: source, exclude: nil, maxShardBytes: maxShard)
        let everyone: (Int, Int) -> Bool = { _, _ in true }
        XCTAssertGreaterThan(layout.shards.count, 8)

        let own = layout.assign(ranks: 8, canRead: everyone) { $0 }
        for (r, numbers) in own.enumerated() {
            XCTAssertFalse(numbers.isEmpty, "old rank \(r) writes")
            XCTAssertTrue(numbers.allSatisfy { layout.shards[$0].owner == r }, "old rank \(r) writes only its own share")
        }

        let total = layout.shards.reduce(0) { $0 + $1.bytes }
        let largest = layout.shards.map(\.bytes).max() ?? 0
        for w in [1, 2, 3, 5, 12] {
            let dealt = layout.assign(ranks: w, canRead: everyone) { $0 }
            XCTAssertEqual(dealt.count, w)
            XCTAssertEqual(dealt.flatMap { $0 }, Array(layout.shards.indices), "\(w) ranks: each shard once, in order")
            for numbers in dealt {
                let bytes = numbers.reduce(0) { $0 + layout.shards[$1].bytes }
                XCTAssertLessThanOrEqual(abs(bytes - total / w), largest, "\(w) ranks: about equal bytes")
            }
        }

        // Ranks 0 and 1 on "node 0" see files 0...3, ranks 2 on "node 1" files 4...7.
        let sees: (Int, Int) -> Bool = { rank, file in (rank < 2) == (file < 4) }
        let local = layout.assign(ranks: 3, canRead: sees) { $0 < 4 ? 0 : 2 }
        XCTAssertEqual(local.flatMap { $0 }.sorted(), Array(layout.shards.indices))
        for (rank, numbers) in local.enumerated() {
            for n in numbers { XCTAssertTrue(sees(rank, layout.shards[n].owner), "rank \(rank) can read shard \(n)'s file") }
        }
        XCTAssertFalse(local[1].isEmpty, "node 0's second rank gets its part")

        let part = layout.plan(shards: layout.assign(ranks: 3, canRead: everyone) { $0 }[1])
        XCTAssertNoThrow(try part.plan.validateCoverage())
        XCTAssertEqual(part.groups.flatMap { $0 }, Array(part.plan.outputs.indices), "groups number the outputs in order")
        XCTAssertTrue(part.groups.allSatisfy { g in g.map { part.plan.outputs[$0].byteCount }.reduce(0, +) <= maxShard || g.count == 1 })
        let files = Set(part.plan.pieces.map(\.source.file))
        XCTAssertGreaterThan(files.count, 1, "a new rank reads several old rank files")
        let all = layout.plan(shards: Array(layout.shards.indices)).plan
        XCTAssertEqual(all.outputs.count, try readHF(hf).count, "every HF tensor in one shard")
    }

    /// Rank files on node-local disks (`scripts/nodes`: two simulated nodes), exported with other
    /// world sizes: each shard is produced on a node that has its file; the files are the ones a
    /// one-node export writes, for shared and node-local outputs alike.
    func testNodeLocalRankFilesExportWithOtherWorldSizes() throws {
        let script = CLI.packageRoot + "/scripts/nodes"
        let up = try shell([script, "up", "-q"])
        XCTAssertEqual(up.code, 0, "the two-node harness must start:\n\(up.err)")
        guard up.code == 0 else { return }
        addTeardownBlock { _ = try? shell([script, "down"]) }
        var env: [String: String] = [:]
        for line in try shell([script, "env"]).out.split(separator: "\n") {
            let kv = line.split(separator: "=", maxSplits: 1).map(String.init)
            if kv.count == 2 { env[kv[0]] = kv[1].trimmingCharacters(in: CharacterSet(charactersIn: "'\"")) }
        }
        let local = try XCTUnwrap(env["NODES_LOCAL"]), disk0 = try XCTUnwrap(env["NODES_DISK0"]), disk1 = try XCTUnwrap(env["NODES_DISK1"])
        let name = "t-" + UUID().uuidString.prefix(8)
        addTeardownBlock { for d in [disk0, disk1] { FS.removeTree(d + "/" + name); FS.removeTree(d + "/" + name + "-out") } }
        func onNodes(_ ranks: Int, _ args: [String]) throws -> CLI.Output {
            let r = try shell([script, "run", String(ranks), CLI.binary] + args, env: ["NODES_TIMEOUT": "240"])
            return CLI.Output(code: r.code, stdout: r.out, stderr: r.err)
        }

        let hf = try synthCLI(["--experts", "10", "--mtp", "*E", "--shards", "3"])
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/eight"], ranks: 8)
        try ok(["save-hf", dir + "/eight", dir + "/one-node", "--max-shard-size", "6kB"], ranks: 8)
        XCTAssertEqual(try onNodes(8, ["load", hf, "--out", local + "/" + name]).code, 0)
        XCTAssertFalse(FS.exists(disk0 + "/" + name + "/" + Manifest.rankFileName(4, of: 8)), "node 0 lacks node 1's files")
        for w in [2, 3] {
            for mode in [[], ["--gather"]] {
                let out = "\(dir)/w\(w)\(mode.isEmpty ? "" : "-gather")"
                let r = try onNodes(w, ["save-hf", local + "/" + name, out, "--max-shard-size", "6kB", "--json"] + mode)
                XCTAssertEqual(r.code, 0, r.stderr)
                try assertSameFiles(dir + "/one-node", out, "\(w) ranks on two nodes \(mode)")
                let ranks = try XCTUnwrap(r.json?["ranks"]?.arrayValue)
                XCTAssertEqual(ranks.compactMap { $0["bytes_read"]?.intValue }.reduce(0, +), try totalSize(out), "every byte read once, where it is")
            }
        }
        // To node-local storage: the export lands on rank 0's node, node 1's rank streams its shards.
        let r = try onNodes(3, ["save-hf", local + "/" + name, local + "/" + name + "-out", "--gather", "--max-shard-size", "6kB"])
        XCTAssertEqual(r.code, 0, r.stderr)
        try assertSameFiles(dir + "/one-node", disk0 + "/" + name + "-out", "3 ranks to node-local storage")
        XCTAssertFalse(FS.exists(disk1 + "/" + name + "-out"))
    }
}
