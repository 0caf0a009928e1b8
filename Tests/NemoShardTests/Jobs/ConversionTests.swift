import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// One process: HF -> internal -> HF on synthetic checkpoints, checked against naive references.
final class ConversionTests: XCTestCase {
    func loadInMemory(_ dir: String, dtype: DType = .bf16, rules: Rules = .default) throws -> [String: Tensor] {
        var o = LoadJob.Options(source: dir)
        o.dtype = dtype
        o.rules = rules
        return try LoadJob.run(o, world: SoloCollective()).stateDict
    }

    func testGroupedTensorsAreTransposedExpertsInOrder() throws {
        let hf = try synth(self)
        let source = try readHF(hf)
        let state = try loadInMemory(hf)
        for (prefix, hfPrefix) in [("model.layers.1.", "backbone.layers.1."), ("model.layers.4.", "backbone.layers.4."), ("mtp.layers.1.", "mtp.layers.1.")] {
            let up = try XCTUnwrap(state[prefix + "mixer.experts.gate_and_up_projs"])
            let down = try XCTUnwrap(state[prefix + "mixer.experts.down_projs"])
            XCTAssertEqual(up.shape, [8, 32, 16])
            XCTAssertEqual(down.shape, [8, 16, 32])
            XCTAssertEqual(up.dtype, .bf16)
            for e in 0..<8 {
                let u = try XCTUnwrap(source[hfPrefix + "mixer.experts.\(e).up_proj.weight"])
                XCTAssertEqual(u.1, [16, 32])
                XCTAssertEqual(Array(up.byteArray[(e * 1024)..<((e + 1) * 1024)]), naiveTranspose(u.2, rows: 16, cols: 32, size: 2))
                let d = try XCTUnwrap(source[hfPrefix + "mixer.experts.\(e).down_proj.weight"])
                XCTAssertEqual(Array(down.byteArray[(e * 1024)..<((e + 1) * 1024)]), naiveTranspose(d.2, rows: 32, cols: 16, size: 2))
            }
        }
        XCTAssertNil(state.keys.first { $0.contains(".experts.0.") }, "no per-expert keys remain")
        XCTAssertEqual(state["model.embed_tokens.weight"]?.byteArray, source["backbone.embeddings.weight"]?.2)
        XCTAssertEqual(state["model.norm.weight"]?.byteArray, source["backbone.norm_f.weight"]?.2)
        XCTAssertEqual(state["model.layers.1.mixer.gate.e_score_correction_bias"]?.dtype, .f32, "other tensors keep their dtype")
        XCTAssertEqual(state["mtp.layers.0.eh_proj.weight"]?.byteArray, source["mtp.layers.0.eh_proj.weight"]?.2)
        // non-expert tensors + 2 grouped per MoE layer (2 backbone + 1 MTP)
        let nonExpert = source.keys.filter { !$0.contains(".experts.") }.count
        XCTAssertEqual(state.count, nonExpert + 6)
    }

    func roundTrip(_ hf: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let dir = temporaryDirectory(self)
        var load = LoadJob.Options(source: hf)
        load.output = dir + "/internal"
        load.rules = .seed  // byte for byte: the seed rules keep every stored dtype and name (RulesTests: nemo-0.7)
        _ = try LoadJob.run(load, world: SoloCollective())
        XCTAssertEqual(try FS.list(dir + "/internal"), [OutputProvenance.markerName, "nemoshard.json", "rank-00000-of-00001.safetensors"], file: file, line: line)
        let back = dir + "/back"
        _ = try SaveHFJob.run(SaveHFJob.Options(source: dir + "/internal", output: back), world: SoloCollective())
        return back
    }

    func assertSameCheckpoint(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try readHF(a), y = try readHF(b)
        XCTAssertEqual(Set(x.keys), Set(y.keys), file: file, line: line)
        for (k, v) in x {
            guard let w = y[k] else { continue }
            XCTAssertEqual(v.0, w.0, k, file: file, line: line)
            XCTAssertEqual(v.1, w.1, k, file: file, line: line)
            XCTAssertEqual(v.2, w.2, k, file: file, line: line)
        }
    }

