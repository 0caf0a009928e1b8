import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// Runs every rank's reshard plan when some old rank files are on other nodes' disks: each rank
/// executes the pieces it can read itself; then each piece a rank cannot read travels over MPI
/// from that file's reader, in one global order (every rank walks the same list, so blocking
/// sends always meet their receives). On a shared filesystem there is nothing to exchange and the
/// plan runs as it is.
package struct RowExchange {
    package let source: ShardedCheckpoint
    package let world: Collective
    /// Every rank's plan (sources: the old rank files), computed the same on every rank.
    package let plans: [TransferPlan]

    package static let tag = 12
    /// Largest piece sent in one message (bounds the memory a transfer needs).
    package static let unit = PlanExecutor.defaultChunkBytes

    /// The pieces of rank `r`'s plan it cannot read itself, cut to at most `unit` bytes, in plan order.
    package func remotePieces(of r: Int) -> [Piece] {
        var out: [Piece] = []
        for p in plans[r].pieces where !source.canRead(rank: r, file: p.source.file) {
            out += p.split(max: RowExchange.unit)
        }
        return out
    }

    /// Runs this rank's plan into `sink`; bytes read for other ranks count as this rank's reads.
    /// `progress` gets the cumulative bytes of the part this rank reads itself (the executor's).
    package func run(executor: PlanExecutor, into sink: TensorSink, progress: (@Sendable (Int) -> Void)? = nil) throws -> ExecutionStats {
        let me = world.rank
        var local = plans[me]
        local.pieces = local.pieces.filter { source.canRead(rank: me, file: $0.source.file) }
        let remote = (0..<world.size).map(remotePieces(of:))
        guard remote.contains(where: { !$0.isEmpty }) else { return try executor.run(local, into: sink, progress: progress) }
        var stats = ExecutionStats()
        var failure: Error?
        do { stats = try executor.run(local, into: sink, progress: progress) } catch { failure = error }
        // A rank that failed would never answer: nobody exchanges unless every local part succeeded.
        if try world.allreduce(failure == nil ? 0 : 1, .max) != 0 {
            throw failure ?? PeerFailure("stopped: another rank failed while reading its own rows")
        }
        var opened: [Int: SystemFile] = [:]
        for d in 0..<world.size {
            for p in remote[d] {
                let reader = source.readers[p.source.file]
                if me == reader {
                    var message = [UInt8](repeating: 0, count: 1 + p.source.count)
                    do {
                        guard p.transform == .copy else { throw InternalError("reshard pieces are copies") }
                        let file = try opened[p.source.file] ?? SystemFile(readingAt: source.path(ofRank: p.source.file))
                        if opened[p.source.file] == nil, source.fingerprints.indices.contains(p.source.file),
                           let want = source.fingerprints[p.source.file] {
                            try file.check(against: want)
                        }
                        opened[p.source.file] = file
                        try message.withUnsafeMutableBytes {
                            try file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[1...]), at: p.source.offset)
                        }
                        stats.bytesRead += p.source.count
                    } catch {
                        failure = failure ?? error
                        message = [1]
                    }
                    try message.withUnsafeBytes { try world.send($0, to: d, tag: RowExchange.tag) }
                } else if me == d {
                    let m = try world.receive(from: reader, tag: RowExchange.tag)
                    guard failure == nil else { continue }
                    guard m.count == 1 + p.source.count, m.first == 0 else {
                        failure = PeerFailure("stopped: rank \(reader) could not send rows of \(source.manifest.ranks[p.source.file].file)")
                        continue
                    }
                    do {
                        try m.withUnsafeBytes { try sink.write(output: p.output, offset: p.destOffset, UnsafeRawBufferPointer(rebasing: $0[1...])) }
                        stats.bytesProduced += p.source.count
                    } catch { failure = error }
                }
            }
        }
        if let failure { throw failure }
        return stats
    }
}
