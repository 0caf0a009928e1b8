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

/// `--progress` on the other long jobs (save-hf, reshard, consolidate, verify), as on `load`:
/// rank 0's one updating line on stderr that ends at 100%, asked for under mpirun (by itself on
/// a terminal without it), and the job's output byte for byte the same as without it.
final class ProgressJobsTests: XCTestCase {
    /// The progress lines of `label` in `stderr` (each update starts with a carriage return).
    func progressLines(_ label: String, _ stderr: String) -> [String] {
        stderr.split(whereSeparator: { $0 == "\r" || $0 == "\n" }).map(String.init).filter { $0.hasPrefix("\(label): ") }
    }

    /// Asserts that `stderr` holds `label`'s progress line, estimated over `ranks` ranks, never
    /// going back, printed by one rank, and ending once at 100%.
    func assertProgress(_ label: String, _ stderr: String, ranks: Int, file: StaticString = #filePath, line: UInt = #line) {
        let lines = progressLines(label, stderr)
        XCTAssertFalse(lines.isEmpty, "no \(label) progress line:\n\(stderr)", file: file, line: line)
        XCTAssertTrue(lines.allSatisfy { $0.contains("(est. over \(ranks) rank") && $0.contains("GB/s") }, stderr, file: file, line: line)
        let percents = lines.compactMap { Int($0.dropFirst(label.count + 2).prefix { $0.isNumber }) }
        XCTAssertEqual(percents.count, lines.count, stderr, file: file, line: line)
        XCTAssertEqual(percents, percents.sorted(), "the line never goes back: \(percents)", file: file, line: line)
        XCTAssertTrue(lines.last?.hasPrefix("\(label): 100% of ") ?? false, stderr, file: file, line: line)
        XCTAssertEqual(lines.filter { $0.contains("done in") }.count, 1, "ends once, by one rank:\n\(stderr)", file: file, line: line)
    }

