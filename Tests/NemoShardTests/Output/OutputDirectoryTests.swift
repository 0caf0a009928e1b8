import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardModel
@testable import NemoShard

/// The output protocol in one process, without the binary: `OutputDirectory` prepare, commit and
/// abandon; the provenance marker and the `--force` rules; identity checks against the inputs
/// (`InputSet`); and the repair of what a killed job recorded in its lock file.
final class OutputDirectoryTests: XCTestCase {
    /// `dir`'s entries, sorted.
    func entries(_ dir: String) throws -> [String] { try FS.list(dir).sorted() }

    func prepared(_ path: String, force: Bool = false, inputs: [String] = []) throws -> (OutputDirectory, String) {
        let out = try OutputDirectory(path: path)
        let staging = try out.prepare(force: force, inputs: inputs)
        return (out, staging)
    }

    // MARK: prepare, commit, abandon

    func testPrepareStagesBesideTheOutputUnderTheLockAndCommitSwapsItIn() throws {
        let parent = FS.realPath(temporaryDirectory(self))
        let (out, staging) = try prepared(parent + "/out")
        XCTAssertEqual(FS.parent(staging), parent)
        XCTAssertTrue(FS.baseName(staging).hasPrefix(".out.nemoshard-staging.\(getpid())-"), staging)
        XCTAssertEqual(try entries(staging), [OutputProvenance.markerName], "a fresh staging directory holds only the marker")
        XCTAssertEqual(try entries(parent), [".out.nemoshard-lock", FS.baseName(staging)])
        let record = String(decoding: try readWholeFile(parent + "/.out.nemoshard-lock"), as: UTF8.self)
        XCTAssertEqual(record, "pid \(getpid())\nhost \(hostName())\nstaging \(FS.baseName(staging))\n")
        writeBytes(staging + "/data.bin", [1, 2, 3])
        try out.commit(force: false)
        XCTAssertEqual(try entries(parent), ["out"], "no staging directory, no lock")
        XCTAssertEqual(try entries(parent + "/out"), [OutputProvenance.markerName, "data.bin"])
        XCTAssertEqual(try readWholeFile(parent + "/out/data.bin"), [1, 2, 3])
        XCTAssertTrue(try OutputProvenance.isOurs(parent + "/out"))
        XCTAssertThrowsError(try out.commit(force: false), "a committed output is not committed twice")
    }

    func testAbandonRemovesTheStagingAndTheLockAndNothingElse() throws {
        let parent = temporaryDirectory(self)
        try FS.makeDirectories(parent + "/out")
        writeBytes(parent + "/out/" + OutputProvenance.markerName, [])
        writeBytes(parent + "/out/old.bin", [9])
        writeBytes(parent + "/.out.nemoshard-staging.elsewhere", [5])  // not a directory: never this job's
        let (out, staging) = try prepared(parent + "/out", force: true)
        writeBytes(staging + "/half.bin", [1])
        out.abandon()
        XCTAssertEqual(try entries(parent), [".out.nemoshard-staging.elsewhere", "out"])
        XCTAssertEqual(try entries(parent + "/out"), [OutputProvenance.markerName, "old.bin"], "the old output is as it was")
        out.abandon()  // twice is harmless
        // The lock is free again.
        let (again, _) = try prepared(parent + "/out", force: true)
        again.abandon()
    }

    func testASecondJobOnTheSameOutputIsRefusedWhileTheFirstHoldsIt() throws {
        let parent = temporaryDirectory(self)
        let (first, staging) = try prepared(parent + "/out")
        XCTAssertThrowsError(try prepared(parent + "/out")) {
            XCTAssertEqual("\($0)", "output \(parent)/out is being written by another nemoshard job (pid \(getpid()))")
        }
        XCTAssertTrue(FS.exists(staging), "the refused job touched nothing of the first one's")
        try first.commit(force: false)
        XCTAssertEqual(try entries(parent), ["out"])
    }

    func testWithoutTheAtomicExchangeTheOldOutputIsSetAsideAndRecorded() throws {
        let parent = temporaryDirectory(self)
        let (a, s1) = try prepared(parent + "/out")
        writeBytes(s1 + "/v", [1])
        try a.commit(force: false)
        setenv("NEMOSHARD_NO_RENAME_EXCHANGE", "1", 1)
        defer { unsetenv("NEMOSHARD_NO_RENAME_EXCHANGE") }
        let (b, s2) = try prepared(parent + "/out", force: true)
        writeBytes(s2 + "/v", [2])
        try b.commit(force: true)
        XCTAssertEqual(try readWholeFile(parent + "/out/v"), [2])
        XCTAssertEqual(try entries(parent), ["out"], "the set-aside old directory and the lock are gone")
    }

    // MARK: --force and provenance

