/// Executes a rank's plan into its own file inside an output's staging directory, then agrees,
/// commits the file, and lets rank 0 finish (manifest or index) and swap the directory in.
/// On any rank's failure every temporary is removed and the target is left as it was.
struct StagedOutput {
    let directory: OutputDirectory
    let world: Collective

    /// Rank 0 prepares the staging directory; all ranks agree.
    static func prepare(_ path: String, force: Bool, inputs: [String], world: Collective) throws -> StagedOutput {
        let out = OutputDirectory(path: path)
        _ = try world.agreeOnRoot { try out.prepare(force: force, inputs: inputs) }
        return StagedOutput(directory: out, world: world)
    }

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
                try directory.commit()
            }
            return value
        } catch {
            writers = []
            try? world.barrier()
            if world.rank == 0 { directory.abandon() }
            throw error
        }
    }
}
