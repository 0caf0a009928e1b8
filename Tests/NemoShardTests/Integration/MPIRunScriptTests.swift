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

/// `scripts/mpirun` runs OpenMPI's mpirun with `--quiet`: a failing job prints nemoshard's one
/// error line and none of mpirun's boilerplate about aborted jobs, and keeps the exit code.
final class MPIRunScriptTests: XCTestCase {
    func testAFailingJobPrintsOnlyOurErrorLine() throws {
        let dir = temporaryDirectory(self)
        for ranks in [2, 4] {
            // OpenMPI's defaults, as a user's scripts/mpirun runs (not the tests' fast failure).
            let r = try CLI.run(["load", dir + "/missing", "--out", dir + "/out"], ranks: ranks, env: CLI.userMPIDefaults, timeout: 60)
            XCTAssertEqual(r.code, 1, r.stderr)
            let lines = r.stderr.split(separator: "\n").map(String.init).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            XCTAssertEqual(lines.count, 1, "\(ranks) ranks:\n\(r.stderr)")
            XCTAssertEqual(r.errorLines, ["nemoshard: error: \(dir)/missing: does not exist"], r.stderr)
            XCTAssertFalse(r.stderr.contains("mpirun"), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out"))
        }
        let usage = try CLI.run(["load", "--bogus"], ranks: 2, env: CLI.userMPIDefaults, timeout: 60)
        XCTAssertEqual(usage.code, 2, "usage errors keep exit code 2 through mpirun: \(usage.stderr)")
        XCTAssertFalse(usage.stderr.contains("Primary job"), usage.stderr)
    }
}