    func testRoundTripReproducesEveryKeyAndByte() throws {
        let hf = try synth(self)
        let back = try roundTrip(hf)
        try assertSameCheckpoint(hf, back)
        let index = try JSON.parse(try readWholeFile(back + "/model.safetensors.index.json"))
        XCTAssertEqual(index["weight_map"]?.objectValue?.count, try readHF(hf).count, "index lists every key once")
        XCTAssertEqual(try readWholeFile(back + "/config.json").count > 0, true)
        XCTAssertTrue(FS.exists(back + "/generation_config.json"), "small non-weight files come along")
        XCTAssertEqual(try NemotronConfig(path: back + "/config.json").json, try NemotronConfig(path: hf + "/config.json").json)
        XCTAssertNoThrow(try Inspect.run(back))
    }

    func testModelPrefixAndEmbedTokensAreRestored() throws {
        let hf = try synth(self, modelPrefix: true, embedTokens: true)
        XCTAssertNotNil(try readHF(hf)["model.embed_tokens.weight"])
        try assertSameCheckpoint(hf, try roundTrip(hf))
    }

    func testSingleFileCheckpoint() throws {
        let hf = try synth(self, shards: 1)
        XCTAssertTrue(FS.exists(hf + "/model.safetensors"))
        XCTAssertFalse(FS.exists(hf + "/model.safetensors.index.json"))
        try assertSameCheckpoint(hf, try roundTrip(hf))
    }

    func testF32ExpertsBecomeBF16RoundingOfTransposes() throws {
        let hf = try synth(self, expertDType: .f32)
        let source = try readHF(hf)
        let state = try loadInMemory(hf)
        let up = try XCTUnwrap(state["model.layers.1.mixer.experts.gate_and_up_projs"])
        XCTAssertEqual(up.dtype, .bf16)
        var sawRounding = false
        for e in 0..<8 {
            let u = try XCTUnwrap(source["backbone.layers.1.mixer.experts.\(e).up_proj.weight"])
            XCTAssertEqual(u.0, .f32)
            let t = naiveTranspose(u.2, rows: 16, cols: 32, size: 4).u32
            let want = t.map(referenceBF16)
            XCTAssertEqual(Array(up.byteArray.u16[(e * 512)..<((e + 1) * 512)]), want)
            sawRounding = sawRounding || zip(t, want).contains { UInt16($0 >> 16) != $1 }
        }
        XCTAssertTrue(sawRounding, "the data exercises rounding up")
        let f32 = try loadInMemory(hf, dtype: .f32)
        let u0 = try XCTUnwrap(source["backbone.layers.1.mixer.experts.0.up_proj.weight"])
        XCTAssertEqual(Array(f32["model.layers.1.mixer.experts.gate_and_up_projs"]!.byteArray[0..<2048]),
                       naiveTranspose(u0.2, rows: 16, cols: 32, size: 4), "--dtype f32 keeps f32 bytes")
    }

    func testMissingExpertsGiveTheReferenceMessage() throws {
        let hf = try synth(self, pattern: "ME", mtp: "", shards: 1)
        // Drop experts 2 and 3 of layer 1 by rewriting the file without them.
        let all = try readHF(hf)
        let kept = all.filter { !$0.key.contains("experts.2.") && !$0.key.contains("experts.3.") }
        try SafetensorsWriter.write(path: hf + "/model.safetensors",
                                    tensors: kept.keys.sorted().map { ($0, Tensor(dtype: kept[$0]!.0, shape: kept[$0]!.1, bytes: kept[$0]!.2)) })
        let planner = try LoadPlanner(checkpoint: try HFCheckpoint.open(hf))
        XCTAssertThrowsError(try planner.plan(range: ExpertRange(start: 0, end: 4), rank: 0)) { error in
            let m = "\(error)"
            XCTAssertTrue(m.contains("Expert weights missing from checkpoint (rank 0): 4/8 required weights not found."), m)
            XCTAssertTrue(m.contains("Layers with experts: [1], Required experts: [0, 1, 2, 3]."), m)
            XCTAssertTrue(m.contains("First few missing keys: ['model.layers.1.mixer.experts.2.up_proj.weight', 'model.layers.1.mixer.experts.2.down_proj.weight', "), m)
        }
        XCTAssertNoThrow(try planner.plan(range: ExpertRange(start: 4, end: 8), rank: 1), "a rank whose experts are all there loads")
    }

