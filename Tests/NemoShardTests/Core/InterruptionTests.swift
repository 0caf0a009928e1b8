import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardModel
@testable import NemoShard

/// `Interruption`: on SIGINT, SIGTERM or SIGHUP the process removes exactly the directories and
/// lock files registered at that moment, reports the signal once and exits with 128 + signal.
/// `install` takes over the process's signals and the handler ends it, so each case runs in a
/// child process (this test binary again, `ChildTest`) that sends the signal to its own waiting
/// thread; this process checks what was left.
final class InterruptionTests: XCTestCase {
    typealias TgKill = @convention(c) (Int32, Int32, Int32) -> Int32

    /// The threads of this process (their ids).
    static func threads() -> Set<Int32> { Set(((try? FS.list("/proc/self/task")) ?? []).compactMap { Int32($0) }) }

    /// Whether thread `tid` blocks `signal`.
    static func blocks(_ tid: Int32, _ signal: Int32) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/self/task/\(tid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigBlk:") }),
              let mask = UInt64(line.dropFirst("SigBlk:".count).trimmingCharacters(in: .whitespaces), radix: 16) else { return false }
        return mask & (1 << UInt64(signal - 1)) != 0
    }

    /// In a child: installs the handler (its report writes `DIR/reported`) and returns the waiting thread.
    static func installAndFindTheWaiter(_ dir: String) -> Int32? {
        let before = threads()
        Interruption.install { signal in
            let fd = open(dir + "/reported", O_WRONLY | O_CREAT | O_APPEND, 0o644)
            _ = Array("signal \(signal)\n".utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
        // The waiter is the thread `install` started. (Foundation starts a thread with no signal
        // blocked; dispatch's worker threads block them all. Either way the signal sent to the
        // waiter is what sigwait returns.)
        for _ in 0..<200 {
            if let t = threads().subtracting(before).first(where: { !blocks($0, SIGTERM) }) { return t }
            usleep(10_000)
        }
        return nil
    }

    /// In a child: sends `signal` to thread `tid` of this process, then waits to be ended.
    static func signal(_ tid: Int32, _ signal: Int32) -> Never {
        let tgkill = unsafeBitCast(dlsym(nil, "tgkill")!, to: TgKill.self)
        _ = tgkill(getpid(), tid, signal)
        sleep(20)
        print("the process was not ended by the signal")
        exit(3)
    }

    func entries(_ dir: String) throws -> [String] { try FS.list(dir).sorted() }

    // MARK: register and unregister

    func testASignalRemovesWhatIsRegisteredNowAndReportsIt() throws {
        let name = "InterruptionTests/testASignalRemovesWhatIsRegisteredNowAndReportsIt"
        if ChildTest.isChild(name) {
            let dir = ChildTest.argument("DIR")
            guard let waiter = Self.installAndFindTheWaiter(dir) else { print("no waiting thread"); exit(4) }
            for d in ["staging-a", "staging-b", "kept"] {
                try FS.makeDirectories(dir + "/" + d + "/sub")
                writeBytes(dir + "/" + d + "/sub/file", [1])
            }
            for f in [".a-lock", ".kept-lock"] { writeBytes(dir + "/" + f, [2]) }
            Interruption.register(directory: dir + "/staging-a")
            Interruption.register(directory: dir + "/kept")
            Interruption.register(directory: dir + "/staging-b")
            Interruption.unregister(directory: dir + "/kept")  // as a commit does before it starts
            Interruption.register(lock: dir + "/.a-lock")
            Interruption.register(lock: dir + "/.kept-lock")
            Interruption.unregister(lock: dir + "/.kept-lock")
            Self.signal(waiter, ChildTest.argument("SIGNAL") == "INT" ? SIGINT : SIGTERM)
        }
        for (word, signal) in [("TERM", SIGTERM), ("INT", SIGINT)] {
            let dir = temporaryDirectory(self)
            let child = try ChildTest.run(name, arguments: ["DIR": dir, "SIGNAL": word])
            XCTAssertEqual(child.code, 128 + signal, "SIG\(word): exits with 128 + signal:\n\(child.out)\n\(child.err)")
            XCTAssertEqual(try entries(dir), [".kept-lock", "kept", "reported"], "SIG\(word): exactly the registered paths are gone")
            XCTAssertEqual(try entries(dir + "/kept/sub"), ["file"])
            XCTAssertEqual(try readWholeFile(dir + "/reported"), Array("signal \(signal)\n".utf8), "reported once")
        }
    }

    func testAStagedOutputIsRemovedOnASignalButACommittedOneNeverIs() throws {
        let name = "InterruptionTests/testAStagedOutputIsRemovedOnASignalButACommittedOneNeverIs"
        if ChildTest.isChild(name) {
            let dir = ChildTest.argument("DIR")
            guard let waiter = Self.installAndFindTheWaiter(dir) else { print("no waiting thread"); exit(4) }
            // A committed output: its paths were unregistered before the commit.
            let done = try OutputDirectory(path: dir + "/done")
            let s1 = try done.prepare(force: false, inputs: [])
            writeBytes(s1 + "/data", [1])
            try done.commit(force: false)
            // One prepared and half-written, one abandoned: only the first is still registered.
            let abandoned = try OutputDirectory(path: dir + "/abandoned")
            _ = try abandoned.prepare(force: false, inputs: [])
            abandoned.abandon()
            let open = try OutputDirectory(path: dir + "/open")
            let s2 = try open.prepare(force: false, inputs: [])
            writeBytes(s2 + "/half", [2])
            Self.signal(waiter, SIGHUP)
        }
        let dir = temporaryDirectory(self)
        let child = try ChildTest.run(name, arguments: ["DIR": dir])
        XCTAssertEqual(child.code, 128 + SIGHUP, "\(child.out)\n\(child.err)")
        XCTAssertEqual(try entries(dir), ["done", "reported"], "the open job's staging directory and lock are gone")
        XCTAssertEqual(try entries(dir + "/done"), [OutputProvenance.markerName, "data"])
    }
}