    func testAnExistingOutputNeedsForceAndMustBeNemoshardsOwn() throws {
        let parent = temporaryDirectory(self)
        // No --force: refused whatever it is.
        try FS.makeDirectories(parent + "/empty")
        XCTAssertThrowsError(try prepared(parent + "/empty")) {
            XCTAssertEqual(($0 as? UsageError)?.remedy, .force, "\($0)")
            XCTAssertTrue("\($0)".contains("output directory \(parent)/empty exists"), "\($0)")
        }
        // --force replaces: an empty directory, one with the marker, an older version's output (its manifest).
        try FS.makeDirectories(parent + "/marked")
        writeBytes(parent + "/marked/" + OutputProvenance.markerName, [])
        writeBytes(parent + "/marked/x", [1])
        try FS.makeDirectories(parent + "/older")
        writeBytes(parent + "/older/" + Manifest.fileName, Array("{\"format\": \"\(Manifest.formatName)\"}".utf8))
        for name in ["empty", "marked", "older"] {
            XCTAssertTrue(try OutputProvenance.isOurs(parent + "/" + name), name)
            let (out, staging) = try prepared(parent + "/" + name, force: true)
            writeBytes(staging + "/new", [7])
            try out.commit(force: true)
            XCTAssertEqual(try entries(parent + "/" + name), [OutputProvenance.markerName, "new"], name)
        }
        // Never: a directory of someone else's, a manifest of another format, a marker that is a link, a file.
        try FS.makeDirectories(parent + "/foreign")
        writeBytes(parent + "/foreign/notes.txt", Array("only copy".utf8))
        try FS.makeDirectories(parent + "/other-format")
        writeBytes(parent + "/other-format/" + Manifest.fileName, Array("{\"format\": \"something-else\"}".utf8))
        try FS.makeDirectories(parent + "/linked-marker")
        writeBytes(parent + "/marker-elsewhere", [])
        try FileManager.default.createSymbolicLink(atPath: parent + "/linked-marker/" + OutputProvenance.markerName,
                                                   withDestinationPath: parent + "/marker-elsewhere")
        for name in ["foreign", "other-format", "linked-marker"] {
            XCTAssertFalse(try OutputProvenance.isOurs(parent + "/" + name), name)
            let before = try entries(parent + "/" + name)
            XCTAssertThrowsError(try prepared(parent + "/" + name, force: true), name) {
                XCTAssertTrue("\($0)".contains("is not a nemoshard output"), "\($0)")
            }
            XCTAssertEqual(try entries(parent + "/" + name), before, name)
        }
        writeBytes(parent + "/plain", [1])
        XCTAssertThrowsError(try prepared(parent + "/plain", force: true)) {
            XCTAssertTrue("\($0)".contains("exists and is a regular file, not a directory"), "\($0)")
        }
        XCTAssertFalse(try entries(parent).contains { $0.contains("nemoshard-") }, "refusals leave no staging or lock")
    }

    func testALinkIsNeverAnOutput() throws {
        let parent = temporaryDirectory(self)
        try FS.makeDirectories(parent + "/real")
        writeBytes(parent + "/real/" + OutputProvenance.markerName, [])
        try FileManager.default.createSymbolicLink(atPath: parent + "/link", withDestinationPath: parent + "/real")
        XCTAssertThrowsError(try prepared(parent + "/link", force: true)) {
            XCTAssertTrue("\($0)".contains("output \(parent)/link is a symbolic link"), "\($0)")
        }
        XCTAssertEqual(try entries(parent + "/real"), [OutputProvenance.markerName])
    }

    func testOutputNamesThatAreNotNewDirectoriesAreRefusedWithoutTouchingTheDisk() {
        for bad in ["", ".", "..", "/", "sub/..", "a/.", "//"] {
            XCTAssertThrowsError(try OutputDirectory(path: bad), bad) {
                XCTAssertTrue("\($0)".contains("the output must name a directory to create"), "\(bad): \($0)")
            }
        }
        XCTAssertEqual(try OutputDirectory(path: "a/b//").path, "a/b")
        XCTAssertEqual(try OutputDirectory(path: "a/b//").name, "b")
    }

    // MARK: identity against the inputs

    func testTheOutputIsComparedWithTheInputsByIdentity() throws {
        let root = FS.realPath(temporaryDirectory(self))
        let input = root + "/in"
        try FS.makeDirectories(input + "/sub")
        writeBytes(input + "/sub/w.bin", [1])
        writeBytes(input + "/" + OutputProvenance.markerName, [])  // even our own output, when it is read
        try FileManager.default.createSymbolicLink(atPath: root + "/alias", withDestinationPath: input)
        let inputs = [input, input + "/sub/w.bin"]
        let cases: [(String, String)] = [
            (input, "is the input"),
            (root + "/newdir/../in", "is the input"),  // newdir does not exist yet
            (root + "/alias/../in", "is the input"),  // through a link, then ..
            (input + "/sub", "holds the input"),
            (root, "holds the input"),
            (input + "/new", "is inside the input"),
            (root + "/alias/new", "is inside the input"),
        ]
        for (path, fragment) in cases {
            XCTAssertThrowsError(try prepared(path, force: true, inputs: inputs), path) {
                XCTAssertTrue($0 is UsageError && "\($0)".contains(fragment), "\(path): \($0)")
            }
        }
        XCTAssertFalse(FS.exists(root + "/newdir"), "nothing is created before the check")
        XCTAssertEqual(try entries(root), ["alias", "in"])
        XCTAssertEqual(try entries(input), [OutputProvenance.markerName, "sub"])
        // A sibling is fine.
        let (out, _) = try prepared(root + "/out", inputs: inputs)
        try out.commit(force: false)
    }

