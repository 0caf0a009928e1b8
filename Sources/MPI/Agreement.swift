import NemoShardCore

/// A job failed on some rank: the first failing rank's message, the same on every rank.
public struct JobFailure: Error, CustomStringConvertible {
    public let rank: Int
    public let message: String
    /// A usage error (exit code 2) rather than bad input or I/O (exit code 1).
    public let isUsage: Bool

    public var description: String { "rank \(rank): \(message)" }
}

/// A rank stopped only because another rank failed (e.g. it would have waited for that rank's
/// data). `agree` reports the other rank's own error instead of this one.
public struct PeerFailure: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension Collective {
    /// Runs `body` on every rank, then agrees: if any rank threw, every rank throws the same
    /// `JobFailure` carrying the lowest failing rank's message (a `PeerFailure` only when no rank
    /// has an error of its own). A collective: all ranks must call it.
    public func agree<T>(_ body: () throws -> T) throws -> T {
        var result: T?
        var status: [UInt8] = []
        do { result = try body() } catch let f as JobFailure {
            status = [f.isUsage ? 2 : 1] + Array(f.message.utf8)
        } catch let u as UsageError {
            status = [2] + Array(u.description.utf8)
        } catch let p as PeerFailure {
            status = [3] + Array(p.message.utf8)
        } catch {
            status = [1] + Array(String(describing: error).utf8)
        }
        try quietBarrier()
        let failed = try allreduce(status.isEmpty ? 0 : 1, .max)
        if failed == 0, let result { return result }
        let all = try allgatherBytes(status)
        guard let r = all.firstIndex(where: { !$0.isEmpty && $0[0] != 3 }) ?? all.firstIndex(where: { !$0.isEmpty }) else {
            throw JobFailure(rank: rank, message: "failed without a message", isUsage: false)
        }
        throw JobFailure(rank: r, message: String(decoding: all[r].dropFirst(), as: UTF8.self), isUsage: all[r][0] == 2)
    }

    /// Runs `body` on `root` only and agrees on its success (others get nil).
    public func agreeOnRoot<T>(_ root: Int = 0, _ body: () throws -> T) throws -> T? {
        try agree { rank == root ? try body() : nil }
    }
}
