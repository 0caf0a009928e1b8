import Glibc
import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// A torch DCP checkpoint in the HF safetensors layout (`shard-SSSSS-model-IIIII-of-NNNNN`, see
/// `DCPCheckpoint`) -> a standard Hugging Face checkpoint of full tensors
/// (`model-IIIII-of-NNNNN.safetensors` + `model.safetensors.index.json`), as torch's
/// `consolidate_safetensors_files` writes it. Rank 0 reads every header and checks that the chunks
/// tile each tensor; the output files are shared out over the ranks (balanced by bytes) and each
/// rank writes its own, through the usual staged output. Rank 0 also writes `config.json` and the
/// small files beside it (`CompanionFiles`: from DCP_DIR or its parent), so the output is a
/// complete checkpoint `from_pretrained` loads; without a `config.json` in either, only the weights
/// and the index are written, and the report says so.
///
/// An output file is written as torch writes it: the header first, then every chunk's bytes
/// straight to their place in the file, one output window at a time (`copyTensor`). No tensor is
/// ever whole in memory: a rank holds two windows (`Options.windowBytes` each, allocated before
/// anything is created in the output), whatever the size of the tensors.
public enum ConsolidateJob {
    public struct Options {
        public var source: String
        public var output: String
        public var force = false
        /// Bytes of output one copy step assembles (two buffers of this size per rank).
        package var windowBytes = 16 << 20
        /// Called on each rank that sets it with (bytes done, total) over ALL ranks, as
        /// `LoadJob.Options.progress` is: this rank's fraction of its own output files scaled to
        /// the total (an estimate), after each copy window; the last call is (total, total).
        public var progress: (@Sendable (Int, Int) -> Void)?

        public init(source: String, output: String) {
            self.source = source
            self.output = output
        }
    }

    /// Which rank writes output file i (1-based): `Balancer`, largest files first, each to the
    /// rank with the fewest bytes so far (ties: lowest rank). The same on every rank.
    package static func assignFiles(_ checkpoint: DCPCheckpoint, ranks: Int) -> [Int: Int] {
        var bytes = [Int](repeating: 0, count: checkpoint.fileCount + 1)
        for t in checkpoint.tensors where t.fileIndex >= 0 && t.fileIndex < bytes.count { bytes[t.fileIndex] += t.byteCount }
        let files = Array(1...max(checkpoint.fileCount, 1))
        let rank = Balancer.assign(weights: files.map { $0 < bytes.count ? bytes[$0] : 0 }, bins: ranks, largestFirst: true)
        return Dictionary(uniqueKeysWithValues: zip(files, rank))
    }

