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

/// Outputs are compared with inputs by file identity, never by path strings; `--force` replaces
/// only nemoshard's own outputs; an input that changes while a job reads it is an error naming it.
final class InputIdentityTests: XCTestCase {
    func assertRefused(_ r: CLI.Output, code: Int32, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.code, code, r.stderr, file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, "one error line:\n\(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.errorLines.first?.contains(fragment) ?? false, "\"\(r.errorLines.first ?? "")\" lacks \"\(fragment)\"", file: file, line: line)
        XCTAssertFalse(r.stderr.contains("Fatal error"), "no Swift trap", file: file, line: line)
    }

    /// Names and contents of every file below `dir`, links shown as links: equal before and after
    /// means nothing was touched.
    func listing(_ dir: String) throws -> [String] {
        var out: [String] = []
        for name in try FS.list(dir) {
            let p = FS.join(dir, name)
            switch try FileStatus.of(p, followLinks: false)?.kind {
            case .symbolicLink?: out.append("\(name) -> \(try FileManager.default.destinationOfSymbolicLink(atPath: p))")
            case .directory?: out += try listing(p).map { "\(name)/\($0)" }
            default: out.append("\(name) \(digest(try readWholeFile(p)))")
            }
        }
        return out
    }

    // MARK: identity, not names

    func testDotDotThroughADirectoryNotYetCreatedNeverReplacesTheInput() throws {
        let hf = try synthCLI(["--experts", "10"])
        let parent = FS.parent(hf)
        let before = try listing(hf)
        // newdir does not exist: newdir/../hf is hf itself once newdir is made.
        let r = try CLI.run(["load", hf, "--out", parent + "/newdir/../hf", "--force"], ranks: 2)
        assertRefused(r, code: 2, "is the input")
        XCTAssertEqual(try listing(hf), before)
        XCTAssertFalse(FS.exists(parent + "/newdir"), "nothing is created before the check")

        let perRank = parent + "/p2"
        try inThreads(["load", hf, "--out", perRank], ranks: 2)
        let perRankBefore = try listing(perRank)
        let s = try CLI.run(["save-hf", perRank, parent + "/nd2/../p2", "--force"], ranks: 2)
        assertRefused(s, code: 2, "is the input")
        XCTAssertEqual(try listing(perRank), perRankBefore)
        XCTAssertFalse(FS.exists(parent + "/nd2"))
    }

    func testAHuggingFaceCacheBlobsDirectoryIsAnInput() throws {
        let hf = try synthCLI(["--experts", "10"])
        // The cache layout: snapshots/abc/NAME -> ../../blobs/HASH.
        let cache = temporaryDirectory(self) + "/cache"
        try FS.makeDirectories(cache + "/blobs")
        try FS.makeDirectories(cache + "/snapshots/abc")
        for (i, name) in try FS.list(hf).enumerated() {
            try FileManager.default.moveItem(atPath: hf + "/" + name, toPath: cache + "/blobs/blob\(i)")
            try FileManager.default.createSymbolicLink(atPath: cache + "/snapshots/abc/" + name, withDestinationPath: "../../blobs/blob\(i)")
        }
        let before = try listing(cache)
        for out in [cache + "/blobs", cache + "/snapshots", cache] {
            let r = try CLI.run(["load", cache + "/snapshots/abc", "--out", out, "--force"], ranks: 2)
            assertRefused(r, code: 2, "holds the input")
        }
        let inside = try CLI.run(["load", cache + "/snapshots/abc", "--out", cache + "/snapshots/abc/out"], ranks: 2)
        assertRefused(inside, code: 2, "is inside the input")
        XCTAssertEqual(try listing(cache), before)
        // The same cache loads fine into a directory of its own.
        try ok(["load", cache + "/snapshots/abc", "--out", FS.parent(cache) + "/loaded"], ranks: 2)
    }

    func testConsolidateNeverReplacesTheDirectoryALinkedShardFolderLivesIn() throws {
        let dcp = try fixtureCopy(self, "dcp")
        let work = temporaryDirectory(self)
        let real = work + "/real"
        try FileManager.default.moveItem(atPath: dcp + "/sharded", toPath: work + "/sharded-files")
        try FS.makeDirectories(real)
        try FileManager.default.moveItem(atPath: work + "/sharded-files", toPath: real + "/sharded")
        try FS.makeDirectories(work + "/ck")
        try FileManager.default.createSymbolicLink(atPath: work + "/ck/sharded", withDestinationPath: real + "/sharded")
        let before = try listing(real)
        let r = try CLI.run(["consolidate", work + "/ck", real, "--force"])
        assertRefused(r, code: 2, "holds the input")
        XCTAssertEqual(try listing(real), before)
        let dotdot = try CLI.run(["consolidate", work + "/ck", work + "/nd3/../real", "--force"])
        assertRefused(dotdot, code: 2, "holds the input")
        XCTAssertEqual(try listing(real), before)
    }

    func testResolvingAnOutputForCreation() throws {
        let dir = FS.realPath(temporaryDirectory(self))
        try FS.makeDirectories(dir + "/a/b")
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir + "/a/b")
        XCTAssertEqual(try FS.resolveForCreation(dir + "/new/../out"), dir + "/out")
        XCTAssertEqual(try FS.resolveForCreation(dir + "/new/./x/../../a/out"), dir + "/a/out")
        XCTAssertEqual(try FS.resolveForCreation(dir + "/link/../out"), dir + "/a/out", "a link is followed before its ..")
        XCTAssertEqual(try FS.resolveForCreation(dir + "/link/out"), dir + "/a/b/out")
        XCTAssertEqual(try FS.resolveForCreation(dir + "/link"), dir + "/link", "the last component is never followed")
        writeBytes(dir + "/file", [1])
        XCTAssertThrowsError(try FS.resolveForCreation(dir + "/file/out"))
    }

    // MARK: --force replaces only nemoshard's own outputs

    func testForceReplacesOnlyNemoshardOutputs() throws {
        let hf = try synthCLI(["--experts", "10"])
        let work = FS.parent(hf)
        let foreign = work + "/mine"
        try FS.makeDirectories(foreign)
        writeBytes(foreign + "/notes.txt", Array("only copy".utf8))
        let r = try CLI.run(["load", hf, "--out", foreign, "--force"], ranks: 2)
        assertRefused(r, code: 2, "is not a nemoshard output")
        XCTAssertEqual(try readWholeFile(foreign + "/notes.txt"), Array("only copy".utf8))

        // Another HF checkpoint (synth writes the marker; without it, it is foreign).
        let other = work + "/other-hf"
        try ok(["synth", other, "--experts", "10"])
        XCTAssertTrue(FS.exists(other + "/" + OutputProvenance.markerName))
        try ok(["save-hf", try loadedCopy(hf, work: work), other, "--force"], ranks: 2)
        FS.removeFile(other + "/" + OutputProvenance.markerName)
        let again = try CLI.run(["synth", other, "--experts", "10", "--force"])
        assertRefused(again, code: 2, "is not a nemoshard output")

        // Our own outputs and empty directories are replaced.
        let perRank = work + "/per-rank"
        try ok(["load", hf, "--out", perRank], ranks: 2)
        try ok(["load", hf, "--out", perRank, "--force"], ranks: 2)
        FS.removeFile(perRank + "/" + OutputProvenance.markerName)  // an older version's output: the manifest
        try ok(["load", hf, "--out", perRank, "--force"], ranks: 2)
        let empty = work + "/empty"
        try FS.makeDirectories(empty)
        try ok(["load", hf, "--out", empty, "--force"], ranks: 2)
    }

    func loadedCopy(_ hf: String, work: String) throws -> String {
        let out = work + "/loaded-\(UUID().uuidString.prefix(8))"
        try inThreads(["load", hf, "--out", out], ranks: 2)
        return out
    }

    // MARK: inputs that change under a job

    /// Runs `args` with rank `rank` paused after planning; `change` runs while it waits.
    func runPaused(_ args: [String], ranks: Int, pausedRank: Int, change: () throws -> Void) throws -> CLI.Output {
        let control = temporaryDirectory(self)
        final class Box: @unchecked Sendable { var output: CLI.Output?; var error: Error? }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            do {
                box.output = try CLI.run(args, ranks: ranks, env: ["NEMOSHARD_FAILPOINT": "planned:\(pausedRank):pause",
                                                                   "NEMOSHARD_FAILPOINT_DIR": control], timeout: 120)
            } catch { box.error = error }
            done.signal()
        }
        let deadline = Date().addingTimeInterval(60)
        while !FS.exists(control + "/planned.\(pausedRank).reached") && Date() < deadline { usleep(20_000) }
        XCTAssertTrue(FS.exists(control + "/planned.\(pausedRank).reached"), "the job reached its pause")
        try change()
        writeBytes(control + "/resume", [])
        done.wait()
        if let e = box.error { throw e }
        return try XCTUnwrap(box.output)
    }

    func testAShardReplacedAfterPlanningIsAnErrorNotAMixedOutput() throws {
        let hf = try synthCLI(["--experts", "8", "--shards", "1", "--seed", "1"])
        let other = FS.parent(hf) + "/other"
        try ok(["synth", other, "--experts", "8", "--shards", "1", "--seed", "2"])
        let shard = try XCTUnwrap(try FS.list(hf).first { $0.hasSuffix(".safetensors") })
        for out in [FS.parent(hf) + "/out", nil] as [String?] {
            try writeFileAtomically(other + "/copy", try readWholeFile(other + "/" + shard, limit: 1 << 30))
            let saved = try readWholeFile(hf + "/" + shard, limit: 1 << 30)
            let r = try runPaused(["load", hf] + (out.map { ["--out", $0] } ?? []), ranks: 2, pausedRank: 1) {
                try renameFile(other + "/copy", hf + "/" + shard)  // atomically another checkpoint's shard
            }
            assertRefused(r, code: 1, "changed while the job ran")
            XCTAssertTrue(r.errorLines.first?.contains(shard) ?? false, r.stderr)
            if let out { XCTAssertFalse(FS.exists(out), "nothing committed") }
            try writeFileAtomically(hf + "/" + shard, saved)
        }
    }

    func testAShardTruncatedAfterPlanningIsAnErrorNamingIt() throws {
        let hf = try synthCLI(["--experts", "8", "--shards", "1"])
        let shard = try XCTUnwrap(try FS.list(hf).first { $0.hasSuffix(".safetensors") })
        let out = FS.parent(hf) + "/out"
        let r = try runPaused(["load", hf, "--out", out], ranks: 2, pausedRank: 1) {
            XCTAssertEqual(truncate(hf + "/" + shard, 4096), 0)
        }
        assertRefused(r, code: 1, "changed while the job ran")
        XCTAssertTrue(r.errorLines.first?.contains(shard) ?? false, r.stderr)
        XCTAssertFalse(FS.exists(out))
        XCTAssertEqual(try FS.list(FS.parent(hf)).filter { $0.contains("nemoshard") }, [], "no staging or lock left")
    }

    /// A sink that truncates the source file the first time it is asked for memory: the
    /// executor's mapped window then loses its pages under the transpose (a SIGBUS unguarded).
    final class TruncatingSink: TensorSink, @unchecked Sendable {
        let inner: MemorySink
        let path: String
        var truncated = false
        init(_ inner: MemorySink, truncating path: String) {
            self.inner = inner
            self.path = path
        }
        func directPointer(output: Int, offset: Int, count: Int) -> UnsafeMutableRawPointer? {
            if !truncated { truncated = true; _ = truncate(path, 0) }
            return inner.directPointer(output: output, offset: offset, count: count)
        }
        func write(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws { try inner.write(output: output, offset: offset, bytes) }
        func prepareOutputs() throws { try inner.prepareOutputs() }
    }

    func testATruncatedMappedSourceIsAnErrorNotACrash() throws {
        let dir = temporaryDirectory(self)
        let path = dir + "/source.bin"
        let rows = 300, cols = 200
        writeBytes(path, (0..<(rows * cols * 2)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let fingerprint = try SystemFile(readingAt: path).fingerprint()
        let plan = TransferPlan(files: [path], fingerprints: [0: fingerprint],
                                outputs: [TensorSpec(name: "t", dtype: .bf16, shape: [cols, rows])],
                                pieces: [Piece(source: SourceRange(file: 0, offset: 0, count: rows * cols * 2),
                                               transform: .transpose(rows: rows, cols: cols, from: .bf16, to: .bf16), output: 0, destOffset: 0)])
        let sink = TruncatingSink(MemorySink(outputs: plan.outputs), truncating: path)
        XCTAssertThrowsError(try PlanExecutor().run(plan, into: sink)) { error in
            XCTAssertTrue(error is InputChangedError, "\(error)")
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
        XCTAssertTrue(sink.truncated)
    }

    func testGuardedKernelsReportAVanishedSource() throws {
        let dir = temporaryDirectory(self)
        let path = dir + "/source.bin"
        writeBytes(path, [UInt8](repeating: 3, count: 1 << 16))
        let file = try SystemFile(readingAt: path)
        var out = [UInt8](repeating: 0, count: 1 << 16)
        let mapped = try file.withMappedRange(offset: 0, count: 1 << 16) { src in
            XCTAssertEqual(truncate(path, 0), 0)
            try out.withUnsafeMutableBytes { dst in
                XCTAssertThrowsError(try MappedSource.copy(dst.baseAddress!, from: src, count: 1 << 16)) { XCTAssertTrue($0 is MappedSource.Fault) }
                XCTAssertThrowsError(try MappedSource.crc32c(0, UnsafeRawBufferPointer(start: src, count: 1 << 16))) { XCTAssertTrue($0 is MappedSource.Fault) }
                XCTAssertThrowsError(try PlanExecutor.transform(.transpose(rows: 128, cols: 256, from: .bf16, to: .f32), src: src,
                                                                sourceBytes: 1 << 16, dst: dst.baseAddress!))
            }
        }
        XCTAssertTrue(mapped)
        // Outside a mapping the guarded calls are plain copies.
        let a: [UInt8] = [1, 2, 3, 4]
        try out.withUnsafeMutableBytes { dst in try a.withUnsafeBytes { try MappedSource.copy(dst.baseAddress!, from: $0.baseAddress!, count: 4) } }
        XCTAssertEqual(Array(out.prefix(4)), a)
    }

    func testALockFileThatIsALinkIsNamedAsOne() throws {
        let hf = try synthCLI(["--experts", "10"])
        let work = FS.parent(hf)
        writeBytes(work + "/target", [])
        try FileManager.default.createSymbolicLink(atPath: work + "/.out.nemoshard-lock", withDestinationPath: work + "/target")
        let r = try CLI.run(["load", hf, "--out", work + "/out"])
        assertRefused(r, code: 1, "is a symbolic link")
        XCTAssertFalse(FS.exists(work + "/out"))
        XCTAssertEqual(try readWholeFile(work + "/target"), [], "the link's target is untouched")
    }

    // MARK: bounded descriptors

    func testManyShardsLoadUnderASmallDescriptorLimit() throws {
        let hf = try synthCLI(["--experts", "10", "--shards", "62"])
        let shards = try FS.list(hf).filter { $0.hasSuffix(".safetensors") }.count
        XCTAssertGreaterThan(shards, 40)
        let out = FS.parent(hf) + "/out"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "ulimit -n 64 && exec \"$0\" \"$@\"", CLI.binary, "load", hf, "--out", out]
        let r = try runProcess(p, env: [:])
        XCTAssertEqual(r.code, 0, r.err)
        try assertVerified(hf, out)
    }
}
