import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// How nemoshard recognises its own outputs: `--force` replaces only a directory that carries the
/// marker every output gets (`.nemoshard-output`), or a per-rank manifest (outputs of versions
/// before the marker), or nothing at all. Anything else may be the user's only copy of something.
package enum OutputProvenance {
    /// The marker file in every output nemoshard writes (hidden: Hugging Face tools ignore it).
    package static let markerName = ".nemoshard-output"

    /// Writes the marker into a fresh staging directory.
    package static func mark(_ directory: String) throws {
        let text = "{\"format\": \"nemoshard-output\", \"written_by\": \"nemoshard\"}\n"
        try writeFileAtomically(FS.join(directory, markerName), Array(text.utf8))
    }

    /// Whether `directory` is nemoshard's own output (or empty). Links are never followed.
    package static func isOurs(_ directory: String) throws -> Bool {
        if isRegularFile(FS.join(directory, markerName)) { return true }
        let manifest = FS.join(directory, Manifest.fileName)
        if isRegularFile(manifest), let bytes = try? readWholeFile(manifest, limit: ReadLimit.index),
           (try? JSON.parse(bytes))?["format"]?.stringValue == Manifest.formatName {
            return true
        }
        return try FS.list(directory).isEmpty
    }

    private static func isRegularFile(_ path: String) -> Bool {
        (try? FileStatus.of(path, followLinks: false))??.kind == .regular
    }
}
