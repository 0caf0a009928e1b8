import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardModel
@testable import NemoShard

/// `StagedOutput` on several ranks (threads of this process, `ThreadCollective`): every rank's
/// file is committed into the staging directory only after every rank wrote its own, the staging
/// owner finishes, and the output appears all at once; a failure on any rank, at any step,
/// commits nothing and leaves nothing.
final class StagedOutputTests: XCTestCase {
    /// Rank `rank`'s file: one tensor of `rank + 1` bytes, each `rank + 1`.
    static func writeRankFile(_ staged: StagedOutput, rank: Int) throws -> SafetensorsWriter {
        let w = try SafetensorsWriter(path: staged.stagingPath("rank-\(rank).safetensors"),
                                      specs: [TensorSpec(name: "t", dtype: .u8, shape: [rank + 1])])
        try [UInt8](repeating: UInt8(rank + 1), count: rank + 1).withUnsafeBytes { try w.write(tensor: 0, $0) }
        return w
    }

    /// Runs a job of `ranks` ranks writing into `path`: rank files, then `finish` on the staging
    /// owner (an index naming the world size). `fail(rank, step)` says where to throw.
    static func job(_ path: String, ranks: Int, force: Bool = false, writers: StagedOutput.Writers = .everyRank,
                    fail: @escaping @Sendable (Int, String) -> Bool = { _, _ in false }) -> [Result<[Bool], Error>] {
        ThreadWorld.run(ranks: ranks) { world -> [Bool] in
            let staged = try StagedOutput.prepare(path, force: force, inputs: [], world: world, writers: writers)
            try staged.run(write: {
                if fail(world.rank, "write") { throw IOError("write", path: staged.stagingPath("rank-\(world.rank)"), code: ENOSPC) }
                return ((), [try writeRankFile(staged, rank: world.rank)])
            }, finish: {
                if fail(world.rank, "finish") { throw CheckpointError(path: path, "finish failed") }
                try writeFileAtomically(staged.stagingPath("index.json"), Array("{\"ranks\": \(world.size)}".utf8))
            })
            return [staged.canWrite, staged.directory != nil]
        }
    }

    func entries(_ dir: String) throws -> [String] { try FS.list(dir).sorted() }

    func testEveryRanksFileAppearsAtOnceWithTheOwnersIndex() throws {
        let parent = temporaryDirectory(self)
        let results = try Self.job(parent + "/out", ranks: 3).map { try $0.get() }
        XCTAssertEqual(results, [[true, true], [true, false], [true, false]], "rank 0 owns the staging directory; every rank writes")
        XCTAssertEqual(try entries(parent), ["out"], "no staging directory, lock or temporary left")
        XCTAssertEqual(try entries(parent + "/out"),
                       [OutputProvenance.markerName, "index.json", "rank-0.safetensors", "rank-1.safetensors", "rank-2.safetensors"],
                       "the node token is gone; nothing but the marker and what the job wrote")
        for r in 0..<3 {
            XCTAssertEqual(try readAll(parent + "/out/rank-\(r).safetensors")["t"]?.2, [UInt8](repeating: UInt8(r + 1), count: r + 1))
        }
        XCTAssertEqual(try readWholeFile(parent + "/out/index.json"), Array("{\"ranks\": 3}".utf8))
    }

    func testAFailureOnAnyRankAtAnyStepCommitsNothingAndKeepsTheOldOutput() throws {
        let parent = temporaryDirectory(self)
        XCTAssertNoThrow(try Self.job(parent + "/out", ranks: 2).map { try $0.get() })
        let before = try entries(parent + "/out").map { "\($0) \(digest(try readWholeFile(parent + "/out/" + $0)))" }
        for (rank, step, fragment) in [(2, "write", "No space left on device"), (0, "write", "No space left on device"),
                                       (0, "finish", "finish failed")] {
            let results = Self.job(parent + "/out", ranks: 3, force: true) { r, s in r == rank && s == step }
            for (r, result) in results.enumerated() {
                XCTAssertThrowsError(try result.get(), "\(step) on rank \(rank): rank \(r)") { error in
                    XCTAssertEqual((error as? JobFailure)?.rank, rank, "every rank names the failing one: \(error)")
                    XCTAssertTrue("\(error)".contains(fragment), "\(error)")
                }
            }
            XCTAssertEqual(try entries(parent), ["out"], "\(step) on rank \(rank): no staging, lock or temporary left")
            XCTAssertEqual(try entries(parent + "/out").map { "\($0) \(digest(try readWholeFile(parent + "/out/" + $0)))" }, before,
                           "\(step) on rank \(rank): the old output is intact")
        }
    }

    func testAGatheredOutputLetsEveryRankThatSeesTheStagingWrite() throws {
        let parent = temporaryDirectory(self)
        let results = try Self.job(parent + "/out", ranks: 3, writers: .gathered).map { try $0.get() }
        XCTAssertEqual(results.map { $0[0] }, [true, true, true], "one machine: every rank sees rank 0's staging directory")
        XCTAssertEqual(try entries(parent + "/out").filter { $0.hasPrefix(".nemoshard-probe") }, [], "the write probes are removed")
        XCTAssertEqual(try entries(parent + "/out").count, 5)
    }

    func testASecondJobIsRefusedOnEveryRankWhileTheFirstHoldsTheOutput() throws {
        let parent = temporaryDirectory(self)
        final class Box: @unchecked Sendable { var second: [Result<[Bool], Error>] = [] }
        let box = Box()
        let first = ThreadWorld.run(ranks: 2) { world -> Bool in
            let staged = try StagedOutput.prepare(parent + "/out", force: false, inputs: [], world: world)
            try staged.run(write: {
                // While this job holds the lock (rank 0 runs the second job; rank 1 waits in the agreement).
                if world.rank == 0 { box.second = Self.job(parent + "/out", ranks: 2) }
                return ((), [try Self.writeRankFile(staged, rank: world.rank)])
            }, finish: {})
            return true
        }
        XCTAssertEqual(try first.map { try $0.get() }, [true, true])
        XCTAssertEqual(box.second.count, 2)
        for result in box.second {
            XCTAssertThrowsError(try result.get()) {
                XCTAssertTrue("\($0)".contains("output \(parent)/out is being written by another nemoshard job (pid \(getpid()))"), "\($0)")
            }
        }
        XCTAssertEqual(try entries(parent + "/out"), [OutputProvenance.markerName, "rank-0.safetensors", "rank-1.safetensors"])
        XCTAssertEqual(try entries(parent), ["out"])
    }

    func testABadOutputNameIsOneUsageErrorOnEveryRankBeforeAnythingIsCreated() throws {
        let parent = temporaryDirectory(self)
        for name in ["", "/", parent + "/.."] {
            let results = Self.job(name, ranks: 2)
            for result in results {
                XCTAssertThrowsError(try result.get()) { XCTAssertTrue("\($0)".contains("the output must name a directory to create"), "\($0)") }
            }
        }
        XCTAssertEqual(try entries(parent), [])
    }
}
