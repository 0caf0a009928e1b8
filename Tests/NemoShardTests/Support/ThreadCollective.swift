import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardMPI

/// One job's ranks as threads of the test process: `ThreadWorld.run(ranks:) { world in ... }`
/// runs the body once per rank, each with a `ThreadCollective` whose collectives meet the other
/// threads' in memory (a barrier is an allgather of nothing; messages wait in per-pair, per-tag
/// mailboxes). It lets the jobs' collective logic (agree, the output protocol, RowExchange) run
/// on several ranks without mpirun. Streams (`sendStream`) need MPI: `OutgoingStream` is built
/// on a `Communicator`, so here they throw (StreamTests run them over a real one).
///
/// A rank whose body has ended can never take part again: a collective or receive that needs it
/// throws `ThreadWorld.Departed` at once, and any wait ends after `timeout` seconds, so a bug is
/// a failing test, never a hung suite.
final class ThreadWorld: @unchecked Sendable {
    let size: Int
    /// The node of each rank (`nodeGroup()` splits by it).
    let nodes: [Int]
    let timeout: TimeInterval
    private let condition = NSCondition()
    private var rounds: [Int: [[UInt8]?]] = [:]
    private var taken: [Int: Int] = [:]
    private var mail: [Mailbox: [[UInt8]]] = [:]
    private var children: [String: ThreadWorld] = [:]
    private var departed: Set<Int> = []

    struct Mailbox: Hashable {
        let from: Int, to: Int, tag: Int
    }

    /// A wait that cannot end: a rank it needs has left, or the timeout passed.
    struct Departed: Error, CustomStringConvertible {
        let description: String
    }

    init(size: Int, nodes: [Int]? = nil, timeout: TimeInterval = 60) {
        self.size = size
        self.nodes = nodes ?? [Int](repeating: 0, count: size)
        self.timeout = timeout
    }

    /// Runs `body` on `ranks` threads (rank r gets rank r's collective) and returns each rank's
    /// result, in rank order.
    static func run<T>(ranks: Int, nodes: [Int]? = nil, timeout: TimeInterval = 60,
                       _ body: @escaping @Sendable (ThreadCollective) throws -> T) -> [Result<T, Error>] {
        let world = ThreadWorld(size: ranks, nodes: nodes, timeout: timeout)
        let box = ResultBox<T>(count: ranks)
        let group = DispatchGroup()
        for r in 0..<ranks {
            group.enter()
            let thread = Thread {
                let result = Result { try body(ThreadCollective(world: world, rank: r)) }
                world.leave(r)
                world.condition.lock()
                box.results[r] = result
                world.condition.unlock()
                group.leave()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        group.wait()
        return box.results.map { $0! }
    }

    /// Like `run`, but every rank must succeed: returns the values or throws rank order's first error.
    static func values<T>(ranks: Int, nodes: [Int]? = nil, _ body: @escaping @Sendable (ThreadCollective) throws -> T) throws -> [T] {
        try run(ranks: ranks, nodes: nodes, body).map { try $0.get() }
    }

    private func leave(_ rank: Int) {
        condition.lock()
        departed.insert(rank)
        condition.broadcast()
        condition.unlock()
    }

    /// Waits (lock held) until `ready`, or throws when `blocked` names a rank that left or time runs out.
    private func wait(_ what: String, until ready: () -> Bool, blocked: () -> Int?) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !ready() {
            if let r = blocked() { throw Departed(description: "\(what): rank \(r) has left the job") }
            if !condition.wait(until: deadline) && !ready() {
                throw Departed(description: "\(what): no progress for \(timeout) s")
            }
        }
    }

    /// Collective round `round`: every rank's bytes, in rank order, on every rank.
    fileprivate func exchange(_ mine: [UInt8], rank: Int, round: Int) throws -> [[UInt8]] {
        condition.lock()
        defer { condition.unlock() }
        var parts = rounds[round] ?? Array(repeating: nil, count: size)
        parts[rank] = mine
        rounds[round] = parts
        condition.broadcast()
        try wait("collective \(round) of rank \(rank)", until: { !rounds[round]!.contains { $0 == nil } },
                 blocked: { rounds[round]!.indices.first { rounds[round]![$0] == nil && departed.contains($0) } })
        let all = rounds[round]!.map { $0! }
        taken[round, default: 0] += 1
        if taken[round] == size {
            rounds[round] = nil
            taken[round] = nil
        }
        return all
    }

    fileprivate func post(_ bytes: [UInt8], from: Int, to: Int, tag: Int) {
        condition.lock()
        mail[Mailbox(from: from, to: to, tag: tag), default: []].append(bytes)
        condition.broadcast()
        condition.unlock()
    }

    fileprivate func take(from: Int, to: Int, tag: Int) throws -> [UInt8] {
        condition.lock()
        defer { condition.unlock() }
        let box = Mailbox(from: from, to: to, tag: tag)
        try wait("rank \(to) receiving from rank \(from) (tag \(tag))", until: { !(mail[box]?.isEmpty ?? true) },
                 blocked: { departed.contains(from) ? from : nil })
        return mail[box]!.removeFirst()
    }

    /// The sub-world `key` (made by the first member that asks, shared by all of them).
    fileprivate func child(_ key: String, size: Int, nodes: [Int]) -> ThreadWorld {
        condition.lock()
        defer { condition.unlock() }
        if let c = children[key] { return c }
        let c = ThreadWorld(size: size, nodes: nodes, timeout: timeout)
        children[key] = c
        return c
    }
}

/// The ranks' results, filled by their threads.
private final class ResultBox<T>: @unchecked Sendable {
    var results: [Result<T, Error>?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
}

/// One rank of a `ThreadWorld`.
final class ThreadCollective: Collective, @unchecked Sendable {
    let world: ThreadWorld
    let rank: Int
    var size: Int { world.size }
    /// Collectives this rank has entered on this communicator (every rank enters the same ones).
    private var round = 0

