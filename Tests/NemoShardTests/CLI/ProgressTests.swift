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
        let r = try ok(["load", hf, "--progress", "--json"], ranks: 4)
        let lines = progressLines(r.stderr)
        XCTAssertGreaterThanOrEqual(lines.count, 2, r.stderr)
        XCTAssertTrue(r.stderr.contains("\r"), "one updating line")
        XCTAssertTrue(lines.allSatisfy { $0.contains("(est. over 4 ranks)") && $0.contains("GB/s") }, r.stderr)
        XCTAssertTrue(lines.last?.hasPrefix("load: 100% of ") ?? false, r.stderr)
        XCTAssertEqual(lines.filter { $0.contains("done in") }.count, 1)
        XCTAssertEqual(r.stderr.components(separatedBy: "\n").filter { $0.contains("load: 100%") }.count, 1, "printed once, by rank 0")
        // The total is every rank's bytes, not rank 0's: the line's total is what the report says
        // all four ranks read, which is not rank 0's share.
        let report = try XCTUnwrap(r.json, r.stdout)
        let total = Int(try XCTUnwrap(report["bytes_read"]?.intValue, r.stdout))
        let perRank = try XCTUnwrap(report["ranks"]?.arrayValue, r.stdout).compactMap { $0["bytes_read"]?.intValue }.map { Int($0) }
        XCTAssertEqual(perRank.count, 4)
        XCTAssertEqual(perRank.reduce(0, +), total)
        XCTAssertNotEqual(formatBytes(total), formatBytes(perRank[0]), "the ranks' shares must tell the totals apart")
        XCTAssertEqual(lines.filter { $0.hasPrefix("load: 100% of \(formatBytes(total)) (") }.count, 1,
                       "100% of \(formatBytes(total)), every rank's bytes (rank 0 read \(formatBytes(perRank[0]))):\n\(lines.joined(separator: "\n"))")
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
