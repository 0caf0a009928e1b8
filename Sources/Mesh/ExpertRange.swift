import NemoShardCore
import NemoShardMPI

/// The contiguous run of routed experts `[start, end)` one expert-parallel rank holds.
public struct ExpertRange: Sendable, Equatable, Codable, CustomStringConvertible {
    public let start: Int
    public let end: Int

    package init(start: Int, end: Int) {
        self.start = start
        self.end = end
    }

    /// The reference's split of `experts` over `ranks`: the first `experts % ranks` ranks get one more.
    package init(rank: Int, of ranks: Int, experts: Int) {
        precondition(ranks > 0 && rank >= 0 && rank < ranks && experts >= 0)
        let per = experts / ranks
        let rem = experts % ranks
        if rank < rem {
            start = rank * (per + 1)
            end = start + per + 1
        } else {
            start = rank * per + rem
            end = start + per
        }
    }

    public var count: Int { end - start }
    package var isEmpty: Bool { start == end }
    public func contains(_ expert: Int) -> Bool { expert >= start && expert < end }
    public var description: String { "[\(start),\(end))" }
}
