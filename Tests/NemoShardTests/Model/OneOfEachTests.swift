import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// One implementation of each shared concept: the greedy balancer, cutting a piece, the
/// primary-replica rule, and the `Codable` values ranks send each other. Each is checked against
/// the copies it replaced (kept here as references), so outputs stay byte-identical.
final class OneOfEachTests: XCTestCase {
    /// A small deterministic generator (tests must not depend on the system's random source).
    struct Rng {
        var state: UInt64
        mutating func next(_ n: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(max(n, 1)))
        }
    }

    // MARK: balancer

    /// The manifest's former holder loop: in order, each to the least loaded bin (ties: lowest).
    func referenceInOrder(_ w: [Int], bins: Int) -> [Int] {
        var load = [Int](repeating: 0, count: bins)
        return w.map { x in
            let k = load.indices.min { (load[$0], $0) < (load[$1], $1) }!
            load[k] += x
            return k
        }
    }

    /// Consolidate's former file loop: largest first (ties: lower index), each to the least loaded rank.
    func referenceLargestFirst(_ w: [Int], bins: Int) -> [Int] {
        let order = w.indices.sorted { (w[$0], -$0) > (w[$1], -$1) }
        var load = [Int](repeating: 0, count: max(bins, 1))
        var out = [Int](repeating: 0, count: w.count)
        for i in order {
            let r = load.indices.min { (load[$0], $0) < (load[$1], $1) } ?? 0
            out[i] = r
            load[r] += w[i]
        }
        return out
    }

    func testBalancerMatchesBothFormerLoops() {
        var rng = Rng(state: 7)
        for _ in 0..<300 {
            let n = rng.next(12), bins = 1 + rng.next(5)
            let w = (0..<n).map { _ in rng.next(4) == 0 ? 0 : rng.next(100) }
            XCTAssertEqual(Balancer.assign(weights: w, bins: bins), referenceInOrder(w, bins: bins), "\(w) over \(bins)")
            XCTAssertEqual(Balancer.assign(weights: w, bins: bins, largestFirst: true), referenceLargestFirst(w, bins: bins),
                           "\(w) over \(bins), largest first")
        }
        XCTAssertEqual(Balancer.assign(weights: [5, 5, 5], bins: 0), [0, 0, 0], "no bins counts as one")
        XCTAssertEqual(Balancer.assign(weights: [1, 9, 1, 1], bins: 2, largestFirst: true), [1, 0, 1, 1])
    }

    // MARK: piece.split

    func copy(_ offset: Int, _ count: Int, dest: Int) -> Piece {
        Piece(source: SourceRange(file: 3, offset: offset, count: count), transform: .copy, output: 2, destOffset: dest)
    }

    /// ImageWindows' former cut: at file positions where (position - header) is a multiple of `unit`.
    func referenceWindowCut(_ p: Piece, start: Int, header: Int, unit: Int) -> [Piece] {
        var out: [Piece] = []
        var done = 0
        while done < p.source.count {
            let at = start + done
            let n = min(p.source.count - done, unit - (at - header) % unit)
            out.append(copy(p.source.offset + done, n, dest: p.destOffset + done))
            done += n
        }
        return out
    }

    func testSplitCutsCopiesAtMaxOrAtWindowBoundaries() {
        let p = copy(100, 10_000, dest: 64)
        XCTAssertEqual(p.split(max: 4096).map(\.source.count), [4096, 4096, 1808])
        XCTAssertEqual(p.split(max: 4096).map(\.destOffset), [64, 64 + 4096, 64 + 8192])
        XCTAssertEqual(p.split(max: 4096).map(\.source.offset), [100, 4196, 8292])
        XCTAssertEqual(p.split(max: 20_000), [p])
        XCTAssertEqual(copy(0, 0, dest: 0).split(max: 16), [], "an empty copy yields nothing")
        let t = Piece(source: SourceRange(file: 0, offset: 0, count: 1 << 20), transform: .transpose(rows: 512, cols: 1024, from: .bf16, to: .bf16),
                      output: 0, destOffset: 0)
        XCTAssertEqual(t.split(max: 16), [t], "a transpose is never cut")
        var rng = Rng(state: 11)
        for _ in 0..<500 {
            let header = 8 + rng.next(200), unit = 1 + rng.next(64)
            let start = header + rng.next(300)
            let q = copy(rng.next(1000), rng.next(400), dest: rng.next(50))
            XCTAssertEqual(q.split(max: unit, phase: start - header), referenceWindowCut(q, start: start, header: header, unit: unit))
        }
    }

    func testExecutorKeepsAnEmptyCopyAsOnePiece() {
        let spec = TensorSpec(name: "e", dtype: .u8, shape: [0])
        let plan = TransferPlan(files: ["a"], outputs: [spec], pieces: [copy(0, 0, dest: 0)].map {
            Piece(source: $0.source, transform: .copy, output: 0, destOffset: 0)
        })
        XCTAssertEqual(PlanExecutor(chunkBytes: 4096).batches(plan).flatMap(\.pieces).count, 1)
    }

    // MARK: primary replicas

    func testPrimaryReplicaRuleIsOneRule() throws {
        for (text, experts) in [("ep=4", 8), ("dp=2,ep=2", 6), ("ep=2,dp=3", 4), ("dp=2,ep=4", 2), ("ep=4", 0), ("dp=4", 8)] {
            let shape = try MeshShape(parsing: text)
            let ranges = (0..<shape.worldSize).map { shape.expertRange(of: $0, experts: experts) }
            let primaries = MeshShape.primaryReplicas(of: ranges)
            XCTAssertEqual((0..<shape.worldSize).filter { shape.isPrimaryReplica($0, experts: experts) }, primaries, text)
            let entries = Manifest.rankEntries(worldSize: shape.worldSize, mesh: shape, experts: experts)
            XCTAssertEqual(Manifest.ownerRanks(entries), primaries, text)
            // Where a rank holds experts, the rule is the former communicator rule: the lowest
            // rank with its `ep` coordinate (every other coordinate 0).
            for r in 0..<shape.worldSize where !ranges[r].isEmpty {
                let ep = shape.expertParallelPosition(of: r).rank
                let lowest = (0..<shape.worldSize).first { shape.expertParallelPosition(of: $0).rank == ep }
                XCTAssertEqual(shape.isPrimaryReplica(r, experts: experts), lowest == r, "\(text) rank \(r)")
            }
        }
        let solo = try DeviceMesh(shape: [1], names: ["ep"], world: SoloCollective())
        XCTAssertTrue(solo.isPrimaryReplica(experts: 4))
    }

    // MARK: Codable between ranks

    func testManifestTravelsExactly() throws {
        let hf = try synth(self, experts: 6)
        let dir = temporaryDirectory(self) + "/ranks"
        var o = LoadJob.Options(source: hf)
        o.output = dir
        _ = try LoadJob.run(o, world: SoloCollective())
        let loaded = try Manifest.load(directory: dir)
        let sent = try SoloCollective().broadcast(loaded, root: 0)
        XCTAssertEqual(sent.toJSON(), loaded.toJSON())
        XCTAssertEqual(sent.toJSON().serialized(indent: 1), loaded.toJSON().serialized(indent: 1))
        XCTAssertEqual(sent.mesh, loaded.mesh)
        let opened = try ShardedCheckpoint.openShared(dir, world: SoloCollective())
        XCTAssertEqual(opened.manifest.toJSON(), loaded.toJSON())
        XCTAssertEqual(opened.visible, [[true]])
    }

    func testJSONKeepsOrderIntegersAndNonFiniteValues() throws {
        let doc = JSON.object([("z", .int(Int64.max)), ("a", .double(.nan)), ("m", .array([.double(-.infinity), .double(0.1), .null])),
                               ("s", .string("q\"\u{1}é"))])
        let back = try SoloCollective().broadcast(doc, root: 0)
        XCTAssertEqual(back, doc)
        XCTAssertEqual(back.serialized(), doc.serialized())
    }

    func testSmallValuesTravelUnchanged() throws {
        let world = SoloCollective()
        XCTAssertEqual(try world.broadcast(0.1 + 0.2, root: 0), 0.1 + 0.2)
        XCTAssertEqual(try world.broadcast("/tmp/x.staging", root: 0), "/tmp/x.staging")
        XCTAssertEqual(try world.allgather(true), [true])
        XCTAssertEqual(try world.allgather([UInt32.max, 0]), [[UInt32.max, 0]])
        var stats = RankStats()
        stats.rank = 0
        stats.experts = ExpertRange(start: 2, end: 5)
        stats.bytesRead = 1 << 40
        stats.peakRSS = 123
        let all = try RankStats.gather(stats, over: world)
        XCTAssertEqual(all.count, 1)
        XCTAssertEqual(all[0].experts, stats.experts)
        XCTAssertEqual(all[0].bytesRead, 1 << 40)
        XCTAssertEqual(all[0].peakRSS, 123)
        XCTAssertThrowsError(try JSONDecoder().decode(MeshShape.self, from: Data(#"{"sizes":[0],"names":["ep"]}"#.utf8)),
                             "a mesh is checked again on arrival")
    }

    func testDCPCheckpointTravelsWithItsFingerprints() throws {
        let dcp = try fixtureCopy(self, "dcp")
        let opened = try DCPCheckpoint.open(dcp)
        let sent = try DCPCheckpoint.openShared(dcp, world: SoloCollective())
        XCTAssertEqual(sent.directory, opened.directory)
        XCTAssertEqual(sent.fileCount, opened.fileCount)
        XCTAssertEqual(sent.fingerprints, opened.fingerprints)
        XCTAssertEqual(sent.tensors.map(\.name), opened.tensors.map(\.name))
        XCTAssertEqual(sent.tensors.map(\.chunks), opened.tensors.map(\.chunks))
        XCTAssertEqual(sent.tensors.map(\.shape), opened.tensors.map(\.shape))
        XCTAssertEqual(ConsolidateJob.assignFiles(sent, ranks: 3), ConsolidateJob.assignFiles(opened, ranks: 3))
    }
}
