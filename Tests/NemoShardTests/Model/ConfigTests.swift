import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

final class ConfigTests: XCTestCase {
    func config(_ text: String) throws -> NemotronConfig { try NemotronConfig(json: try JSON.parse(text), path: "config.json") }

    func testPatternAndWords() throws {
        let c = try config(#"{"hybrid_override_pattern":"ME*-","num_hidden_layers":4,"hidden_size":8,"n_routed_experts":4,"moe_intermediate_size":2}"#)
        XCTAssertEqual(c.layers, [.mamba, .moe, .attention, .mlp])
        let w = try config(#"{"layers_block_type":["mamba","moe"],"num_hidden_layers":2,"hidden_size":8,"n_routed_experts":4,"moe_intermediate_size":2,"moe_latent_size":4}"#)
        XCTAssertEqual(w.layers, [.mamba, .moe])
        XCTAssertEqual(w.expertDim, 4, "latent width when set")
    }

    func testMTPPattern() throws {
        let c = try config(#"{"hybrid_override_pattern":"M","num_hidden_layers":1,"hidden_size":8,"num_nextn_predict_layers":1,"mtp_hybrid_override_pattern":"*E","n_routed_experts":4,"moe_intermediate_size":2}"#)
        XCTAssertEqual(c.mtpLayers, [.attention, .moe])
        XCTAssertTrue(c.hasExperts)
    }

    func testPatternLengthMismatchNamesBothNumbers() {
        XCTAssertThrowsError(try config(#"{"hybrid_override_pattern":"MEM","num_hidden_layers":4,"hidden_size":8,"n_routed_experts":4,"moe_intermediate_size":2}"#)) {
            XCTAssertTrue("\($0)".contains("3 layers but num_hidden_layers is 4"), "\($0)")
        }
    }

    func testDenseModelNeedsNoExperts() throws {
        let c = try config(#"{"hybrid_override_pattern":"M*-","num_hidden_layers":3,"hidden_size":8}"#)
        XCTAssertNil(c.nRoutedExperts)
        XCTAssertFalse(c.hasExperts)
    }

    func testMissingAndWrongTypes() {
        XCTAssertThrowsError(try config(#"{"hybrid_override_pattern":"ME","num_hidden_layers":2,"hidden_size":8}"#)) {
            XCTAssertTrue("\($0)".contains("n_routed_experts"))
        }
        XCTAssertThrowsError(try config(#"{"hybrid_override_pattern":"M","num_hidden_layers":"1","hidden_size":8}"#))
        XCTAssertThrowsError(try config(#"{"hybrid_override_pattern":"MX","num_hidden_layers":2,"hidden_size":8}"#))
        XCTAssertThrowsError(try config(#"{"num_hidden_layers":2,"hidden_size":8}"#))
        XCTAssertThrowsError(try config("[]"))
    }
}
