import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// `save-hf`, `reshard` and `verify` under mpirun. The per-rank checkpoints they start from, and
/// the fresh loads they are compared with, are written on thread ranks (`inThreads`); `load`
/// under mpirun is LoadIntegrationTests'. Exports compared with the source byte for byte
/// load with `--rules seed` (the nemo-0.7 rules' F32 parameters: RulesTests).
final class ExportIntegrationTests: XCTestCase {
    func assertSameHF(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try readHF(a), y = try readHF(b)
        XCTAssertEqual(Set(x.keys), Set(y.keys), file: file, line: line)
        for (k, v) in x {
            XCTAssertEqual(v.0, y[k]?.0, k, file: file, line: line)
            XCTAssertEqual(v.1, y[k]?.1, k, file: file, line: line)
            XCTAssertEqual(v.2, y[k]?.2, k, file: file, line: line)
        }
        let index = try JSON.parse(try readWholeFile(b + "/model.safetensors.index.json"))
        let map = try XCTUnwrap(index["weight_map"]?.objectValue, file: file, line: line)
        XCTAssertEqual(map.count, Set(map.map(\.0)).count, "each key once", file: file, line: line)
        XCTAssertEqual(Set(map.map(\.0)), Set(x.keys), file: file, line: line)
        for (_, f) in map { XCTAssertTrue(FS.exists(b + "/" + (f.stringValue ?? "?")), file: file, line: line) }
        XCTAssertEqual(index["metadata"]?["total_size"]?.intValue, Int64(x.values.reduce(0) { $0 + $1.2.count }), file: file, line: line)
        XCTAssertFalse(try FS.list(FS.parent(b)).contains { $0.contains("nemoshard-staging") }, file: file, line: line)
    }

