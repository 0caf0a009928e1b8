import Foundation
import Glibc
import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// Writes a safetensors file whose tensors are all zeros without writing them: the header, then
/// `ftruncate` to the full length (a sparse file: no disk used). Returns each tensor's absolute
/// file offset, so a test can `pwrite` a few marker values.
@discardableResult
func writeSparseSafetensors(_ path: String, _ tensors: [(String, DType, [Int])], metadata: [(String, String)] = []) throws -> [Int] {
    let specs = tensors.map { TensorSpec(name: $0.0, dtype: $0.1, shape: $0.2) }
    let (header, offsets, size) = SafetensorsWriter.layout(specs, metadata: metadata)
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw IOError("create", path: path) }
    defer { close(fd) }
    guard header.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, 0) }) == header.count,
          ftruncate(fd, off_t(size)) == 0 else { throw IOError("write", path: path) }
    return offsets
}

/// Writes `bytes` at `offset` of an existing file.
func patchFile(_ path: String, at offset: Int, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY)
    guard fd >= 0 else { throw IOError("open", path: path) }
    defer { close(fd) }
    guard bytes.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }) == bytes.count else {
        throw IOError("write", path: path)
    }
}

/// The `DCP_SHARDING_INFO` metadata for chunks at `offsets`.
func dcpMetadata(_ offsets: [(String, [Int])]) -> [(String, String)] {
    let entries = offsets.map { ($0.0, JSON.object([("saved_offsets", .array($0.1.map { .int(Int64($0)) }))])) }
    return [("DCP_SHARDING_INFO", JSON.object(entries).serialized()), ("format", "pt")]
}

