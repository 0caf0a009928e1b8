import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardMPI

/// The in-process test collective itself: it must behave as MPI does for the calls the jobs make,
/// or the tests built on it prove nothing.
final class ThreadCollectiveTests: XCTestCase {
    func testCollectivesGiveEveryRankTheSameAnswer() throws {
        let results = try ThreadWorld.values(ranks: 4) { world -> [String] in
            let sum = try world.allreduce([Int64(world.rank), 1], .sum)
            let max = try world.allreduce(Int64(world.rank * 10), .max)
            let min = try world.allreduce(Int64(world.rank + 3), .min)
            let root: String = try world.broadcast(world.rank == 2 ? "from two" : nil, root: 2)
            let names: [String] = try world.allgather("r\(world.rank)")
            try world.barrier()
            return ["\(sum)", "\(max)", "\(min)", root, names.joined(separator: ",")]
        }
        for (r, values) in results.enumerated() {
            XCTAssertEqual(values, ["[6, 4]", "30", "3", "from two", "r0,r1,r2,r3"], "rank \(r)")
        }
    }

    func testAgreeGivesEveryRankTheLowestFailingRanksError() {
        let results = ThreadWorld.run(ranks: 3) { world -> Int in
            try world.agree {
                if world.rank >= 1 { throw CheckpointError(path: "/x\(world.rank)", "bad on rank \(world.rank)") }
                return world.rank
            }
        }
        for (r, result) in results.enumerated() {
            XCTAssertThrowsError(try result.get(), "rank \(r)") { error in
                let failure = error as? JobFailure
                XCTAssertEqual(failure?.rank, 1, "rank \(r): \(error)")
                XCTAssertTrue("\(error)".contains("bad on rank 1"), "rank \(r): \(error)")
            }
        }
    }

    func testMessagesArriveInOrderPerSenderAndTag() throws {
        let got = try ThreadWorld.values(ranks: 3) { world -> [String] in
            if world.rank > 0 {
                for i in 0..<5 {
                    try Array("\(world.rank):\(i)".utf8).withUnsafeBytes { try world.send($0, to: 0, tag: 7) }
                }
                try Array("other".utf8).withUnsafeBytes { try world.send($0, to: 0, tag: 8) }
                return []
            }
            // Tag 8 first: a receive picks its own tag, whatever arrived before it.
            var out = try [1, 2].map { String(decoding: try world.receive(from: $0, tag: 8), as: UTF8.self) }
            for source in [2, 1] {
                for _ in 0..<5 { out.append(String(decoding: try world.receive(from: source, tag: 7), as: UTF8.self)) }
            }
            return out
        }
        XCTAssertEqual(got[0], ["other", "other", "2:0", "2:1", "2:2", "2:3", "2:4", "1:0", "1:1", "1:2", "1:3", "1:4"])
    }

    func testSplitAndNodeGroupsAreOrderedByKeyThenRank() throws {
        let got = try ThreadWorld.values(ranks: 5, nodes: [0, 0, 1, 1, 1]) { world -> [Int] in
            // Colour by parity, key reversing the order.
            let sub = try world.split(color: world.rank % 2, key: -world.rank)
            let members: [Int] = try sub.allgather(world.rank)
            let node = try world.nodeGroup()
            let nodeMembers: [Int] = try node.allgather(world.rank)
            return [sub.rank, sub.size] + members + [-1, node.rank, node.size] + nodeMembers
        }
        XCTAssertEqual(got[0], [2, 3, 4, 2, 0, -1, 0, 2, 0, 1])
        XCTAssertEqual(got[1], [1, 2, 3, 1, -1, 1, 2, 0, 1])
        XCTAssertEqual(got[4], [0, 3, 4, 2, 0, -1, 2, 3, 2, 3, 4])
    }

    func testARankThatLeftEndsTheOthersWaitInsteadOfHangingThem() {
        let start = Date()
        let results = ThreadWorld.run(ranks: 3) { world -> Int in
            if world.rank == 1 { return 1 }  // leaves without the barrier
            try world.barrier()
            return world.rank
        }
        XCTAssertEqual(try results[1].get(), 1)
        for r in [0, 2] {
            XCTAssertThrowsError(try results[r].get()) { XCTAssertTrue("\($0)".contains("rank 1 has left"), "\($0)") }
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
        let receive = ThreadWorld.run(ranks: 2) { world -> [UInt8] in
            world.rank == 0 ? try world.receive(from: 1, tag: 1) : []
        }
        XCTAssertThrowsError(try receive[0].get())
    }

    func testStreamsAreRefusedNotFaked() {
        let results = ThreadWorld.run(ranks: 2) { world -> Int in
            if world.rank == 0 {
                try world.sendStream(count: 4, to: 1, tag: 3) { _ in XCTFail("no stream is produced") }
                return 0
            }
            return try world.receiveStream(from: 0, tag: 3) { _, _ in }
        }
        for r in results { XCTAssertThrowsError(try r.get()) { XCTAssertTrue("\($0)".contains("no streams"), "\($0)") } }
    }
}
