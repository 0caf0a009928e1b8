/// Where an executed plan's output bytes go.
public protocol TensorSink: AnyObject {
    /// A pointer to write `count` bytes of output `output` at `offset` in place, or nil when
    /// the sink needs them handed to `write` instead.
    func directPointer(output: Int, offset: Int, count: Int) -> UnsafeMutableRawPointer?
    /// Takes bytes for output `output` at `offset`.
    func write(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws
    /// Copies `count` bytes at `offset` of `file` into output `output` at `destOffset` without
    /// passing them through user space; false when the sink cannot (the caller then reads and writes).
    func copy(from file: SystemFile, offset: Int, count: Int, output: Int, destOffset: Int) throws -> Bool
}

extension TensorSink {
    public func copy(from file: SystemFile, offset: Int, count: Int, output: Int, destOffset: Int) throws -> Bool { false }
}

/// Holds every output in memory as a `Tensor`.
public final class MemorySink: TensorSink {
    public let names: [String]
    public let tensors: [Tensor]

    public init(outputs: [TensorSpec]) {
        names = outputs.map(\.name)
        tensors = outputs.map { Tensor(dtype: $0.dtype, shape: $0.shape) }
    }

    public func directPointer(output: Int, offset: Int, count: Int) -> UnsafeMutableRawPointer? {
        tensors[output].storage.bytes.baseAddress.map { $0 + offset }
    }

    public func write(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        (tensors[output].storage.bytes.baseAddress! + offset).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }

    /// The outputs as (name, tensor) pairs in plan order.
    public var namedTensors: [(String, Tensor)] { Array(zip(names, tensors)) }
}

/// Streams outputs into safetensors files with `pwrite`; output i is tensor `map[i].tensor` of writer `map[i].writer`.
public final class FileSink: TensorSink {
    public let writers: [SafetensorsWriter]
    let map: [(writer: Int, tensor: Int)]

    /// One file holding every output in plan order.
    public convenience init(writer: SafetensorsWriter) {
        self.init(writers: [writer], map: writer.specs.indices.map { (0, $0) })
    }

    public init(writers: [SafetensorsWriter], map: [(writer: Int, tensor: Int)]) {
        self.writers = writers
        self.map = map
    }

    public func directPointer(output: Int, offset: Int, count: Int) -> UnsafeMutableRawPointer? { nil }

    public func write(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        let m = map[output]
        try writers[m.writer].write(tensor: m.tensor, offset: offset, bytes)
    }

    public func copy(from file: SystemFile, offset: Int, count: Int, output: Int, destOffset: Int) throws -> Bool {
        let m = map[output]
        return try writers[m.writer].copy(tensor: m.tensor, offset: destOffset, from: file, at: offset, count: count)
    }
}

/// Builds a whole safetensors file image in memory (header + data), e.g. to send it to another rank.
public final class ImageSink: TensorSink {
    public let image: TensorStorage
    let offsets: [Int]

    public init(specs: [TensorSpec], metadata: [(String, String)] = []) {
        let (header, offsets, size) = SafetensorsWriter.layout(specs, metadata: metadata)
        let storage = TensorStorage(count: size)
        header.withUnsafeBytes { storage.bytes.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: header.count) }
        image = storage
        self.offsets = offsets
    }

    public func directPointer(output: Int, offset: Int, count: Int) -> UnsafeMutableRawPointer? {
        image.bytes.baseAddress! + offsets[output] + offset
    }

    public func write(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        (image.bytes.baseAddress! + offsets[output] + offset).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }
}
