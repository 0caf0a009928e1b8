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

/// Rank 0's progress line: asked for under mpirun, by itself on a terminal, never otherwise.
final class ProgressTests: XCTestCase {
    func progressLines(_ stderr: String) -> [String] {
        stderr.split(whereSeparator: { $0 == "\r" || $0 == "\n" }).map(String.init).filter { $0.hasPrefix("load: ") }
    }

    func testProgressUnderMPIRunCoversEveryRank() throws {
        let hf = try synthCLI(["--experts", "64"])
        let r = try ok(["load", hf, "--progress"], ranks: 4)
        let lines = progressLines(r.stderr)
        XCTAssertGreaterThanOrEqual(lines.count, 2, r.stderr)
        XCTAssertTrue(r.stderr.contains("\r"), "one updating line")
        XCTAssertTrue(lines.allSatisfy { $0.contains("(est. over 4 ranks)") && $0.contains("GB/s") }, r.stderr)
        XCTAssertTrue(lines.last?.hasPrefix("load: 100% of ") ?? false, r.stderr)
        XCTAssertEqual(lines.filter { $0.contains("done in") }.count, 1)
        XCTAssertEqual(r.stderr.components(separatedBy: "\n").filter { $0.contains("load: 100%") }.count, 1, "printed once, by rank 0")
        // The total is every rank's bytes, not rank 0's.
        let total = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.contains("read ") && $0.contains(" in all") })
        XCTAssertFalse(total.isEmpty)
        XCTAssertTrue(progressLines(try ok(["load", hf], ranks: 4).stderr).isEmpty, "not asked for, not a terminal: silent")
    }

    func testProgressAppearsByItselfOnATerminal() throws {
        let hf = try synthCLI(["--experts", "64"])
        // script(1) gives the command a pseudo-terminal.
        let r = try shell(["/usr/bin/script", "-qec", "\(CLI.binary) load \(hf)", "/dev/null"])
        XCTAssertEqual(r.code, 0, r.err)
        XCTAssertTrue(progressLines(r.out).last?.hasPrefix("load: 100% of ") ?? false, r.out)
    }
}
