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

/// A committed fixture directory copied to a fresh temporary directory (tests never touch the
/// committed files). `relative` is under `Fixtures/`, e.g. `transformers5/moe`.
func fixtureCopy(_ test: XCTestCase, _ relative: String) throws -> String {
    let source = try XCTUnwrap(Bundle.module.resourcePath) + "/Fixtures/" + relative
    XCTAssertTrue(FileManager.default.fileExists(atPath: source + "/config.json") || relative.hasPrefix("dcp"), source)
    let dest = temporaryDirectory(test) + "/" + relative.replacingOccurrences(of: "/", with: "-")
    try FileManager.default.copyItem(atPath: source, toPath: dest)
    return dest
}

/// Checkpoints written by transformers 5.24's `save_pretrained` (Fixtures/transformers5: moe with
/// 6 experts on 3 MoE layers, latent MoE with `moe_latent_size` 16, dense with no MoE layer) load,
/// reshard and export exactly like our own synthetic ones.
final class FieldCheckpointTests: XCTestCase {
    static let variants = ["moe", "latent", "dense"]

    func testLoadOnOneTwoFourRanksAndSaveHFRoundTrip() throws {
        for v in Self.variants {
            let hf = try fixtureCopy(self, "transformers5/" + v)
            let dir = temporaryDirectory(self)
            for n in [1, 2, 4] { try ok(["load", hf, "--out", "\(dir)/r\(n)"], ranks: n) }
            for n in [2, 4] {
                let r = try assertVerified("\(dir)/r1", "\(dir)/r\(n)")
                XCTAssertFalse(r.a.isEmpty, "\(v) \(n) ranks: tensors were compared")
            }
            let source = try readHF(hf)
            XCTAssertGreaterThan(source.count, 30, v)
            for n in [1, 2, 4] {
                let out = "\(dir)/hf\(n)"
                // The default (nemo-0.7) rules hold Mamba A_log/D/dt_bias in F32; the export keeps
                // the source's dtypes, so these fixtures (BF16, `embeddings`) come back byte for byte.
                try ok(["save-hf", "\(dir)/r\(n)", out, "--keep-source-dtypes"], ranks: n)
                let export = try readHF(out)
                XCTAssertEqual(Set(export.keys), Set(source.keys), "\(v) from \(n) ranks")
                for (key, (dtype, shape, bytes)) in source {
                    guard let e = export[key] else { XCTFail("\(v): \(key) missing from the \(n)-rank export"); continue }
                    XCTAssertEqual(e.0, dtype, "\(v) \(n) \(key)")
                    XCTAssertEqual(e.1, shape, "\(v) \(n) \(key)")
                    XCTAssertEqual(e.2, bytes, "\(v) \(n) \(key)")
                }
            }
            let strict = try assertVerified(hf, "\(dir)/hf4", strict: true)
            XCTAssertEqual(strict.ignored, [], v)
            let config = try JSON.parse(readWholeFile("\(dir)/hf4/config.json"))
            XCTAssertEqual(config, try JSON.parse(readWholeFile(hf + "/config.json")), v)
        }
    }

    func testReshardFourToTwoEqualsAFreshTwoRankLoad() throws {
        for v in Self.variants {
            let hf = try fixtureCopy(self, "transformers5/" + v)
            let dir = temporaryDirectory(self)
            try inThreads(["load", hf, "--out", dir + "/four"], ranks: 4)
            try ok(["reshard", dir + "/four", "--out", dir + "/two"], ranks: 2)
            try inThreads(["load", hf, "--out", dir + "/fresh"], ranks: 2)
            for k in 0..<2 {
                let name = Manifest.rankFileName(k, of: 2)
                XCTAssertEqual(try readWholeFile(dir + "/two/" + name), try readWholeFile(dir + "/fresh/" + name), "\(v) rank \(k)")
            }
            XCTAssertEqual(try Manifest.load(directory: dir + "/two").toJSON(), try Manifest.load(directory: dir + "/fresh").toJSON(), v)
            try assertVerified(hf, dir + "/two", strict: true)
        }
    }

