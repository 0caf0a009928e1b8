/// Executes a rank's plan into its own file inside an output's staging directory, then agrees,
/// commits the file, and lets rank 0 finish (manifest or index) and swap the directory in.
/// On any rank's failure every temporary is removed and the target is left as it was.
struct StagedOutput {
    /// The job's staging directory (the same on every rank).
    let staging: String
    /// Rank 0's handle on the output (lock, commit); nil on the other ranks.
    let directory: OutputDirectory?
    let force: Bool
    let world: Collective

    /// Every rank checks the name; rank 0 prepares (lock, checks against `inputs`, staging) and
    /// sends the staging path to the others.
    static func prepare(_ path: String, force: Bool, inputs: [String], world: Collective) throws -> StagedOutput {
        let out = try world.agree { try OutputDirectory(path: path) }
        let staging = try world.agreeOnRoot { try out.prepare(force: force, inputs: inputs) }
        let shared = String(decoding: try world.broadcast(Array((staging ?? "").utf8), root: 0), as: UTF8.self)
        return StagedOutput(staging: shared, directory: world.rank == 0 ? out : nil, force: force, world: world)
    }

    /// Path of `file` inside the staging directory.
    func stagingPath(_ file: String) -> String { FS.join(staging, file) }

    /// Runs `write` (which returns this rank's finished writers), commits them all after every rank
    /// succeeded, then runs `finish` on rank 0 and commits the directory. Returns what `write` returned.
    func run<T>(write: () throws -> (T, [SafetensorsWriter]), finish: () throws -> Void) throws -> T {
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
            _ = try world.agreeOnRoot {
                try finish()
                try directory?.commit(force: force)
            }
            return value
        } catch {
            writers = []
            try? world.barrier()
            directory?.abandon()
            throw error
        }
    }
}
