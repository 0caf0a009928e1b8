import XCTest
@testable import NemoShard

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
}

/// The expert-range formula and the mesh layout.
final class MeshTests: XCTestCase {
    func ranges(_ e: Int, _ w: Int) -> [[Int]] { (0..<w).map { let r = ExpertRange(rank: $0, of: w, experts: e); return [r.start, r.end] } }

    func testTenExpertsOverFour() { XCTAssertEqual(ranges(10, 4), [[0, 3], [3, 6], [6, 8], [8, 10]]) }

    func testOneTwentyEightOverEight() {
        XCTAssertEqual(ranges(128, 8), (0..<8).map { [$0 * 16, $0 * 16 + 16] })
    }

    func testMoreRanksThanExperts() {
        XCTAssertEqual(ranges(3, 5), [[0, 1], [1, 2], [2, 3], [3, 3], [3, 3]])
        XCTAssertTrue(ExpertRange(rank: 4, of: 5, experts: 3).isEmpty)
    }

    func testRangesTileAllExperts() {
        for e in [1, 7, 10, 64, 128] {
            for w in 1...12 {
                let r = ranges(e, w)
                XCTAssertEqual(r.first?.first, 0)
                XCTAssertEqual(r.last?.last, e)
                for i in 1..<r.count { XCTAssertEqual(r[i][0], r[i - 1][1]) }
                XCTAssertLessThanOrEqual((r.map { $0[1] - $0[0] }.max() ?? 0) - (r.map { $0[1] - $0[0] }.min() ?? 0), 1)
            }
        }
    }

    func testRowMajorCoordinatesAndReplicas() throws {
        let m = try MeshShape(parsing: "dp=2,ep=2")
        XCTAssertEqual((0..<4).map { m.coordinates(of: $0) }, [[0, 0], [0, 1], [1, 0], [1, 1]])
        XCTAssertEqual((0..<4).map { m.expertRange(of: $0, experts: 10) },
                       [ExpertRange(start: 0, end: 5), ExpertRange(start: 5, end: 10), ExpertRange(start: 0, end: 5), ExpertRange(start: 5, end: 10)])
        let noEP = try MeshShape(parsing: "dp=3")
        XCTAssertEqual(noEP.expertRange(of: 2, experts: 10), ExpertRange(start: 7, end: 10), "no ep: whole mesh partitions")
    }

    func testMeshErrors() {
        XCTAssertThrowsError(try MeshShape(parsing: "dp=2,xx=2")) { XCTAssertTrue("\($0)".contains("unknown mesh dimension")) }
        XCTAssertThrowsError(try MeshShape(parsing: "ep=0"))
        XCTAssertThrowsError(try MeshShape(parsing: "ep"))
        XCTAssertThrowsError(try MeshShape(parsing: "ep=2,ep=2"))
    }

    func testDeviceMeshOverWorldOfOne() throws {
        let mesh = try DeviceMesh(shape: [1, 1], names: ["dp", "ep"], world: SoloCollective())
        XCTAssertEqual(mesh["ep"]?.size, 1)
        XCTAssertEqual(mesh.expertRange(experts: 8), ExpertRange(start: 0, end: 8))
        XCTAssertThrowsError(try DeviceMesh(shape: [2], names: ["ep"], world: SoloCollective())) {
            XCTAssertTrue("\($0)".contains("has 2 ranks but the job has 1"))
        }
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
}
