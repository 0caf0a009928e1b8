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

    /// Equal byte sums are not coverage: a plan writing one range twice and another never has the
    /// sum of a correct plan. Each output's intervals must be disjoint and tile it.
    func testCoverageIsCheckedByIntervalsNotBySums() throws {
        let outputs = [spec("a", 8), spec("b", 6)]
        func check(_ pieces: [Piece]) -> String? {
            do {
                try TransferPlan(files: ["f"], outputs: outputs, pieces: pieces).validateCoverage()
                return nil
            } catch {
                XCTAssertTrue(error is InternalError, "\(error)")
                return (error as? InternalError)?.message ?? "\(error)"
            }
        }
        // Sums right (8 and 6), but a's [2, 4) twice and [6, 8) never; b whole.
        XCTAssertEqual(check([copy(0, 4, to: 0), copy(4, 4, to: 0, at: 2), copy(8, 6, to: 1)]),
                       "a: the plan produces bytes [2, 4) more than once")
        // The same piece twice, the rest missing.
        XCTAssertEqual(check([copy(0, 4, to: 0), copy(0, 4, to: 0), copy(8, 6, to: 1)]), "a: the plan produces bytes [0, 4) more than once")
        // A piece inside another.
        XCTAssertEqual(check([copy(0, 8, to: 0), copy(8, 3, to: 1), copy(0, 3, to: 1, at: 3), copy(20, 1, to: 1, at: 4)]),
                       "b: the plan produces bytes [4, 5) more than once")
        // Gaps alone name the first missing range.
        XCTAssertEqual(check([copy(0, 2, to: 0), copy(4, 4, to: 0, at: 4), copy(8, 6, to: 1)]),
                       "a: the plan covers 6 of 8 bytes; bytes [2, 4) are produced by no piece")
        XCTAssertEqual(check([copy(0, 8, to: 0), copy(8, 5, to: 1)]), "b: the plan covers 5 of 6 bytes; bytes [5, 6) are produced by no piece")
        XCTAssertEqual(check([copy(0, 8, to: 0)]), "b: the plan covers 0 of 6 bytes; bytes [0, 6) are produced by no piece")
        // Exact tilings in any order, empty pieces anywhere, a transpose: fine.
        XCTAssertNil(check([copy(8, 2, to: 1, at: 4), copy(4, 4, to: 0, at: 4), copy(10, 4, to: 1), copy(0, 4, to: 0), copy(3, 0, to: 1, at: 6)]))
        let t = TensorSpec(name: "t", dtype: .bf16, shape: [3, 2])
        XCTAssertNoThrow(try TransferPlan(files: ["f"], outputs: [t], pieces: [
            Piece(source: SourceRange(file: 0, offset: 0, count: 6), transform: .transpose(rows: 1, cols: 3, from: .bf16, to: .bf16), output: 0, destOffset: 6),
            Piece(source: SourceRange(file: 0, offset: 6, count: 6), transform: .transpose(rows: 3, cols: 1, from: .bf16, to: .bf16), output: 0, destOffset: 0),
        ]).validateCoverage())
        // Outside the tensor, or naming no output.
        XCTAssertEqual(check([copy(0, 8, to: 0), copy(8, 6, to: 1, at: 1)]), "b: a piece lies outside its tensor")
        XCTAssertEqual(check([copy(0, 8, to: 0), copy(8, 6, to: 1), copy(0, 1, to: 2)]), "a piece names output 2 of a plan with 2")
        XCTAssertEqual(check([copy(0, 8, to: 0), copy(8, 6, to: 1), copy(0, 1, to: 0, at: -1)]), "a: a piece lies outside its tensor")
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
