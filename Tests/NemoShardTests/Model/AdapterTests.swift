import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// Every rule of the key mapping in docs/nemotron-v3-format.md.
final class AdapterTests: XCTestCase {
    let a = NemotronV3Adapter(numHiddenLayers: 4, nRoutedExperts: 8, moeIntermediateSize: 16)
    let bb = ExpertLayer(namespace: .backbone, prefix: "model.", layer: 1)

    func testBackboneRenames() throws {
        XCTAssertEqual(try a.classify("backbone.embeddings.weight"), .rename("model.embed_tokens.weight"))
        XCTAssertEqual(try a.classify("backbone.embed_tokens.weight"), .rename("model.embed_tokens.weight"))
        XCTAssertEqual(try a.classify("backbone.norm_f.weight"), .rename("model.norm.weight"))
        XCTAssertEqual(try a.classify("backbone.layers.0.mixer.in_proj.weight"), .rename("model.layers.0.mixer.in_proj.weight"))
        XCTAssertEqual(try a.classify("backbone.layers.1.mixer.shared_experts.up_proj.weight"),
                       .rename("model.layers.1.mixer.shared_experts.up_proj.weight"))
        XCTAssertEqual(try a.classify("backbone.layers.1.mixer.gate.e_score_correction_bias"),
                       .rename("model.layers.1.mixer.gate.e_score_correction_bias"))
        XCTAssertEqual(try a.classify("lm_head.weight"), .rename("lm_head.weight"))
    }

    func testModelPrefixedInput() throws {
        XCTAssertEqual(try a.classify("model.embeddings.weight"), .rename("model.embed_tokens.weight"))
        XCTAssertEqual(try a.classify("model.norm_f.weight"), .rename("model.norm.weight"))
        XCTAssertEqual(try a.classify("model.layers.1.mixer.experts.3.up_proj.weight"), .expert(bb, expert: 3, .up))
    }

    func testExpertKeys() throws {
        XCTAssertEqual(try a.classify("backbone.layers.1.mixer.experts.7.up_proj.weight"), .expert(bb, expert: 7, .up))
        XCTAssertEqual(try a.classify("backbone.layers.1.mixer.experts.0.down_proj.weight"), .expert(bb, expert: 0, .down))
        if case .drop = try a.classify("backbone.layers.1.mixer.experts.0.gate_proj.weight") {} else { XCTFail("gate_proj is ignored") }
    }

    func testExpertLookingKeyThatDoesNotMatchPassesThrough() throws {
        XCTAssertEqual(try a.classify("backbone.layers.1.mixer.experts.bias_proj.weight"),
                       .rename("model.layers.1.mixer.experts.bias_proj.weight"))
        XCTAssertEqual(try a.classify("backbone.layers.1.mixer.experts.3.up_proj.bias"),
                       .rename("model.layers.1.mixer.experts.3.up_proj.bias"))
    }

    func testScaleInvDropped() throws {
        if case .drop = try a.classify("backbone.layers.0.mixer.in_proj.weight_scale_inv") {} else { XCTFail() }
        if case .drop = try a.classify("mtp.layers.0.mixer.q_proj.weight_scale_inv") {} else { XCTFail() }
    }

    func testLayerTruncation() throws {
        if case .drop = try a.classify("backbone.layers.4.norm.weight") {} else { XCTFail("layer 4 >= 4 is dropped") }
        if case .drop = try a.classify("model.layers.9.mixer.experts.0.up_proj.weight") {} else { XCTFail() }
        XCTAssertEqual(try a.classify("backbone.layers.3.norm.weight"), .rename("model.layers.3.norm.weight"))
        XCTAssertEqual(try a.classify("mtp.layers.7.norm.weight"), .rename("mtp.layers.7.norm.weight"), "MTP is not truncated")
    }

    func testMTPKeys() throws {
        let slot = ExpertLayer(namespace: .mtp, prefix: "mtp.", layer: 1)
        XCTAssertEqual(try a.classify("mtp.layers.1.mixer.experts.2.up_proj.weight"), .expert(slot, expert: 2, .up))
        XCTAssertEqual(slot.groupedName(.up), "mtp.layers.1.mixer.experts.gate_and_up_projs")
        XCTAssertEqual(try a.classify("mtp.layers.0.eh_proj.weight"), .rename("mtp.layers.0.eh_proj.weight"))
    }

    func testDenseModelIsPureRename() throws {
        let dense = NemotronV3Adapter(numHiddenLayers: 2, nRoutedExperts: nil, moeIntermediateSize: nil)
        XCTAssertEqual(try dense.classify("backbone.layers.1.mixer.experts.0.up_proj.weight"),
                       .rename("model.layers.1.mixer.experts.0.up_proj.weight"))
        XCTAssertEqual(dense.toHF("model.layers.1.mixer.experts.gate_and_up_projs", shape: [2, 4, 16], firstExpert: 0),
                       .renamed("backbone.layers.1.mixer.experts.gate_and_up_projs"))
    }

    func testToHFSplitsGroupedTensorsWithGlobalIds() {
        XCTAssertEqual(a.toHF("model.layers.1.mixer.experts.gate_and_up_projs", shape: [2, 32, 16], firstExpert: 3),
                       .split(keyForExpert: ["backbone.layers.1.mixer.experts.3.up_proj.weight",
                                             "backbone.layers.1.mixer.experts.4.up_proj.weight"], projection: .up))
        XCTAssertEqual(a.toHF("model.layers.1.mixer.experts.down_projs", shape: [1, 16, 32], firstExpert: 5),
                       .split(keyForExpert: ["backbone.layers.1.mixer.experts.5.down_proj.weight"], projection: .down))
        XCTAssertEqual(a.toHF("mtp.layers.0.mixer.experts.down_projs", shape: [1, 16, 32], firstExpert: 0),
                       .split(keyForExpert: ["mtp.layers.0.mixer.experts.0.down_proj.weight"], projection: .down))
    }

