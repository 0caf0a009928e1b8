import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// The executor's batching and coalescing, execution from memory, and the checksum sink.
final class EngineTests: XCTestCase {
    func spec(_ name: String, _ bytes: Int) -> TensorSpec { TensorSpec(name: name, dtype: .u8, shape: [bytes]) }

    func copy(file: Int, offset: Int, count: Int, output: Int, dest: Int = 0) -> Piece {
        Piece(source: SourceRange(file: file, offset: offset, count: count), transform: .copy, output: output, destOffset: dest)
    }

    func testAdjacentRangesCoalesceUpToTheChunkAndGapsSplit() {
        let plan = TransferPlan(files: ["a", "b"], outputs: [spec("x", 64), spec("y", 64), spec("z", 64)],
                                pieces: [copy(file: 0, offset: 100, count: 64, output: 1),
                                         copy(file: 0, offset: 36, count: 64, output: 0),       // ends where the first starts
                                         copy(file: 0, offset: 200, count: 64, output: 2),      // a gap: a new batch
                                         copy(file: 1, offset: 0, count: 64, output: 2, dest: 0)])
        let batches = PlanExecutor(chunkBytes: 4096).batches(plan)
        XCTAssertEqual(batches.map { [$0.file, $0.offset, $0.count] }, [[0, 36, 128], [0, 200, 64], [1, 0, 64]])
        XCTAssertEqual(batches[0].pieces.map(\.output), [0, 1], "sorted by file position")
    }

    func testLargeCopiesAreSplitAndNeverCoalescedPastTheChunk() {
        let plan = TransferPlan(files: ["a"], outputs: [spec("x", 10_000)], pieces: [copy(file: 0, offset: 0, count: 10_000, output: 0)])
        let batches = PlanExecutor(chunkBytes: 4096).batches(plan)
        XCTAssertEqual(batches.map(\.count), [4096, 4096, 1808])
        XCTAssertEqual(batches.flatMap(\.pieces).map(\.destOffset), [0, 4096, 8192])
    }

    func testRunFromMemoryTransposesAndCopies() throws {
        let rows = 3, cols = 5
        let source = Tensor(dtype: .bf16, shape: [rows, cols])
        for i in 0..<source.byteCount { source.storage.bytes[i] = UInt8(truncatingIfNeeded: i * 7 + 1) }
        let outputs = [TensorSpec(name: "t", dtype: .bf16, shape: [cols, rows]), TensorSpec(name: "c", dtype: .bf16, shape: [rows, cols])]
        let plan = TransferPlan(files: ["mem"], outputs: outputs, pieces: [
            Piece(source: SourceRange(file: 0, offset: 0, count: source.byteCount),
                  transform: .transpose(rows: rows, cols: cols, from: .bf16, to: .bf16), output: 0, destOffset: 0),
            Piece(source: SourceRange(file: 0, offset: 0, count: source.byteCount), transform: .copy, output: 1, destOffset: 0),
        ])
        let sink = MemorySink(outputs: outputs)
        let stats = try PlanExecutor(threads: 2).run(plan, from: [source], into: sink)
        XCTAssertEqual(stats.bytesRead, 2 * source.byteCount)
        XCTAssertEqual(sink.tensors[0].byteArray, naiveTranspose(source.byteArray, rows: rows, cols: cols, size: 2))
        XCTAssertEqual(sink.tensors[1].byteArray, source.byteArray)
        var bad = plan
        bad.pieces[1] = Piece(source: SourceRange(file: 0, offset: 4, count: source.byteCount), transform: .copy, output: 1, destOffset: 0)
        XCTAssertThrowsError(try PlanExecutor().run(bad, from: [source], into: MemorySink(outputs: outputs))) {
            XCTAssertTrue($0 is InternalError, "\($0)")
        }
    }

