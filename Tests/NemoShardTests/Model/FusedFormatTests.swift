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

/// transformers 5's own layout (`save_pretrained(save_original_format=False)`): every expert of a
/// layer stacked in `...mixer.experts.up_proj` `[n, inter, in]` / `down_proj` `[n, in, inter]`.
/// `load` reads it into exactly the rank files the per-expert layout gives, `save-hf --format fused`
/// and `load --to-hf --format fused` write it back byte for byte, and a layer holding both forms,
/// or stacked tensors of the wrong shape, are refused with errors that say what was found.
final class FusedFormatTests: XCTestCase {
    /// One tensor as `readHF` returns it.
    typealias Stored = (DType, [Int], [UInt8])

    /// Writes `src` (a per-expert HF checkpoint) again with each layer's experts stacked as
    /// transformers keeps them, every key through `rename`, spread over `files` shard files in
    /// key order; config.json and generation_config.json copied. Returns the tensors written.
    @discardableResult
    func stack(_ src: String, into dst: String, files: Int = 2, rename: (String) -> String = { $0 }) throws -> [String: Stored] {
        let checkpoint = try HFCheckpoint.open(src)
        let tensors = try readHF(src)
        var order: [String] = []
        var out: [String: Stored] = [:]
        var slices: [String: [Int: Stored]] = [:]
        for t in checkpoint.tensors {
            // `...experts.E.up_proj.weight` -> stacked key `...experts.up_proj`, slice E.
            if let at = t.name.range(of: ".experts."), t.name.hasSuffix("_proj.weight"),
               case let rest = t.name[at.upperBound...].split(separator: "."), rest.count == 3, let e = Int(rest[0]) {
                let key = rename(String(t.name[..<at.upperBound]) + rest[1])
                if slices[key] == nil { order.append(key) }
                slices[key, default: [:]][e] = tensors[t.name]
            } else {
                let key = rename(t.name)
                order.append(key)
                out[key] = tensors[t.name]
            }
        }
        for (key, bySlice) in slices {
            let n = bySlice.count
            let first = try XCTUnwrap(bySlice[0])
            out[key] = (first.0, [n] + first.1, (0..<n).flatMap { bySlice[$0]?.2 ?? [] })
        }
        try FileManager.default.createDirectory(atPath: dst, withIntermediateDirectories: true)
        var weightMap: [(String, String)] = []
        let per = (order.count + files - 1) / files
        for f in 0..<files {
            let keys = Array(order.dropFirst(f * per).prefix(per))
            let name = HFIndex.shardName(f + 1, of: files)
            try SafetensorsWriter.write(path: dst + "/" + name, tensors: keys.map { k in
                let s = out[k]!
                return (k, Tensor(dtype: s.0, shape: s.1, bytes: s.2))
            }, metadata: [("format", "pt")])
            weightMap += keys.map { ($0, name) }
        }
        try HFIndex(weightMap: weightMap, totalSize: out.values.reduce(0) { $0 + $1.2.count }).write(into: dst)
        for extra in ["config.json", "generation_config.json"] where FS.exists(src + "/" + extra) {
            try FileManager.default.copyItem(atPath: src + "/" + extra, toPath: dst + "/" + extra)
        }
        return out
    }

