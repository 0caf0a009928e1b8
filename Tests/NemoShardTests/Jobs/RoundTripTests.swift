import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// The way back straight from memory (`ToHFJob`, `load --to-hf`): byte-identical to a per-rank
/// checkpoint exported with `save-hf`, in both write modes, on 1-D and replicated meshes.
final class RoundTripTests: XCTestCase {
    /// Every file of `a` and `b` (same names, same bytes).
    func assertSameFiles(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let names = try FS.list(a)
        XCTAssertEqual(names, try FS.list(b), file: file, line: line)
        for n in names {
            XCTAssertEqual(digest(try readWholeFile(a + "/" + n)), digest(try readWholeFile(b + "/" + n)), n, file: file, line: line)
        }
    }

    func testToHFFromMemoryEqualsSaveHFOfTheSameLoad() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E", "--shards", "3"])
        for (ranks, mesh) in [(1, "ep=1"), (3, "ep=3"), (4, "dp=2,ep=2"), (4, "ep=2,tp=2")] {
            let dir = temporaryDirectory(self)
            // The reference (load, then save-hf, both tested under mpirun elsewhere) on thread
            // ranks; the way back from memory under mpirun.
            try inThreads(["load", hf, "--out", dir + "/sharded", "--mesh", mesh], ranks: ranks)
            for mode in [[], ["--gather"]] {
                let tag = mode.isEmpty ? "parallel" : "gathered"
                try inThreads(["save-hf", dir + "/sharded", dir + "/saved-\(tag)", "--max-shard-size", "30kB"] + mode, ranks: ranks)
                try ok(["load", hf, "--to-hf", dir + "/memory-\(tag)", "--mesh", mesh, "--max-shard-size", "30kB"] + mode, ranks: ranks)
                try assertSameFiles(dir + "/saved-\(tag)", dir + "/memory-\(tag)")
                try assertVerified(hf, dir + "/memory-\(tag)", strict: true)
            }
            XCTAssertEqual(try FS.list(dir), ["memory-gathered", "memory-parallel", "saved-gathered", "saved-parallel", "sharded"])
        }
    }

    func testToHFRefusesTheInputAndKeepsTheOutputRules() throws {
        let hf = try synthCLI(["--experts", "4"])
        let r = try CLI.run(["load", hf, "--to-hf", hf + "/inside"], ranks: 2)
        XCTAssertEqual(r.code, 2, r.stderr)
        XCTAssertTrue(r.errorLines.first?.contains("inside the input") ?? false, r.stderr)
        let both = try CLI.run(["load", hf, "--to-hf", hf + "x", "--out", hf + "y"], ranks: 2)
        XCTAssertEqual(both.code, 2)
        XCTAssertEqual(both.errorLines, ["nemoshard: error: give --out or --to-hf, not both"])
        let stray = try CLI.run(["load", hf, "--gather"], ranks: 2)
        XCTAssertEqual(stray.code, 2)
        XCTAssertFalse(FS.exists(hf + "x") || FS.exists(hf + "y") || FS.exists(hf + "/inside"))
    }

    func testToHFLibraryCallInOneProcess() throws {
        let hf = try synth(self, experts: 6)
        let dir = temporaryDirectory(self)
        var load = LoadJob.Options(source: hf)
        load.rules = .seed  // the source's bytes back (the nemo-0.7 rules' F32 parameters: RulesTests)
        let loaded = try LoadJob.run(load, world: SoloCollective())
        XCTAssertTrue(loaded.mesh.isPrimaryReplica(experts: loaded.manifest.nRoutedExperts))
        XCTAssertEqual(loaded.mesh.expertGroup.size, 1)
        var o = ToHFJob.Options(output: dir + "/back")
        o.threads = 2
        let report = try ToHFJob.run(loaded, o)
        XCTAssertEqual(report.notes.first?.1, .int(1))
        let source = try readHF(hf), back = try readHF(dir + "/back")
        XCTAssertEqual(Set(source.keys), Set(back.keys))
        for (k, v) in source { XCTAssertEqual(v.2, back[k]?.2, k) }
    }
}
