import XCTest
@testable import NemoShard

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
}
