import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// Writes a per-rank checkpoint (load --out, reshard --out): each rank runs its plan into its own
/// rank file (named and labelled by the manifest's rules), every staging owner writes
/// `nemoshard.json`, and the output is committed with the output protocol.
package enum RankFileWriter {
    /// When the rank's file was written (before sync and commit), and what the execution did.
    package struct Outcome {
        package let execution: ExecutionStats
        package let writtenAt: Double
    }

    /// Collective. Fills `stats` (bytes read, produced, written, files, peak RSS).
    package static func write(_ plan: TransferPlan, manifest: Manifest, range: ExpertRange, to output: String, force: Bool,
                      inputs: [String], world: Collective, stats: inout RankStats,
                      execute: (TransferPlan, TensorSink) throws -> ExecutionStats) throws -> Outcome {
        let staged = try StagedOutput.prepare(output, force: force, inputs: inputs, world: world)
        let fileName = Manifest.rankFileName(world.rank, of: world.size)
        var writtenAt = monotonicSeconds()
        var bytesWritten = 0
        let exec = try staged.run(write: {
            let w = try SafetensorsWriter(path: staged.stagingPath(fileName), specs: plan.outputs,
                                          metadata: manifest.rankFileMetadata(rank: world.rank, range: range, specs: plan.outputs))
            bytesWritten = w.fileSize
            let e = try execute(plan, FileSink(writer: w))
            writtenAt = monotonicSeconds()
            return (e, [w])
        }, finish: {
            try writeFileAtomically(staged.stagingPath(Manifest.fileName), Array(manifest.toJSON().serialized(indent: 1).utf8))
        })
        stats.bytesRead = exec.bytesRead
        stats.bytesProduced = exec.bytesProduced
        stats.bytesWritten = bytesWritten
        stats.files = 1
        stats.peakRSS = ProcessFacts.peakResidentBytes()
        return Outcome(execution: exec, writtenAt: writtenAt)
    }
}
