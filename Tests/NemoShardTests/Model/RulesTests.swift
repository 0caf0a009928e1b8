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

/// The two rule sets (`--rules nemo-0.7|seed`): the adapter's tables in-process, the manifest's
/// `rules` field, PEFT-prefixed checkpoints, `--keep-source-dtypes` and the seed rules' bytes.
final class RulesTests: XCTestCase {
    let seed = NemotronV3Adapter(numHiddenLayers: 4, nRoutedExperts: 8, moeIntermediateSize: 16, rules: .seed)
    let nemo = NemotronV3Adapter(numHiddenLayers: 4, nRoutedExperts: 8, moeIntermediateSize: 16, rules: .nemo07)

    // MARK: the tables, in-process

    func testMambaFP32ParametersMoveIntoTheHolderOnlyUnderNemo07() throws {
        for name in ["A_log", "D", "dt_bias"] {
            XCTAssertEqual(try nemo.classify("backbone.layers.0.mixer.\(name)"), .rename("model.layers.0.mixer._fp32_params.\(name)"))
            XCTAssertEqual(try nemo.classify("mtp.layers.0.mixer.\(name)"), .rename("mtp.layers.0.mixer._fp32_params.\(name)"))
            XCTAssertEqual(try seed.classify("backbone.layers.0.mixer.\(name)"), .rename("model.layers.0.mixer.\(name)"))
            XCTAssertEqual(try seed.classify("mtp.layers.0.mixer.\(name)"), .rename("mtp.layers.0.mixer.\(name)"))
        }
        // Only the text after the last `.mixer.`, exactly: not `norm.D`, not a gate bias.
        XCTAssertEqual(try nemo.classify("backbone.layers.0.mixer.norm.weight"), .rename("model.layers.0.mixer.norm.weight"))
        XCTAssertEqual(try nemo.classify("backbone.layers.1.mixer.gate.e_score_correction_bias"),
                       .rename("model.layers.1.mixer.gate.e_score_correction_bias"))
        XCTAssertEqual(try nemo.loadDType("model.layers.0.mixer._fp32_params.A_log", source: .bf16, key: "k"), .f32)
        XCTAssertEqual(try nemo.loadDType("model.layers.0.mixer._fp32_params.D", source: .f32, key: "k"), .f32)
        XCTAssertEqual(try nemo.loadDType("model.layers.1.mixer.gate.e_score_correction_bias", source: .bf16, key: "k"), .bf16,
                       "0.7.0 does not upcast the bias on load")
        XCTAssertEqual(try seed.loadDType("model.layers.0.mixer.A_log", source: .bf16, key: "k"), .bf16)
        XCTAssertThrowsError(try nemo.loadDType("model.layers.0.mixer._fp32_params.D", source: .f64, key: "k")) {
            XCTAssertTrue("\($0)".contains("F64 Mamba parameter"), "\($0)")
        }
    }

    func testEmbeddingNamesAndTheWayBack() throws {
        XCTAssertEqual(try nemo.classify("backbone.embedding.weight"), .rename("model.embed_tokens.weight"))
        XCTAssertEqual(try seed.classify("backbone.embedding.weight"), .rename("model.embedding.weight"))
        for a in [nemo, seed] {
            XCTAssertEqual(try a.classify("backbone.embed_tokens.weight"), .rename("model.embed_tokens.weight"))
            XCTAssertEqual(a.toHF("model.embed_tokens.weight", shape: [4, 32], firstExpert: 0), .renamed("backbone.embeddings.weight"))
        }
        // The export name: seed restores the recorded source key, 0.7.0 always writes its own.
        XCTAssertEqual(seed.exportKey(generated: "backbone.embeddings.weight", recorded: "backbone.embed_tokens.weight"),
                       "backbone.embed_tokens.weight")
        XCTAssertEqual(nemo.exportKey(generated: "backbone.embeddings.weight", recorded: "backbone.embed_tokens.weight"),
                       "backbone.embeddings.weight")
    }

