import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardMPI
@testable import NemoShard

/// A `Tensor` is a value whose bytes are reached only inside `withUnsafeBytes` /
/// `withUnsafeMutableBytes`: a write never shows through another copy, which is what lets it be
/// `Sendable` with a raw buffer inside.
final class TensorAccessTests: XCTestCase {
    func testAWriteToACopyLeavesTheOriginalAlone() throws {
        var a = try Tensor(dtype: .u8, shape: [2, 2], for: "a test tensor")
        try a.withUnsafeMutableBytes { for i in 0..<4 { $0[i] = UInt8(i) } }
        var b = a
        try b.withUnsafeMutableBytes { $0[0] = 99 }
        XCTAssertEqual(a.byteArray, [0, 1, 2, 3])
        XCTAssertEqual(b.byteArray, [99, 1, 2, 3])
        // Owned alone, a tensor is written in place: no second copy.
        let before = b.withUnsafeBytes { $0.baseAddress }
        try b.withUnsafeMutableBytes { $0[1] = 98 }
        XCTAssertEqual(b.withUnsafeBytes { $0.baseAddress }, before)
        XCTAssertEqual(b.byteArray, [99, 98, 2, 3])
    }

    func testWritingALoadedTensorChangesNeitherTheResultNorTheSourceFile() throws {
        let hf = try synth(self, experts: 8)
        let loaded = try LoadJob.run(LoadJob.Options(source: hf), world: SoloCollective())
        // A non-expert tensor of an in-memory load maps its bytes in the source file.
        let name = "model.embed_tokens.weight"
        var tensor = try XCTUnwrap(loaded.stateDict[name])
        let original = tensor.byteArray
        let onDisk = try readHF(hf)["backbone.embeddings.weight"]?.2
        XCTAssertEqual(onDisk, original)
        try tensor.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0xAB) }
        XCTAssertEqual(Set(tensor.byteArray), [0xAB])
        XCTAssertEqual(try XCTUnwrap(loaded.stateDict[name]).byteArray, original)
        XCTAssertEqual(try readHF(hf)["backbone.embeddings.weight"]?.2, original)
    }
}