    /// `a` and `b` hold the same keys, each with the same dtype, shape and bytes.
    func assertSameTensors(_ a: [String: Stored], _ b: [String: Stored], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.keys.sorted(), b.keys.sorted(), what, file: file, line: line)
        for (k, x) in a {
            guard let y = b[k] else { continue }
            XCTAssertTrue(x.0 == y.0 && x.1 == y.1 && x.2 == y.2, "\(what): \(k) \(x.0) \(x.1) vs \(y.0) \(y.1) (or its bytes) differ", file: file, line: line)
        }
    }

    /// Every rank file of two per-rank directories, byte for byte.
    func assertSameRankFiles(_ a: String, _ b: String, ranks: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        for r in 0..<ranks {
            let name = Manifest.rankFileName(r, of: ranks)
            XCTAssertEqual(digest(try readWholeFile(a + "/" + name)), digest(try readWholeFile(b + "/" + name)), name, file: file, line: line)
        }
    }

    /// transformers' load-time renaming, which its own layout keeps.
    static func backboneToModel(_ key: String) -> String { key.hasPrefix("backbone.") ? "model." + key.dropFirst("backbone.".count) : key }

    func testStackedCheckpointLoadsIntoTheRankFilesOfThePerExpertOne() throws {
        // model. keys as transformers writes them, backbone. keys (transformers renames them on
        // load), and f32 experts (cast to bf16 by load like per-expert ones).
        for synthArgs in [["--model-prefix"], [], ["--expert-dtype", "f32"]] {
            let perExpert = try synthCLI(["--experts", "7", "--mtp", "*E", "--shards", "3"] + synthArgs)
            let dir = temporaryDirectory(self)
            let written = try stack(perExpert, into: dir + "/stacked")
            XCTAssertEqual(written["\(synthArgs == ["--model-prefix"] ? "model" : "backbone").layers.1.mixer.experts.up_proj"]?.1, [7, 16, 32])
            XCTAssertEqual(written["mtp.layers.1.mixer.experts.down_proj"]?.1, [7, 32, 16])
            XCTAssertFalse(written.keys.contains { $0.contains(".experts.0.") })
            let inspected = try XCTUnwrap(try ok(["inspect", dir + "/stacked", "--json"]).json)
            XCTAssertEqual(inspected["expert_tensors"]?.intValue, 6, "3 MoE layers x 2 stacked keys")
            // 3 ranks split 7 experts unevenly: [0,3) [3,5) [5,7).
            for ranks in [1, 2, 3] {
                try ok(["load", perExpert, "--out", dir + "/per-expert-\(ranks)"], ranks: ranks)
                let r = try ok(["load", dir + "/stacked", "--out", dir + "/stacked-\(ranks)", "--json"], ranks: ranks)
                if ranks == 3 {
                    let experts = r.json?["ranks"]?.arrayValue?.compactMap { $0["experts"]?.arrayValue?.compactMap(\.intValue) }
                    XCTAssertEqual(experts, [[0, 3], [3, 5], [5, 7]], r.stdout)
                }
                try assertSameRankFiles(dir + "/per-expert-\(ranks)", dir + "/stacked-\(ranks)", ranks: ranks)
            }
            try ok(["verify", perExpert, dir + "/stacked"])
        }
    }

    func testFusedExportWritesTheStackedInputBackByteForByte() throws {
        let perExpert = try synthCLI(["--experts", "7", "--mtp", "*E", "--shards", "3", "--model-prefix"])
        let dir = temporaryDirectory(self)
        let stacked = try stack(perExpert, into: dir + "/stacked", files: 3)
        XCTAssertEqual(try readHF(dir + "/stacked").count, stacked.count)
        for ranks in [1, 2, 3] {
            try ok(["load", dir + "/stacked", "--out", dir + "/sharded-\(ranks)"], ranks: ranks)
            for (tag, extra) in [("default", []), ("gather", ["--gather"]), ("small", ["--max-shard-size", "20kB"])] {
                let out = dir + "/fused-\(ranks)-\(tag)"
                try ok(["save-hf", dir + "/sharded-\(ranks)", out, "--format", "fused"] + extra, ranks: ranks)
                assertSameTensors(stacked, try readHF(out), "save-hf --format fused \(tag), \(ranks) ranks")
                let memory = dir + "/memory-\(ranks)-\(tag)"
                try ok(["load", dir + "/stacked", "--to-hf", memory, "--format", "fused"] + extra, ranks: ranks)
                assertSameTensors(stacked, try readHF(memory), "load --to-hf --format fused \(tag), \(ranks) ranks")
            }
            // The default stays per expert: the same weights as the per-expert source, under its names
            // (in the source's dtypes: the nemo-0.7 rules would write Mamba A_log/D/dt_bias as F32).
            try ok(["save-hf", dir + "/sharded-\(ranks)", dir + "/original-\(ranks)", "--keep-source-dtypes"], ranks: ranks)
            assertSameTensors(try readHF(perExpert), try readHF(dir + "/original-\(ranks)"), "save-hf default, \(ranks) ranks")
        }
        // A per-rank checkpoint written with another world size exports the same fused tensors.
        try ok(["save-hf", dir + "/sharded-3", dir + "/fused-3-by-2", "--format", "fused"], ranks: 2)
        assertSameTensors(stacked, try readHF(dir + "/fused-3-by-2"), "save-hf --format fused of 3 rank files by 2 ranks")
        // From memory on a replicated mesh: only the primary replicas send rows.
        try ok(["load", dir + "/stacked", "--to-hf", dir + "/replicated", "--format", "fused", "--mesh", "dp=2,ep=2"], ranks: 4)
        assertSameTensors(stacked, try readHF(dir + "/replicated"), "load --to-hf --format fused, mesh dp=2,ep=2")
        // --exclude sees the stacked keys.
        try ok(["save-hf", dir + "/sharded-2", dir + "/no-mtp", "--format", "fused", "--exclude", "mtp\\."], ranks: 2)
        assertSameTensors(stacked.filter { !$0.key.hasPrefix("mtp.") }, try readHF(dir + "/no-mtp"), "--exclude mtp")
    }

    func testFusedExportOfABackboneCheckpointUsesTransformersNames() throws {
        let perExpert = try synthCLI(["--experts", "5", "--shards", "2"])
        let dir = temporaryDirectory(self)
        let want = try stack(perExpert, into: dir + "/want", rename: FusedFormatTests.backboneToModel)
        XCTAssertNotNil(want["model.embeddings.weight"])
        try ok(["load", perExpert, "--out", dir + "/sharded"], ranks: 2)
        try ok(["save-hf", dir + "/sharded", dir + "/fused", "--format", "fused"], ranks: 2)
        assertSameTensors(want, try readHF(dir + "/fused"), "fused export of a backbone. checkpoint")
        // From the fused export, the default way back restores per-expert keys (model. now).
        try ok(["load", dir + "/fused", "--out", dir + "/again"], ranks: 2)
        try assertSameRankFiles(dir + "/sharded", dir + "/again", ranks: 2)
    }

    /// A stacked checkpoint from `stack`, then `edit` applied to its tensors, written as one file.
    func brokenStacked(_ edit: (inout [String: Stored]) -> Void) throws -> String {
        let perExpert = try synthCLI(["--experts", "4", "--model-prefix"])
        let dir = temporaryDirectory(self)
        var tensors = try stack(perExpert, into: dir + "/ok", files: 1)
        edit(&tensors)
        let out = dir + "/bad"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try SafetensorsWriter.write(path: out + "/model.safetensors", tensors: tensors.keys.sorted().map { k in
            (k, Tensor(dtype: tensors[k]!.0, shape: tensors[k]!.1, bytes: tensors[k]!.2))
        })
        try FileManager.default.copyItem(atPath: perExpert + "/config.json", toPath: out + "/config.json")
        return out
    }

    /// `load` of `hf` on 2 ranks fails with exit 1, one error line holding every one of `words`,
    /// and writes nothing.
    func assertRefused(_ hf: String, _ words: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let out = temporaryDirectory(self) + "/out"
        let r = try CLI.run(["load", hf, "--out", out], ranks: 2)
        XCTAssertEqual(r.code, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr, file: file, line: line)
        for w in words { XCTAssertTrue(r.errorLines.first?.contains(w) ?? false, "\(w) not in: \(r.stderr)", file: file, line: line) }
        XCTAssertFalse(FS.exists(out), file: file, line: line)
    }

    func testBadStackedExpertsAreRefusedSayingWhatWasFound() throws {
        // Both forms in one layer: the stacked up_proj and one expert's own down_proj.
        let mixed = try brokenStacked { t in
            let down = t["model.layers.1.mixer.experts.down_proj"]!
            t["model.layers.1.mixer.experts.down_proj"] = nil
            t["model.layers.1.mixer.experts.0.down_proj.weight"] = (down.0, Array(down.1.dropFirst()), Array(down.2.prefix(down.2.count / 4)))
        }
        try assertRefused(mixed, ["layer 1 mixes stacked transformers experts", "model.layers.1.mixer.experts.up_proj",
                                  "model.layers.1.mixer.experts.0.down_proj.weight"])
        // Both whole forms of one projection.
        let both = try brokenStacked { t in
            let up = t["model.layers.1.mixer.experts.up_proj"]!
            for e in 0..<4 {
                let n = up.2.count / 4
                t["model.layers.1.mixer.experts.\(e).up_proj.weight"] = (up.0, Array(up.1.dropFirst()), Array(up.2[e * n..<(e + 1) * n]))
            }
        }
        try assertRefused(both, ["mixes stacked transformers experts"])
        // Three experts on dim 0 where the config has four.
        let short = try brokenStacked { t in
            let up = t["model.layers.1.mixer.experts.up_proj"]!
            t["model.layers.1.mixer.experts.up_proj"] = (up.0, [3] + up.1.dropFirst(), Array(up.2.prefix(up.2.count / 4 * 3)))
        }
        try assertRefused(short, ["model.layers.1.mixer.experts.up_proj", "(stacked transformers experts)", "holds 3 experts but n_routed_experts is 4"])
        // A stacked up_proj without its down_proj.
        let alone = try brokenStacked { t in t["model.layers.1.mixer.experts.down_proj"] = nil }
        try assertRefused(alone, ["(stacked transformers experts) has no stacked down_proj of layer 1"])
        // down_proj stacked with up_proj's shape (not transposed).
        let untransposed = try brokenStacked { t in
            let up = t["model.layers.1.mixer.experts.up_proj"]!
            t["model.layers.1.mixer.experts.down_proj"] = up
        }
        try assertRefused(untransposed, ["model.layers.1.mixer.experts.down_proj", "(stacked transformers experts)", "moe_intermediate_size 16 as dim 2"])
        // Not a float type.
        let ints = try brokenStacked { t in
            let down = t["model.layers.1.mixer.experts.down_proj"]!
            t["model.layers.1.mixer.experts.down_proj"] = (.i16, down.1, down.2)
        }
        try assertRefused(ints, ["(stacked transformers experts)", "expert dtype I16 is not a float type"])
    }

    func testARankFailingWhileSendingItsRowsFailsTheExportWithoutAHang() throws {
        let hf = try synthCLI(["--experts", "7", "--model-prefix"])
        let parent = temporaryDirectory(self)
        let out = parent + "/out"
        for gather in [[], ["--gather"]] {
            let r = try CLI.run(["load", hf, "--to-hf", out, "--format", "fused"] + gather, ranks: 3,
                                env: ["NEMOSHARD_FAILPOINT": "stacked-rows:1:error"])
            XCTAssertEqual(r.code, 1, r.stderr)
            XCTAssertEqual(r.errorLines.count, 1, r.stderr)
            XCTAssertTrue(r.errorLines.first?.contains("rank 1") ?? false, r.stderr)
            XCTAssertTrue(r.errorLines.first?.contains("injected failure at failpoint stacked-rows") ?? false, r.stderr)
            XCTAssertFalse(FS.exists(out))
            XCTAssertEqual(try FS.list(parent), [], "no staging directory or lock is left")
        }
    }

    func testFormatOptionIsCheckedBeforeAnyWork() throws {
        let hf = try synthCLI(["--experts", "4"])
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/sharded"], ranks: 2)
        let bogus = try CLI.run(["save-hf", dir + "/sharded", dir + "/x", "--format", "stacked"], ranks: 2)
        XCTAssertEqual(bogus.code, 2, bogus.stderr)
        XCTAssertEqual(bogus.errorLines, ["nemoshard: error: --format must be original or fused, got \"stacked\""])
        let stray = try CLI.run(["load", hf, "--out", dir + "/y", "--format", "fused"], ranks: 2)
        XCTAssertEqual(stray.code, 2, stray.stderr)
        XCTAssertFalse(FS.exists(dir + "/x") || FS.exists(dir + "/y"))
        XCTAssertTrue(try ok(["save-hf", "--help"]).stdout.contains("--format"))
    }
}