    func testTheWayBackStripsTheHolderAndKeepsTheSourcePrefix() {
        var m = nemo
        m.hfPrefix = "model."
        XCTAssertEqual(nemo.toHF("model.layers.0.mixer._fp32_params.A_log", shape: [4], firstExpert: 0), .renamed("backbone.layers.0.mixer.A_log"))
        XCTAssertEqual(m.toHF("model.layers.0.mixer._fp32_params.dt_bias", shape: [4], firstExpert: 0), .renamed("model.layers.0.mixer.dt_bias"))
        XCTAssertEqual(m.toHF("model.norm.weight", shape: [4], firstExpert: 0), .renamed("model.norm_f.weight"))
        XCTAssertEqual(nemo.toHF("mtp.layers.0.mixer._fp32_params.D", shape: [4], firstExpert: 0), .renamed("mtp.layers.0.mixer.D"))
        // Under the PEFT prefix 0.7.0's norm/embedding renames (anchored at the start) do not apply.
        XCTAssertEqual(nemo.toHF("base_model.model.model.norm.weight", shape: [4], firstExpert: 0), .renamed("base_model.model.backbone.norm.weight"))
        // LoRA keys go under `model.` whatever the source's prefix.
        XCTAssertEqual(nemo.toHF("base_model.model.model.layers.2.mixer.q_proj.lora_A.weight", shape: [2, 4], firstExpert: 0),
                       .renamed("base_model.model.model.layers.2.mixer.q_proj.lora_A.weight"))
        XCTAssertEqual(seed.toHF("model.layers.2.mixer.q_proj.lora_A.weight", shape: [2, 4], firstExpert: 0),
                       .renamed("backbone.layers.2.mixer.q_proj.lora_A.weight"))
    }

    func testExportDTypesForcedSourceOrKept() {
        let bias = "backbone.layers.1.mixer.gate.e_score_correction_bias", alog = "backbone.layers.0.mixer.A_log"
        let expert = "backbone.layers.1.mixer.experts.3.up_proj.weight"
        XCTAssertEqual(nemo.exportDType(bias, held: .bf16, source: nil, keepSource: false), .f32, "forced_hf_dtype_mapping")
        XCTAssertEqual(nemo.exportDType(alog, held: .f32, source: .bf16, keepSource: false), .f32)
        XCTAssertEqual(nemo.exportDType(expert, held: .bf16, source: .f32, keepSource: false), .f32, "the source's dtype")
        XCTAssertEqual(nemo.exportDType("backbone.layers.0.mixer.in_proj.weight", held: .bf16, source: nil, keepSource: false), .bf16)
        XCTAssertEqual(nemo.exportDType(alog, held: .f32, source: .bf16, keepSource: true), .bf16, "--keep-source-dtypes")
        XCTAssertEqual(nemo.exportDType(bias, held: .bf16, source: nil, keepSource: true), .bf16)
        XCTAssertEqual(seed.exportDType(bias, held: .bf16, source: nil, keepSource: false), .bf16)
        XCTAssertEqual(seed.exportDType(expert, held: .bf16, source: .f32, keepSource: false), .bf16, "seed: the grouped dtype")
        XCTAssertEqual(seed.exportDType(expert, held: .bf16, source: .f32, keepSource: true), .f32)
    }

