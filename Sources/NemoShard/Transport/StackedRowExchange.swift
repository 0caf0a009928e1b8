import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// The stacked expert tensors of a fused export from memory (`load --to-hf --format fused`). Each
/// lies in one file of rank 0's, but its rows are in every owner rank's memory: rank 0 writes its
/// own rows with its shards, then every other owner rank streams its rows of each stacked tensor
/// to rank 0 (`Collective.sendStream`: windows of about 8 MiB produced while the previous one is
/// in flight, two windows of memory), and rank 0 writes each piece into its shard as it arrives.
/// Rank 0 is the one writer because it is always one (`--gather` or not), so every stacked file has
/// a writer whatever the output's filesystem; both sides walk the same order, computed from the
/// manifest (ranks ascending, then tensors in key order), so every send meets its receive.
package struct StackedRowExchange {
    package let world: Collective
    /// On rank 0: the rows other ranks send, by rank, then output of rank 0's plan.
    package let remote: [RemoteRows]
    /// This rank's rows, one output per stacked tensor in rank 0's order (empty on rank 0).
    package let rows: TransferPlan
    /// Each output of `rows`: its byte offset within its stacked tensor.
    package let offsets: [Int]

    package static let tag = 14

    /// One byte range of a row block and the pieces that produce exactly it.
    package struct Window {
        package let range: Range<Int>
        package let plan: TransferPlan
    }

    package init(world: Collective, remote: [RemoteRows], rows: TransferPlan, offsets: [Int]) {
        self.world = world
        self.remote = remote
        self.rows = rows
        self.offsets = offsets
    }

    /// Runs after this rank's own shards: rank 0 receives into `writers` (this rank's shard
    /// writers, `s.groups` order; none if it failed), the others send. With `failed`, rank 0 only
    /// drains and the others abandon each stream at once, so nobody waits for the failed rank.
    /// Returns the bytes this rank read and produced (rows only).
    package func run(_ s: HFExport.Share, writers: [SafetensorsWriter], failed: Bool,
                     execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> ExecutionStats {
        world.rank == 0 ? try receive(s, writers: writers, failed: failed) : try send(failed: failed, execute: execute)
    }

    /// Rank 0: each remote row range, from its rank, into its tensor's writer.
    private func receive(_ s: HFExport.Share, writers: [SafetensorsWriter], failed: Bool) throws -> ExecutionStats {
        var place: [Int: (writer: Int, tensor: Int)] = [:]
        for (k, g) in s.groups.enumerated() { for (j, i) in g.enumerated() { place[i] = (k, j) } }
        var failure: Error?
        var stats = ExecutionStats()
        for e in remote {
            let target = place[e.output].flatMap { writers.indices.contains($0.writer) ? (writers[$0.writer], $0.tensor) : nil }
            do {
                let total = try world.receiveStream(from: e.rank, tag: StackedRowExchange.tag) { piece, offset in
                    guard failure == nil, !failed, let target else { return }
                    guard offset + piece.count <= e.count else {
                        throw InternalError("rank \(e.rank) sent more rows of \(s.plan.outputs[e.output].name) than it holds")
                    }
                    try target.0.write(tensor: target.1, offset: e.offset + offset, piece)
                }
                guard total == e.count else {
                    throw InternalError("rank \(e.rank) sent \(total) bytes of \(s.plan.outputs[e.output].name)'s rows, not \(e.count)")
                }
                // Rank 0's own plan counted the whole stacked tensor as produced; these rows were
                // produced by the rank that sent them (and count there).
                stats.bytesProduced -= total
            } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
        return stats
    }

    /// Every other rank: each of its row blocks to rank 0, produced window by window.
    private func send(failed: Bool, execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> ExecutionStats {
        var failure: Error? = failed ? PeerFailure("stopped: this rank failed before sending its stacked expert rows") : nil
        var stats = ExecutionStats()
        for i in rows.outputs.indices {
            let block = rows.keeping(outputs: [i])
            do {
                try world.sendStream(count: block.outputs[0].byteCount, to: 0, tag: StackedRowExchange.tag) { stream in
                    if let failure { throw failure }
                    for w in StackedRowExchange.windows(block, bytes: Communicator.streamUnit) {
                        try stream.emit(count: w.range.count) { buffer in
                            stats.bytesRead += try execute(w.plan, WindowSink(buffer: buffer, window: w.range, offsets: [0])).bytesRead
                        }
                        try Failpoint.check("stacked-rows", rank: world.rank)
                    }
                }
                stats.bytesProduced += block.outputs[0].byteCount
            } catch { failure = failure ?? error }
        }
        if let failure, !failed { throw failure }
        return stats
    }

    /// A one-output plan cut into consecutive byte ranges of about `bytes`, each with the pieces
    /// that produce exactly it (a transposed piece stays whole, so a window may be one larger piece).
    package static func windows(_ plan: TransferPlan, bytes: Int) -> [Window] {
        var out: [Window] = []
        var current = TransferPlan(files: plan.files, fingerprints: plan.fingerprints, outputs: plan.outputs)
        var lo = 0, hi = 0
        for p in plan.pieces.sorted(by: { $0.destOffset < $1.destOffset }) {
            let end = p.destOffset + p.transform.outputBytes(sourceBytes: p.source.count)
            if hi > lo, end - lo > max(bytes, 1) {
                out.append(Window(range: lo..<hi, plan: current))
                current.pieces = []
                lo = hi
            }
            current.pieces.append(p)
            hi = end
        }
        if hi > lo { out.append(Window(range: lo..<hi, plan: current)) }
        return out
    }
}