    func testExpertIdBeyondNRoutedExpertsIsRefused() throws {
        let hf = try synth(self, pattern: "ME", mtp: "", experts: 4, shards: 1)
        var cfg = try JSON.parse(try readWholeFile(hf + "/config.json")).objectValue!
        cfg = cfg.map { $0.0 == "n_routed_experts" ? ($0.0, .int(3)) : $0 }
        try writeFileAtomically(hf + "/config.json", Array(JSON.object(cfg).serialized().utf8))
        XCTAssertThrowsError(try loadInMemory(hf)) { XCTAssertTrue("\($0)".contains("expert id 3 >= n_routed_experts 3"), "\($0)") }
    }

    func testLayerTruncationScaleInvAndExclude() throws {
        let hf = try synth(self, pattern: "ME*", mtp: "", shards: 1)
        var all = try readHF(hf)
        all["backbone.layers.0.mixer.in_proj.weight_scale_inv"] = (.f32, [1], [0, 0, 128, 63])
        try SafetensorsWriter.write(path: hf + "/model.safetensors",
                                    tensors: all.keys.sorted().map { ($0, Tensor(dtype: all[$0]!.0, shape: all[$0]!.1, bytes: all[$0]!.2)) })
        var cfg = try JSON.parse(try readWholeFile(hf + "/config.json")).objectValue!
        cfg = cfg.map {
            $0.0 == "num_hidden_layers" ? ($0.0, .int(2)) : $0.0 == "hybrid_override_pattern" ? ($0.0, .string("ME")) : $0
        }
        try writeFileAtomically(hf + "/config.json", Array(JSON.object(cfg).serialized().utf8))
        let state = try loadInMemory(hf)
        XCTAssertNil(state.keys.first { $0.contains("layers.2.") }, "layer 2 >= num_hidden_layers is dropped")
        XCTAssertNil(state.keys.first { $0.hasSuffix("_scale_inv") })
        XCTAssertNotNil(state["model.layers.1.mixer.experts.gate_and_up_projs"])

        let dir = temporaryDirectory(self)
        var load = LoadJob.Options(source: hf)
        load.output = dir + "/internal"
        _ = try LoadJob.run(load, world: SoloCollective())
        var save = SaveHFJob.Options(source: dir + "/internal", output: dir + "/back")
        save.exclude = #"backbone\.layers\.1\.mixer\.experts\."#
        _ = try SaveHFJob.run(save, world: SoloCollective())
        let back = try readHF(dir + "/back")
        XCTAssertNil(back.keys.first { $0.hasPrefix("backbone.layers.1.mixer.experts.") })
        XCTAssertNotNil(back["backbone.layers.1.mixer.gate.weight"])
        XCTAssertEqual(back.count, all.count - 1 - 16 - all.keys.filter { $0.contains("layers.2.") }.count)
    }

    func testMaxShardSizeGivesTheExpectedFileCount() throws {
        let hf = try synth(self, pattern: "ME", mtp: "", shards: 1)
        let dir = temporaryDirectory(self)
        var load = LoadJob.Options(source: hf)
        load.output = dir + "/internal"
        _ = try LoadJob.run(load, world: SoloCollective())
        let manifest = try Manifest.load(directory: dir + "/internal")
        var save = SaveHFJob.Options(source: dir + "/internal", output: dir + "/back")
        save.maxShardBytes = 3000
        _ = try SaveHFJob.run(save, world: SoloCollective())
        // Expected: Hugging Face's greedy split over the tensors in source order.
        let src = try HFCheckpoint.open(hf)
        var expected = 0, size = 0
        for key in manifest.hfKeys {
            let n = src.tensors.first { $0.name == key }!.byteCount
            if expected == 0 || (size + n > 3000 && size > 0) { expected += 1; size = 0 }
            size += n
        }
        let files = try FS.list(dir + "/back").filter { $0.hasSuffix(".safetensors") }
        XCTAssertEqual(files.count, expected)
        XCTAssertGreaterThan(expected, 3)
        XCTAssertTrue(files.allSatisfy { $0.hasSuffix("-of-\(String(format: "%05d", expected)).safetensors") })
        try XCTAssertEqual(Set(readHF(dir + "/back").keys), Set(readHF(hf).keys))
    }