    func testPEFTPrefixAndLoRAExpertKeys() throws {
        XCTAssertEqual(try nemo.classify("base_model.model.backbone.norm_f.weight"), .rename("base_model.model.model.norm.weight"))
        XCTAssertEqual(try nemo.classify("base_model.model.backbone.layers.0.mixer.A_log"),
                       .rename("base_model.model.model.layers.0.mixer._fp32_params.A_log"))
        // PEFT experts stay per expert (0.7.0's expert pattern is anchored at the key's start).
        let peftExpert = "base_model.model.model.layers.1.mixer.experts.3.up_proj.weight"
        XCTAssertEqual(try nemo.classify("base_model.model.backbone.layers.1.mixer.experts.3.up_proj.weight"), .rename(peftExpert))
        XCTAssertEqual(nemo.peftExpert(peftExpert)?.expert, 3)
        XCTAssertNil(nemo.peftExpert("model.layers.1.mixer.experts.3.up_proj.weight"))
        XCTAssertEqual(try seed.classify("base_model.model.backbone.norm_f.weight"), .rename("base_model.model.backbone.norm_f.weight"))
        for lora in ["base_model.model.backbone.layers.1.mixer.experts.3.up_proj.lora_A.weight",
                     "base_model.model.model.layers.1.mixer.experts.base_layer.lora_B.weight"] {
            XCTAssertThrowsError(try nemo.classify(lora)) {
                XCTAssertTrue("\($0)".contains("PEFT LoRA expert keys under the PEFT prefix base_model.model."), "\($0)")
            }
            XCTAssertNoThrow(try seed.classify(lora), "the seed rules pass LoRA keys through")
        }
        XCTAssertEqual(try nemo.classify("base_model.model.backbone.layers.2.mixer.q_proj.lora_A.weight"),
                       .rename("base_model.model.model.layers.2.mixer.q_proj.lora_A.weight"), "non-expert LoRA keys load")
        XCTAssertEqual(nemo.sourcePrefix(["base_model.model.model.layers.0.mixer.q_proj.lora_A.weight", "lm_head.weight",
                                          "base_model.model.backbone.norm_f.weight"]), "backbone.")
        XCTAssertEqual(nemo.sourcePrefix(["mtp.layers.0.norm.weight", "model.embeddings.weight"]), "model.")
    }

    func testScaleInverseAndTheExpertDType() throws {
        let denseSeed = NemotronV3Adapter(numHiddenLayers: 2, nRoutedExperts: nil, moeIntermediateSize: nil, rules: .seed)
        let denseNemo = NemotronV3Adapter(numHiddenLayers: 2, nRoutedExperts: nil, moeIntermediateSize: nil, rules: .nemo07)
        XCTAssertEqual(try denseSeed.classify("backbone.layers.0.mixer.in_proj.weight_scale_inv"), .rename("model.layers.0.mixer.in_proj.weight_scale_inv"))
        XCTAssertEqual(try denseNemo.classify("backbone.layers.0.mixer.in_proj.weight_scale_inv"), .drop(.scaleInverse))
        let config = { (fields: String) in
            try NemotronConfig(json: try JSON.parse("{\"hybrid_override_pattern\": \"ME\", \"hidden_size\": 8, \"n_routed_experts\": 4, \"moe_intermediate_size\": 4\(fields)}"), path: "c")
        }
        XCTAssertEqual(try nemo.expertDType(requested: nil, config: try config(""), path: "c"), .bf16)
        XCTAssertEqual(try nemo.expertDType(requested: nil, config: try config(", \"dtype\": \"float32\""), path: "c"), .f32)
        XCTAssertEqual(try nemo.expertDType(requested: nil, config: try config(", \"torch_dtype\": \"torch.float16\""), path: "c"), .f16)
        XCTAssertEqual(try nemo.expertDType(requested: .bf16, config: try config(", \"dtype\": \"float32\""), path: "c"), .bf16)
        XCTAssertEqual(try seed.expertDType(requested: nil, config: try config(", \"dtype\": \"float32\""), path: "c"), .bf16)
        XCTAssertThrowsError(try nemo.expertDType(requested: nil, config: try config(", \"dtype\": \"float64\""), path: "c/config.json")) {
            XCTAssertTrue("\($0)".contains("c/config.json: \"dtype\" is \"float64\""), "\($0)")
        }
    }

    // MARK: the manifest

