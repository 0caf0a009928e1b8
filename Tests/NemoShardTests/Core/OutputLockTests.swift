import Foundation
import XCTest
@testable import NemoShardCore

/// `OutputLock` in one process: a second lock on the same output fails at once naming the holder,
/// the record a holder writes is what the next holder finds, and only a regular file is a lock.
final class OutputLockTests: XCTestCase {
    func testASecondLockFailsNamingTheHolderAndReleaseFreesIt() throws {
        let dir = temporaryDirectory(self)
        let path = dir + "/.out.nemoshard-lock"
        let first = try OutputLock(path: path, output: dir + "/out")
        XCTAssertEqual(first.leftover, [:], "a fresh lock file holds no record")
        try first.note("pid", String(getpid()))
        try first.note("host", hostName())
        // flock locks belong to an open file: a second open, even in this process, is refused.
        XCTAssertThrowsError(try OutputLock(path: path, output: dir + "/out")) { error in
            XCTAssertTrue(error is OutputError, "\(error)")
            XCTAssertEqual("\(error)", "output \(dir)/out is being written by another nemoshard job (pid \(getpid()))",
                           "same host: the pid alone")
        }
        first.release()
        XCTAssertFalse(FS.exists(path), "a clean release unlinks the lock file")
        let second = try OutputLock(path: path, output: dir + "/out")
        XCTAssertEqual(second.leftover, [:], "a clean finish leaves nothing to repair")
        second.release()
    }

    func testAnotherHostIsNamed() throws {
        let dir = temporaryDirectory(self)
        let path = dir + "/.out.nemoshard-lock"
        let first = try OutputLock(path: path, output: "o")
        try first.note("pid", "4242")
        try first.note("host", "elsewhere-node-7")
        XCTAssertThrowsError(try OutputLock(path: path, output: "o")) {
            XCTAssertEqual("\($0)", "output o is being written by another nemoshard job (pid 4242 on elsewhere-node-7)")
        }
        first.release()
    }

    func testTheRecordIsWrittenStepByStepAndIsTheNextHoldersLeftover() throws {
        let dir = temporaryDirectory(self)
        let path = dir + "/.out.nemoshard-lock"
        let live = try OutputLock(path: path, output: "o")
        try live.note("pid", "1")
        try live.note("staging", ".out.nemoshard-staging.1-ab")
        XCTAssertEqual(String(decoding: try readWholeFile(path), as: UTF8.self), "pid 1\nstaging .out.nemoshard-staging.1-ab\n",
                       "each step is on disk before the step it announces")
        try live.note("old", ".out.nemoshard-old.ab")
        XCTAssertEqual(String(decoding: try readWholeFile(path), as: UTF8.self),
                       "pid 1\nstaging .out.nemoshard-staging.1-ab\nold .out.nemoshard-old.ab\n")
        live.release()
        // What a holder killed at that point leaves: the file with its record, and no flock (a
        // killed process's locks go with it). The next holder reads it as its leftover.
        writeBytes(path, Array("pid 1\nstaging .out.nemoshard-staging.1-ab\nold .out.nemoshard-old.ab\nstaging .out.nemoshard-staging.1-cd\nnonsense\n".utf8))
        let next = try OutputLock(path: path, output: "o")
        XCTAssertEqual(next.leftover, ["pid": "1", "staging": ".out.nemoshard-staging.1-cd", "old": ".out.nemoshard-old.ab"],
                       "a later value of a key wins; a line without a value is ignored")
        // Its own record replaces the old one.
        try next.note("pid", "2")
        XCTAssertEqual(String(decoding: try readWholeFile(path), as: UTF8.self), "pid 2\n")
        next.release()
        XCTAssertFalse(FS.exists(path))
    }

    func testOnlyARegularFileIsALock() throws {
        let dir = temporaryDirectory(self)
        let target = dir + "/target"
        writeBytes(target, [])
        let link = dir + "/.a.nemoshard-lock"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        XCTAssertThrowsError(try OutputLock(path: link, output: "a")) {
            XCTAssertTrue("\($0)".contains("its lock file \(link) is a symbolic link"), "\($0)")
        }
        XCTAssertEqual(try readWholeFile(target), [], "the link's target is untouched")
        let fifo = dir + "/.b.nemoshard-lock"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        XCTAssertThrowsError(try OutputLock(path: fifo, output: "b")) {
            XCTAssertTrue("\($0)".contains("its lock file \(fifo) is a FIFO"), "\($0)")
        }
        let directory = dir + "/.c.nemoshard-lock"
        try FS.makeDirectories(directory)
        XCTAssertThrowsError(try OutputLock(path: directory, output: "c"))
    }
}