    func testInputSetFollowsLinksToWhatIsRead() throws {
        let root = FS.realPath(temporaryDirectory(self))
        // The Hugging Face cache layout: snapshots/abc/NAME -> ../../blobs/HASH.
        try FS.makeDirectories(root + "/cache/blobs")
        try FS.makeDirectories(root + "/cache/snapshots/abc")
        writeBytes(root + "/cache/blobs/h1", [1])
        try FileManager.default.createSymbolicLink(atPath: root + "/cache/snapshots/abc/config.json", withDestinationPath: "../../blobs/h1")
        let set = try InputSet([root + "/cache/snapshots/abc", root + "/cache/snapshots/abc/config.json", root + "/missing"])
        XCTAssertTrue(set.touches(root + "/cache/blobs"), "the blob's directory holds an input")
        XCTAssertTrue(set.touches(root + "/cache"))
        XCTAssertTrue(set.touches(root + "/cache/snapshots/abc"))
        XCTAssertFalse(set.touches(root + "/cache/snapshots/abc/config.json"), "a link itself is not followed")
        XCTAssertFalse(set.touches(root + "/elsewhere"))
        XCTAssertThrowsError(try set.check(output: root + "/cache/blobs", given: "b")) {
            XCTAssertTrue("\($0)".contains("output b holds the input"), "\($0)")
        }
        XCTAssertNoThrow(try set.check(output: root + "/fresh", given: "f"))
    }

    // MARK: repairing what a killed job left

    func testTheNextJobRestoresAnOldOutputSetAsideByAnInterruptedCommit() throws {
        let parent = FS.realPath(temporaryDirectory(self))
        // A job killed between renaming the old output aside and renaming its staging in.
        try FS.makeDirectories(parent + "/.out.nemoshard-old.ab")
        writeBytes(parent + "/.out.nemoshard-old.ab/" + OutputProvenance.markerName, [])
        writeBytes(parent + "/.out.nemoshard-old.ab/v", [1])
        try FS.makeDirectories(parent + "/.out.nemoshard-staging.1-ab")
        writeBytes(parent + "/.out.nemoshard-staging.1-ab/v", [2])
        writeBytes(parent + "/.out.nemoshard-lock",
                   Array("pid 1\nstaging .out.nemoshard-staging.1-ab\nold .out.nemoshard-old.ab\n".utf8))
        // Without --force the restored output then stops the job; what was left is gone.
        XCTAssertThrowsError(try prepared(parent + "/out")) { XCTAssertEqual(($0 as? UsageError)?.remedy, .force, "\($0)") }
        XCTAssertEqual(try entries(parent), ["out"])
        XCTAssertEqual(try readWholeFile(parent + "/out/v"), [1], "the old output is back")
    }

    func testARepairRemovesOnlyThisOutputsOwnRealDirectories() throws {
        let parent = FS.realPath(temporaryDirectory(self))
        let decoy = parent + "/decoy"
        try FS.makeDirectories(decoy)
        writeBytes(decoy + "/keep", [7])
        // Names in the record that are not this output's, a link with a staging name, an input
        // with a staging name, and a path with a slash: none is removed.
        try FileManager.default.createSymbolicLink(atPath: parent + "/.out.nemoshard-staging.link", withDestinationPath: decoy)
        try FS.makeDirectories(parent + "/.out.nemoshard-staging.input")
        writeBytes(parent + "/.out.nemoshard-staging.input/config.json", [1])
        let records = ["staging .other.nemoshard-staging.1\nold decoy\n", "staging .out.nemoshard-staging.link\n",
                       "staging .out.nemoshard-staging.input\n", "old .out.nemoshard-old.x/../decoy\n"]
        for record in records {
            writeBytes(parent + "/.out.nemoshard-lock", Array(record.utf8))
            let (out, _) = try prepared(parent + "/out", force: true, inputs: [parent + "/.out.nemoshard-staging.input"])
            out.abandon()
            XCTAssertEqual(try readWholeFile(decoy + "/keep"), [7], record)
            XCTAssertEqual(try entries(parent), [".out.nemoshard-staging.input", ".out.nemoshard-staging.link", "decoy"], record)
        }
        // A staging directory a killed job recorded is removed.
        try FS.makeDirectories(parent + "/.out.nemoshard-staging.9-dead")
        writeBytes(parent + "/.out.nemoshard-staging.9-dead/half", [1])
        writeBytes(parent + "/.out.nemoshard-lock", Array("pid 9\nstaging .out.nemoshard-staging.9-dead\n".utf8))
        let (out, _) = try prepared(parent + "/out")
        try out.commit(force: false)
        XCTAssertEqual(try entries(parent), [".out.nemoshard-staging.input", ".out.nemoshard-staging.link", "decoy", "out"])
    }
}