/// A buffer whose size comes from the input is had from `Memory.allocate` or the job fails with
/// one line naming what it was for; never a Swift trap, never a lock, staging directory or
/// preallocated file left behind.
final class AllocationTests: XCTestCase {
    func assertOutOfMemory(_ r: CLI.Output, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.code, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, "one error line:\n\(r.stderr)", file: file, line: line)
        for f in fragments {
            XCTAssertTrue(r.errorLines.first?.contains(f) ?? false, "\"\(r.errorLines.first ?? "")\" lacks \"\(f)\"", file: file, line: line)
        }
        XCTAssertFalse(r.stderr.contains("Fatal error"), "no Swift trap:\n\(r.stderr)", file: file, line: line)
    }

    func entries(_ dir: String) throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: dir).sorted() }

    func testAllocatorThrowsAnErrorNamingSizeAndPurpose() throws {
        XCTAssertEqual(AllocationError(bytes: 40 << 30, purpose: "tensor \"x\" of model-00001-of-00002.safetensors").description,
                       "cannot allocate 40.0 GiB for tensor \"x\" of model-00001-of-00002.safetensors: Cannot allocate memory")
        XCTAssertEqual(AllocationError.format(512), "512 B")
        XCTAssertEqual(AllocationError.format(16 << 20), "16.0 MiB")
        XCTAssertEqual(AllocationError.format(3 << 29), "1.5 GiB")
        // More than any machine has (and more than the address space): an error, not a trap.
        for count in [1 << 62, Int.max] {
            XCTAssertThrowsError(try Memory.allocate(bytes: count, for: "tensor \"x\"")) { e in
                let a = e as? AllocationError
                XCTAssertEqual(a?.bytes, count)
                XCTAssertTrue("\(e)".hasPrefix("cannot allocate ") && "\(e)".contains(" for tensor \"x\": "), "\(e)")
            }
            XCTAssertThrowsError(try TensorStorage(count: count, for: "the test's buffer")) {
                XCTAssertTrue("\($0)".contains("for the test's buffer"), "\($0)")
            }
        }
        XCTAssertThrowsError(try Memory.allocate(bytes: -1, for: "x")) { XCTAssertEqual(($0 as? AllocationError)?.code, EINVAL) }
        // A shape whose byte count overflows.
        XCTAssertThrowsError(try Tensor(dtype: .f32, shape: [1 << 40, 1 << 40], for: "tensor \"big\"")) {
            XCTAssertTrue("\($0)".contains("tensor \"big\""), "\($0)")
        }
        // Small and large (mapped) allocations work, page-aligned from a page up (64-byte aligned
        // below: not a page for each small tensor), and are given back.
        for count in [0, 1, 4096, 3 << 20] {
            let s = try TensorStorage(count: count, for: "a test buffer")
            XCTAssertEqual(s.bytes.count, count)
            XCTAssertEqual(Int(bitPattern: s.bytes.baseAddress) % (count >= 4096 ? 4096 : 64), 0)
            if count > 0 { s.bytes[count - 1] = 7 }
        }
        let t = try Tensor(dtype: .bf16, shape: [3, 5], for: "tensor \"t\"")
        XCTAssertEqual(t.byteCount, 30)
        // The test-only cap's syntax.
        XCTAssertEqual(Memory.parseCap("1048576"), 1 << 20)
        XCTAssertEqual(Memory.parseCap("16MiB"), 16 << 20)
        XCTAssertEqual(Memory.parseCap("2g"), 2 << 30)
        XCTAssertNil(Memory.parseCap("lots"))
        XCTAssertNil(Memory.parseCap("-5"))
    }

    /// `consolidate` of a 40 GiB tensor whose copy window cannot be had: one error line, and the
    /// output's parent holds nothing new (no lock, no staging directory, no 40 GiB preallocated
    /// file): the window is allocated before the output is touched. On one rank and on two.
    func testConsolidateOutOfMemoryLeavesNothingBehind() throws {
        let root = temporaryDirectory(self)
        let dcp = root + "/dcp"
        try FileManager.default.createDirectory(atPath: dcp, withIntermediateDirectories: true)
        let half = [1, 1 << 20, 5 << 10]  // 2 x 20 GiB of F32, split on dim 0
        for s in 0..<2 {
            try writeSparseSafetensors(dcp + "/shard-0000\(s + 1)-model-00001-of-00001.safetensors",
                                       [("huge", .f32, half)], metadata: dcpMetadata([("huge", [s, 0, 0])]))
        }
        let before = try entries(root)
        for ranks in [nil, 2] as [Int?] {
            let r = try CLI.run(["consolidate", dcp, root + "/out"], ranks: ranks, env: ["NEMOSHARD_MAX_ALLOCATION": "1MiB"], timeout: 120)
            assertOutOfMemory(r, ["cannot allocate 16.0 MiB for the copy window of rank 0",
                                  "model-00001-of-00001.safetensors", "Cannot allocate memory"])
            XCTAssertEqual(try entries(root), before, "ranks \(ranks ?? 1): the output's parent is as it was")
        }
    }

    /// `load --copy-non-expert` (in memory) of a checkpoint holding a 40 GiB non-expert tensor.
    func testLoadCopyNonExpertOutOfMemoryIsAnError() throws {
        let hf = try synth(self)
        try writeSparseSafetensors(hf + "/huge.safetensors", [("backbone.extra.huge", .bf16, [20 << 30])])
        let indexPath = hf + "/" + HFIndex.fileName
        var index = try JSON.parse(try readWholeFile(indexPath)).objectValue ?? []
        index = index.map { k, v in
            guard k == "weight_map", let map = v.objectValue else { return (k, v) }
            return (k, .object(map + [("backbone.extra.huge", .string("huge.safetensors"))]))
        }
        try writeFileAtomically(indexPath, Array(JSON.object(index).serialized().utf8))
        // The cap only makes the test independent of the machine: 40 GiB fails on most anyway.
        let r = try CLI.run(["load", hf, "--copy-non-expert"], env: ["NEMOSHARD_MAX_ALLOCATION": "8GiB"], timeout: 120)
        assertOutOfMemory(r, ["cannot allocate 40.0 GiB for tensor \"", "huge\" (in memory)", "Cannot allocate memory"])
    }

    func testBandwidthOutOfMemoryIsAnError() throws {
        let r = try CLI.run(["bandwidth", "--bytes", "64GiB", "--rounds", "1"], ranks: 2,
                            env: ["NEMOSHARD_MAX_ALLOCATION": "1GiB"], timeout: 120)
        assertOutOfMemory(r, ["cannot allocate 64.0 GiB for the bandwidth probe's message (rank 0)"])
        // Within the cap it measures as before.
        let ok = try CLI.run(["bandwidth", "--bytes", "4MiB", "--rounds", "2", "--json"], ranks: 2,
                             env: ["NEMOSHARD_MAX_ALLOCATION": "1GiB"], timeout: 120)
        XCTAssertEqual(ok.code, 0, ok.stderr)
        XCTAssertEqual(ok.json?["bytes"]?.intValue, 4 << 20)
    }
}
