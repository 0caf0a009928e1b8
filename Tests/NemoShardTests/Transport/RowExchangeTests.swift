import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard

/// `RowExchange` on ranks that are threads of this process: a reshard whose ranks each see only
/// some old rank files (as on node-local disks) gives every rank exactly the bytes it would read
/// with every file in sight, each old byte read once, by its file's reader; a rank that cannot
/// read, or cannot send, makes every rank fail, naming the cause, and none hangs.
final class RowExchangeTests: XCTestCase {
    /// A per-rank checkpoint of 4 ranks (8 experts), written by a 4-rank load on threads.
    func fourRankCheckpoint() throws -> String {
        let hf = try synth(self, experts: 8)
        let out = temporaryDirectory(self) + "/four"
        _ = try ThreadWorld.values(ranks: 4) { world in
            var o = LoadJob.Options(source: hf)
            o.output = out
            return try LoadJob.run(o, world: world).experts
        }
        XCTAssertEqual(try Manifest.load(directory: out).worldSize, 4)
        return out
    }

    /// What each rank of a reshard to `ranks` ranks gets with `visible[rank][file]`.
    struct Outcome {
        let bytes: [[UInt8]]
        let reference: [[UInt8]]
        let stats: ExecutionStats
        let plannedRead: Int
        let remote: [Int]
        let readers: [Int]
    }

    /// Opens `dir` on `ranks` thread ranks, restricts what each sees to `visible` (the readers
    /// as `openShared` picks them), runs the exchange and, for reference, the same plan with every
    /// file in sight. `damage` runs on rank 0 once everything is planned, between two barriers.
    /// `staleFingerprint: (rank, file)` gives that rank a wrong record of that file for sending
    /// (the plans keep the true one): as if the file changed after its reader planned.
    func reshard(_ dir: String, ranks: Int, visible: [[Bool]], staleFingerprint: (rank: Int, file: Int)? = nil,
                 damage: @escaping @Sendable () -> Void = {}) -> [Result<Outcome, Error>] {
        ThreadWorld.run(ranks: ranks) { world -> Outcome in
            var source = try ShardedCheckpoint.openShared(dir, world: world)
            let n = source.manifest.worldSize
            source.visible = visible
            source.readers = (0..<n).map { f in f < ranks && visible[f][f] ? f : (0..<ranks).first { visible[$0][f] }! }
            let shape = try MeshShape.expertParallel(ranks)
            let old = source.manifest
            let manifest = Manifest(worldSize: ranks, mesh: shape, nRoutedExperts: old.nRoutedExperts,
                                    ranks: Manifest.rankEntries(worldSize: ranks, mesh: shape, experts: old.nRoutedExperts),
                                    tensors: old.tensors, sourceDirectory: old.sourceDirectory, config: old.config,
                                    hfPrefix: old.hfPrefix, hfKeys: old.hfKeys, extraFiles: old.extraFiles)
            let plans = try (0..<ranks).map { r in
                try ReshardPlanner(source: source).plan(range: shape.expertRange(of: r, experts: old.nRoutedExperts))
                    .keeping { manifest.fileTensors(rank: r).contains($0.name) }
            }
            let me = world.rank
            let reference = MemorySink(outputs: plans[me].outputs)
            _ = try PlanExecutor().run(plans[me], into: reference)
            try world.barrier()
            if me == 0 { damage() }
            try world.barrier()
            if let stale = staleFingerprint, stale.rank == me {
                var fingerprints = source.fingerprints
                fingerprints[stale.file] = fingerprints[(stale.file + 1) % n]
                var changed = ShardedCheckpoint(directory: source.directory, manifest: source.manifest, locations: source.locations,
                                                fingerprints: fingerprints)
                changed.visible = source.visible
                changed.readers = source.readers
                source = changed
            }
            let exchange = RowExchange(source: source, world: world, plans: plans)
            let sink = MemorySink(outputs: plans[me].outputs)
            let stats = try exchange.run(executor: PlanExecutor(), into: sink)
            return Outcome(bytes: sink.tensors.map(\.byteArray), reference: reference.tensors.map(\.byteArray), stats: stats,
                           plannedRead: plans[me].bytesToRead, remote: (0..<ranks).map { exchange.remotePieces(of: $0).count },
                           readers: source.readers)
        }
    }

