import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// Transfer plans: coverage checks, sub-plans, and the Hugging Face shard split.
final class PlanTests: XCTestCase {
    func spec(_ name: String, _ bytes: Int) -> TensorSpec { TensorSpec(name: name, dtype: .u8, shape: [bytes]) }

    func copy(_ offset: Int, _ count: Int, to output: Int, at dest: Int = 0) -> Piece {
        Piece(source: SourceRange(file: 0, offset: offset, count: count), transform: .copy, output: output, destOffset: dest)
    }

    func testCoverageMustBeExact() throws {
        let outputs = [spec("a", 8), spec("b", 4)]
        XCTAssertNoThrow(try TransferPlan(files: ["f"], outputs: outputs, pieces: [copy(0, 4, to: 0), copy(4, 4, to: 0, at: 4), copy(8, 4, to: 1)]).validateCoverage())
        XCTAssertThrowsError(try TransferPlan(files: ["f"], outputs: outputs, pieces: [copy(0, 4, to: 0), copy(8, 4, to: 1)]).validateCoverage()) {
            XCTAssertTrue($0 is InternalError && "\($0)".contains("covers 4 of 8"), "\($0)")
        }
        XCTAssertThrowsError(try TransferPlan(files: ["f"], outputs: outputs, pieces: [copy(0, 8, to: 0), copy(8, 4, to: 1, at: 2)]).validateCoverage()) {
            XCTAssertTrue("\($0)".contains("outside its tensor"), "\($0)")
        }
    }

    func testKeepingRenumbersOutputsAndDropsTheirPieces() {
        let plan = TransferPlan(files: ["f"], outputs: [spec("a", 4), spec("b", 4), spec("c", 4)],
                                pieces: [copy(0, 4, to: 0), copy(4, 4, to: 1), copy(8, 4, to: 2)])
        let kept = plan.keeping(outputs: [0, 2])
        XCTAssertEqual(kept.outputs.map(\.name), ["a", "c"])
        XCTAssertEqual(kept.pieces.map(\.output), [0, 1])
        XCTAssertEqual(kept.pieces.map(\.source.offset), [0, 8])
        XCTAssertEqual(plan.keeping { $0.name == "b" }.pieces.map(\.source.offset), [4])
    }

    func testShardGroupsFillUntilTheNextTensorWouldPassTheLimit() {
        let specs = [spec("a", 40), spec("b", 40), spec("c", 30), spec("d", 200), spec("e", 10)]
        XCTAssertEqual(ExportPlanner.shardGroups(specs, maxBytes: 100), [[0, 1], [2], [3], [4]])
        XCTAssertEqual(ExportPlanner.shardGroups(specs, maxBytes: 1_000), [[0, 1, 2, 3, 4]])
        XCTAssertEqual(ExportPlanner.shardGroups([], maxBytes: 100), [])
    }
}
