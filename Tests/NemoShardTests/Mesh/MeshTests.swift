import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// The expert-range formula and the mesh layout.
final class MeshTests: XCTestCase {
    func ranges(_ e: Int, _ w: Int) -> [[Int]] { (0..<w).map { let r = ExpertRange(rank: $0, of: w, experts: e); return [r.start, r.end] } }

    func testTenExpertsOverFour() { XCTAssertEqual(ranges(10, 4), [[0, 3], [3, 6], [6, 8], [8, 10]]) }

    func testOneTwentyEightOverEight() {
        XCTAssertEqual(ranges(128, 8), (0..<8).map { [$0 * 16, $0 * 16 + 16] })
    }

    func testMoreRanksThanExperts() {
        XCTAssertEqual(ranges(3, 5), [[0, 1], [1, 2], [2, 3], [3, 3], [3, 3]])
        XCTAssertTrue(ExpertRange(rank: 4, of: 5, experts: 3).isEmpty)
    }

    func testRangesTileAllExperts() {
        for e in [1, 7, 10, 64, 128] {
            for w in 1...12 {
                let r = ranges(e, w)
                XCTAssertEqual(r.first?.first, 0)
                XCTAssertEqual(r.last?.last, e)
                for i in 1..<r.count { XCTAssertEqual(r[i][0], r[i - 1][1]) }
                XCTAssertLessThanOrEqual((r.map { $0[1] - $0[0] }.max() ?? 0) - (r.map { $0[1] - $0[0] }.min() ?? 0), 1)
            }
        }
    }

    func testRowMajorCoordinatesAndReplicas() throws {
        let m = try MeshShape(parsing: "dp=2,ep=2")
        XCTAssertEqual((0..<4).map { m.coordinates(of: $0) }, [[0, 0], [0, 1], [1, 0], [1, 1]])
        XCTAssertEqual((0..<4).map { m.expertRange(of: $0, experts: 10) },
                       [ExpertRange(start: 0, end: 5), ExpertRange(start: 5, end: 10), ExpertRange(start: 0, end: 5), ExpertRange(start: 5, end: 10)])
        let noEP = try MeshShape(parsing: "dp=3")
        XCTAssertEqual(noEP.expertRange(of: 2, experts: 10), ExpertRange(start: 7, end: 10), "no ep: whole mesh partitions")
    }

    func testMeshErrors() {
        XCTAssertThrowsError(try MeshShape(parsing: "dp=2,xx=2")) { XCTAssertTrue("\($0)".contains("unknown mesh dimension")) }
        XCTAssertThrowsError(try MeshShape(parsing: "ep=0"))
        XCTAssertThrowsError(try MeshShape(parsing: "ep"))
        XCTAssertThrowsError(try MeshShape(parsing: "ep=2,ep=2"))
    }

    func testDeviceMeshOverWorldOfOne() throws {
        let mesh = try DeviceMesh(shape: [1, 1], names: ["dp", "ep"], world: SoloCollective())
        XCTAssertEqual(mesh["ep"]?.size, 1)
        XCTAssertEqual(mesh.expertRange(experts: 8), ExpertRange(start: 0, end: 8))
        XCTAssertThrowsError(try DeviceMesh(shape: [2], names: ["ep"], world: SoloCollective())) {
            XCTAssertTrue("\($0)".contains("has 2 ranks but the job has 1"))
        }
    }

    func testDeviceMeshAnswersWhatJobsAsk() throws {
        let mesh = try DeviceMesh(shape: [1], names: ["ep"], world: SoloCollective())
        XCTAssertTrue(mesh.isPrimaryReplica(experts: 8))
        XCTAssertEqual(mesh.expertGroup.size, 1)
        XCTAssertEqual(mesh.replicaGroup.size, 1)
        XCTAssertEqual(mesh.expertParallelRank, 0)
        let resolved = try DeviceMesh.resolve(nil, world: SoloCollective())
        XCTAssertEqual(resolved.shape, try MeshShape.expertParallel(1))
        XCTAssertThrowsError(try DeviceMesh.resolve(try MeshShape(parsing: "dp=2,ep=2"), world: SoloCollective()))
    }
}
