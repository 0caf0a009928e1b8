import Dispatch
import Foundation
import Glibc
import XCTest
@testable import NemoShardCore

/// `runAlongside`: the two parts run at once, the foreground on the calling thread (MPI's), and
/// nothing is returned or thrown before both are done.
final class AlongsideTests: XCTestCase {
    struct Failed: Error, Equatable { let who: String }

    final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        func set() { lock.lock(); value = true; lock.unlock() }
        var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    }

    func testBothPartsRunAtOnceAndTheForegroundStaysOnTheCallingThread() throws {
        let caller = pthread_self()
        let handshake = DispatchSemaphore(value: 0)
        var foregroundThread: pthread_t?
        var backgroundThread: pthread_t?
        let result = try runAlongside({ () -> Int in
            backgroundThread = pthread_self()
            // Only a foreground running at the same time can let this through.
            XCTAssertEqual(handshake.wait(timeout: .now() + 10), .success, "the foreground never ran beside the background")
            return 42
        }, while: {
            foregroundThread = pthread_self()
            handshake.signal()
        })
        XCTAssertEqual(result, 42)
        XCTAssertEqual(foregroundThread.map { pthread_equal($0, caller) }, 1, "the foreground ran on the caller's thread")
        XCTAssertEqual(backgroundThread.map { pthread_equal($0, caller) }, 0, "the background ran on a thread of its own")
    }

    func testAnErrorOfEitherComesBackOnlyAfterBothEnded() {
        let backgroundDone = Flag()
        XCTAssertThrowsError(try runAlongside({ usleep(100_000); backgroundDone.set() }, while: { throw Failed(who: "foreground") })) {
            XCTAssertEqual($0 as? Failed, Failed(who: "foreground"))
            XCTAssertTrue(backgroundDone.isSet, "thrown before the background ended")
        }
        let foregroundDone = Flag()
        XCTAssertThrowsError(try runAlongside({ throw Failed(who: "background") }, while: { usleep(100_000); foregroundDone.set() })) {
            XCTAssertEqual($0 as? Failed, Failed(who: "background"))
            XCTAssertTrue(foregroundDone.isSet)
        }
        XCTAssertThrowsError(try runAlongside({ throw Failed(who: "background") }, while: { throw Failed(who: "foreground") })) {
            XCTAssertEqual($0 as? Failed, Failed(who: "foreground"), "the foreground's error is the one reported")
        }
    }
}
