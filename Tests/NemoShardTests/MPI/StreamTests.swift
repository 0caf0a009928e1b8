import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardMPI

/// `Communicator.sendStream` / `receiveStream` / `OutgoingStream` and `send` / `receive` over a
/// real MPI communicator without mpirun: a child process (`ChildTest`) starts MPI as a world of
/// one and streams to itself. With messages cut to 7 bytes (`MPIRuntime.maxChunk`) every piece
/// leaves at once (MPI sends that small to oneself complete before they are received), so one
/// thread can send a whole stream and then receive it. (`ThreadCollective` cannot carry streams:
/// an `OutgoingStream` is made from a `Communicator`.)
final class StreamTests: XCTestCase {
    static let unit = 7

    /// In the child: MPI started, pieces of `unit` bytes; `body` runs; MPI stopped.
    static func withSelfWorld(_ body: (Communicator) throws -> Void) rethrows {
        MPIRuntime.maxChunk = unit
        let world = try! MPIRuntime.startCommunicator()
        defer { MPIRuntime.stop() }
        XCTAssertEqual(world.size, 1)
        XCTAssertEqual(Communicator.streamUnit, unit)
        try body(world)
    }

    /// Runs `name` in a child with MPI's shared-memory transports only, and requires it to pass.
    func runChild(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let child = try ChildTest.run("StreamTests/" + name, env: ["OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "self,vader",
                                                                  "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"])
        XCTAssertEqual(child.code, 0, "the child's checks:\n\(child.out)\n\(child.err)", file: file, line: line)
        XCTAssertTrue(child.out.contains("Executed 1 test, with 0 failures"), child.out, file: file, line: line)
    }