    func testLoadThenSaveHFReproducesTheCheckpointInBothModes() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E", "--shards", "3"])
        for (ranks, meshArgs) in [(1, [String]()), (3, []), (4, []), (8, []), (4, ["--mesh", "dp=2,ep=2"])] {
            let dir = temporaryDirectory(self)
            try inThreads(["load", hf, "--rules", "seed", "--out", dir + "/sharded"] + meshArgs, ranks: ranks)
            try ok(["save-hf", dir + "/sharded", dir + "/parallel", "--max-shard-size", "30kB"], ranks: ranks)
            try assertSameHF(hf, dir + "/parallel")
            // Once, the gathered export replaces an existing one (--force); the other meshes write afresh.
            let replacing = ranks == 8
            if replacing { try ok(["save-hf", dir + "/sharded", dir + "/gathered"], ranks: ranks) }
            let g = try CLI.run(["save-hf", dir + "/sharded", dir + "/gathered", "--gather"] + (replacing ? ["--force"] : []), ranks: ranks)
            XCTAssertEqual(g.code, 0, g.stderr)
            try assertSameHF(hf, dir + "/gathered")
            XCTAssertNoThrow(try Inspect.run(dir + "/gathered"))
        }
    }

    func testReplicasWriteNothingTwice() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E"])
        let dir = temporaryDirectory(self)
        try inThreads(["load", hf, "--rules", "seed", "--out", dir + "/sharded", "--mesh", "dp=2,ep=2"], ranks: 4)
        let r = try ok(["save-hf", dir + "/sharded", dir + "/out", "--json"], ranks: 4)
        let ranks = try XCTUnwrap(r.json?["ranks"]?.arrayValue)
        XCTAssertEqual(ranks[2]["files"]?.intValue, 0, "dp replica of rank 0 writes nothing")
        XCTAssertEqual(ranks[3]["files"]?.intValue, 0, "dp replica of rank 1 writes nothing")
        let written = ranks.compactMap { $0["bytes_produced"]?.intValue }.reduce(0, +)
        XCTAssertEqual(written, Int64(try readHF(hf).values.reduce(0) { $0 + $1.2.count }), "every byte written exactly once")
    }

    func testGatherStreamsFromRanksThatCannotWriteTheOutput() throws {
        // Ranks 1...3 see the output's parent read-only (a private mount namespace): any file they
        // created there would fail the job, so they must stream their shards to rank 0.
        let hf = try synthCLI(["--experts", "10"])
        let dir = temporaryDirectory(self)
        try inThreads(["load", hf, "--rules", "seed", "--out", dir + "/sharded"], ranks: 4)
        let parent = dir + "/exports"
        try FS.makeDirectories(parent)
        func readOnlyPeers(_ args: [String], env: [String: String] = [:]) throws -> CLI.Output {
            let shell = "mount --bind -o ro '\(parent)' '\(parent)' && exec '\(CLI.binary)' " + args.map { "'\($0)'" }.joined(separator: " ")
            return try CLI.run(args, ranks: 1, env: env, mpmd: [":", "-n", "3", "unshare", "--mount", "sh", "-c", shell])
        }
        // Several shards per rank, in windows of 8 MiB and, with 13-byte MPI pieces, of 13 bytes.
        for (name, env) in [("out", [String: String]()), ("tiny", ["NEMOSHARD_MPI_CHUNK": "13"])] {
            let p = try readOnlyPeers(["save-hf", dir + "/sharded", parent + "/" + name, "--gather", "--max-shard-size", "30kB", "--json"], env: env)
            XCTAssertEqual(p.code, 0, p.stderr)
            try assertSameHF(hf, parent + "/" + name)
            let files = try XCTUnwrap(p.json?["ranks"]?.arrayValue).map { $0["files"]?.intValue ?? -1 }
            XCTAssertEqual(files[1...], [0, 0, 0], "ranks that cannot write send everything")
            XCTAssertEqual(files[0], Int64(try FS.list(parent + "/" + name).filter { $0.hasSuffix(".safetensors") }.count))
        }
        // A sender failing in the middle of a stream: one error line from that rank, no hang, nothing committed.
        let failed = try readOnlyPeers(["save-hf", dir + "/sharded", parent + "/failed", "--gather", "--max-shard-size", "30kB"],
                                       env: ["NEMOSHARD_FAILPOINT": "streamed:2:error"])
        XCTAssertEqual(failed.code, 1, failed.stderr)
        XCTAssertEqual(failed.errorLines.count, 1, failed.stderr)
        XCTAssertTrue(failed.errorLines.first?.contains("rank 2") ?? false, failed.stderr)
        XCTAssertTrue(failed.errorLines.first?.contains("injected failure at failpoint streamed") ?? false, failed.stderr)
        XCTAssertEqual(try FS.list(parent).sorted(), ["out", "tiny"], "no staging, lock or output left")
        // Control: without --gather the same setup fails, so the read-only mount really binds ranks 1...3.
        let q = try readOnlyPeers(["save-hf", dir + "/sharded", parent + "/out2"])
        XCTAssertNotEqual(q.code, 0)
        XCTAssertFalse(FS.exists(parent + "/out2"))
    }

    func testGatherOnOneNodeLetsEveryRankWriteItsOwnShards() throws {
        let hf = try synthCLI(["--experts", "10"])
        let dir = temporaryDirectory(self)
        try inThreads(["load", hf, "--rules", "seed", "--out", dir + "/sharded"], ranks: 4)
        let r = try ok(["save-hf", dir + "/sharded", dir + "/out", "--gather", "--max-shard-size", "30kB", "--json"], ranks: 4)
        let files = try XCTUnwrap(r.json?["ranks"]?.arrayValue).map { $0["files"]?.intValue ?? -1 }
        XCTAssertTrue(files.allSatisfy { $0 > 0 }, "\(files): every rank sees rank 0's staging directory and writes")
        try assertSameHF(hf, dir + "/out")
    }

    func testReshardEqualsAFreshLoad() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E", "--shards", "2"])
        let cases: [(Int, [String], Int, [String])] = [(4, [], 3, []), (3, [], 8, []), (8, [], 2, []), (4, [], 4, ["--mesh", "dp=2,ep=2"])]
        for (from, fromMesh, to, toMesh) in cases {
            let dir = temporaryDirectory(self)
            try inThreads(["load", hf, "--out", dir + "/a"] + fromMesh, ranks: from)
            let r = try ok(["reshard", dir + "/a", "--out", dir + "/b", "--json"] + toMesh, ranks: to)
            try inThreads(["load", hf, "--out", dir + "/fresh"] + toMesh, ranks: to)
            for k in 0..<to {
                let name = Manifest.rankFileName(k, of: to)
                XCTAssertEqual(try readWholeFile(dir + "/b/" + name), try readWholeFile(dir + "/fresh/" + name), "\(from)->\(to) rank \(k)")
            }
            let b = try Manifest.load(directory: dir + "/b"), fresh = try Manifest.load(directory: dir + "/fresh")
            XCTAssertEqual(b.toJSON(), fresh.toJSON(), "\(from)->\(to) manifest")
            try assertVerified(dir + "/b", hf)  // (verify under mpirun: testVerifyCatchesAFlippedExpertByteUnderMPI)
            // No rank read the whole source.
            let total = try readHF(hf).values.reduce(0) { $0 + $1.2.count }
            for entry in try XCTUnwrap(r.json?["ranks"]?.arrayValue) where to > 1 {
                XCTAssertLessThan(entry["bytes_read"]?.intValue ?? Int64.max, Int64(total))
            }
        }
    }

    func testVerifyCatchesAFlippedExpertByteUnderMPI() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E"])
        let dir = temporaryDirectory(self)
        try inThreads(["load", hf, "--out", dir + "/a"], ranks: 4)
        try ok(["verify", hf, dir + "/a"], ranks: 3)
        // rank 2 holds experts [6, 8): flip a byte in expert 7 of the MTP down_projs
        let path = dir + "/a/rank-00002-of-00004.safetensors"
        let f = try SafetensorsFile(path: path)
        let info = try f.info("mtp.layers.1.mixer.experts.down_projs")
        var bytes = try readWholeFile(path)
        bytes[f.fileOffset(of: info) + info.byteCount / 2 + 3] ^= 0x80
        writeBytes(path, bytes)
        let r = try CLI.run(["verify", hf, dir + "/a"], ranks: 3)
        XCTAssertEqual(r.code, 1)
        XCTAssertTrue(r.stdout.contains("mtp.layers.1.mixer.experts.down_projs: expert 7 differs"), r.stdout)
        let j = try CLI.run(["verify", dir + "/a", hf, "--json"])
        XCTAssertEqual(j.code, 1)
        XCTAssertEqual(j.json?["equal"], .bool(false))
        XCTAssertEqual(j.json?["difference_count"]?.intValue, 1)
    }
}