    func testRanksThatSeeOnlySomeFilesGetTheirRowsFromTheFilesReaders() throws {
        let dir = try fourRankCheckpoint()
        // Rank 0 sees old files 0 and 2, rank 1 files 1 and 3: each needs rows of a file only the other sees.
        let visible = [[true, false, true, false], [false, true, false, true]]
        let outcomes = try reshard(dir, ranks: 2, visible: visible).map { try $0.get() }
        XCTAssertEqual(outcomes[0].readers, [0, 1, 0, 1])
        for (r, o) in outcomes.enumerated() {
            XCTAssertEqual(o.bytes, o.reference, "rank \(r): the same bytes as with every file in sight")
            XCTAssertFalse(o.bytes.isEmpty)
            XCTAssertGreaterThan(o.remote[r], 0, "rank \(r) needs rows it cannot read itself")
        }
        // Every byte the two plans read is read once in all, by the rank that sees its file.
        XCTAssertEqual(outcomes.map(\.stats.bytesRead).reduce(0, +), outcomes.map(\.plannedRead).reduce(0, +))
        XCTAssertNotEqual(outcomes[0].stats.bytesRead, outcomes[0].plannedRead, "rank 0 also reads for rank 1")
    }

    func testOnASharedFilesystemNothingIsExchanged() throws {
        let dir = try fourRankCheckpoint()
        let all = [[Bool]](repeating: [true, true, true, true], count: 3)
        let outcomes = try reshard(dir, ranks: 3, visible: all).map { try $0.get() }
        for (r, o) in outcomes.enumerated() {
            XCTAssertEqual(o.remote, [0, 0, 0])
            XCTAssertEqual(o.bytes, o.reference, "rank \(r)")
            XCTAssertEqual(o.stats.bytesRead, o.plannedRead, "rank \(r) reads its own plan, nothing more")
        }
    }

    func testAReaderThatCannotSendStopsItsReceiverWithTheCauseAndNobodyHangs() throws {
        let dir = try fourRankCheckpoint()
        let visible = [[true, false, true, false], [false, true, false, true]]
        let manifest = try Manifest.load(directory: dir)
        // Rank 1 reads old file 1 for rank 0 (rank 0 cannot see it); by then it no longer matches
        // what rank 1 planned from. Its own rows of file 1 (read first, against the plans' record) are fine.
        let start = Date()
        let results = reshard(dir, ranks: 2, visible: visible, staleFingerprint: (rank: 1, file: 1))
        XCTAssertLessThan(Date().timeIntervalSince(start), 30)
        XCTAssertThrowsError(try results[1].get()) {
            XCTAssertTrue($0 is InputChangedError && "\($0)".contains(manifest.ranks[1].file), "the reader's own error names the file: \($0)")
        }
        XCTAssertThrowsError(try results[0].get()) {
            XCTAssertEqual("\($0)", "stopped: rank 1 could not send rows of \(manifest.ranks[1].file)")
        }
    }

    func testALocalReadThatFailsStopsEveryRankBeforeAnyExchange() throws {
        let dir = try fourRankCheckpoint()
        let visible = [[true, false, true, false], [false, true, false, true]]
        let manifest = try Manifest.load(directory: dir)
        // Rank 1 reads its own rows of file 3 first: gone, it fails; rank 0 must not wait for it.
        let file3 = dir + "/" + manifest.ranks[3].file
        let results = reshard(dir, ranks: 2, visible: visible) { _ = truncate(file3, 0) }
        XCTAssertThrowsError(try results[1].get()) { XCTAssertTrue("\($0)".contains(manifest.ranks[3].file), "\($0)") }
        XCTAssertThrowsError(try results[0].get()) {
            XCTAssertTrue($0 is PeerFailure || "\($0)".contains(manifest.ranks[3].file), "\($0)")
        }
    }
}