    func testTheManifestRecordsTheRulesAndOneWithoutThemIsSeed() throws {
        let hf = try synthCLI(["--experts", "4", "--mtp", "M*E"])
        let dir = temporaryDirectory(self)
        try ok(["convert", hf, "--out", dir + "/nemo"])
        try ok(["convert", hf, "--out", dir + "/seed", "--rules", "seed"])
        let nemo = try Manifest.load(directory: dir + "/nemo"), seedM = try Manifest.load(directory: dir + "/seed")
        XCTAssertEqual(nemo.rules, .nemo07)
        XCTAssertEqual(seedM.rules, .seed)
        let alog = try XCTUnwrap(nemo.tensor("mtp.layers.0.mixer._fp32_params.A_log"))
        XCTAssertEqual(alog.dtype, .f32)
        XCTAssertEqual(alog.hfDType, .bf16)
        XCTAssertEqual(alog.hfKey, "mtp.layers.0.mixer.A_log")
        XCTAssertEqual(seedM.tensor("mtp.layers.0.mixer.A_log")?.dtype, .bf16)
        XCTAssertEqual(try Inspect.run(dir + "/nemo")["rules"], .string("nemo-0.7"), "inspect names the rules")
        XCTAssertEqual(try Inspect.run(dir + "/seed")["rules"], .string("seed"))
        let text = String(decoding: try readWholeFile(dir + "/nemo/nemoshard.json"), as: UTF8.self)
        XCTAssertTrue(text.contains("\"rules\": \"nemo-0.7\"") || text.contains("\"rules\":\"nemo-0.7\""), text.prefix(200).description)

        // A manifest written before the field existed reads as seed; an unknown value is refused.
        var json = try JSON.parse(try readWholeFile(dir + "/seed/nemoshard.json"))
        json = .object((json.objectValue ?? []).filter { $0.0 != "rules" })
        XCTAssertEqual(try Manifest(json: json, path: "m").rules, .seed)
        writeBytes(dir + "/seed/nemoshard.json", Array(json.serialized(indent: 2).utf8))
        try ok(["convert", "--to-hf", dir + "/seed", "--out", dir + "/seed-hf"])
        try assertSameTensors(hf, dir + "/seed-hf")
        let bad = JSON.object((json.objectValue ?? []) + [("rules", .string("nemo-0.6"))])
        XCTAssertThrowsError(try Manifest(json: bad, path: "m")) {
            XCTAssertTrue("\($0)".contains("\"rules\" is \"nemo-0.6\", not one of \"nemo-0.7\", \"seed\""), "\($0)")
        }
    }

    func testReshardAndExportFollowTheManifestsRules() throws {
        let hf = try synthCLI(["--experts", "6", "--mtp", "M*E"])
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/ep2"], ranks: 2)
        try ok(["reshard", dir + "/ep2", "--out", dir + "/ep3"], ranks: 3)
        XCTAssertEqual(try Manifest.load(directory: dir + "/ep3").rules, .nemo07)
        try ok(["save-hf", dir + "/ep2", dir + "/hf2"], ranks: 2)
        try ok(["save-hf", dir + "/ep3", dir + "/hf3"], ranks: 3)
        let two = try readHF(dir + "/hf2"), three = try readHF(dir + "/hf3")
        XCTAssertEqual(Set(two.keys), Set(three.keys))
        for (k, v) in two { XCTAssertTrue(v.0 == three[k]?.0 && v.2 == three[k]?.2, k) }
        XCTAssertEqual(two["mtp.layers.0.mixer.A_log"]?.0, .f32, "forced F32")
        XCTAssertEqual(try readHF(hf)["mtp.layers.0.mixer.A_log"]?.0, .bf16)
        // A load with the other rules is a usage error in convert --to-hf.
        let r = try CLI.run(["convert", "--to-hf", dir + "/ep2", "--out", dir + "/x", "--rules", "seed"])
        XCTAssertEqual(r.code, 2, r.stderr)
        XCTAssertTrue(r.stderr.contains("--rules does not go with --to-hf"), r.stderr)
        let bogus = try CLI.run(["convert", hf, "--out", dir + "/y", "--rules", "nemo"])
        XCTAssertEqual(bogus.code, 2)
        XCTAssertEqual(bogus.errorLines, ["nemoshard: error: --rules must be nemo-0.7 or seed, got \"nemo\""])
        XCTAssertFalse(FS.exists(dir + "/x") || FS.exists(dir + "/y"))
    }