    func testToHFDownProjsNeedsMoeInterAtDim1() {
        XCTAssertEqual(a.toHF("model.layers.1.mixer.experts.down_projs", shape: [2, 32, 16], firstExpert: 0),
                       .renamed("backbone.layers.1.mixer.experts.down_projs"))
        XCTAssertEqual(a.toHF("model.layers.1.mixer.experts.down_projs", shape: [16, 32], firstExpert: 0),
                       .renamed("backbone.layers.1.mixer.experts.down_projs"))
    }

    func testToHFRenames() {
        XCTAssertEqual(a.toHF("model.norm.weight", shape: [32], firstExpert: 0), .renamed("backbone.norm_f.weight"))
        XCTAssertEqual(a.toHF("model.embed_tokens.weight", shape: [4, 32], firstExpert: 0), .renamed("backbone.embeddings.weight"))
        XCTAssertEqual(a.toHF("lm_head.weight", shape: [4, 32], firstExpert: 0), .renamed("lm_head.weight"))
        XCTAssertEqual(a.toHF("mtp.layers.0.norm.weight", shape: [32], firstExpert: 0), .renamed("mtp.layers.0.norm.weight"))
        var m = a
        m.hfPrefix = "model."
        XCTAssertEqual(m.toHF("model.norm.weight", shape: [32], firstExpert: 0), .renamed("model.norm_f.weight"))
        XCTAssertEqual(m.toHF("model.layers.1.mixer.experts.gate_and_up_projs", shape: [1, 32, 16], firstExpert: 0),
                       .split(keyForExpert: ["model.layers.1.mixer.experts.0.up_proj.weight"], projection: .up))
    }

    func testExcludeUsesReMatchSemantics() throws {
        let f = try KeyFilter(pattern: #"backbone\.layers\.1\."#)
        XCTAssertTrue(f.matches("backbone.layers.1.norm.weight"))
        XCTAssertFalse(f.matches("xbackbone.layers.1.norm.weight"), "anchored at the start")
        XCTAssertTrue(try KeyFilter(pattern: "mtp").matches("mtp.layers.0.norm.weight"))
        XCTAssertFalse(try KeyFilter(pattern: "norm").matches("backbone.norm_f.weight"), "not a search")
        XCTAssertThrowsError(try KeyFilter(pattern: "("))
    }

    func testDropReasonsAreTypedAndCarryTheExpertLayer() throws {
        let a = NemotronV3Adapter(numHiddenLayers: 4, nRoutedExperts: 8, moeIntermediateSize: 16)
        let slot = ExpertLayer(namespace: .backbone, prefix: "model.", layer: 1)
        XCTAssertEqual(try a.classify("backbone.layers.1.mixer.experts.3.gate_proj.weight"), .drop(.gateProjection(slot)))
        XCTAssertEqual(try a.classify("mtp.layers.1.mixer.experts.0.gate_proj.weight"),
                       .drop(.gateProjection(ExpertLayer(namespace: .mtp, prefix: "mtp.", layer: 1))))
        XCTAssertEqual(try a.classify("backbone.layers.0.mixer.in_proj.weight_scale_inv"), .drop(.scaleInverse))
        XCTAssertEqual(try a.classify("backbone.layers.7.norm.weight"), .drop(.beyondNumHiddenLayers(layer: 7, limit: 4)))
        XCTAssertEqual(DropReason.beyondNumHiddenLayers(layer: 7, limit: 4).description, "layer 7 >= num_hidden_layers 4")
        XCTAssertThrowsError(try a.classify("backbone.layers.1.mixer.experts.03.up_proj.weight"))
        XCTAssertThrowsError(try a.classify("backbone.layers.01.mixer.experts.3.up_proj.weight"))
    }

    func testPrefixDetectionPrefersExpertKeys() {
        XCTAssertEqual(NemotronV3Adapter.detectPrefix(["backbone.embeddings.weight", "model.layers.1.mixer.experts.0.up_proj.weight"]), "model.")
        XCTAssertEqual(NemotronV3Adapter.detectPrefix(["lm_head.weight", "model.norm_f.weight"]), "model.")
        XCTAssertEqual(NemotronV3Adapter.detectPrefix(["mtp.layers.0.mixer.experts.0.up_proj.weight", "backbone.norm_f.weight"]), "backbone.")
        XCTAssertEqual(NemotronV3Adapter.detectPrefix(["lm_head.weight"]), "backbone.")
    }

    func testGroupedNamesParseBackToTheirSlot() {
        for slot in [ExpertLayer(namespace: .backbone, prefix: "model.", layer: 12),
                     ExpertLayer(namespace: .backbone, prefix: "model.language_model.", layer: 3),
                     ExpertLayer(namespace: .mtp, prefix: "mtp.", layer: 1)] {
            for p in [Projection.up, .down] {
                XCTAssertEqual(ExpertSlot(groupedName: slot.groupedName(p)), ExpertSlot(layer: slot, projection: p))
            }
        }
        for bad in ["model.layers.1.mixer.experts.gate_proj", "model.layers.01.mixer.experts.down_projs",
                    "model.layers..mixer.experts.down_projs", "model.norm.weight", "layers.x.mixer.experts.down_projs"] {
            XCTAssertNil(ExpertSlot(groupedName: bad), bad)
        }
    }
}
