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

/// Files written by the Python `safetensors` library read correctly; files we write round-trip.
final class InteropTests: XCTestCase {
    func fixture() -> String {
        Bundle.module.path(forResource: "python_safetensors", ofType: "safetensors", inDirectory: "Fixtures")!
    }

    func testReadsPythonWrittenFile() throws {
        let f = try SafetensorsFile(path: fixture())
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: f.header.metadata.map { ($0.0, $0.1) }),
                       ["format": "np", "made_by": "safetensors 0.8.0"])
        let w = try f.tensor("weight_f32")
        XCTAssertEqual(w.dtype, .f32)
        XCTAssertEqual(w.shape, [2, 3])
        XCTAssertEqual(w.byteArray.u32.map { Float(bitPattern: $0) }, [1.0, -2.5, 3.25, 0.0, 1e-3, -1e30])
        let h = try f.tensor("half")
        XCTAssertEqual(h.dtype, .f16)
        XCTAssertEqual(h.byteArray.u16, [0x3C00, 0xB800, 0x7BFF, 0x0400])
        let ids = try f.tensor("ids")
        XCTAssertEqual(ids.dtype, .i64)
        XCTAssertEqual(ids.byteArray.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) }, [1, -2, 3, 9_007_199_254_740_993])
        let empty = try f.tensor("empty")
        XCTAssertEqual(empty.shape, [0, 4])
        XCTAssertEqual(empty.byteCount, 0)
    }

    func testRewriteRoundTripsWithIdenticalBytes() throws {
        let source = try SafetensorsFile(path: fixture())
        let tensors = try source.header.tensors.map { ($0.name, try source.tensor($0.name)) }
        let path = temporaryDirectory(self) + "/copy.safetensors"
        try SafetensorsWriter.write(path: path, tensors: tensors, metadata: [("format", "pt")])
        let back = try SafetensorsFile(path: path)
        XCTAssertEqual(back.header.tensors.map(\.name), tensors.map(\.0), "order is kept")
        for (name, t) in tensors {
            let r = try back.tensor(name)
            XCTAssertEqual(r.dtype, t.dtype)
            XCTAssertEqual(r.shape, t.shape)
            XCTAssertEqual(r.byteArray, t.byteArray, name)
        }
        XCTAssertEqual(back.header.dataStart % 8, 0, "header padded to 8 bytes")
        XCTAssertEqual(back.header.metadata.first?.1, "pt")
    }

    func testWriterLeavesOnlyTheFinalFile() throws {
        let dir = temporaryDirectory(self)
        let t = Tensor(dtype: .u8, shape: [3], bytes: [1, 2, 3])
        try SafetensorsWriter.write(path: dir + "/a.safetensors", tensors: [("t", t)])
        XCTAssertEqual(try FS.list(dir), ["a.safetensors"])
        // An uncommitted writer removes its temporary file.
        do {
            let w = try SafetensorsWriter(path: dir + "/b.safetensors", specs: [TensorSpec(name: "t", dtype: .u8, shape: [3])])
            try w.write(tensor: 0, UnsafeRawBufferPointer(t.storage.bytes))
            XCTAssertEqual(try FS.list(dir).count, 2)
        }
        XCTAssertEqual(try FS.list(dir), ["a.safetensors"])
    }
}
