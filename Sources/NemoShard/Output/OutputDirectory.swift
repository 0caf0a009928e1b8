import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// An output checkpoint directory that is committed all at once. The protocol, the same for every
/// writing command:
/// - the output's real path (parent resolved, the output itself never a link) is compared with
///   every input's real path before anything is created;
/// - rank 0 holds an exclusive lock beside the output from `prepare` to `commit`/`abandon`;
/// - files are written into a staging directory with a name unique to this job;
/// - `commit` swaps it in with one atomic exchange, so the output path is never missing; where the
///   file system cannot exchange, the old directory is renamed aside first and the lock file
///   records it, so the next job restores it if this one dies in between;
/// - nothing is ever removed through a symbolic link, and only names this job (or a killed job,
///   per its lock record) created are removed.
package final class OutputDirectory {
    /// Where the checkpoint ends up, as given.
    package let path: String
    package let name: String
    /// The directory holding `path`, as given.
    package let parent: String
    private var lock: OutputLock?
    /// The staging directory of this job (set by `prepare`).
    private(set) var staging: String?
    /// The output's resolved absolute path (set by `prepare`): what is committed.
    private var target: String?

    /// Checks the name only (no file system access): `''`, `.`, `..` and `/` are usage errors.
    package init(path: String) throws {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        let name = FS.baseName(p)
        guard !p.isEmpty, p != "/", name != ".", name != ".." else {
            throw UsageError("the output must name a directory to create, not \"\(path)\"")
        }
        self.path = p
        self.name = name
        parent = FS.parent(p)
    }

    package var stagingPrefix: String { ".\(name).nemoshard-staging." }
    package var oldPrefix: String { ".\(name).nemoshard-old." }

    /// Rank 0 (and the leader of every node whose disk rank 0 cannot reach): checks the target
    /// against `inputs` (every directory and file the job reads) by identity, takes the lock,
    /// repairs what a killed job left, and creates a fresh staging directory (named `stagingName`
    /// when given, else a new unique name) holding the provenance marker, whose path it returns.
    package func prepare(force: Bool, inputs: [String], stagingName: String? = nil) throws -> String {
        let target = try FS.resolveForCreation(path)
        let realParent = FS.parent(target)
        let inputSet = try InputSet(inputs)
        try inputSet.check(output: target, given: path)
        try checkTarget(target, force: force)
        try FS.makeDirectories(realParent)
        guard FS.isWritableDirectory(realParent) else { throw UsageError("cannot write into \(parent)") }
        // Created directories are real, so the parent resolves to itself; checked again all the same.
        guard FS.realPath(realParent) == realParent else { throw OutputError(path: path, "changed its parent directory while the job started") }
        let lock = try OutputLock(path: FS.join(realParent, ".\(name).nemoshard-lock"), output: path)
        self.lock = lock
        Interruption.register(lock: lock.path)
        do {
            try repair(lock.leftover, in: realParent, target: target, inputs: inputSet)
            try inputSet.check(output: target, given: path)  // again, under the lock
            try checkTarget(target, force: force)
            let unique = stagingPrefix + "\(ProcessFacts.id)-\(String(UInt32.random(in: .min ... .max), radix: 16))"
            let dir = FS.join(realParent, stagingName ?? unique)
            guard FS.baseName(dir).hasPrefix(stagingPrefix) else { throw InternalError("staging name \(dir) is not this output's") }
            try lock.note("pid", String(ProcessFacts.id))
            try lock.note("host", hostName())
            try lock.note("staging", FS.baseName(dir))
            try FS.makeDirectory(dir)
            staging = dir
            self.target = target
            Interruption.register(directory: dir)
            try OutputProvenance.mark(dir)
            return dir
        } catch {
            releaseLock()
            throw error
        }
    }

    /// Refuses a link, and an existing output unless `force` and it is nemoshard's own.
    private func checkTarget(_ target: String, force: Bool) throws {
        guard let s = try FileStatus.of(target, followLinks: false) else { return }
        if s.kind == .symbolicLink {
            throw UsageError("output \(path) is a symbolic link (to \(FS.realPath(target))); nemoshard never writes through or replaces a link: name the directory itself")
        }
        guard force else { throw UsageError("output directory \(path) exists", remedy: .force) }
        guard s.kind == .directory else { throw UsageError("output \(path) exists and is \(s.kind.noun), not a directory") }
        guard try OutputProvenance.isOurs(target) else {
            throw UsageError("output \(path) exists and is not a nemoshard output; only nemoshard's own outputs are ever replaced: remove it yourself")
        }
    }

    /// Undoes what a killed job recorded: restores an old checkpoint set aside by an interrupted
    /// commit, then removes its staging and old directories. Only real directories with this
    /// output's staging or old prefix are touched, and never one that is or holds an input.
    private func repair(_ record: [String: String], in realParent: String, target: String, inputs: InputSet) throws {
        func ours(_ key: String, _ prefix: String) -> String? {
            guard let n = record[key], n.hasPrefix(prefix), !n.contains("/"), !n.contains("\0") else { return nil }
            let p = FS.join(realParent, n)
            guard (try? FileStatus.of(p, followLinks: false))??.kind == .directory, !inputs.touches(p) else { return nil }
            return p
        }
        if let old = ours("old", oldPrefix), !FS.exists(target) {
            try renameFile(old, target)
            FS.syncDirectory(realParent)
            printToStandardError("nemoshard: note: restored \(path) from an interrupted commit\n")
        }
        for (key, prefix) in [("staging", stagingPrefix), ("old", oldPrefix)] {
            if let p = ours(key, prefix) { FS.removeTree(p) }
        }
    }

    /// Rank 0: swaps the staging directory into place (replacing an old checkpoint only with
    /// `force`), removes the old one, and releases the lock.
    package func commit(force: Bool) throws {
        guard let staging, let lock, let target else { throw OutputError(path: path, "was not prepared") }
        // From here a signal leaves the lock record to the next job instead of cleaning up.
        Interruption.unregister(directory: staging)
        Interruption.unregister(lock: lock.path)
        FS.syncDirectory(staging)
        let realParent = FS.parent(target)
        try checkTarget(target, force: force)
        if FS.exists(target) {
            if try FS.exchange(staging, target) {
                // The output path held the old checkpoint until this instant and the new one after.
                FS.syncDirectory(realParent)
                Failpoint.hit("exchanged", rank: 0)
                FS.removeTree(staging)
            } else {
                let old = FS.join(realParent, oldPrefix + (FS.baseName(staging).split(separator: ".").last.map(String.init) ?? "x"))
                try lock.note("old", FS.baseName(old))
                try renameFile(target, old)
                Failpoint.hit("set-aside", rank: 0)
                do { try renameFile(staging, target) } catch {
                    _ = try? renameFile(old, target)
                    throw error
                }
                FS.syncDirectory(realParent)
                FS.removeTree(old)
            }
        } else {
            guard try FS.renameWithoutReplacing(staging, target) == .renamed else {
                throw OutputError(path: path, "appeared while the job ran; it was not replaced")
            }
            FS.syncDirectory(realParent)
        }
        self.staging = nil
        releaseLock()
    }

    /// Rank 0: removes the staging directory and releases the lock.
    package func abandon() {
        if let staging {
            FS.removeTree(staging)
            Interruption.unregister(directory: staging)
        }
        staging = nil
        releaseLock()
    }

    private func releaseLock() {
        if let lock { Interruption.unregister(lock: lock.path) }
        lock?.release()
        lock = nil
    }
}