    func testDenseModelLoadsAsPureRenames() throws {
        let hf = try synth(self, pattern: "M*-", mtp: "", shards: 2)
        var cfg = try JSON.parse(try readWholeFile(hf + "/config.json")).objectValue!
        cfg.removeAll { $0.0 == "n_routed_experts" || $0.0 == "moe_intermediate_size" }
        try writeFileAtomically(hf + "/config.json", Array(JSON.object(cfg).serialized().utf8))
        let source = try readHF(hf)
        let state = try loadInMemory(hf, rules: .seed)
        XCTAssertEqual(state.count, source.count)
        for (k, v) in source { XCTAssertEqual(state[NemotronV3Adapter.renameFromHF(k)]?.byteArray, v.2, k) }
        try assertSameCheckpoint(hf, try roundTrip(hf))
    }

    func testExistingOutputNeedsForce() throws {
        let hf = try synth(self)
        let out = temporaryDirectory(self) + "/out"
        var o = LoadJob.Options(source: hf)
        o.output = out
        _ = try LoadJob.run(o, world: SoloCollective())
        // The library names the remedy, not a command-line flag (the CLI turns it into "--force").
        XCTAssertThrowsError(try LoadJob.run(o, world: SoloCollective())) { error in
            guard case let .usage(u)? = (error as? JobFailure)?.error else { return XCTFail("\(error)") }
            XCTAssertEqual(u.remedy, .force, "\(error)")
            XCTAssertTrue("\(error)".contains("output directory \(out) exists"), "\(error)")
        }
        o.force = true
        XCTAssertNoThrow(try LoadJob.run(o, world: SoloCollective()))
        XCTAssertEqual(try FS.list(FS.parent(out)), ["out"], "no staging or old directories are left")
        o.output = hf + "/inside"
        XCTAssertThrowsError(try LoadJob.run(o, world: SoloCollective())) { XCTAssertTrue("\($0)".contains("inside the input"), "\($0)") }
    }

    func testReshardAndVerifyInOneProcess() throws {
        let hf = try synth(self)
        let dir = temporaryDirectory(self)
        var o = LoadJob.Options(source: hf)
        o.output = dir + "/one"
        _ = try LoadJob.run(o, world: SoloCollective())
        let v = try VerifyJob.run(VerifyJob.Options(a: hf, b: dir + "/one"), world: SoloCollective())
        XCTAssertTrue(v.equal, "\(v.differences)")
        XCTAssertEqual(v.a.count, v.b.count)
        // flip one byte of expert 5's slice of layer 4's down_projs
        let path = dir + "/one/rank-00000-of-00001.safetensors"
        let f = try SafetensorsFile(path: path)
        let info = try f.info("model.layers.4.mixer.experts.down_projs")
        var bytes = try readWholeFile(path)
        bytes[f.fileOffset(of: info) + 5 * 1024 + 17] ^= 0x01
        writeBytes(path, bytes)
        let bad = try VerifyJob.run(VerifyJob.Options(a: hf, b: dir + "/one"), world: SoloCollective())
        XCTAssertFalse(bad.equal)
        XCTAssertEqual(bad.differences.count, 1)
        XCTAssertTrue(bad.differences[0].hasPrefix("model.layers.4.mixer.experts.down_projs: expert 5 differs"), bad.differences[0])
    }
}