    // MARK: round trips

    func testSeedRulesKeepTodaysBytes() throws {
        let hf = try synthCLI(["--experts", "5", "--mtp", "M*E", "--embed-tokens"])
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/s", "--rules", "seed"], ranks: 2)
        let rank0 = try readAll(dir + "/s/rank-00000-of-00002.safetensors").merging(try readAll(dir + "/s/rank-00001-of-00002.safetensors")) { a, _ in a }
        XCTAssertEqual(rank0["model.layers.0.mixer.A_log"]?.0, .bf16)
        XCTAssertNil(rank0["model.layers.0.mixer._fp32_params.A_log"])
        try ok(["save-hf", dir + "/s", dir + "/back"], ranks: 2)
        try assertSameTensors(hf, dir + "/back")
        try ok(["load", hf, "--to-hf", dir + "/memory", "--rules", "seed"], ranks: 2)
        try assertSameTensors(hf, dir + "/memory")
    }

    func testKeepSourceDTypesRoundTripsABF16SourceByteForByte() throws {
        let hf = try synthCLI(["--experts", "5", "--mtp", "M*E", "--embed-tokens"])
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/n"], ranks: 2)
        try ok(["save-hf", dir + "/n", dir + "/forced"], ranks: 2)
        try ok(["save-hf", dir + "/n", dir + "/kept", "--keep-source-dtypes"], ranks: 2)
        let source = try readHF(hf), forced = try readHF(dir + "/forced")
        // Default nemo-0.7 export: the fp32 holder's parameters come back F32 with equal values,
        // and the embedding under 0.7.0's name.
        XCTAssertEqual(forced["backbone.layers.0.mixer.A_log"]?.0, .f32)
        XCTAssertEqual(forced["backbone.layers.0.mixer.A_log"]?.2.u32.map { UInt16($0 >> 16) }, source["backbone.layers.0.mixer.A_log"]?.2.u16)
        XCTAssertNotNil(forced["backbone.embeddings.weight"])
        XCTAssertNil(forced["backbone.embed_tokens.weight"])
        // --keep-source-dtypes: every dtype and byte of the source (names: 0.7.0's).
        var kept = try readHF(dir + "/kept")
        kept["backbone.embed_tokens.weight"] = kept.removeValue(forKey: "backbone.embeddings.weight")
        XCTAssertEqual(Set(kept.keys), Set(source.keys))
        for (k, v) in source { XCTAssertTrue(v.0 == kept[k]?.0 && v.1 == kept[k]?.1 && v.2 == kept[k]?.2, k) }
        try ok(["load", hf, "--to-hf", dir + "/memory", "--keep-source-dtypes"], ranks: 2)
        try assertSameFiles(dir + "/kept", dir + "/memory")
    }

