/// The one greedy balancer: items are handed out one by one, each to the bin with the least weight
/// so far (ties: the lowest bin). Deterministic, so every rank computes the same assignment.
/// Used for the non-expert tensors of a per-rank checkpoint (`Manifest.assignHolders`, in tensor
/// order) and for the output files of `consolidate` (`ConsolidateJob.assignFiles`, largest first).
package enum Balancer {
    /// The bin (0..<bins) of each item, by index. With `largestFirst` the items are taken heaviest
    /// first (ties: the lower index first); otherwise in the order given. `bins` below 1 counts as 1.
    package static func assign(weights: [Int], bins: Int, largestFirst: Bool = false) -> [Int] {
        var order = Array(weights.indices)
        if largestFirst { order.sort { (weights[$0], -$0) > (weights[$1], -$1) } }
        var load = [Int](repeating: 0, count: max(bins, 1))
        var bin = [Int](repeating: 0, count: weights.count)
        for i in order {
            let b = load.indices.min { (load[$0], $0) < (load[$1], $1) }!
            bin[i] = b
            load[b] += weights[i]
        }
        return bin
    }
}