    /// Every file of `dir` (nemoshard's hidden output marker aside) with its bytes.
    func contents(_ dir: String) throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for name in try FS.list(dir) where name != ".nemoshard-output" { out[name] = try readWholeFile(dir + "/" + name) }
        XCTAssertFalse(out.isEmpty, dir)
        return out
    }

    /// Runs `args` (the output directory last but `extra`) without and with `--progress` into two
    /// directories; asserts the line and that both wrote the same files.
    func assertSameOutput(_ label: String, _ args: (String) -> [String], ranks: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = temporaryDirectory(self)
        let plain = try ok(args(dir + "/\(label)-plain"), ranks: ranks, file: file, line: line)
        XCTAssertTrue(progressLines(label, plain.stderr).isEmpty, "not asked for, not a terminal: silent", file: file, line: line)
        let shown = try ok(args(dir + "/\(label)-progress") + ["--progress"], ranks: ranks, file: file, line: line)
        assertProgress(label, shown.stderr, ranks: ranks, file: file, line: line)
        let a = try contents(dir + "/\(label)-plain"), b = try contents(dir + "/\(label)-progress")
        XCTAssertEqual(a.keys.sorted(), b.keys.sorted(), file: file, line: line)
        for (name, bytes) in a { XCTAssertTrue(b[name] == bytes, "\(label): \(name) differs with --progress", file: file, line: line) }
    }

    func testSaveHFReshardAndVerifyShowProgressAndWriteTheSame() throws {
        // Enough tensors for several executor batches per rank.
        let hf = try synthCLI(["--experts", "32", "--extra-tensors", "400", "--shards", "3"])
        let sharded = temporaryDirectory(self) + "/sharded"
        try ok(["load", hf, "--out", sharded], ranks: 2)
        try assertSameOutput("save-hf", { ["save-hf", sharded, $0, "--max-shard-size", "20KB"] }, ranks: 2)
        try assertSameOutput("reshard", { ["reshard", sharded, "--out", $0] }, ranks: 3)
        // verify's output is what it prints.
        let plain = try ok(["verify", hf, sharded], ranks: 2)
        let shown = try ok(["verify", hf, sharded, "--progress"], ranks: 2)
        assertProgress("verify", shown.stderr, ranks: 2)
        XCTAssertTrue(plain.stdout.contains("equal: "), plain.stdout)
        XCTAssertEqual(plain.stdout, shown.stdout)
    }

    func testConsolidateShowsProgressAndWritesTheSame() throws {
        let dcp = try fixtureCopy(self, "dcp")
        try assertSameOutput("consolidate", { ["consolidate", dcp, $0] }, ranks: 2)
    }

    /// The estimate: rank 0's fraction of its own share scaled to every rank's bytes, never past
    /// the total, and `finish()` ends at (total, total) even where rank 0 had nothing to read.
    func testJobProgressScalesRankZerosShareAndAlwaysEndsAtTheTotal() throws {
        final class Calls: @unchecked Sendable { var list: [(Int, Int)] = [] }
        let calls = Calls()
        let shares = [40, 60, 100]
        let record: @Sendable (Int, Int) -> Void = { calls.list.append(($0, $1)) }
        let totals = try ThreadWorld.values(ranks: 3) { (world: ThreadCollective) throws -> Int in
            let p = try JobProgress(world.rank == 0 ? record : nil, share: shares[world.rank], world: world)
            if world.rank == 0 {
                p.run()?(10)   // a quarter of rank 0's share: a quarter of the total
                p.add(20)      // a run of 20 bytes finished: half
                p.run()?(20)   // the next run's 20 bytes on top: all of it
            } else {
                XCTAssertNil(p.run(), "no callback, nothing to report")
            }
            p.finish()
            return p.total
        }
        XCTAssertEqual(totals, [200, 200, 200])
        XCTAssertEqual(calls.list.map(\.0), [50, 100, 200, 200])
        XCTAssertTrue(calls.list.allSatisfy { $0.1 == 200 })
        // An empty share: nothing read, and still the last call is the total.
        let idle = Calls()
        let recordIdle: @Sendable (Int, Int) -> Void = { idle.list.append(($0, $1)) }
        _ = try ThreadWorld.values(ranks: 2) { (world: ThreadCollective) throws -> Int in
            let p = try JobProgress(world.rank == 0 ? recordIdle : nil, share: world.rank == 0 ? 0 : 80, world: world)
            p.finish()
            return 0
        }
        XCTAssertEqual(idle.list.map(\.0), [80])
        XCTAssertEqual(idle.list.map(\.1), [80])
    }

    func testProgressAppearsByItselfOnATerminal() throws {
        let hf = try synthCLI(["--experts", "16"])
        // script(1) gives the command a pseudo-terminal; no mpirun, no --progress.
        let r = try shell(["/usr/bin/script", "-qec", "\(CLI.binary) verify \(hf) \(hf)", "/dev/null"])
        XCTAssertEqual(r.code, 0, r.err)
        XCTAssertTrue(progressLines("verify", r.out).last?.hasPrefix("verify: 100% of ") ?? false, r.out)
        // Without a terminal and without --progress: silent.
        XCTAssertTrue(progressLines("verify", try ok(["verify", hf, hf]).stderr).isEmpty)
    }

    /// The library option: the callback sees (done, total) over all ranks, never past the total,
    /// and ends with (total, total); the export is the same as without it.
    func testSaveHFJobProgressCallbackEndsAtTheTotal() throws {
        let hf = try synthCLI(["--extra-tensors", "50"])
        let dir = temporaryDirectory(self)
        var load = LoadJob.Options(source: hf)
        load.output = dir + "/sharded"
        _ = try LoadJob.run(load, world: SoloCollective())
        final class Calls: @unchecked Sendable { var list: [(Int, Int)] = [] }
        let calls = Calls()
        var o = SaveHFJob.Options(source: dir + "/sharded", output: dir + "/hf")
        o.progress = { done, total in calls.list.append((done, total)) }
        _ = try SaveHFJob.run(o, world: SoloCollective())
        let total = try XCTUnwrap(calls.list.last?.1)
        XCTAssertGreaterThan(total, 0)
        XCTAssertTrue(calls.list.allSatisfy { $0.1 == total && $0.0 >= 0 && $0.0 <= total }, "\(calls.list)")
        XCTAssertEqual(calls.list.last?.0, total)
        XCTAssertEqual(calls.list.map(\.0), calls.list.map(\.0).sorted())
        _ = try SaveHFJob.run(SaveHFJob.Options(source: dir + "/sharded", output: dir + "/hf-plain"), world: SoloCollective())
        XCTAssertEqual(try contents(dir + "/hf"), try contents(dir + "/hf-plain"))
    }
}
