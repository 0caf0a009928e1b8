import Foundation
import NemoShardCore

/// A job failed on some rank: that rank's error, typed and unchanged, the same on every rank.
public struct JobFailure: Error, CustomStringConvertible, Sendable, NemoShardErrorConvertible {
    /// The lowest rank that failed with an error of its own.
    public let rank: Int
    public let error: NemoShardError

    package init(rank: Int, error: NemoShardError) {
        self.rank = rank
        self.error = error
    }

    public var description: String { "rank \(rank): \(error)" }
    package var nemoShardError: NemoShardError { error }
}

/// A rank stopped only because another rank failed (e.g. it would have waited for that rank's
/// data). `agree` reports the other rank's own error instead of this one.
package struct PeerFailure: Error, CustomStringConvertible, NemoShardErrorConvertible {
    package let message: String
    package init(_ message: String) { self.message = message }
    package var description: String { message }
    package var nemoShardError: NemoShardError { .peer(message) }
}

extension MPIError: NemoShardErrorConvertible {
    package var nemoShardError: NemoShardError { .other(type: "MPIError", message: description) }
}

/// What a rank reports to `agree`: its error, and the rank it came from (an inner `agree`'s
/// failing rank stays the one named).
private struct RankError: Codable {
    let rank: Int
    let error: NemoShardError
}

extension Collective {
    /// Runs `body` on every rank, then agrees: if any rank threw, every rank throws the same
    /// `JobFailure` carrying the lowest failing rank's error, typed (a peer failure only when no
    /// rank has an error of its own). A collective: all ranks must call it.
    package func agree<T>(_ body: () throws -> T) throws -> T {
        var result: T?
        var report: [UInt8] = []
        do { result = try body() } catch {
            let failure = (error as? JobFailure).map { RankError(rank: $0.rank, error: $0.error) }
                ?? RankError(rank: rank, error: NemoShardError(error))
            report = Array((try? JSONEncoder().encode(failure)) ?? Data())
            if report.isEmpty { report = Array("{}".utf8) }
        }
        try quietBarrier()
        let failed = try allreduce(report.isEmpty ? 0 : 1, .max)
        if failed == 0, let result { return result }
        let reports = try allgatherBytes(report).enumerated().compactMap { r, bytes -> RankError? in
            guard !bytes.isEmpty else { return nil }
            return (try? JSONDecoder().decode(RankError.self, from: Data(bytes)))
                ?? RankError(rank: r, error: .internal(InternalError("rank \(r)'s error could not be decoded")))
        }
        guard let first = reports.first(where: { !$0.error.isPeer }) ?? reports.first else {
            throw JobFailure(rank: rank, error: .internal(InternalError("a rank failed without an error")))
        }
        throw JobFailure(rank: first.rank, error: first.error)
    }

    /// Runs `body` on `root` only and agrees on its success (others get nil).
    package func agreeOnRoot<T>(_ root: Int = 0, _ body: () throws -> T) throws -> T? {
        try agree { rank == root ? try body() : nil }
    }
}
