import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// `mpirun -n N nemoshard load` against the one-process `convert`, rank by rank.
final class LoadIntegrationTests: XCTestCase {
    /// Checks every rank file of `sharded` against `reference` (a one-rank convert): grouped tensors
    /// sliced to the rank's experts, and each non-expert tensor exactly once, in the file of the
    /// owner rank the manifest names as its holder.
    func assertMatchesReference(_ sharded: String, reference: String, ranks: Int, mesh: MeshShape,
                                file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try readAll(reference + "/rank-00000-of-00001.safetensors")
        let manifest = try Manifest.load(directory: sharded)
        XCTAssertEqual(manifest.worldSize, ranks, file: file, line: line)
        XCTAssertEqual(manifest.mesh, mesh, file: file, line: line)
        XCTAssertEqual(Set(try FS.list(sharded)), Set(["nemoshard.json", OutputProvenance.markerName] + (0..<ranks).map { Manifest.rankFileName($0, of: ranks) }),
                       "only committed files", file: file, line: line)
        let refManifest = try Manifest.load(directory: reference)
        func withoutHolders(_ m: Manifest) -> [Manifest.TensorEntry] { m.tensors.map { var t = $0; t.holder = nil; return t } }
        XCTAssertEqual(withoutHolders(manifest), withoutHolders(refManifest), file: file, line: line)
        XCTAssertEqual(manifest.hfKeys, refManifest.hfKeys, file: file, line: line)
        let owners = Manifest.ownerRanks(manifest.ranks)
        var heldBytes = [Int: Int]()
        for t in manifest.tensors where !t.expertSharded {
            let holder = try XCTUnwrap(t.holder, "\(t.name) has no holder", file: file, line: line)
            XCTAssertTrue(owners.contains(holder), "\(t.name) held by replica rank \(holder)", file: file, line: line)
            heldBytes[holder, default: 0] += t.shape.reduce(1, *) * t.dtype.size
        }
        if owners.count > 1 { XCTAssertGreaterThan(heldBytes.count, 1, "non-expert tensors spread over the owners", file: file, line: line) }
        var seen = [String: Int]()
        for r in 0..<ranks {
            let range = mesh.expertRange(of: r, experts: manifest.nRoutedExperts)
            XCTAssertEqual(manifest.ranks[r].experts, range, file: file, line: line)
            let mine = try readAll(sharded + "/" + Manifest.rankFileName(r, of: ranks))
            for (name, (dtype, shape, bytes)) in ref {
                let grouped = name.hasSuffix("gate_and_up_projs") || name.hasSuffix("down_projs")
                if grouped && range.isEmpty || !grouped && manifest.tensor(name)?.holder != r {
                    XCTAssertNil(mine[name], "rank \(r) should not hold \(name)", file: file, line: line)
                    continue
                }
                guard let m = mine[name] else { XCTFail("rank \(r) lacks \(name)", file: file, line: line); continue }
                seen[name, default: 0] += 1
                XCTAssertEqual(m.0, dtype, file: file, line: line)
                if grouped {
                    let slice = bytes.count / shape[0]
                    XCTAssertEqual(m.1, [range.count] + shape.dropFirst(), file: file, line: line)
                    XCTAssertEqual(m.2, Array(bytes[(range.start * slice)..<(range.end * slice)]), "rank \(r) \(name)", file: file, line: line)
                } else {
                    XCTAssertEqual(m.1, shape, file: file, line: line)
                    XCTAssertEqual(m.2, bytes, "rank \(r) \(name)", file: file, line: line)
                }
            }
            XCTAssertEqual(Set(mine.keys).subtracting(ref.keys), [], "rank \(r) holds unknown tensors", file: file, line: line)
        }
        for name in ref.keys where !(name.hasSuffix("gate_and_up_projs") || name.hasSuffix("down_projs")) {
            XCTAssertEqual(seen[name], 1, "\(name) stored once", file: file, line: line)
        }
    }