    func testRowBlockTransposesFromAFileMatchTheWholeMatrixTranspose() throws {
        // Two bf16 matrices side by side in one file, read in blocks of 3 rows (a ragged last one),
        // into memory and through a sink that takes bytes.
        let dir = temporaryDirectory(self)
        let (rows, cols) = (10, 6)
        let bytes = (0..<(2 * rows * cols * 2)).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 5) }
        let path = dir + "/m.bin"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let file = try SystemFile(readingAt: path)
        let outputs = [TensorSpec(name: "a", dtype: .bf16, shape: [cols, rows]), TensorSpec(name: "b", dtype: .bf16, shape: [cols, rows])]
        let pieces = (0..<2).map { i in
            Piece(source: SourceRange(file: 0, offset: i * rows * cols * 2, count: rows * cols * 2),
                  transform: .transpose(rows: rows, cols: cols, from: .bf16, to: .bf16), output: i, destOffset: 0)
        }
        let want = (0..<2).map { i in naiveTranspose(Array(bytes[(i * rows * cols * 2)..<((i + 1) * rows * cols * 2)]), rows: rows, cols: cols, size: 2) }
        let memory = MemorySink(outputs: outputs)
        try memory.prepareOutputs()
        try RowBlockTranspose.run(pieces, file: file, sink: memory, scratch: ScratchBuffer(), blockBytes: 3 * cols * 2)
        XCTAssertEqual(memory.tensors.map(\.byteArray), want)
        let recorder = RecordingSink(outputs: outputs)
        try RowBlockTranspose.run(pieces, file: file, sink: recorder, scratch: ScratchBuffer(), blockBytes: 1)
        XCTAssertEqual(recorder.outputs, want, "blocks of one row, through write")
        XCTAssertNotNil(RowBlockTranspose.shape(pieces[0]))
        XCTAssertNil(RowBlockTranspose.shape(Piece(source: pieces[0].source, transform: .transpose(rows: rows, cols: cols, from: .bf16, to: .f32),
                                                   output: 0, destOffset: 0)), "a cast is not a plain transpose")
    }

    func testChecksumSinkIsIndependentOfArrivalOrder() throws {
        let outputs = [spec("g", 40)]
        let bytes = (0..<40).map { UInt8($0 * 3) }
        let inOrder = ChecksumSink(outputs: outputs, slices: [4])
        try bytes.withUnsafeBytes { try inOrder.write(output: 0, offset: 0, $0) }
        let shuffled = ChecksumSink(outputs: outputs, slices: [4])
        for (start, end) in [(30, 40), (3, 17), (0, 3), (17, 30)] {
            try bytes.withUnsafeBytes { try shuffled.write(output: 0, offset: start, UnsafeRawBufferPointer(rebasing: $0[start..<end])) }
        }
        XCTAssertEqual(inOrder.checksums(0), shuffled.checksums(0))
        XCTAssertEqual(inOrder.checksums(0).count, 4)
        let other = ChecksumSink(outputs: outputs, slices: [4])
        var changed = bytes
        changed[25] ^= 1
        try changed.withUnsafeBytes { try other.write(output: 0, offset: 0, $0) }
        XCTAssertEqual(zip(inOrder.checksums(0), other.checksums(0)).map { $0 == $1 }, [true, true, false, true], "only slice 2 differs")
    }

    func testImageWindowsProduceTheFileInOrderWithBoundedWindows() throws {
        let rows = 4, cols = 6  // a 48-byte transpose
        let source = Tensor(dtype: .bf16, shape: [100])
        for i in 0..<source.byteCount { source.storage.bytes[i] = UInt8(truncatingIfNeeded: i * 13 + 5) }
        let outputs = [spec("a", 70), TensorSpec(name: "t", dtype: .bf16, shape: [cols, rows]), spec("b", 33)]
        let plan = TransferPlan(files: ["mem"], outputs: outputs, pieces: [
            copy(file: 0, offset: 0, count: 40, output: 0),
            copy(file: 0, offset: 100, count: 30, output: 0, dest: 40),
            Piece(source: SourceRange(file: 0, offset: 60, count: 48), transform: .transpose(rows: rows, cols: cols, from: .bf16, to: .bf16),
                  output: 1, destOffset: 0),
            copy(file: 0, offset: 150, count: 33, output: 2),
        ])
        let image = try ImageWindows(plan: plan, metadata: [("format", "pt")], windowBytes: 16)
        let ranges = image.windows.map(\.range)
        XCTAssertEqual(ranges.first?.lowerBound, image.header.count)
        XCTAssertEqual(ranges.last?.upperBound, image.fileSize)
        XCTAssertTrue(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound }, "contiguous: \(ranges)")
        XCTAssertEqual(ranges.map(\.count).max(), 48, "copies are cut to the window; the transpose stays whole")
        // Executing window by window gives the bytes a file writer gives.
        var streamed = image.header
        for w in image.windows {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: w.range.count, alignment: 8)
            defer { buffer.deallocate() }
            _ = try PlanExecutor().run(w.plan, from: [source], into: WindowSink(buffer: buffer, window: w.range, offsets: image.offsets))
            streamed += Array(buffer)
        }
        let path = temporaryDirectory(self) + "/direct.safetensors"
        let writer = try SafetensorsWriter(path: path, specs: outputs, metadata: [("format", "pt")])
        _ = try PlanExecutor().run(plan, from: [source], into: FileSink(writer: writer))
        try writer.finish()
        try writer.commit()
        XCTAssertEqual(streamed, try readWholeFile(path, limit: 1 << 20))
        // A plan that leaves a gap cannot be streamed.
        var gap = plan
        gap.pieces.remove(at: 1)
        XCTAssertThrowsError(try ImageWindows(plan: gap, metadata: [], windowBytes: 16)) { XCTAssertTrue($0 is InternalError, "\($0)") }
    }
}

/// A sink without pointers: records what `write` hands it.
private final class RecordingSink: TensorSink, @unchecked Sendable {
    var outputs: [[UInt8]]

    init(outputs: [TensorSpec]) { self.outputs = outputs.map { [UInt8](repeating: 0, count: $0.byteCount) } }

    func directPointer(output: Int, offset: Int, count: Int) -> UnsafeMutableRawPointer? { nil }

    func write(output: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        outputs[output].replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    }
}