    public static func run(_ o: Options, world: Collective) throws -> JobReport {
        let t0 = monotonicSeconds()
        let checkpoint = try DCPCheckpoint.openShared(o.source, world: world)
        let companions = try world.broadcast(try world.agreeOnRoot { try CompanionFiles.find(beside: o.source) })
        let owner = assignFiles(checkpoint, ranks: world.size)
        let mine = (1...max(checkpoint.fileCount, 1)).filter { owner[$0] == world.rank }
        let myTensors = checkpoint.tensors.filter { mine.contains($0.fileIndex) }
        // Memory before anything else: a rank that cannot have its windows fails every rank
        // before the output is locked or any file is created.
        let windowSize = max(1, min(o.windowBytes, myTensors.map(\.byteCount).max() ?? 1))
        let buffers = try world.agree { () -> (window: TensorStorage, scratch: TensorStorage)? in
            guard !myTensors.isEmpty else { return nil }
            let files = mine.map { DCPCheckpoint.outputFileName($0, of: checkpoint.fileCount) }.joined(separator: ", ")
            let purpose = "the copy window of rank \(world.rank) (writing \(files))"
            return (try TensorStorage(count: windowSize, for: purpose), try TensorStorage(count: windowSize, for: purpose))
        }
        let progress = try JobProgress(o.progress, share: myTensors.reduce(0) { $0 + $1.byteCount }, world: world)
        let t1 = monotonicSeconds()
        var stats = RankStats()
        stats.rank = world.rank
        let staged = try StagedOutput.prepare(o.output, force: o.force, inputs: [o.source] + checkpoint.inputPaths + companions.inputPaths,
                                              world: world, writers: .everyRankShared)
        try staged.run(write: { () -> ((), [SafetensorsWriter]) in
            var writers: [SafetensorsWriter] = []
            guard let buffers else { return ((), writers) }
            for index in mine {
                let tensors = checkpoint.tensors.filter { $0.fileIndex == index }
                guard !tensors.isEmpty else { continue }
                let name = DCPCheckpoint.outputFileName(index, of: checkpoint.fileCount)
                let w = try SafetensorsWriter(path: staged.stagingPath(name),
                                              specs: tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) },
                                              metadata: [("format", "pt")])
                var sources = ShardFiles(directory: checkpoint.directory, fingerprints: checkpoint.fingerprints)
                for (k, t) in tensors.enumerated() {
                    stats.bytesRead += try copyTensor(t, into: w, tensor: k, sources: &sources,
                                                      window: buffers.window.bytes, scratch: buffers.scratch.bytes,
                                                      copied: progress.add)
                    stats.bytesProduced += t.byteCount
                    stats.tensors += 1
                }
                try sources.verifyUnchanged()
                stats.bytesWritten += w.fileSize
                stats.files += 1
                writers.append(w)
            }
            return ((), writers)
        }, finish: {
            let weightMap = checkpoint.tensors.map { ($0.name, DCPCheckpoint.outputFileName($0.fileIndex, of: checkpoint.fileCount)) }
            let total = checkpoint.tensors.reduce(0) { $0 + $1.byteCount }
            try HFIndex(weightMap: weightMap, totalSize: total).write(into: staged.staging)
            try companions.copy(into: staged.staging)
        })
        progress.finish()
        let t2 = monotonicSeconds()
        stats.peakRSS = ProcessFacts.peakResidentBytes()
        var report = JobReport(command: "consolidate", mesh: nil, worldSize: world.size)
        report.outputPath = o.output
        report.phases = [("plan", t1 - t0), ("read+write+commit", t2 - t1)]
        report.ranks = try RankStats.gather(stats, over: world)
        report.notes = [("files", .int(Int64(checkpoint.fileCount))), ("tensors", .int(Int64(checkpoint.tensors.count))),
                        ("window_bytes", .int(Int64(windowSize)))]
        if let from = companions.directory {
            report.notes.append(("config", .string(FS.join(from, CompanionFiles.configName))))
            report.notes.append(("extra_files", .array(companions.extraFiles.map { .string($0) })))
        } else {
            report.notes.append(("config", .string("none in \(companions.searched.joined(separator: " or ")): the output holds the weights and index only")))
        }
        return report
    }

    /// The shard files one output file reads, each opened once and checked against what the
    /// plan was made from (a shard changed mid-job is an error, not a mixed output).
    package struct ShardFiles {
        package let directory: String
        package let fingerprints: [String: FileFingerprint]
        package var open: [String: SystemFile] = [:]

        package init(directory: String, fingerprints: [String: FileFingerprint]) {
            self.directory = directory
            self.fingerprints = fingerprints
        }

        package mutating func file(_ name: String) throws -> SystemFile {
            if let f = open[name] { return f }
            let f = try SystemFile(readingAt: FS.join(directory, name))
            if let want = fingerprints[name] { try f.check(against: want) }
            open[name] = f
            return f
        }

        /// Checks every file read once more (same fingerprint as planned), then closes them.
        package mutating func verifyUnchanged() throws {
            for (name, f) in open { if let want = fingerprints[name] { try f.check(against: want) } }
            open.removeAll()
        }
    }

    /// Writes global tensor `t` into tensor `k` of `writer` straight from its chunks, one window
    /// of output bytes at a time: the part of each chunk that lands in the window is one
    /// contiguous range of the chunk (its runs are in the same order in both), read with one
    /// `pread` (into the window where it is one run, else into `scratch` and spread run by run),
    /// and the window is written with one `pwrite`. A window that is one run of one chunk (a
    /// row-split tensor, mostly) is copied in the kernel (`copy_file_range`) instead. Memory is the
    /// two buffers, whatever the tensor's size. Returns the bytes read; `copied` gets each
    /// window's bytes once it is written. Errors name the tensor.
    package static func copyTensor(_ t: DCPCheckpoint.GlobalTensor, into writer: SafetensorsWriter, tensor k: Int,
                           sources: inout ShardFiles, window: UnsafeMutableRawBufferPointer,
                           scratch: UnsafeMutableRawBufferPointer, copied: (Int) -> Void = { _ in }) throws -> Int {
        let total = t.byteCount
        guard total > 0 else { return 0 }
        guard window.count > 0, scratch.count >= window.count, let windowBase = window.baseAddress,
              let scratchBase = scratch.baseAddress else {
            throw InternalError("consolidate: no copy window for tensor \"\(t.name)\"")
        }
        var runs: [ChunkTiling.Runs] = []
        var files: [SystemFile] = []
        var chunks: [DCPCheckpoint.Chunk] = []
        do {
            for c in t.chunks {
                let r = ChunkTiling.Runs(shape: c.shape, offsets: c.offsets, globalShape: t.shape, elementSize: t.dtype.size)
                guard r.count > 0 else { continue }
                guard r.run * r.count == c.byteCount else {
                    throw InternalError("consolidate: chunk of \"\(t.name)\" in \(c.file) holds \(c.byteCount) bytes, runs \(r.count) x \(r.run)")
                }
                runs.append(r)
                files.append(try sources.file(c.file))
                chunks.append(c)
            }
            var inKernel = true
            var a = 0
            var read = 0
            while a < total {
                let b = min(a + window.count, total)
                // Each chunk's part of [a, b): its first run there, how many runs, and its range in the chunk.
                var parts: [(chunk: Int, first: ChunkTiling.Runs, pieces: Int, source: Range<Int>, dest: Int)] = []
                var covered = 0
                for i in runs.indices where !runs[i].done && runs[i].dest < b {
                    let first = runs[i]
                    var pieces = 0, lo = 0, hi = 0, dest = 0
                    while !runs[i].done && runs[i].dest < b {
                        let r = runs[i]
                        let from = max(r.dest, a), to = min(r.dest + r.run, b)
                        if pieces == 0 { lo = r.source + (from - r.dest); dest = from }
                        hi = r.source + (to - r.dest)
                        pieces += 1
                        covered += to - from
                        if r.dest + r.run <= b { runs[i].advance() } else { break }  // a run across b goes on in the next window
                    }
                    parts.append((i, first, pieces, lo..<hi, dest))
                }
                guard covered == b - a else {
                    throw InternalError("consolidate: the chunks of \"\(t.name)\" cover \(covered) of the \(b - a) bytes at \(a)")
                }
                if parts.count == 1, parts[0].pieces == 1, inKernel {
                    let p = parts[0]
                    if try writer.copy(tensor: k, offset: a, from: files[p.chunk], at: chunks[p.chunk].dataOffset + p.source.lowerBound,
                                       count: b - a) {
                        read += b - a
                        copied(b - a)
                        a = b
                        continue
                    }
                    inKernel = false  // this pair of file systems cannot: read and write from now on
                }
                for p in parts {
                    let c = chunks[p.chunk]
                    if p.pieces == 1 {
                        try files[p.chunk].read(into: UnsafeMutableRawBufferPointer(start: windowBase + (p.dest - a), count: p.source.count),
                                                at: c.dataOffset + p.source.lowerBound)
                    } else {
                        try files[p.chunk].read(into: UnsafeMutableRawBufferPointer(start: scratchBase, count: p.source.count),
                                                at: c.dataOffset + p.source.lowerBound)
                        var r = p.first
                        for _ in 0..<p.pieces {
                            let from = max(r.dest, a), to = min(r.dest + r.run, b)
                            let s = r.source + (from - r.dest) - p.source.lowerBound
                            (windowBase + (from - a)).copyMemory(from: scratchBase + s, byteCount: to - from)
                            r.advance()
                        }
                    }
                    read += p.source.count
                }
                try writer.write(tensor: k, offset: a, UnsafeRawBufferPointer(start: windowBase, count: b - a))
                copied(b - a)
                a = b
            }
            return read
        } catch let e as IOError {
            throw CheckpointError(path: e.path, "tensor \"\(t.name)\": \(e.operation) failed: \(String(cString: strerror(e.code)))")
        }
    }
}
