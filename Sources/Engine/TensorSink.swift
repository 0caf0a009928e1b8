import NemoShardCore
import NemoShardFormat
import NemoShardModel

/// Where an executed plan's output bytes go.
///
/// Thread-safety contract: `adopt` and `prepareOutputs` run on one thread before any worker
/// starts; after that, workers call `directPointer`, `write` and `copy` concurrently, each for
/// byte ranges no other worker touches (the plan covers every output byte exactly once). A sink
/// needs no lock as long as its per-output storage is fixed by `prepareOutputs`.
package protocol TensorSink: AnyObject, Sendable {
    /// A pointer to write `count` bytes of output `output` at `offset` in place, or nil when
    /// the sink needs them handed to `write` instead.
    func directPointer(output: Int, offset: Int, count: Int) -> UnsafeMutableRawPointer?
    /// Takes bytes for output `output` at `offset`.
    func write(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws
    /// Copies `count` bytes at `offset` of `file` into output `output` at `destOffset` without
    /// passing them through user space; false when the sink cannot (the caller then reads and writes).
    func copy(from file: SystemFile, offset: Int, count: Int, output: Int, destOffset: Int) throws -> Bool
    /// Takes a whole output as it is in `file` (e.g. by mapping it); false when the sink wants bytes.
    /// Called before any other output is written.
    func adopt(file: SystemFile, offset: Int, count: Int, output: Int) throws -> Bool
    /// Called once after adoption, before pieces are written (from any worker); allocation fails here.
    func prepareOutputs() throws
}

extension TensorSink {
    package func copy(from file: SystemFile, offset: Int, count: Int, output: Int, destOffset: Int) throws -> Bool { false }
    package func adopt(file: SystemFile, offset: Int, count: Int, output: Int) throws -> Bool { false }
    package func prepareOutputs() throws {}
}

/// Holds every output in memory as a `Tensor`. With `mapWholeCopies`, an output that is a plain
/// copy of one source range becomes a private copy-on-write mapping of it (no copy, no new pages);
/// the others get memory from the throwing allocator in `prepareOutputs`, before any worker runs.
package final class MemorySink: TensorSink, @unchecked Sendable {
    package let specs: [TensorSpec]
    package let names: [String]
    package let mapWholeCopies: Bool
    private var storages: [TensorStorage?]

    package init(outputs: [TensorSpec], mapWholeCopies: Bool = false) {
        specs = outputs
        names = outputs.map(\.name)
        self.mapWholeCopies = mapWholeCopies
        storages = Array(repeating: nil, count: outputs.count)
    }

    package func adopt(file: SystemFile, offset: Int, count: Int, output: Int) throws -> Bool {
        guard mapWholeCopies, count >= 64 << 10, storages[output] == nil else { return false }
        storages[output] = try TensorStorage(mapping: file, offset: offset, count: count)
        return true
    }

    package func prepareOutputs() throws {
        for i in storages.indices where storages[i] == nil {
            storages[i] = try TensorStorage(count: specs[i].byteCount, for: "tensor \"\(names[i])\" (in memory)")
        }
    }

    /// The outputs, in plan order (after `prepareOutputs`).
    package var tensors: [Tensor] {
        specs.indices.compactMap { i in storages[i].map { Tensor(dtype: specs[i].dtype, shape: specs[i].shape, storage: $0) } }
    }

    package func directPointer(output: Int, offset: Int, count: Int) -> UnsafeMutableRawPointer? {
        storages[output]?.bytes.baseAddress.map { $0 + offset }
    }

    package func write(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0, let src = bytes.baseAddress, let base = storages[output]?.bytes.baseAddress else {
            if bytes.count > 0 { throw InternalError("in-memory output \(names[output]) was written before it had memory") }
            return
        }
        try MappedSource.copy(base + offset, from: src, count: bytes.count)
    }

    /// The outputs as (name, tensor) pairs in plan order.
    package var namedTensors: [(String, Tensor)] { Array(zip(names, tensors)) }
}

/// Streams outputs into safetensors files with `pwrite`; output i is tensor `map[i].tensor` of writer `map[i].writer`.
package final class FileSink: TensorSink, @unchecked Sendable {
    package let writers: [SafetensorsWriter]
    package let map: [(writer: Int, tensor: Int)]

    /// One file holding every output in plan order.
    package convenience init(writer: SafetensorsWriter) {
        self.init(writers: [writer], map: writer.specs.indices.map { (0, $0) })
    }

    package init(writers: [SafetensorsWriter], map: [(writer: Int, tensor: Int)]) {
        self.writers = writers
        self.map = map
    }

    package func directPointer(output: Int, offset: Int, count: Int) -> UnsafeMutableRawPointer? { nil }

    package func write(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        let m = map[output]
        try writers[m.writer].write(tensor: m.tensor, offset: offset, bytes)
    }

    package func copy(from file: SystemFile, offset: Int, count: Int, output: Int, destOffset: Int) throws -> Bool {
        let m = map[output]
        return try writers[m.writer].copy(tensor: m.tensor, offset: destOffset, from: file, at: offset, count: count)
    }
}