    func testF32ExpertsComeBackInTheSourceDTypeAndABF16BiasAsF32() throws {
        let synth = try synthCLI(["--experts", "4", "--expert-dtype", "f32"])
        let dir = temporaryDirectory(self)
        // The gate bias stored BF16 (0.7.0 exports it F32: forced_hf_dtype_mapping).
        var tensors = try readHF(synth)
        let bias = "backbone.layers.1.mixer.gate.e_score_correction_bias"
        let b = try XCTUnwrap(tensors[bias])
        tensors[bias] = (.bf16, b.1, b.2.u32.flatMap { v -> [UInt8] in let h = UInt16(v >> 16); return [UInt8(h & 0xFF), UInt8(h >> 8)] })
        try writeHF(dir + "/hf", tensors, config: synth + "/config.json")
        try ok(["convert", dir + "/hf", "--out", dir + "/n"])
        try ok(["convert", "--to-hf", dir + "/n", "--out", dir + "/back"])
        let back = try readHF(dir + "/back")
        XCTAssertEqual(back[bias]?.0, .f32)
        XCTAssertEqual(back["backbone.layers.1.mixer.experts.2.up_proj.weight"]?.0, .f32, "the source's dtype, values rounded through bf16")
        let grouped = try Manifest.load(directory: dir + "/n").tensor("model.layers.1.mixer.experts.gate_and_up_projs")
        XCTAssertEqual(grouped?.dtype, .bf16)
        XCTAssertEqual(grouped?.hfDType, .f32)
        try ok(["convert", "--to-hf", dir + "/n", "--out", dir + "/kept", "--keep-source-dtypes"])
        XCTAssertEqual(try readHF(dir + "/kept")[bias]?.0, .bf16)
        // A float32 config groups in float32 (0.7.0's adapter dtype), --dtype still decides.
        try editConfig(dir + "/hf/config.json") { $0["torch_dtype"] = "float32" }
        try ok(["convert", dir + "/hf", "--out", dir + "/f32"])
        XCTAssertEqual(try Manifest.load(directory: dir + "/f32").tensor("model.layers.1.mixer.experts.down_projs")?.dtype, .f32)
        try ok(["convert", dir + "/hf", "--out", dir + "/b16", "--dtype", "bf16"])
        XCTAssertEqual(try Manifest.load(directory: dir + "/b16").tensor("model.layers.1.mixer.experts.down_projs")?.dtype, .bf16)
        try editConfig(dir + "/hf/config.json") { $0["torch_dtype"] = "float64" }
        let r = try CLI.run(["convert", dir + "/hf", "--out", dir + "/f64"])
        XCTAssertEqual(r.code, 1)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("config.json: \"torch_dtype\" is \"float64\""), r.stderr)
    }

    // MARK: PEFT

    func testAPEFTPrefixedMoECheckpointLoadsWithItsExpertsPerExpert() throws {
        let synth = try synthCLI(["--experts", "4"])
        let dir = temporaryDirectory(self)
        let source = try readHF(synth)
        try writeHF(dir + "/peft", Dictionary(uniqueKeysWithValues: source.map { ("base_model.model." + $0.key, $0.value) }),
                    config: synth + "/config.json")
        try ok(["load", dir + "/peft", "--out", dir + "/n"], ranks: 2)
        let m = try Manifest.load(directory: dir + "/n")
        XCTAssertFalse(m.tensors.contains { $0.expertSharded }, "0.7.0 does not group PEFT-prefixed experts")
        for e in 0..<4 {
            for p in ["up_proj", "down_proj"] {
                let t = m.tensor("base_model.model.model.layers.1.mixer.experts.\(e).\(p).weight")
                XCTAssertNotNil(t?.holder, "expert \(e) \(p): a whole per-expert tensor")
            }
        }
        XCTAssertEqual(m.tensor("base_model.model.model.layers.0.mixer._fp32_params.A_log")?.dtype, .f32)
        XCTAssertNotNil(m.tensor("base_model.model.model.norm.weight"))
        XCTAssertEqual(m.hfPrefix, "backbone.")
        try ok(["save-hf", dir + "/n", dir + "/back"], ranks: 2)
        let back = try readHF(dir + "/back")
        XCTAssertEqual(back["base_model.model.backbone.layers.1.mixer.experts.3.down_proj.weight"]?.2,
                       source["backbone.layers.1.mixer.experts.3.down_proj.weight"]?.2)
        XCTAssertNotNil(back["base_model.model.backbone.norm.weight"], "0.7.0's norm rename is anchored at the key's start")

        // The seed rules say what they found instead of only counting missing experts.
        let s = try CLI.run(["load", dir + "/peft", "--out", dir + "/s", "--rules", "seed"], ranks: 2)
        XCTAssertEqual(s.code, 1)
        XCTAssertEqual(s.errorLines.count, 1, s.stderr)
        XCTAssertTrue(s.stderr.contains("Expert weights missing from checkpoint") && s.stderr.contains("PEFT prefix base_model.model."), s.stderr)

        // A rank's PEFT expert missing is still the reference's error, naming the PEFT key.
        var partial = try readHF(dir + "/peft")
        partial.removeValue(forKey: "base_model.model.backbone.layers.1.mixer.experts.3.up_proj.weight")
        try writeHF(dir + "/partial", partial, config: synth + "/config.json")
        let p = try CLI.run(["load", dir + "/partial", "--out", dir + "/p"], ranks: 2)
        XCTAssertEqual(p.code, 1)
        XCTAssertTrue(p.stderr.contains("Expert weights missing from checkpoint (rank 1): 1/8 required weights not found")
                      && p.stderr.contains("'base_model.model.model.layers.1.mixer.experts.3.up_proj.weight'"), p.stderr)
        XCTAssertFalse(FS.exists(dir + "/s") || FS.exists(dir + "/p"))
    }

    func testPEFTLoRAExpertKeysAreRefusedInOneLine() throws {
        let synth = try synthCLI(["--experts", "4"])
        let dir = temporaryDirectory(self)
        var tensors = Dictionary(uniqueKeysWithValues: try readHF(synth).map { ("base_model.model." + $0.key, $0.value) })
        tensors["base_model.model.backbone.layers.1.mixer.experts.0.up_proj.lora_A.weight"] = (.bf16, [2, 4], [UInt8](repeating: 0, count: 16))
        try writeHF(dir + "/lora", tensors, config: synth + "/config.json")
        let r = try CLI.run(["load", dir + "/lora", "--out", dir + "/n"], ranks: 2)
        XCTAssertEqual(r.code, 1)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        let line = r.errorLines.first ?? ""
        XCTAssertTrue(line.contains("PEFT LoRA expert keys") && line.contains("PEFT prefix base_model.model.")
                      && line.contains("model.safetensors") && line.contains("experts.0.up_proj.lora_A.weight"), line)
        XCTAssertFalse(FS.exists(dir + "/n"))
    }

    // MARK: helpers

    /// Writes `tensors` as an HF checkpoint (one `model.safetensors`, keys sorted) with the config at `config`.
    func writeHF(_ dir: String, _ tensors: [String: (DType, [Int], [UInt8])], config: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let names = tensors.keys.sorted()
        let w = try SafetensorsWriter(path: dir + "/model.safetensors",
                                      specs: names.map { TensorSpec(name: $0, dtype: tensors[$0]!.0, shape: tensors[$0]!.1) })
        for (i, n) in names.enumerated() { try tensors[n]!.2.withUnsafeBytes { try w.write(tensor: i, $0) } }
        try w.finish()
        try w.commit()
        writeBytes(dir + "/config.json", try readWholeFile(config))
    }

    /// Rewrites a config.json through `edit`.
    func editConfig(_ path: String, _ edit: (inout [String: Any]) -> Void) throws {
        var object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try readWholeFile(path))) as? [String: Any])
        edit(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
    }

    /// Two HF checkpoints hold the same keys with the same dtypes, shapes and bytes.
    func assertSameTensors(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try readHF(a), y = try readHF(b)
        XCTAssertEqual(Set(x.keys), Set(y.keys), file: file, line: line)
        for (k, v) in x {
            XCTAssertTrue(v.0 == y[k]?.0 && v.1 == y[k]?.1 && v.2 == y[k]?.2, "\(k) differs", file: file, line: line)
        }
    }

    /// Two directories hold the same file names with the same bytes.
    func assertSameFiles(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let names = try FS.list(a)
        XCTAssertEqual(names, try FS.list(b), file: file, line: line)
        for n in names {
            XCTAssertEqual(try readWholeFile(a + "/" + n), try readWholeFile(b + "/" + n), n, file: file, line: line)
        }
    }
}
