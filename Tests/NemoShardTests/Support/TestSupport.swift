import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// A fresh temporary directory, removed when the test ends.
func temporaryDirectory(_ test: XCTestCase) -> String {
    let path = NSTemporaryDirectory() + "nemoshard-test-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

/// Writes raw bytes to a file.
func writeBytes(_ path: String, _ bytes: [UInt8]) {
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

/// A safetensors file image from a header JSON string and a data buffer (no validation).
func rawSafetensors(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    var n = declaredLength ?? UInt64(h.count)
    var out: [UInt8] = []
    for _ in 0..<8 { out.append(UInt8(n & 0xFF)); n >>= 8 }
    return out + h + data
}

/// Reads every tensor of a safetensors file as name -> (dtype, shape, bytes).
func readAll(_ path: String) throws -> [String: (DType, [Int], [UInt8])] {
    let f = try SafetensorsFile(path: path)
    var out: [String: (DType, [Int], [UInt8])] = [:]
    for t in f.header.tensors { out[t.name] = (t.dtype, t.shape, try f.tensor(t.name).byteArray) }
    return out
}

/// Every tensor of an HF checkpoint directory as name -> (dtype, shape, bytes).
func readHF(_ dir: String) throws -> [String: (DType, [Int], [UInt8])] {
    let c = try HFCheckpoint.open(dir)
    var out: [String: (DType, [Int], [UInt8])] = [:]
    for t in c.tensors {
        let f = try SystemFile(readingAt: c.path(ofFile: t.file))
        out[t.name] = (t.dtype, t.shape, try f.readBytes(count: t.byteCount, at: t.offset))
    }
    return out
}

/// Naive reference transpose of a rows x cols matrix of `size`-byte elements.
func naiveTranspose(_ bytes: [UInt8], rows: Int, cols: Int, size: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: bytes.count)
    for r in 0..<rows {
        for c in 0..<cols {
            for k in 0..<size { out[(c * rows + r) * size + k] = bytes[(r * cols + c) * size + k] }
        }
    }
    return out
}

/// Reference f32 -> bf16 (round to nearest even, NaN -> 0x7FC0), written independently of the kernel.
func referenceBF16(_ bits: UInt32) -> UInt16 {
    if bits & 0x7FFF_FFFF > 0x7F80_0000 { return 0x7FC0 }
    let upper = bits >> 16
    let lower = bits & 0xFFFF
    if lower > 0x8000 || (lower == 0x8000 && upper & 1 == 1) { return UInt16(truncatingIfNeeded: upper + 1) }
    return UInt16(upper)
}

/// Writes a tiny synthetic checkpoint and returns its directory.
func synth(_ test: XCTestCase, pattern: String = "ME*-E", mtp: String = "*E", experts: Int = 8, shards: Int = 3,
           expertDType: DType = .bf16, modelPrefix: Bool = false, embedTokens: Bool = false) throws -> String {
    let dir = temporaryDirectory(test) + "/hf"
    var o = SyntheticCheckpoint.Options()
    o.preset.pattern = pattern
    o.preset.mtpPattern = mtp
    o.preset.experts = experts
    o.shards = shards
    o.expertDType = expertDType
    o.modelPrefix = modelPrefix
    o.embedTokensName = embedTokens
    try SyntheticCheckpoint.write(to: dir, options: o)
    return dir
}

extension Array where Element == UInt8 {
    var u16: [UInt16] { stride(from: 0, to: count - 1, by: 2).map { UInt16(self[$0]) | UInt16(self[$0 + 1]) << 8 } }
    var u32: [UInt32] {
        stride(from: 0, to: count - 3, by: 4).map {
            UInt32(self[$0]) | UInt32(self[$0 + 1]) << 8 | UInt32(self[$0 + 2]) << 16 | UInt32(self[$0 + 3]) << 24
        }
    }
}

/// A whole test file (tests read their own outputs; the library's reads are capped per kind).
func readWholeFile(_ path: String) throws -> [UInt8] { try NemoShard.readWholeFile(path, limit: 1 << 30) }

/// Tests that mount a small or read-only filesystem need root; elsewhere they are skipped, saying why.
func requireRoot(_ why: String) throws {
    if getuid() != 0 { throw XCTSkip("needs root: \(why)") }
}
