import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShard

/// A caller's `DeviceMesh` is the mesh a job runs on (`run(_:mesh:)`), not one the job builds
/// beside it; `run(_:world:)` still lays `Options.mesh` (or one `ep` dimension) over the world,
/// as the CLI's `--ep` / `--mesh` do. Four ranks as threads (`ThreadWorld`), 8 experts.
final class JobMeshTests: XCTestCase {
    func testLoadRunsOnTheCallersMeshAndKeepsIt() throws {
        let hf = try synth(self, experts: 8)
        let got = try ThreadWorld.values(ranks: 4) { world -> String in
            let mesh = try DeviceMesh(shape: [2, 2], names: ["dp", "ep"], world: world)
            let loaded = try LoadJob.run(LoadJob.Options(source: hf), mesh: mesh)
            return "\(loaded.mesh === mesh) \(loaded.manifest.mesh) \(loaded.experts)"
        }
        // dp=2 x ep=2: ranks 2 and 3 hold what ranks 0 and 1 hold.
        XCTAssertEqual(got, ["true dp=2,ep=2 [0,4)", "true dp=2,ep=2 [4,8)", "true dp=2,ep=2 [0,4)", "true dp=2,ep=2 [4,8)"])
    }

    func testLoadOverAWorldStillBuildsTheOptionsMesh() throws {
        let hf = try synth(self, experts: 8)
        let got = try ThreadWorld.values(ranks: 4) { world -> String in
            "\(try LoadJob.run(LoadJob.Options(source: hf), world: world).experts)"
        }
        XCTAssertEqual(got, ["[0,2)", "[2,4)", "[4,6)", "[6,8)"])
    }

    func testAnOptionsMeshThatIsNotTheGivenMeshIsOneUsageErrorOnEveryRank() throws {
        let hf = try synth(self, experts: 8)
        let results = ThreadWorld.run(ranks: 4) { world -> Int in
            let mesh = try DeviceMesh(shape: [2, 2], names: ["dp", "ep"], world: world)
            var o = LoadJob.Options(source: hf)
            o.mesh = try MeshShape.expertParallel(4)
            return try LoadJob.run(o, mesh: mesh).experts.count
        }
        for (rank, result) in results.enumerated() {
            XCTAssertThrowsError(try result.get(), "rank \(rank)") { error in
                guard let failure = error as? JobFailure, case let .usage(e) = failure.error else {
                    return XCTFail("rank \(rank): not a usage error: \(error)")
                }
                XCTAssertEqual(e.message, "the options ask for mesh ep=4 but the job was given a DeviceMesh of dp=2,ep=2")
            }
        }
    }

    func testReshardWritesTheCallersMeshIntoTheNewCheckpoint() throws {
        let hf = try synth(self, experts: 8)
        let one = temporaryDirectory(self) + "/one"
        var load = LoadJob.Options(source: hf)
        load.output = one
        _ = try LoadJob.run(load, world: SoloCollective())
        let out = temporaryDirectory(self) + "/two-by-two"
        let manifests = try ThreadWorld.values(ranks: 4) { world -> String in
            let mesh = try DeviceMesh(shape: [2, 2], names: ["dp", "ep"], world: world)
            let (manifest, _) = try ReshardJob.run(ReshardJob.Options(source: one, output: out), mesh: mesh)
            return "\(manifest.mesh) \(manifest.ranks.map(\.experts))"
        }
        XCTAssertEqual(Set(manifests), ["dp=2,ep=2 [[0,4), [4,8), [0,4), [4,8)]"])
        let written = try ShardedCheckpoint.open(out).manifest
        XCTAssertEqual(written.mesh.description, "dp=2,ep=2")
        XCTAssertEqual(written.ranks.map(\.experts.description), ["[0,4)", "[4,8)", "[0,4)", "[4,8)"])
    }
}