    func testExpertsAreGroupedPerRankInTheLatentWidth() throws {
        let hf = try fixtureCopy(self, "transformers5/latent")
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/out"], ranks: 4)
        let manifest = try Manifest.load(directory: dir + "/out")
        XCTAssertEqual(manifest.ranks.map(\.experts), [ExpertRange(start: 0, end: 2), ExpertRange(start: 2, end: 4),
                                                       ExpertRange(start: 4, end: 5), ExpertRange(start: 5, end: 6)])
        let source = try readHF(hf)
        for r in manifest.ranks {
            let file = try readAll(dir + "/out/" + r.file)
            for layer in [1, 3] {
                let prefix = "model.layers.\(layer).mixer."
                let up = try XCTUnwrap(file[prefix + "experts.gate_and_up_projs"], "rank \(r.rank) layer \(layer)")
                let down = try XCTUnwrap(file[prefix + "experts.down_projs"], "rank \(r.rank) layer \(layer)")
                // [n_local, latent 16, moe_intermediate 16], not the hidden width 32.
                XCTAssertEqual(up.1, [r.experts.count, 16, 16])
                XCTAssertEqual(down.1, [r.experts.count, 16, 16])
                XCTAssertEqual(up.0, .bf16)
                // Slice j is expert (start + j)'s up_proj [inter, latent] transposed.
                for j in 0..<r.experts.count {
                    let e = r.experts.start + j
                    let w = try XCTUnwrap(source["backbone.layers.\(layer).mixer.experts.\(e).up_proj.weight"])
                    XCTAssertEqual(w.1, [16, 16])
                    let slice = Array(up.2[(j * 512)..<((j + 1) * 512)])
                    XCTAssertEqual(slice, naiveTranspose(w.2, rows: 16, cols: 16, size: 2), "rank \(r.rank) expert \(e)")
                }
            }
            // The latent projections pass through, in their holder's file.
            for name in ["fc1_latent_proj", "fc2_latent_proj"] {
                let key = "model.layers.1.mixer.\(name).weight"
                let t = try XCTUnwrap(manifest.tensors.first { $0.name == key }, key)
                XCTAssertEqual(file[key] != nil, t.holder == r.rank, key)
            }
        }
        let config = try JSON.parse(readWholeFile(hf + "/config.json"))
        XCTAssertEqual(config["moe_latent_size"]?.intValue, 16)
        XCTAssertEqual(config["hidden_size"]?.intValue, 32)
    }

    func testInspectShowsTheTransformers5Form() throws {
        let hf = try fixtureCopy(self, "transformers5/moe")
        let j = try XCTUnwrap(try ok(["inspect", hf, "--json"]).json)
        XCTAssertEqual(j["pattern"]?.stringValue, "ME*E-E")
        XCTAssertEqual(j["blocks_from"]?.stringValue, "layers_block_type")
        XCTAssertEqual(j["layers"]?.intValue, 6)
        XCTAssertEqual(j["mtp_pattern"]?.stringValue, "")
        XCTAssertEqual(j["moe_layers_with_experts"]?.arrayValue?.count, 3)
        let dense = try XCTUnwrap(try ok(["inspect", try fixtureCopy(self, "transformers5/dense"), "--json"]).json)
        XCTAssertEqual(dense["pattern"]?.stringValue, "M*-M-")
        XCTAssertEqual(dense["expert_tensors"]?.intValue, 0)
    }
}

/// The `config.json` forms: `hybrid_override_pattern` and the `layers_block_type` word list, in the
/// older words and in transformers 5's.
final class FieldConfigTests: XCTestCase {
    func config(_ text: String) throws -> NemotronConfig { try NemotronConfig(json: try JSON.parse(text), path: "config.json") }

