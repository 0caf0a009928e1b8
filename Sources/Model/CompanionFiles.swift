import NemoShardCore
import NemoShardFormat

/// What makes consolidated weights a complete Hugging Face checkpoint: `config.json` and the small
/// files beside it (generation config, tokenizer, chat template, ...), found beside a torch DCP
/// checkpoint. Torch writes the shard files in DCP_DIR or under `DCP_DIR/sharded/`, and training
/// frameworks keep the model's config in DCP_DIR or in its parent: the first of those two
/// directories that holds a `config.json` is the one, and every file comes from it, under the
/// rules of `HFCheckpoint.extraFiles` (plain regular files; no weights of any format, no index or
/// shard names, nothing hidden; subdirectories skipped).
package struct CompanionFiles: Sendable, Codable, Equatable {
    package static let configName = "config.json"

    /// The directory the files come from; nil when neither candidate holds a `config.json`.
    package let directory: String?
    /// The files copied beside `config.json` (it is not among them), sorted.
    package let extraFiles: [String]
    /// The directories looked in, in order.
    package let searched: [String]

    package init(directory: String?, extraFiles: [String], searched: [String]) {
        self.directory = directory
        self.extraFiles = extraFiles
        self.searched = searched
    }

    /// The files a job copying these reads (inputs: an output may not replace or lie inside them;
    /// the directory itself is not one, so an output beside the config is fine).
    package var inputPaths: [String] {
        guard let directory else { return [] }
        return ([CompanionFiles.configName] + extraFiles).map { FS.join(directory, $0) }
    }

    /// Looks in `dcpDirectory` (links resolved), then in its parent. A `config.json` there must be
    /// a regular file holding one JSON object, else the error names it.
    package static func find(beside dcpDirectory: String) throws -> CompanionFiles {
        let given = FS.realPath(dcpDirectory)
        let candidates = given == "/" ? [given] : [given, FS.parent(given)]
        for dir in candidates {
            let config = FS.join(dir, configName)
            guard FS.exists(config) else { continue }
            _ = try readConfig(config)
            return CompanionFiles(directory: dir, extraFiles: try HFCheckpoint.extraFiles(in: dir), searched: candidates)
        }
        return CompanionFiles(directory: nil, extraFiles: [], searched: candidates)
    }

    /// The bytes of the `config.json` at `path` (at most `ReadLimit.config`), checked to be one
    /// JSON object (Python's `NaN` and `Infinity` allowed, as `json` writes them).
    package static func readConfig(_ path: String) throws -> [UInt8] {
        if let s = try FileStatus.of(path, followLinks: true), s.kind != .regular {
            throw CheckpointError(path: path, "is \(s.kind.noun), not a regular file")
        }
        let bytes = try readWholeFile(path, limit: ReadLimit.config)
        let json: JSON
        do { json = try JSON.parse(bytes) } catch let e as JSONError {
            throw CheckpointError(path: path, "not valid JSON: \(e)")
        }
        guard json.objectValue != nil else { throw CheckpointError(path: path, "is not a JSON object") }
        return bytes
    }

    /// Writes `config.json` (checked again, byte for byte as found) and copies every extra file
    /// into `staging`. An extra file that has gone since `find` is an error, not a missing tokenizer.
    package func copy(into staging: String) throws {
        guard let directory else { return }
        let config = try CompanionFiles.readConfig(FS.join(directory, CompanionFiles.configName))
        try writeFileAtomically(FS.join(staging, CompanionFiles.configName), config)
        for name in extraFiles {
            let from = FS.join(directory, name)
            guard let s = try FileStatus.of(from, followLinks: true) else {
                throw CheckpointError(path: from, "was beside the checkpoint's config.json when the job started and is gone")
            }
            guard s.kind == .regular else { throw CheckpointError(path: from, "is \(s.kind.noun), not a regular file") }
            try FS.copyFile(from: from, to: FS.join(staging, name))
        }
    }
}
