import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// Executes a rank's plan into its own file inside an output's staging directory, then agrees,
/// commits the file, and lets the staging owners finish (manifest or index) and swap the directory
/// in. On any rank's failure every temporary is removed and the target is left as it was.
///
/// Node-local disks (the same output path on every node, each node its own disk): rank 0 leaves a
/// token in its staging directory; the leader of each node that cannot read it prepares the same
/// staging name on its own disk. Every owner writes a complete manifest, and the commit is
/// collective: no node commits unless every node staged and finished.
package struct StagedOutput {
    /// Who writes into the output.
    package enum Writers {
        /// Every rank writes its own file; node-local disks are fine (load, reshard).
        case everyRank
        /// Every rank writes, and the files only form a checkpoint together (a Hugging Face export):
        /// the output must be on a filesystem every node shares.
        case everyRankShared
        /// Only ranks that can write into rank 0's staging directory write (`--gather`): rank 0,
        /// and the ranks that see the same directory (its node, or every node on a shared
        /// filesystem) and may create files in it. Nothing is staged anywhere else; the other
        /// ranks send their data to a writer.
        case gathered
    }

    /// The job's staging directory (the same path on every rank).
    package let staging: String
    /// This rank's handle on the output (lock, commit) if it owns a staging directory: rank 0, and
    /// node leaders on node-local disks; nil elsewhere.
    package let directory: OutputDirectory?
    package let force: Bool
    package let world: Collective
    /// Whether this rank may create files in `staging` (always, except in `.gathered` mode).
    package let canWrite: Bool

    package static let tokenName = ".nemoshard-node-token"

    /// Every rank checks the name; rank 0 prepares (lock, checks against `inputs`, staging) and
    /// sends the staging path to the others; node leaders that cannot see it prepare their own.
    package static func prepare(_ path: String, force: Bool, inputs: [String], world: Collective,
                        writers: Writers = .everyRank) throws -> StagedOutput {
        let out = try world.agree { try OutputDirectory(path: path) }
        let token = String(UInt64.random(in: .min ... .max), radix: 16)
        let staging = try world.agreeOnRoot { () -> String in
            let dir = try out.prepare(force: force, inputs: inputs)
            try writeFileAtomically(FS.join(dir, tokenName), Array(token.utf8))
            return dir
        }
        let shared: String = try world.broadcast(staging, root: 0)
        let directory = world.rank == 0 ? out : nil
        guard world.size > 1 else {
            FS.removeFile(FS.join(shared, tokenName))
            return StagedOutput(staging: shared, directory: directory, force: force, world: world, canWrite: true)
        }
        let sharedToken: String = try world.broadcast(token, root: 0)
        func seesStaging() -> Bool {
            let seen = try? readWholeFile(FS.join(shared, tokenName), limit: 4096)
            return seen.map { String(decoding: $0, as: UTF8.self) } == sharedToken
        }
        if writers == .gathered {
            let canWrite = world.rank == 0 || (seesStaging() && canCreateFile(in: shared, rank: world.rank))
            try world.quietBarrier()  // everyone has looked before the token goes
            if world.rank == 0 { FS.removeFile(FS.join(shared, tokenName)) }
            return StagedOutput(staging: shared, directory: directory, force: force, world: world, canWrite: canWrite)
        }
        let node = try world.nodeGroup()
        let leader = node.rank == 0
        let isLocal = leader && world.rank != 0 && !seesStaging()
        let localNodes = try world.allreduce(isLocal ? 1 : 0, .sum)
        var own = directory
        do {
            _ = try world.agree {
                if localNodes > 0, writers == .everyRankShared {
                    throw UsageError("output \(path) is on node-local storage (\(localNodes) node(s) cannot see rank 0's staging directory); a Hugging Face export needs a shared filesystem", remedy: .gather)
                }
                if isLocal {
                    let mine = try OutputDirectory(path: path)
                    _ = try mine.prepare(force: force, inputs: inputs, stagingName: FS.baseName(shared))
                    own = mine
                }
            }
        } catch {
            own?.abandon()
            throw error
        }
        if world.rank == 0 { FS.removeFile(FS.join(shared, tokenName)) }
        return StagedOutput(staging: shared, directory: own, force: force, world: world, canWrite: true)
    }

    /// Whether this process may create a file in `dir` (a probe file, removed at once).
    private static func canCreateFile(in dir: String, rank: Int) -> Bool {
        let probe = FS.join(dir, ".nemoshard-probe.\(rank)")
        guard (try? SystemFile(creatingAt: probe)) != nil else { return false }
        FS.removeFile(probe)
        return true
    }

    /// Path of `file` inside the staging directory.
    package func stagingPath(_ file: String) -> String { FS.join(staging, file) }

    /// Runs `write` (which returns this rank's finished writers), commits them all after every rank
    /// succeeded, then runs `finish` on every staging owner, and once all finished, commits.
    /// Returns what `write` returned.
    package func run<T>(write: () throws -> (T, [SafetensorsWriter]), finish: () throws -> Void) throws -> T {
        var writers: [SafetensorsWriter] = []
        do {
            let value = try world.agree { () -> T in
                let (v, w) = try write()
                writers = w
                for x in w { try x.finish() }
                Failpoint.hit("written", rank: world.rank)
                return v
            }
            _ = try world.agree { for w in writers { try w.commit() } }
            Failpoint.hit("committed", rank: world.rank)
            _ = try world.agree { if directory != nil { try finish() } }
            _ = try world.agree { try directory?.commit(force: force) }
            return value
        } catch {
            writers = []
            try? world.barrier()
            directory?.abandon()
            throw error
        }
    }
}