    func testTransformers5WordsAndDerivedLayerCount() throws {
        let c = try config(#"{"layers_block_type":["linear_attention","moe","full_attention","mlp"],"hidden_size":8,"n_routed_experts":4,"moe_intermediate_size":2}"#)
        XCTAssertEqual(c.layers, [.mamba, .moe, .attention, .mlp])
        XCTAssertEqual(c.numHiddenLayers, 4, "derived from the list")
        let legacy = try config(#"{"layers_block_type":["mamba","moe","attention","mlp"],"hidden_size":8,"n_routed_experts":4,"moe_intermediate_size":2}"#)
        XCTAssertEqual(legacy.layers, c.layers)
        let mixed = try config(#"{"layers_block_type":["mamba","full_attention"],"num_hidden_layers":2,"hidden_size":8}"#)
        XCTAssertEqual(mixed.layers, [.mamba, .attention])
        XCTAssertEqual(mixed.numHiddenLayers, 2)
        let pattern = try config(#"{"hybrid_override_pattern":"M*","hidden_size":8}"#)
        XCTAssertEqual(pattern.numHiddenLayers, 2, "derived from the pattern too")
    }

    func testExplicitLayerCountMustMatchTheList() {
        XCTAssertThrowsError(try config(#"{"layers_block_type":["linear_attention","full_attention"],"num_hidden_layers":3,"hidden_size":8}"#)) {
            XCTAssertTrue("\($0)".contains("2 layers but num_hidden_layers is 3"), "\($0)")
            XCTAssertTrue("\($0)".contains("config.json"), "\($0)")
        }
    }

    func testUnknownWordIsOneClearError() {
        XCTAssertThrowsError(try config(#"{"layers_block_type":["linear_attention","sliding_attention"],"hidden_size":8}"#)) {
            XCTAssertTrue("\($0)".contains(#"unknown block type "sliding_attention""#), "\($0)")
        }
        XCTAssertThrowsError(try config(#"{"layers_block_type":"ME","hidden_size":8}"#)) {
            XCTAssertTrue("\($0)".contains("must be a list"), "\($0)")
        }
    }

    func testPatternAndListMustAgreeWhenBothAreThere() throws {
        let both = try config(#"{"hybrid_override_pattern":"ME","layers_block_type":["linear_attention","moe"],"hidden_size":8,"n_routed_experts":2,"moe_intermediate_size":2}"#)
        XCTAssertEqual(both.layers, [.mamba, .moe])
        XCTAssertThrowsError(try config(#"{"hybrid_override_pattern":"M*","layers_block_type":["linear_attention","moe"],"hidden_size":8,"n_routed_experts":2,"moe_intermediate_size":2}"#)) {
            XCTAssertTrue("\($0)".contains("hybrid_override_pattern"), "\($0)")
            XCTAssertTrue("\($0)".contains("layers_block_type"), "\($0)")
        }
    }

    func testMTPListWithNoNextNMeansNoMTP() throws {
        let none = try config(#"{"layers_block_type":["linear_attention"],"hidden_size":8,"mtp_layers_block_type":["full_attention","moe"],"num_nextn_predict_layers":0}"#)
        XCTAssertEqual(none.mtpLayers, [])
        XCTAssertFalse(none.hasExperts, "an MTP moe block that is not there needs no experts")
        let one = try config(#"{"layers_block_type":["linear_attention"],"hidden_size":8,"mtp_layers_block_type":["full_attention","moe"],"num_nextn_predict_layers":1,"n_routed_experts":4,"moe_intermediate_size":2}"#)
        XCTAssertEqual(one.mtpLayers, [.attention, .moe])
        XCTAssertTrue(one.hasExperts)
    }

    func testFloatObjectsAndNullsAreAccepted() throws {
        let text = #"{"layers_block_type":["linear_attention","moe"],"hidden_size":8,"n_routed_experts":6,"moe_intermediate_size":2,"moe_latent_size":null,"time_step_limit":[0.0,{"__float__":"Infinity"}]}"#
        let c = try config(text)
        XCTAssertNil(c.moeLatentSize)
        XCTAssertEqual(c.expertDim, 8)
        XCTAssertEqual(c.json["time_step_limit"]?.arrayValue?.last?["__float__"]?.stringValue, "Infinity")
        XCTAssertEqual(try JSON.parse(c.json.serialized()), c.json, "written back unchanged")
    }

    func testCommittedFixtureConfigs() throws {
        let root = try XCTUnwrap(Bundle.module.resourcePath) + "/Fixtures/transformers5/"
        let want: [String: ([BlockType], Int?)] = [
            "moe": ([.mamba, .moe, .attention, .moe, .mlp, .moe], nil),
            "latent": ([.mamba, .moe, .attention, .moe], 16),
            "dense": ([.mamba, .attention, .mlp, .mamba, .mlp], nil),
        ]
        for (v, (layers, latent)) in want {
            let c = try NemotronConfig(path: root + v + "/config.json")
            XCTAssertEqual(c.layers, layers, v)
            XCTAssertEqual(c.numHiddenLayers, layers.count, v)
            XCTAssertEqual(c.mtpLayers, [], v)
            XCTAssertEqual(c.moeLatentSize, latent, v)
            XCTAssertEqual(c.nRoutedExperts, 6, v)
        }
    }
}
