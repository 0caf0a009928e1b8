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

/// The output protocol and input strictness: no input or foreign file is ever deleted, no broken
/// checkpoint is ever committed, special or huge files never hang or crash a job.
final class DataSafetyTests: XCTestCase {
    // MARK: helpers

    /// Every entry below `dir` (links listed with their target, never followed) with a digest of
    /// each regular file: equal before and after means nothing was touched.
    func snapshot(_ dir: String) throws -> [String] {
        var out: [String] = []
        for name in try FS.list(dir) {
            let p = FS.join(dir, name)
            switch try FileStatus.of(p, followLinks: false)?.kind {
            case .symbolicLink?: out.append("\(name) -> \(String(cString: realpath(p, nil) ?? strdup("?")))")
            case .directory?: out += try snapshot(p).map { "\(name)/\($0)" }
            case .regular?: out.append("\(name) \(digest(try readWholeFile(p)))")
            default: out.append("\(name) (special)")
            }
        }
        return out
    }

    func assertFailure(_ r: CLI.Output, code: Int32 = 1, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.code, code, r.stderr, file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, "one error line:\n\(r.stderr)", file: file, line: line)
        for f in fragments {
            XCTAssertTrue(r.errorLines.first?.contains(f) ?? false, "\"\(r.errorLines.first ?? "")\" lacks \"\(f)\"", file: file, line: line)
        }
        XCTAssertFalse(r.stderr.contains("Fatal error"), "no Swift trap", file: file, line: line)
    }

    func symlink(_ target: String, _ link: String) throws {
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
    }

    func editJSON(_ path: String, _ edit: (inout [(String, JSON)]) -> Void) throws {
        var o = try JSON.parse(try readWholeFile(path)).objectValue!
        edit(&o)
        try writeFileAtomically(path, Array(JSON.object(o).serialized().utf8))
    }

    func editWeightMap(_ hf: String, _ edit: (inout [(String, JSON)]) -> Void) throws {
        try editJSON(hf + "/model.safetensors.index.json") { idx in
            idx = idx.map { k, v in
                guard k == "weight_map", var map = v.objectValue else { return (k, v) }
                edit(&map)
                return (k, .object(map))
            }
        }
    }

    // MARK: data loss

    func testSymlinkedOutputIsRefusedAndItsTargetKept() throws {
        let hf = try synthCLI(["--experts", "10"])
        let dir = temporaryDirectory(self)
        let other = dir + "/other"
        try FS.makeDirectories(other)
        writeBytes(other + "/precious.bin", [1, 2, 3])
        try symlink(hf, dir + "/to-input")
        try symlink(other, dir + "/to-other")
        let inputBefore = try snapshot(hf), otherBefore = try snapshot(other)
        for link in ["to-input", "to-other"] {
            for command in [["load", hf, "--out", dir + "/" + link, "--force"], ["synth", dir + "/" + link, "--force"]] {
                let r = try CLI.run(command, ranks: command[0] == "load" ? 2 : nil)
                assertFailure(r, code: 2, ["is a symbolic link", "never writes through or replaces a link"])
            }
        }
        XCTAssertEqual(try snapshot(hf), inputBefore)
        XCTAssertEqual(try snapshot(other), otherBefore)
    }

    func testReplacingAnOutputNeverFollowsALinkInsideIt() throws {
        let hf = try synthCLI(["--experts", "10"])
        let dir = temporaryDirectory(self)
        let outside = dir + "/outside"
        try FS.makeDirectories(outside + "/sub")
        writeBytes(outside + "/sub/keep.bin", [9])
        try inThreads(["load", hf, "--out", dir + "/out"], ranks: 2)
        try symlink(outside, dir + "/out/link-to-outside")
        try symlink(hf, dir + "/out/link-to-input")
        let before = try snapshot(outside), inputBefore = try snapshot(hf)
        try ok(["load", hf, "--out", dir + "/out", "--force"], ranks: 2)
        XCTAssertEqual(try snapshot(outside), before)
        XCTAssertEqual(try snapshot(hf), inputBefore)
        XCTAssertFalse(FS.exists(dir + "/out/link-to-outside"), "the old output (with its links) was replaced")
        try assertVerified(hf, dir + "/out")
        XCTAssertEqual(try FS.list(dir), ["out", "outside"])
    }

    func testNamesLikeStagingOrOldAreNeverRemoved() throws {
        let dir = temporaryDirectory(self)
        let decoy = dir + "/decoy"
        try FS.makeDirectories(decoy)
        writeBytes(decoy + "/keep.bin", [7])
        // Old-style fixed names as links to a foreign directory, and an input named like staging.
        try symlink(decoy, dir + "/.out.nemoshard-staging")
        try symlink(decoy, dir + "/.out.nemoshard-old")
        let hf = dir + "/.out.nemoshard-staging.1-abc"
        try ok(["synth", hf, "--experts", "10"])
        // A forged lock record that names the input as a killed job's staging and old directories.
        writeBytes(dir + "/.out.nemoshard-lock", Array("pid 1\nstaging .out.nemoshard-staging.1-abc\nold .out.nemoshard-staging.1-abc\n".utf8))
        let before = try snapshot(decoy), inputBefore = try snapshot(hf)
        try ok(["load", hf, "--out", dir + "/out"], ranks: 2)
        try ok(["load", hf, "--out", dir + "/out", "--force"], ranks: 2)
        XCTAssertEqual(try snapshot(decoy), before)
        XCTAssertEqual(try snapshot(hf), inputBefore)
        XCTAssertEqual(try FS.list(dir), [".out.nemoshard-old", ".out.nemoshard-staging", ".out.nemoshard-staging.1-abc", "decoy", "out"])
        try assertVerified(hf, dir + "/out")
    }

    /// Two jobs started in the same instant on one output, 20 times: one commits, the other
    /// commits after it or is refused by the lock, and the output is always exactly one of the two
    /// inputs. The lock and the commit are rank 0's, the same code in every writing command: the
    /// jobs here are single-process `convert`s of tiny checkpoints, so each round costs tens of
    /// milliseconds. First one round where the overlap is certain: the first job is paused
    /// holding the lock while the second starts.
    func testTwoJobsOnOneOutputNeverCommitAMixture() throws {
        let a = try synthCLI(["--experts", "2", "--pattern", "ME", "--mtp", "", "--shards", "1", "--seed", "1"])
        let b = temporaryDirectory(self) + "/hf-b"
        try ok(["synth", b, "--experts", "2", "--pattern", "ME", "--mtp", "", "--shards", "1", "--seed", "2"])
        let dir = temporaryDirectory(self)
        let out = dir + "/out"
        func committedSource() throws -> String {
            let source = try Manifest.load(directory: out).sourceDirectory
            XCTAssertTrue([FS.realPath(a), FS.realPath(b)].contains(source))
            try assertVerified(source, out)
            return source
        }
        // Certain overlap: a pauses with its file written, holding the lock.
        let control = temporaryDirectory(self)
        final class Held: @unchecked Sendable { var output: CLI.Output? }
        let held = Held()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            held.output = try? CLI.run(["convert", a, "--out", out, "--force"],
                                       env: ["NEMOSHARD_FAILPOINT": "written:0:pause", "NEMOSHARD_FAILPOINT_DIR": control], timeout: 60)
            done.signal()
        }
        let deadline = Date().addingTimeInterval(30)
        while !FS.exists(control + "/written.0.reached") && Date() < deadline { usleep(5_000) }
        assertFailure(try CLI.run(["convert", b, "--out", out, "--force"]), ["output \(out) is being written by another nemoshard job (pid "])
        writeBytes(control + "/resume", [])
        done.wait()
        XCTAssertEqual(held.output?.code, 0, held.output?.stderr ?? "")
        XCTAssertEqual(try committedSource(), FS.realPath(a))
        // Racing rounds.
        var busy = 0
        var winners: Set<String> = []
        for round in 0..<20 {
            final class Results: @unchecked Sendable {
                let lock = NSLock()
                var all = [CLI.Output?](repeating: nil, count: 2)
            }
            let box = Results()
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                let r = try? CLI.run(["convert", i == 0 ? a : b, "--out", out, "--force"], timeout: 60)
                box.lock.lock(); box.all[i] = r; box.lock.unlock()
            }
            let rs = box.all.compactMap { $0 }
            XCTAssertEqual(rs.count, 2)
            XCTAssertTrue(rs.contains { $0.code == 0 }, "round \(round): one job commits")
            for r in rs where r.code != 0 {
                assertFailure(r, ["output \(out) is being written by another nemoshard job (pid "])
                busy += 1
            }
            // The committed checkpoint is exactly one of the inputs, named by its manifest.
            winners.insert(try committedSource())
            XCTAssertEqual(try FS.list(dir), ["out"], "round \(round): no staging, lock or old directory left")
        }
        print("two jobs on one output: \(busy) of 20 rounds had the second job refused; \(winners.count) different inputs committed")
    }

    func testACommitKilledHalfWayLosesNothing() throws {
        let hf = try synthCLI(["--experts", "10"])
        let other = temporaryDirectory(self) + "/hf2"
        try ok(["synth", other, "--experts", "10", "--seed", "5"])
        let dir = temporaryDirectory(self)
        try inThreads(["load", hf, "--out", dir + "/out"], ranks: 2)
        let before = try snapshot(dir + "/out")
        // Without RENAME_EXCHANGE the old directory is renamed aside first; rank 0 dies right then.
        let r = try CLI.run(["load", other, "--out", dir + "/out", "--force"], ranks: 2,
                            env: ["NEMOSHARD_NO_RENAME_EXCHANGE": "1", "NEMOSHARD_FAILPOINT": "set-aside:0"])
        XCTAssertNotEqual(r.code, 0)
        XCTAssertFalse(FS.exists(dir + "/out"), "killed between the two renames")
        XCTAssertTrue(try FS.list(dir).contains { $0.hasPrefix(".out.nemoshard-old.") })
        // The next job restores the old checkpoint before anything else (here it then refuses to
        // replace it without --force).
        let next = try CLI.run(["load", other, "--out", dir + "/out"], ranks: 2)
        assertFailure(next, code: 2, ["exists; pass --force"])
        XCTAssertTrue(next.stderr.contains("restored \(dir)/out from an interrupted commit"), next.stderr)
        XCTAssertEqual(try snapshot(dir + "/out"), before)
        XCTAssertEqual(try FS.list(dir), ["out"])
        // With the atomic exchange the path always holds a whole checkpoint; a death after the
        // exchange leaves the old one under the staging name, which the next job removes.
        let e = try CLI.run(["load", other, "--out", dir + "/out", "--force"], ranks: 2, env: ["NEMOSHARD_FAILPOINT": "exchanged:0"])
        XCTAssertNotEqual(e.code, 0)
        try assertVerified(other, dir + "/out")
        XCTAssertTrue(try FS.list(dir).contains { $0.hasPrefix(".out.nemoshard-staging.") })
        try ok(["load", hf, "--out", dir + "/out", "--force"], ranks: 2)
        XCTAssertEqual(try FS.list(dir), ["out"])
        try assertVerified(hf, dir + "/out")
    }

    func testSynthOnAFullDiskLeavesNothing() throws {
        let disk = temporaryDirectory(self) + "/disk"
        try FS.makeDirectories(disk)
        try requireRoot("mounts a tmpfs (size=256k)")
        try mount(["-t", "tmpfs", "-o", "size=256k", "tmpfs", disk])
        defer { _ = try? unmount(disk) }
        let r = try CLI.run(["synth", disk + "/hf", "--experts", "64"])
        assertFailure(r, ["No space left on device"])
        XCTAssertEqual(try FS.list(disk), [])
    }

    // MARK: hangs and crashes

    func testSpecialFilesFailFastWithTheirName() throws {
        let cases: [(String, String)] = [
            ("model-00002-of-00002.safetensors", "is a FIFO, not a regular file"),
            ("model.safetensors.index.json", "is a FIFO, not a regular file"),
            ("config.json", "is a FIFO, not a regular file"),
            ("tokenizer.json", "is a FIFO; a checkpoint directory may hold only regular files"),
        ]
        for (name, message) in cases {
            let hf = try synthCLI(["--shards", "2"])
            unlink(hf + "/" + name)
            XCTAssertEqual(mkfifo(hf + "/" + name, 0o644), 0)
            let parent = temporaryDirectory(self)
            assertFailure(try CLI.run(["load", hf, "--out", parent + "/out"], ranks: 2, timeout: 60), [name, message])
            assertFailure(try CLI.run(["inspect", hf], timeout: 60), [name, message])
            XCTAssertEqual(try FS.list(parent), [])
        }
        // A per-rank checkpoint whose manifest, or whose source's extra file, became a FIFO.
        let hf = try synthCLI(["--shards", "2"])
        let dir = temporaryDirectory(self)
        try inThreads(["load", hf, "--out", dir + "/sharded"], ranks: 2)
        unlink(hf + "/generation_config.json")
        XCTAssertEqual(mkfifo(hf + "/generation_config.json", 0o644), 0)
        assertFailure(try CLI.run(["save-hf", dir + "/sharded", dir + "/hf-out"], ranks: 2, timeout: 60),
                      ["generation_config.json", "is a FIFO, not a regular file"])
        unlink(dir + "/sharded/nemoshard.json")
        XCTAssertEqual(mkfifo(dir + "/sharded/nemoshard.json", 0o644), 0)
        assertFailure(try CLI.run(["save-hf", dir + "/sharded", dir + "/hf-out"], ranks: 2, timeout: 60),
                      ["nemoshard.json", "is a FIFO, not a regular file"])
        XCTAssertEqual(try FS.list(dir), ["sharded"])
    }

    func testEndlessOrHugeFilesAreCappedNotRead() throws {
        for name in ["config.json", "model.safetensors.index.json", "tokenizer.json"] {
            let hf = try synthCLI(["--shards", "2"])
            unlink(hf + "/" + name)
            try symlink("/dev/zero", hf + "/" + name)
            let r = try CLI.run(["load", hf, "--out", temporaryDirectory(self) + "/out"], ranks: 2, timeout: 60)
            assertFailure(r, [name, "is a character device"])
        }
        // A regular but huge (sparse) config.json: refused at its cap, before a 2 GB allocation.
        let hf = try synthCLI(["--shards", "2"])
        XCTAssertEqual(truncate(hf + "/config.json", 2 << 30), 0)
        assertFailure(try CLI.run(["inspect", hf], timeout: 60), ["config.json", "larger than the 16 MiB"])
        // The manifest of a per-rank checkpoint.
        let good = try synthCLI(["--shards", "2"])
        let dir = temporaryDirectory(self)
        try inThreads(["load", good, "--out", dir + "/sharded"], ranks: 2)
        unlink(dir + "/sharded/nemoshard.json")
        try symlink("/dev/zero", dir + "/sharded/nemoshard.json")
        assertFailure(try CLI.run(["reshard", dir + "/sharded", "--out", dir + "/re"], ranks: 2, timeout: 60),
                      ["nemoshard.json", "is a character device"])
    }

    func testAbsurdExpertCountIsRefusedAtOnce() throws {
        let hf = try synthCLI()
        try editJSON(hf + "/config.json") { $0 = $0.map { $0.0 == "n_routed_experts" ? ($0.0, .int(Int64(Int32.max))) : $0 } }
        assertFailure(try CLI.run(["load", hf], ranks: 2, timeout: 60), ["config.json", "2147483647, more than the 65536"])
    }

    // MARK: silent success on bad input

    func testIncompleteOrAmbiguousExpertKeysAreErrors() throws {
        // An empty weight map with a MoE config.
        let empty = try synthCLI(["--shards", "2"])
        writeBytes(empty + "/model.safetensors.index.json", Array("{\"weight_map\": {}}".utf8))
        assertFailure(try CLI.run(["load", empty], ranks: 2), ["model.safetensors.index.json", "lists no tensors"])
        // Every expert of one MoE layer missing (still in the files, not in the index).
        let hf = try synthCLI(["--shards", "2", "--pattern", "ME*-E"])
        try editWeightMap(hf) { $0.removeAll { $0.0.hasPrefix("backbone.layers.4.mixer.experts.") } }
        assertFailure(try CLI.run(["load", hf], ranks: 2), ["Expert weights missing", "Layers with experts: [1, 4]",
                                                             "layers.4.mixer.experts.0.up_proj.weight"])
        // experts.07 next to experts.7: Python's int() would merge them silently.
        let padded = try synthCLI(["--shards", "1"])
        var all = try readHF(padded)
        let key = "backbone.layers.1.mixer.experts.7.up_proj.weight"
        all[key.replacingOccurrences(of: "experts.7.", with: "experts.07.")] = all[key]
        try SafetensorsWriter.write(path: padded + "/model.safetensors",
                                    tensors: all.keys.sorted().map { ($0, Tensor(dtype: all[$0]!.0, shape: all[$0]!.1, bytes: all[$0]!.2)) })
        assertFailure(try CLI.run(["load", padded], ranks: 2), ["experts.07.up_proj.weight", "expert id \"07\" is not canonical decimal"])
        // The same expert under both prefixes.
        let twice = try synthCLI(["--shards", "1"])
        all = try readHF(twice)
        all[key.replacingOccurrences(of: "backbone.", with: "model.")] = all[key]
        try SafetensorsWriter.write(path: twice + "/model.safetensors",
                                    tensors: all.keys.sorted().map { ($0, Tensor(dtype: all[$0]!.0, shape: all[$0]!.1, bytes: all[$0]!.2)) })
        assertFailure(try CLI.run(["load", twice], ranks: 2), ["are both expert 7's up_proj of layer 1"])
    }

    func testManifestEntriesMustBeUniqueAndAgreeWithTheRankFiles() throws {
        let hf = try synthCLI(["--experts", "10"])
        let dir = temporaryDirectory(self)
        try inThreads(["load", hf, "--out", dir + "/sharded"], ranks: 2)
        let manifest = dir + "/sharded/nemoshard.json"
        let original = try readWholeFile(manifest)
        func restore() { writeBytes(manifest, original) }
        func tensors(_ edit: ([JSON]) -> [JSON]) throws {
            try editJSON(manifest) { $0 = $0.map { $0.0 == "tensors" ? ($0.0, .array(edit($0.1.arrayValue!))) : $0 } }
        }
        let checks: [([String], () throws -> Void)] = [
            (["is listed twice"], { try tensors { $0 + [$0[0]] } }),
            (["two tensors have hf_key"], { try tensors { list in
                let keyed = list.filter { $0["hf_key"] != nil }
                let dup = keyed[0]["hf_key"]!
                return list.map { t in t["name"] == keyed[1]["name"] ? .object(t.objectValue!.map { $0.0 == "hf_key" ? ($0.0, dup) : $0 }) : t }
            } }),
        ]
        for (fragments, damage) in checks {
            try damage()
            for cmd in [["save-hf", dir + "/sharded", dir + "/x"], ["reshard", dir + "/sharded", "--out", dir + "/x"]] {
                assertFailure(try CLI.run(cmd, ranks: 2), ["nemoshard.json"] + fragments)
            }
            restore()
        }
        // Rank files swapped: their own metadata names the other rank.
        let r0 = dir + "/sharded/rank-00000-of-00002.safetensors", r1 = dir + "/sharded/rank-00001-of-00002.safetensors"
        XCTAssertEqual(rename(r0, dir + "/tmp"), 0)
        XCTAssertEqual(rename(r1, r0), 0)
        XCTAssertEqual(rename(dir + "/tmp", r1), 0)
        assertFailure(try CLI.run(["save-hf", dir + "/sharded", dir + "/x"], ranks: 2),
                      ["rank-00000-of-00002.safetensors", "metadata nemoshard_rank is \"1\""])
        // ... and with the manifest's expert ranges swapped to match: the mesh disagrees.
        try editJSON(manifest) { $0 = $0.map { k, v in
            k == "ranks" ? (k, .array(v.arrayValue!.enumerated().map { i, r in
                .object(r.objectValue!.map { $0.0 == "experts" ? ($0.0, .array(i == 0 ? [.int(5), .int(10)] : [.int(0), .int(5)])) : $0 })
            })) : (k, v)
        } }
        assertFailure(try CLI.run(["save-hf", dir + "/sharded", dir + "/x"], ranks: 2),
                      ["rank 0 has expert range [5,10), but mesh ep=2 gives it [0,5)"])
        XCTAssertFalse(FS.exists(dir + "/x"))
    }

    // MARK: weak spots

    /// Starts a job that hangs inside its staging directory, sends `signal` (to mpirun when
    /// `ranks` > 0, else to the single process), and returns what it printed and what it left.
    func interrupt(_ signal: Int32, ranks: Int, hf: String, dir: String) throws -> (stderr: String, left: [String]) {
        let p = Process()
        if ranks > 0 {
            p.executableURL = URL(fileURLWithPath: CLI.packageRoot + "/scripts/mpirun")
            p.arguments = ["-n", String(ranks), CLI.binary, "load", hf, "--out", dir + "/out"]
        } else {
            p.executableURL = URL(fileURLWithPath: CLI.binary)
            p.arguments = ["convert", hf, "--out", dir + "/out"]
        }
        // mpirun SIGKILLs the ranks a grace period after passing the signal on (OpenMPI's default:
        // 1 s); the handler must clean up within it. Two seconds here: a rank of a starved
        // machine (tests run in parallel) can miss the first.
        p.environment = ProcessInfo.processInfo.environment.merging(["NEMOSHARD_FAILPOINT": "written:\(ranks > 0 ? 1 : 0):hang",
                                                                      "OMPI_MCA_odls_base_sigkill_timeout": "2"]) { $1 }
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        var waited = 0
        while !(try FS.list(dir)).contains(where: { $0.hasPrefix(".out.nemoshard-staging.") }) && waited < 600 {
            usleep(50_000); waited += 1
        }
        usleep(300_000)
        XCTAssertTrue(try FS.list(dir).contains(".out.nemoshard-lock"))
        kill(p.processIdentifier, signal)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertNotEqual(p.terminationStatus, 0)
        return (stderr, try FS.list(dir))
    }

    func testInterruptedJobsRemoveTheirStagingAndSayWhy() throws {
        let hf = try synthCLI(["--experts", "10"])
        let dir = temporaryDirectory(self)
        // mpirun SIGKILLs ranks a grace period after passing the signal on (2 s here, see `interrupt`);
        // on a starved machine a rank can miss it (then the next job cleans up, tested elsewhere). One clean run per signal proves
        // the handler; up to three tries keep a loaded CI machine from failing the test.
        for (signal, ranks) in [(SIGINT, 2), (SIGTERM, 2), (SIGINT, 0)] {
            var last: (stderr: String, left: [String]) = ("", [])
            for _ in 0..<3 {
                for name in try FS.list(dir) { FS.removeTree(dir + "/" + name) }
                last = try interrupt(signal, ranks: ranks, hf: hf, dir: dir)
                if last.left.isEmpty, last.stderr.contains("nemoshard: error: interrupted by SIG"),
                   last.stderr.contains("the unfinished output was removed") { break }
            }
            XCTAssertTrue(last.stderr.contains("the unfinished output was removed"), "signal \(signal):\n\(last.stderr)")
            XCTAssertEqual(last.left, [], "staging and lock removed after signal \(signal)")
        }
    }

    func testSingleProcessCommandsRefuseAWorldLargerThanOne() throws {
        let dir = temporaryDirectory(self)
        let hf = try synthCLI()
        for cmd in [["synth", dir + "/s"], ["convert", hf, "--out", dir + "/c"], ["inspect", hf]] {
            // Every rank stops before MPI starts, at once: OpenMPI's grace second (the user's
            // default) is what lets rank 0 print before mpirun ends the job.
            let r = try CLI.run(cmd, ranks: 2, env: CLI.userMPIDefaults)
            assertFailure(r, code: 2, ["'\(cmd[0])' runs in one process; start it without mpirun (this job has 2 ranks)"])
        }
        XCTAssertEqual(try FS.list(dir), [])
    }

    func testOutputNamesThatAreNotNewDirectoriesAreUsageErrors() throws {
        let hf = try synthCLI()
        for out in ["", ".", "..", "/", "sub/.."] {
            assertFailure(try CLI.run(["load", hf, "--out", out], ranks: 2), code: 2, ["the output must name a directory to create"])
            assertFailure(try CLI.run(["synth", out]), code: 2, ["the output must name a directory to create"])
        }
    }

    func testVerifySaysWhatItIgnoresAndStrictFailsOnIt() throws {
        let hf = try synthCLI(["--shards", "1", "--experts", "4"])
        let copy = temporaryDirectory(self) + "/copy"
        try FS.makeDirectories(copy)
        for name in try FS.list(hf) { try FS.copyFile(from: hf + "/" + name, to: copy + "/" + name) }
        try ok(["verify", hf, copy, "--strict"])
        var all = try readHF(copy)
        all["backbone.layers.0.mixer.in_proj.weight_scale_inv"] = (.f32, [1], [0, 0, 128, 63])
        all["backbone.layers.1.mixer.experts.0.gate_proj.weight"] = all["backbone.layers.1.mixer.experts.0.up_proj.weight"]
        try SafetensorsWriter.write(path: copy + "/model.safetensors",
                                    tensors: all.keys.sorted().map { ($0, Tensor(dtype: all[$0]!.0, shape: all[$0]!.1, bytes: all[$0]!.2)) })
        try editJSON(copy + "/config.json") { $0.append(("nemoshard_test_note", .string("edited"))) }
        let lenient = try ok(["verify", hf, copy])
        for fragment in ["ignored (--strict counts it): backbone.layers.0.mixer.in_proj.weight_scale_inv: only in B, dropped by from_hf (_scale_inv)",
                         "backbone.layers.1.mixer.experts.0.gate_proj.weight: only in B, dropped by from_hf (gate_proj",
                         "config.json differs in \"nemoshard_test_note\"", "equal: "] {
            XCTAssertTrue(lenient.stdout.contains(fragment), "\(fragment) in:\n\(lenient.stdout)")
        }
        let strict = try CLI.run(["verify", hf, copy, "--strict"])
        XCTAssertEqual(strict.code, 1)
        XCTAssertTrue(strict.stdout.contains("DIFFERENT: 3 difference(s)"), strict.stdout)
    }

    func testSymlinkLoopsAreReportedAsLoops() throws {
        let dir = temporaryDirectory(self)
        try symlink(dir + "/loop", dir + "/loop")
        assertFailure(try CLI.run(["inspect", dir + "/loop"]), ["loop", "Too many levels of symbolic links"])
        let hf = try synthCLI(["--shards", "2"])
        unlink(hf + "/model-00002-of-00002.safetensors")
        try symlink(hf + "/model-00002-of-00002.safetensors", hf + "/model-00002-of-00002.safetensors")
        assertFailure(try CLI.run(["load", hf], ranks: 2), ["model-00002-of-00002.safetensors", "Too many levels of symbolic links"])
    }
}
