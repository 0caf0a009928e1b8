import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// In-memory loads hand out non-expert tensors as copy-on-write mappings of the page cache: their
/// pages must stay shared with the file until written (no anonymous copies), and a write must copy
/// only the page written and never reach the file.
final class MappedTensorTests: XCTestCase {
    /// `Anonymous` and `Rss` kB of the mapping in /proc/self/smaps that contains `address`.
    func smaps(containing address: UnsafeRawPointer) throws -> (anonymous: Int, rss: Int) {
        let text = String(decoding: try readWholeFile("/proc/self/smaps"), as: UTF8.self)
        let a = UInt(bitPattern: address)
        var inside = false, anonymous: Int?, rss: Int?
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                if inside { break }
                let bounds = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = bounds.count == 2 && bounds[0] <= a && a < bounds[1]
            } else if inside, fields.count >= 2, let kb = Int(fields[1]) {
                if fields[0] == "Anonymous:" { anonymous = kb }
                if fields[0] == "Rss:" { rss = kb }
            }
        }
        return (try XCTUnwrap(anonymous, "no mapping holds the tensor"), try XCTUnwrap(rss))
    }

    func testNonExpertTensorsShareThePageCacheUntilWritten() throws {
        let hf = temporaryDirectory(self) + "/hf"
        var o = SyntheticCheckpoint.Options()
        o.preset.vocab = 8192   // embeddings of 8192 x 32 bf16 = 512 KiB: mapped, not copied
        o.shards = 1
        try SyntheticCheckpoint.write(to: hf, options: o)
        let fileBefore = try readHF(hf)["backbone.embeddings.weight"]?.2

        let state = try LoadJob.run(LoadJob.Options(source: hf), world: SoloCollective()).stateDict
        let embed = try XCTUnwrap(state["model.embed_tokens.weight"])
        XCTAssertEqual(embed.byteCount, 512 << 10)
        let base = try XCTUnwrap(embed.storage.bytes.baseAddress)
        let before = try smaps(containing: base)
        XCTAssertEqual(before.anonymous, 0, "loading copied the mapped tensor's pages")
        XCTAssertGreaterThanOrEqual(before.rss, 512, "the mapping's page tables were not filled")
        XCTAssertEqual(embed.byteArray, fileBefore)

        base.storeBytes(of: ~base.load(as: UInt8.self), as: UInt8.self)
        let after = try smaps(containing: base)
        XCTAssertEqual(after.anonymous, 4, "a write copies exactly the page written")
        XCTAssertEqual(try readHF(hf)["backbone.embeddings.weight"]?.2, fileBefore, "a write reached the file")
    }
}