    init(world: ThreadWorld, rank: Int) {
        self.world = world
        self.rank = rank
    }

    /// Every rank's `bytes`, in rank order.
    func exchange(_ bytes: [UInt8]) throws -> [[UInt8]] {
        round += 1
        return try world.exchange(bytes, rank: rank, round: round)
    }

    func barrier() throws { _ = try exchange([]) }
    func quietBarrier() throws { _ = try exchange([]) }

    func broadcast(_ bytes: [UInt8], root: Int) throws -> [UInt8] {
        try exchange(rank == root ? bytes : [])[root]
    }

    func allreduce(_ values: [Int64], _ op: Communicator.ReduceOp) throws -> [Int64] {
        let all = try exchange(values.withUnsafeBytes { Array($0) }).map { bytes in
            bytes.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) }
        }
        guard all.allSatisfy({ $0.count == values.count }) else { throw InternalError("allreduce: ranks gave different counts") }
        return values.indices.map { i in
            let column = all.map { $0[i] }
            switch op {
            case .sum: return column.reduce(0, +)
            case .max: return column.max()!
            case .min: return column.min()!
            }
        }
    }

    func allgather(_ values: [Int64]) throws -> [Int64] {
        let all = try exchange(values.withUnsafeBytes { Array($0) })
        guard all.allSatisfy({ $0.count == values.count * 8 }) else { throw InternalError("allgather: ranks gave different counts") }
        return all.flatMap { bytes in bytes.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) } }
    }

    func allgatherBytes(_ bytes: [UInt8]) throws -> [[UInt8]] { try exchange(bytes) }

    func send(_ bytes: UnsafeRawBufferPointer, to dest: Int, tag: Int) throws {
        guard dest >= 0, dest < size, dest != rank else { throw InternalError("send from rank \(rank) to rank \(dest)") }
        world.post(Array(bytes), from: rank, to: dest, tag: tag)
    }

    func receive(from source: Int, tag: Int) throws -> [UInt8] {
        guard source >= 0, source < size, source != rank else { throw InternalError("receive on rank \(rank) from rank \(source)") }
        return try world.take(from: source, to: rank, tag: tag)
    }

    func sendStream(count: Int, to dest: Int, tag: Int, produce: (OutgoingStream) throws -> Void) throws {
        throw UsageError("ThreadCollective has no streams (an OutgoingStream needs an MPI communicator)")
    }

    func receiveStream(from source: Int, tag: Int, _ body: (UnsafeRawBufferPointer, Int) throws -> Void) throws -> Int {
        throw UsageError("ThreadCollective has no streams (an OutgoingStream needs an MPI communicator)")
    }

    /// Ranks with the same `color` form a new communicator, ordered by `key` (then by rank), as
    /// `MPI_Comm_split`.
    func split(color: Int, key: Int) throws -> Collective {
        let me = round + 1
        let all = try exchange(Array("\(color) \(key)".utf8)).map { bytes -> (Int, Int) in
            let parts = String(decoding: bytes, as: UTF8.self).split(separator: " ").compactMap { Int($0) }
            return (parts[0], parts[1])
        }
        let members = all.indices.filter { all[$0].0 == color }.sorted { (all[$0].1, $0) < (all[$1].1, $1) }
        let sub = world.child("split \(me) color \(color)", size: members.count, nodes: members.map { world.nodes[$0] })
        return ThreadCollective(world: sub, rank: members.firstIndex(of: rank)!)
    }

    func nodeGroup() throws -> Collective { try split(color: world.nodes[rank], key: rank) }
}