    func convertReference(_ hf: String, dtype: String = "bf16") throws -> String {
        let out = temporaryDirectory(self) + "/reference"
        try ok(["convert", hf, "--out", out, "--dtype", dtype])
        return out
    }

    func testLoadOverOneTwoThreeFourAndEightRanksWithUnevenSplits() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E", "--shards", "3"])
        let reference = try convertReference(hf)
        let checkpoint = try HFCheckpoint.open(hf)
        for ranks in [1, 2, 3, 4, 8] {
            let out = temporaryDirectory(self) + "/load\(ranks)"
            let r = try ok(["load", hf, "--out", out, "--json"], ranks: ranks)
            try assertMatchesReference(out, reference: reference, ranks: ranks, mesh: try .expertParallel(ranks))
            // Rank-local reading: each rank read its own experts' bytes plus the non-expert tensors it
            // holds, nothing else; together the ranks read every byte of the checkpoint exactly once.
            let report = try XCTUnwrap(r.json, r.stdout)
            let reported = try XCTUnwrap(report["ranks"]?.arrayValue)
            XCTAssertEqual(reported.count, ranks)
            let manifest = try Manifest.load(directory: out)
            XCTAssertEqual(reported.compactMap { $0["bytes_read"]?.intValue }.reduce(0, +), Int64(checkpoint.totalBytes))
            for (rank, entry) in reported.enumerated() {
                // Bytes read are the source's (the nemo-0.7 rules hold A_log/D/dt_bias upcast: `hf_dtype`).
                let nonExpert = manifest.tensors.filter { $0.holder == rank }.reduce(0) { $0 + $1.shape.reduce(1, *) * ($1.hfDType ?? $1.dtype).size }
                let range = ExpertRange(rank: rank, of: ranks, experts: 10)
                let own = checkpoint.tensors.filter { t in
                    guard let m = NemotronV3Adapter.matchExpert(t.name.hasPrefix("mtp.") ? String(t.name.dropFirst(4)) : NemotronV3Adapter.renameFromHF(t.name)),
                          let e = Int(m.expert) else { return false }
                    return range.contains(e)
                }.reduce(0) { $0 + $1.byteCount }
                XCTAssertEqual(entry["bytes_read"]?.intValue, Int64(own + nonExpert), "rank \(rank) of \(ranks)")
                if ranks > 1 { XCTAssertLessThan(own + nonExpert, checkpoint.totalBytes, "no rank reads the whole checkpoint") }
            }
        }
    }

    func testTwoDimensionalMeshReplicasHoldTheSameExperts() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E"])
        let reference = try convertReference(hf)
        let out = temporaryDirectory(self) + "/mesh"
        try ok(["load", hf, "--out", out, "--mesh", "dp=2,ep=2"], ranks: 4)
        try assertMatchesReference(out, reference: reference, ranks: 4, mesh: try MeshShape(parsing: "dp=2,ep=2"))
        let r0 = try readAll(out + "/rank-00000-of-00004.safetensors"), r2 = try readAll(out + "/rank-00002-of-00004.safetensors")
        XCTAssertEqual(r0.filter { $0.key.hasSuffix("projs") }.mapValues(\.2), r2.mapValues(\.2),
                       "a dp replica holds the same experts and no non-expert tensor")
        XCTAssertGreaterThan(r0.count, r2.count)
    }

    func testF32ExpertsUnderMPI() throws {
        let hf = try synthCLI(["--experts", "10", "--expert-dtype", "f32"])
        let reference = try convertReference(hf)
        let out = temporaryDirectory(self) + "/f32"
        try ok(["load", hf, "--out", out], ranks: 4)
        try assertMatchesReference(out, reference: reference, ranks: 4, mesh: try .expertParallel(4))
        XCTAssertEqual(try readAll(out + "/rank-00001-of-00004.safetensors")["model.layers.1.mixer.experts.gate_and_up_projs"]?.0, .bf16)
    }

    func testInMemoryLoadPrintsOneSummary() throws {
        let hf = try synthCLI(["--experts", "10"])
        let r = try ok(["load", hf], ranks: 3)
        XCTAssertEqual(r.stdout.components(separatedBy: "nemoshard load (in memory): 3 ranks").count, 2, r.stdout)
        XCTAssertTrue(r.stdout.contains("[0,4)") && r.stdout.contains("[4,7)") && r.stdout.contains("[7,10)"), r.stdout)
        XCTAssertTrue(r.stderr.isEmpty, "ranks print nothing but errors: \(r.stderr)")
    }

    func testMissingExpertsFailEveryRankAndCommitNothing() throws {
        let hf = try synthCLI(["--pattern", "ME", "--experts", "8", "--shards", "1"])
        let all = try readHF(hf)
        let kept = all.filter { !$0.key.contains("experts.5.") }
        try SafetensorsWriter.write(path: hf + "/model.safetensors",
                                    tensors: kept.keys.sorted().map { ($0, Tensor(dtype: kept[$0]!.0, shape: kept[$0]!.1, bytes: kept[$0]!.2)) })
        let parent = temporaryDirectory(self)
        let r = try CLI.run(["load", hf, "--out", parent + "/out"], ranks: 4)
        XCTAssertEqual(r.code, 1)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        let line = r.errorLines.first ?? ""
        XCTAssertTrue(line.contains("Expert weights missing from checkpoint (rank 2): 2/4 required weights not found."), line)
        XCTAssertTrue(line.contains("Layers with experts: [1], Required experts: [4, 5]."), line)
        XCTAssertTrue(line.contains("'model.layers.1.mixer.experts.5.up_proj.weight'"), line)
        XCTAssertEqual(try FS.list(parent), [], "nothing committed, no temporaries")
    }

    func testUsageErrors() throws {
        let hf = try synthCLI()
        let r = try CLI.run(["load", hf, "--mesh", "dp=2,ep=2"], ranks: 3)
        XCTAssertEqual(r.code, 2)
        XCTAssertEqual(r.errorLines, ["nemoshard: error: mesh dp=2,ep=2 has 4 ranks but the job has 3"])
        let u = try CLI.run(["load", hf, "--mesh", "dp=1,zz=2"], ranks: 2)
        XCTAssertEqual(u.code, 2)
        XCTAssertTrue(u.errorLines.first?.contains("unknown mesh dimension \"zz\"") ?? false, u.stderr)
        XCTAssertEqual(try CLI.run(["load"]).code, 2)
        XCTAssertEqual(try CLI.run(["load", hf, "--bogus"]).code, 2)
        for command in ["synth", "inspect", "convert", "load", "save-hf", "reshard", "verify"] {
            let h = try CLI.run([command, "--help"])
            XCTAssertEqual(h.code, 0)
            XCTAssertTrue(h.stdout.hasPrefix("usage:"), command)
        }
    }

    func testWithoutMPIRunTheBinaryIsAWorldOfOne() throws {
        let hf = try synthCLI(["--experts", "10"])
        let reference = try convertReference(hf)
        let out = temporaryDirectory(self) + "/solo"
        try ok(["load", hf, "--out", out])
        try assertMatchesReference(out, reference: reference, ranks: 1, mesh: try .expertParallel(1))
    }

    func testTinyMPIChunksCarryEveryMessage() throws {
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E"])
        let reference = try convertReference(hf)
        let out = temporaryDirectory(self) + "/chunked"
        try ok(["load", hf, "--out", out], ranks: 3, env: ["NEMOSHARD_MPI_CHUNK": "7"])
        try assertMatchesReference(out, reference: reference, ranks: 3, mesh: try .expertParallel(3))
        let back = temporaryDirectory(self) + "/back"
        try ok(["save-hf", out, back, "--gather"], ranks: 3, env: ["NEMOSHARD_MPI_CHUNK": "13"])
        try assertVerified(hf, back)
    }
}