    static func pattern(_ n: Int, seed: Int = 1) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed) } }

    /// Receives a stream from rank 0 (this process), returning its pieces (offset, bytes) and the
    /// error it ended with.
    static func receive(_ world: Communicator, tag: Int, failOn: Int? = nil) -> (pieces: [(Int, [UInt8])], total: Int?, error: Error?) {
        var pieces: [(Int, [UInt8])] = []
        do {
            let total = try world.receiveStream(from: 0, tag: tag) { piece, offset in
                pieces.append((offset, Array(piece)))
                if pieces.count == failOn { throw CheckpointError(path: "sink", "the receiver's own failure") }
            }
            return (pieces, total, nil)
        } catch {
            return (pieces, nil, error)
        }
    }

    func testAStreamArrivesWholeInOrderInPiecesOfAtMostTheUnit() throws {
        guard ChildTest.isChild("StreamTests/testAStreamArrivesWholeInOrderInPiecesOfAtMostTheUnit") else {
            return try runChild("testAStreamArrivesWholeInOrderInPiecesOfAtMostTheUnit")
        }
        try Self.withSelfWorld { world in
            let data = Self.pattern(1000)
            var spans: [Int] = []
            try world.sendStream(count: data.count, to: 0, tag: 5) { stream in
                var at = 0
                // Spans of any size (an empty one is nothing), each filled by the producer in place.
                for n in [1, 300, 0, 13, 686] {
                    try stream.emit(count: n) { buffer in
                        XCTAssertEqual(buffer.count, n)
                        buffer.copyBytes(from: data[at..<(at + n)])
                    }
                    at += n
                    spans.append(stream.sent)
                }
                XCTAssertEqual(stream.count, 1000)
            }
            XCTAssertEqual(spans, [1, 301, 301, 314, 1000])
            let got = Self.receive(world, tag: 5)
            XCTAssertNil(got.error)
            XCTAssertEqual(got.total, 1000)
            // Consecutive pieces, in order, none larger than the unit; a span is cut into unit-sized
            // messages on its own (13 = 7 + 6), never joined with the next.
            XCTAssertEqual(got.pieces.map(\.0), got.pieces.indices.map { i in got.pieces[..<i].reduce(0) { $0 + $1.1.count } })
            XCTAssertTrue(got.pieces.allSatisfy { $0.1.count <= Self.unit && !$0.1.isEmpty })
            XCTAssertEqual(got.pieces.map(\.1.count).prefix(3), [1, 7, 7])
            XCTAssertEqual(got.pieces.count, 1 + 43 + 2 + 98, "1, 300 = 42 x 7 + 6, 13 = 7 + 6, 686 = 98 x 7")
            XCTAssertEqual(got.pieces.flatMap(\.1), data)
            // An empty stream: nothing but its length.
            try world.sendStream(count: 0, to: 0, tag: 6) { _ in }
            let empty = Self.receive(world, tag: 6)
            XCTAssertEqual(empty.total, 0)
            XCTAssertTrue(empty.pieces.isEmpty)
            // Plain messages are cut to the unit too and arrive whole.
            let message = Self.pattern(50, seed: 9)
            try message.withUnsafeBytes { try world.send($0, to: 0, tag: 7) }
            XCTAssertEqual(try world.receive(from: 0, tag: 7), message)
        }
    }

    func testAProducerThatFailsAbandonsTheStreamAndTheReceiverIsTold() throws {
        guard ChildTest.isChild("StreamTests/testAProducerThatFailsAbandonsTheStreamAndTheReceiverIsTold") else {
            return try runChild("testAProducerThatFailsAbandonsTheStreamAndTheReceiverIsTold")
        }
        try Self.withSelfWorld { world in
            struct ReadFailed: Error {}
            // The producer's own error: rethrown to the sender; the receiver gets what was sent, then a peer failure.
            XCTAssertThrowsError(try world.sendStream(count: 20, to: 0, tag: 1) { stream in
                try stream.emit(count: 9) { $0.copyBytes(from: Self.pattern(9)) }
                throw ReadFailed()
            }) { XCTAssertTrue($0 is ReadFailed, "\($0)") }
            var got = Self.receive(world, tag: 1)
            XCTAssertEqual(got.pieces.flatMap(\.1), Self.pattern(9))
            XCTAssertTrue(got.error is PeerFailure, "\(String(describing: got.error))")
            XCTAssertEqual(got.error.map { "\($0)" }, "stopped: rank 0 could not produce the data it was sending")
            // More than announced: refused before anything beyond it is sent.
            XCTAssertThrowsError(try world.sendStream(count: 10, to: 0, tag: 2) { stream in
                try stream.emit(count: 6) { $0.copyBytes(from: Self.pattern(6)) }
                try stream.emit(count: 6) { _ in XCTFail("an overrunning span is never filled") }
            }) { XCTAssertEqual(($0 as? InternalError)?.message, "stream to rank 0 overruns its announced 10 bytes") }
            got = Self.receive(world, tag: 2)
            XCTAssertEqual(got.pieces.flatMap(\.1).count, 6)
            XCTAssertTrue(got.error is PeerFailure)
            // Fewer than announced.
            XCTAssertThrowsError(try world.sendStream(count: 10, to: 0, tag: 3) { stream in
                try stream.emit(count: 4) { $0.copyBytes(from: Self.pattern(4)) }
            }) { XCTAssertEqual(($0 as? InternalError)?.message, "stream to rank 0 ended after 4 of 10 bytes") }
            got = Self.receive(world, tag: 3)
            XCTAssertEqual(got.pieces.flatMap(\.1).count, 4)
            XCTAssertTrue(got.error is PeerFailure)
        }
    }

    func testAnAbandonedStreamLeavesTheNextStreamOnItsTagWhole() throws {
        guard ChildTest.isChild("StreamTests/testAnAbandonedStreamLeavesTheNextStreamOnItsTagWhole") else {
            return try runChild("testAnAbandonedStreamLeavesTheNextStreamOnItsTagWhole")
        }
        try Self.withSelfWorld { world in
            struct ReadFailed: Error {}
            // Everything is sent before anything is received: the receiver's second receive of the
            // abandoned stream matches the next stream's length message, which must not be lost.
            let second = Self.pattern(20, seed: 3)
            XCTAssertThrowsError(try world.sendStream(count: 30, to: 0, tag: 8) { stream in
                try stream.emit(count: 9) { $0.copyBytes(from: Self.pattern(9)) }
                throw ReadFailed()
            })
            try world.sendStream(count: second.count, to: 0, tag: 8) { stream in
                try stream.emit(count: second.count) { $0.copyBytes(from: second) }
            }
            let first = Self.receive(world, tag: 8)
            XCTAssertEqual(first.pieces.flatMap(\.1), Self.pattern(9))
            XCTAssertTrue(first.error is PeerFailure, "\(String(describing: first.error))")
            XCTAssertEqual(world.earlyLengths[StreamKey(source: 0, tag: 8)], 20, "the next stream's length, kept")
            let next = Self.receive(world, tag: 8)
            XCTAssertNil(next.error)
            XCTAssertEqual(next.total, 20)
            XCTAssertEqual(next.pieces.flatMap(\.1), second)
            XCTAssertTrue(world.earlyLengths.isEmpty)
        }
    }

    func testAReceiverThatFailsStillTakesTheWholeStream() throws {
        guard ChildTest.isChild("StreamTests/testAReceiverThatFailsStillTakesTheWholeStream") else {
            return try runChild("testAReceiverThatFailsStillTakesTheWholeStream")
        }
        try Self.withSelfWorld { world in
            let first = Self.pattern(40), second = Self.pattern(30, seed: 5)
            for data in [first, second] {
                try world.sendStream(count: data.count, to: 0, tag: 4) { stream in
                    try stream.emit(count: data.count) { $0.copyBytes(from: data) }
                }
            }
            // The body fails on the second piece: its error comes back, and only after the rest of
            // the stream was taken, so the next stream on the tag starts where it should.
            let failed = Self.receive(world, tag: 4, failOn: 2)
            XCTAssertEqual(failed.error.map { "\($0)" }, "sink: the receiver's own failure")
            XCTAssertEqual(failed.pieces.count, 2, "the body sees no piece after its failure")
            let next = Self.receive(world, tag: 4)
            XCTAssertNil(next.error)
            XCTAssertEqual(next.pieces.flatMap(\.1), second)
        }
    }
}
