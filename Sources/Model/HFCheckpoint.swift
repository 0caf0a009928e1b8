import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// One tensor of a Hugging Face checkpoint: where its bytes are.
public struct HFTensor: Sendable, Equatable, Codable {
    public let name: String
    /// Index into `HFCheckpoint.files`.
    package let file: Int
    public let dtype: DType
    public let shape: [Int]
    /// Absolute offset of the first byte in its file.
    package let offset: Int
    public let byteCount: Int
}

/// A Hugging Face checkpoint directory: config, shard files and every tensor's location.
/// Built once by reading the index and every header; cheap to serialise and send to other ranks.
public struct HFCheckpoint: Sendable, Codable {

    public let directory: String
    public let config: NemotronConfig
    /// Shard file names relative to `directory`.
    public let files: [String]
    /// Tensors in weight-map order.
    public let tensors: [HFTensor]
    /// Small non-weight files (tokenizer, generation config, ...) to carry along on export.
    package let extraFiles: [String]
    /// Each shard file as it was when its header was read (`files` order).
    package let fingerprints: [FileFingerprint]

    package func path(ofFile i: Int) -> String { FS.join(directory, files[i]) }

    /// Every file a job may read from this checkpoint, and the directory itself.
    package var inputPaths: [String] {
        [directory, FS.join(directory, "config.json"), FS.join(directory, HFIndex.fileName)]
            + files.indices.map(path(ofFile:)) + extraFiles.map { FS.join(directory, $0) }
    }

    /// Reads the config, the index (or the single file) and every header, validating all of them.
    public static func open(_ directory: String) throws -> HFCheckpoint {
        try FS.requireDirectory(directory)
        let config = try NemotronConfig(path: FS.join(directory, "config.json"))
        let indexPath = FS.join(directory, HFIndex.fileName)
        var weightMap: [(String, String)] = []
        if FS.exists(indexPath) {
            weightMap = try HFIndex.parse(try readWholeFile(indexPath, limit: ReadLimit.index), path: indexPath).weightMap
        } else if FS.exists(FS.join(directory, HFIndex.singleFileName)) {
            let f = try SafetensorsFile(path: FS.join(directory, HFIndex.singleFileName))
            weightMap = f.header.tensors.map { ($0.name, HFIndex.singleFileName) }
        } else {
            throw CheckpointError(path: directory, "no \(HFIndex.fileName) and no \(HFIndex.singleFileName)")
        }

        var files: [String] = []
        var fileIndex: [String: Int] = [:]
        var headers: [SafetensorsHeader] = []
        var fingerprints: [FileFingerprint] = []
        var tensors: [HFTensor] = []
        tensors.reserveCapacity(weightMap.count)
        var last: (file: String, index: Int)?  // keys of one file mostly follow each other: no lookup
        for (key, file) in weightMap {
            let i: Int
            if let last, last.file == file {
                i = last.index
            } else if let known = fileIndex[file] {
                i = known
            } else {
                let path = FS.join(directory, file)
                guard FS.exists(path) else {
                    throw CheckpointError(path: indexPath, "weight_map names \(file) (for \"\(key)\"), which does not exist")
                }
                let sf = try SafetensorsFile(path: path)
                i = files.count
                files.append(file)
                fileIndex[file] = i
                headers.append(sf.header)
                fingerprints.append(sf.fingerprint)
            }
            last = (file, i)
            guard let info = headers[i][key] else {
                throw CheckpointError(path: FS.join(directory, file), "tensor \"\(key)\" listed in the index is not in this file")
            }
            tensors.append(HFTensor(name: key, file: i, dtype: info.dtype, shape: info.shape,
                                    offset: headers[i].dataStart + info.begin, byteCount: info.byteCount))
        }
        guard !tensors.isEmpty else { throw CheckpointError(path: FS.join(directory, weightMap.isEmpty ? HFIndex.fileName : HFIndex.singleFileName), "lists no tensors") }
        let extras = try extraFiles(in: directory)
        return HFCheckpoint(directory: FS.realPath(directory), config: config, files: files, tensors: tensors,
                            extraFiles: extras, fingerprints: fingerprints)
    }

    /// The small files carried along on export (tokenizer, generation config, ...): the regular
    /// files of `directory` that `ExtraFileName.refusal` accepts, so never weights of any format
    /// (`pytorch_model.bin`, its index, `*.gguf`, `*.pt`, ...), the index, config or manifest, nor
    /// a hidden name (nemoshard's own markers and temporaries). Subdirectories are skipped; a
    /// FIFO, device, socket or dangling link is an error (it would hang or never end).
    package static func extraFiles(in directory: String) throws -> [String] {
        try FS.list(directory).filter { name in
            guard ExtraFileName.refusal(name) == nil else { return false }
            let path = FS.join(directory, name)
            guard let s = try FileStatus.of(path, followLinks: true) else {
                throw CheckpointError(path: path, "is a dangling symbolic link")
            }
            switch s.kind {
            case .regular: return true
            case .directory: return false
            default: throw CheckpointError(path: path, "is \(s.kind.noun); a checkpoint directory may hold only regular files and directories")
            }
        }
    }

    /// Total bytes of all tensors.
    package var totalBytes: Int { tensors.reduce(0) { $0 + $1.byteCount } }
}
