import CKernels
import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard

/// ModelOpt FP8 / NVFP4 checkpoints: `load --dequantize` against a reference written here from
/// the formats' definitions (not the kernels' tables), bit for bit; the refusal without it;
/// what `inspect` reports; and that nothing of the quantization survives into the outputs.
final class QuantizationTests: XCTestCase {

    // MARK: an independent reference

    /// An e4m3fn byte by its definition: sign, 4 exponent bits (bias 7), 3 mantissa bits;
    /// exponent 0 is subnormal. (0x7F / 0xFF, the NaNs, are never asked for.)
    static func e4m3(_ b: UInt8) -> Float {
        let sign: FloatingPointSign = b & 0x80 != 0 ? .minus : .plus
        let e = Int((b >> 3) & 0xF), m = Float(b & 7)
        return e == 0 ? Float(sign: sign, exponent: -6, significand: m / 8)
                      : Float(sign: sign, exponent: e - 7, significand: 1 + m / 8)
    }

    /// An e2m1 nibble by its definition: bit 3 sign, 2 exponent bits (bias 1), 1 mantissa bit;
    /// exponent 0 is subnormal (0 or 0.5). Nibble 0x8 is -0.
    static func e2m1(_ n: UInt8) -> Float {
        let sign: FloatingPointSign = n & 0x8 != 0 ? .minus : .plus
        let e = Int((n >> 1) & 3), m = Float(n & 1)
        return e == 0 ? Float(sign: sign, exponent: -1, significand: m) : Float(sign: sign, exponent: e - 1, significand: 1 + m / 2)
    }

    /// One quantized weight of a fixture: its logical `rows x cols` and what the files hold.
    struct Weight {
        let rows: Int, cols: Int
        /// FP8: one byte per value. NVFP4: `rows * cols / 2` packed bytes.
        let data: [UInt8]
        /// NVFP4: `rows * cols / 16` e4m3 block scales.
        let blocks: [UInt8]
        /// FP8: weight_scale. NVFP4: weight_scale_2.
        let scale: Float

        /// The dequantized matrix, row-major, as f32 bits: FP8 `e4m3 * scale`, NVFP4
        /// `e2m1 * (block * scale)` (ModelOpt's order).
        func reference(_ format: QuantizedFormat) -> [UInt32] {
            (0..<rows * cols).map { i in
                switch format {
                case .fp8: return (QuantizationTests.e4m3(data[i]) * scale).bitPattern
                case .nvfp4:
                    let (r, c) = (i / cols, i % cols)
                    let byte = data[r * cols / 2 + c / 2]
                    let nibble = c % 2 == 0 ? byte & 0x0F : byte >> 4
                    let block = QuantizationTests.e4m3(blocks[r * cols / 16 + c / 16]) * scale
                    return (QuantizationTests.e2m1(nibble) * block).bitPattern
                }
            }
        }

        /// `reference` stored as `dtype` (bf16: round to nearest even), transposed if asked.
        func expected(_ format: QuantizedFormat, _ dtype: DType, transpose: Bool) -> [UInt8] {
            let values = reference(format)
            var bytes: [UInt8] = []
            for v in values {
                if dtype == .bf16 { withUnsafeBytes(of: referenceBF16(v).littleEndian) { bytes += $0 } }
                else { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
            }
            return transpose ? naiveTranspose(bytes, rows: rows, cols: cols, size: dtype.size) : bytes
        }
    }

    /// A tiny ModelOpt checkpoint: `synth` (pattern `E*`, 2 experts, no MTP) with every routed and
    /// shared expert projection and every attention projection replaced by deterministic
    /// quantized bytes (every byte value, subnormals and -0 included; never NaN), with
    /// `input_scale`s, the attention's `k_scale` / `v_scale`, `quantization_config` and
    /// `hf_quant_config.json`. Weights in one file, every quantization tensor in the other.
    struct Fixture {
        let dir: String
        let format: QuantizedFormat
        /// By HF key.
        let weights: [String: Weight]
        let scaleKeys: [String]
    }

    func fixture(_ format: QuantizedFormat) throws -> Fixture {
        let dir = try synth(self, pattern: "E*", mtp: "", experts: 2, shards: 1)
        var tensors = try readHF(dir)
        for name in try FS.list(dir) where name.hasSuffix(".safetensors") || name == HFIndex.fileName {
            try FileManager.default.removeItem(atPath: FS.join(dir, name))
        }
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15 &+ (format == .fp8 ? 1 : 2)
        func byte() -> UInt8 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return UInt8(truncatingIfNeeded: state >> 24)
        }
        var weights: [String: Weight] = [:]
        var scales: [(String, Tensor)] = []
        let quantized = tensors.keys.sorted().filter {
            $0.hasSuffix("_proj.weight") && ($0.contains(".experts.") || $0.contains(".layers.1."))
        }
        for (i, key) in quantized.enumerated() {
            let (_, shape, _) = tensors[key]!
            let (rows, cols) = (shape[0], shape[1])
            let base = String(key.dropLast("weight".count))
            let scale = Float(0.0123 + 0.00071 * Float(i))
            func scalar(_ v: Float) -> Tensor { Tensor(dtype: .f32, shape: [], bytes: withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) }) }
            switch format {
            case .fp8:
                let data = (0..<rows * cols).map { _ -> UInt8 in let b = byte(); return b & 0x7F == 0x7F ? b ^ 1 : b }
                weights[key] = Weight(rows: rows, cols: cols, data: data, blocks: [], scale: scale)
                tensors[key] = (.f8e4m3, shape, data)
                scales.append((base + "weight_scale", scalar(scale)))
            case .nvfp4:
                XCTAssertEqual(cols % 16, 0, key)
                let data = (0..<rows * cols / 2).map { _ in byte() }
                let blocks = (0..<rows * cols / 16).map { _ in byte() % 0x7F }
                let scale2 = scale / 97
                weights[key] = Weight(rows: rows, cols: cols, data: data, blocks: blocks, scale: scale2)
                tensors[key] = (.u8, [rows, cols / 2], data)
                scales.append((base + "weight_scale", Tensor(dtype: .f8e4m3, shape: [rows, cols / 16], bytes: blocks)))
                scales.append((base + "weight_scale_2", scalar(scale2)))
            }
            scales.append((base + "input_scale", scalar(scale * 3)))
            if key.hasSuffix(".k_proj.weight") { scales.append((base + "k_scale", scalar(1.25))) }
            if key.hasSuffix(".v_proj.weight") { scales.append((base + "v_scale", scalar(1.5))) }
        }
        let files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        try SafetensorsWriter.write(path: FS.join(dir, files[0]), tensors: tensors.keys.sorted().map {
            ($0, Tensor(dtype: tensors[$0]!.0, shape: tensors[$0]!.1, bytes: tensors[$0]!.2))
        })
        try SafetensorsWriter.write(path: FS.join(dir, files[1]), tensors: scales)
        let map = tensors.keys.sorted().map { ($0, JSON.string(files[0])) } + scales.map { ($0.0, JSON.string(files[1])) }
        writeBytes(FS.join(dir, HFIndex.fileName), Array(JSON.object([("metadata", .object([])), ("weight_map", .object(map))]).serialized().utf8))
        var quant: [(String, JSON)] = [("quant_algo", .string(format.rawValue)), ("kv_cache_quant_algo", .string("FP8"))]
        if format == .nvfp4 { quant.append(("group_size", .int(16))) }
        let config = try JSON.parse(try readWholeFile(FS.join(dir, "config.json")))
        writeBytes(FS.join(dir, "config.json"), Array(JSON.object((config.objectValue ?? []) + [
            ("quantization_config", .object([("quant_method", .string("modelopt"))] + quant)),
        ]).serialized(indent: 2).utf8))
        writeBytes(FS.join(dir, "hf_quant_config.json"), Array(JSON.object([
            ("producer", .object([("name", .string("modelopt")), ("version", .string("0.39.0"))])),
            ("quantization", .object(quant)),
        ]).serialized(indent: 2).utf8))
        return Fixture(dir: dir, format: format, weights: weights, scaleKeys: scales.map(\.0))
    }

    /// Checks every quantized weight of `f` in `tensors` (internal names: a non-expert weight as
    /// itself, row-major; an expert transposed into its slice of the grouped tensor).
    func assertDequantized(_ f: Fixture, _ tensors: [String: (DType, [Int], [UInt8])], _ dtype: DType,
                           file: StaticString = #filePath, line: UInt = #line) {
        var checked = 0
        for (key, w) in f.weights.sorted(by: { $0.key < $1.key }) {
            let internalName = NemotronV3Adapter.renameFromHF(key)
            if let m = NemotronV3Adapter.matchExpert(internalName), let e = Int(m.expert) {
                let grouped = "\(m.prefix)layers.\(m.layer).mixer.experts." + (m.projection == "up_proj" ? "gate_and_up_projs" : "down_projs")
                guard let (dt, shape, bytes) = tensors[grouped] else { XCTFail("no \(grouped)", file: file, line: line); continue }
                let slice = w.rows * w.cols * dtype.size
                XCTAssertEqual(dt, dtype, grouped, file: file, line: line)
                XCTAssertEqual(Array(shape.dropFirst()), [w.cols, w.rows], grouped, file: file, line: line)
                XCTAssertTrue(Array(bytes[(e * slice)..<((e + 1) * slice)]) == w.expected(f.format, dtype, transpose: true),
                              "\(key) in \(grouped) differs from the reference", file: file, line: line)
            } else {
                guard let (dt, shape, bytes) = tensors[internalName] else { XCTFail("no \(internalName)", file: file, line: line); continue }
                XCTAssertEqual(dt, dtype, internalName, file: file, line: line)
                XCTAssertEqual(shape, [w.rows, w.cols], internalName, file: file, line: line)
                XCTAssertTrue(bytes == w.expected(f.format, dtype, transpose: false), "\(key) differs from the reference", file: file, line: line)
            }
            checked += 1
        }
        XCTAssertEqual(checked, f.weights.count, file: file, line: line)
    }

    // MARK: the kernels' decoding

    func testKernelDecodesEveryByteAsTheFormatsDefineIt() {
        for b in 0...255 {
            let byte = UInt8(b)
            let value = ns_e4m3_to_f32(byte)
            if byte & 0x7F == 0x7F {
                // torch's own NaN bits (c10's fp8e4m3fn_to_fp32_value), sign kept.
                XCTAssertEqual(value.bitPattern, byte & 0x80 != 0 ? 0xFFF0_0000 : 0x7FF0_0000, "e4m3 \(b)")
            } else {
                XCTAssertEqual(value.bitPattern, QuantizationTests.e4m3(byte).bitPattern, "e4m3 \(b)")
            }
        }
        XCTAssertEqual(ns_e4m3_to_f32(0x7E), 448)
        XCTAssertEqual(ns_e4m3_to_f32(0x01), 1.0 / 512)
        for n in 0..<16 {
            XCTAssertEqual(ns_e2m1_to_f32(UInt8(n)).bitPattern, QuantizationTests.e2m1(UInt8(n)).bitPattern, "e2m1 \(n)")
        }
        XCTAssertEqual((0..<8).map { ns_e2m1_to_f32(UInt8($0)) }, [0, 0.5, 1, 1.5, 2, 3, 4, 6])
        XCTAssertEqual(ns_e2m1_to_f32(0x8).bitPattern, (-Float(0)).bitPattern)
        XCTAssertEqual(ns_e2m1_to_f32(0xF), -6)
    }

    func testNVFP4KernelTakesTheLowNibbleFirstAndOneScalePerSixteen() {
        // One row of 32 values: byte j holds values 2j (low nibble) and 2j+1 (high nibble).
        let packed: [UInt8] = (0..<16).map { UInt8(($0 % 16) | (((15 - $0) % 16) << 4)) }
        let blocks: [UInt8] = [0x38, 0x40]  // 1.0 and 2.0
        var out = [Float](repeating: 0, count: 32)
        XCTAssertEqual(ns_dequantize_nvfp4(packed, blocks, 0.5, &out, NS_F32, 1, 32, 0), 0)
        for c in 0..<32 {
            let nibble = UInt8(c % 2 == 0 ? (c / 2) % 16 : (15 - c / 2) % 16)
            XCTAssertEqual(out[c].bitPattern, (QuantizationTests.e2m1(nibble) * (c < 16 ? 0.5 : 1.0)).bitPattern, "value \(c)")
        }
        XCTAssertEqual(ns_dequantize_nvfp4(packed, blocks, 1, &out, NS_F32, 1, 24, 0), -1, "24 values are not whole blocks")
        // NaN in an FP8 weight becomes bf16's NaN, as torch's cast.
        var bf16: [UInt16] = [0, 0]
        let nans: [UInt8] = [0x7F, 0xFF]
        XCTAssertEqual(ns_dequantize_fp8(nans, 2, &bf16, NS_BF16, 1, 2, 0), 0)
        XCTAssertEqual(bf16, [0x7FC0, 0x7FC0])
    }

    // MARK: load --dequantize

    func testDequantizedLoadEqualsTheReferenceBitForBit() throws {
        for format in QuantizedFormat.allCases {
            let f = try fixture(format)
            for dtype in [DType.bf16, .f32] {
                // A per-rank checkpoint (the sink writes through the worker's scratch) ...
                let out = temporaryDirectory(self) + "/out"
                var o = LoadJob.Options(source: f.dir)
                o.output = out
                o.dequantize = dtype
                o.dtype = dtype
                o.threads = 2
                _ = try LoadJob.run(o, world: SoloCollective())
                let written = try readAll(out + "/" + Manifest.rankFileName(0, of: 1))
                assertDequantized(f, written, dtype)
                // ... and in memory (straight into the destination tensors).
                o.output = nil
                let state = try LoadJob.run(o, world: SoloCollective()).stateDict
                assertDequantized(f, state.mapValues { ($0.dtype, $0.shape, $0.byteArray) }, dtype)
            }
        }
    }

    func testTheNVFP4FixtureTellsTheScaleOrderApart() throws {
        // ModelOpt multiplies the two scales first; the other order rounds differently in f32 for
        // some values of this fixture, so the bit-for-bit test above would catch a kernel using it.
        let f = try fixture(.nvfp4)
        var differing = 0
        for w in f.weights.values {
            for (i, bits) in w.reference(.nvfp4).enumerated() {
                let (r, c) = (i / w.cols, i % w.cols)
                let byte = w.data[r * w.cols / 2 + c / 2]
                let value = QuantizationTests.e2m1(c % 2 == 0 ? byte & 0x0F : byte >> 4)
                let other = (value * QuantizationTests.e4m3(w.blocks[r * w.cols / 16 + c / 16])) * w.scale
                if other.bitPattern != bits { differing += 1 }
            }
        }
        XCTAssertGreaterThan(differing, 0)
    }

    func testQuantizationTensorsAndDeclarationsAreNotCarriedAlong() throws {
        for format in QuantizedFormat.allCases {
            let f = try fixture(format)
            let dir = temporaryDirectory(self)
            try ok(["load", f.dir, "--dequantize", "bf16", "--out", dir + "/ranks"], ranks: 2)
            let manifest = try Manifest.load(directory: dir + "/ranks")
            XCTAssertNil(manifest.config["quantization_config"], "\(format): the manifest's config keeps quantization_config")
            XCTAssertFalse(manifest.extraFiles.contains("hf_quant_config.json"))
            XCTAssertTrue(manifest.extraFiles.contains("generation_config.json"), "other small files are still carried")
            let suffixes = QuantizationTensorKind.allCases.map { "." + $0.rawValue }
            XCTAssertEqual(manifest.tensors.filter { t in suffixes.contains { t.name.hasSuffix($0) } }.map(\.name), [])
            XCTAssertFalse(manifest.tensors.contains { $0.dtype == .u8 || $0.dtype == .f8e4m3 })
            for r in 0..<2 {
                let names = try readAll(dir + "/ranks/" + Manifest.rankFileName(r, of: 2)).keys
                XCTAssertEqual(names.filter { n in suffixes.contains { n.hasSuffix($0) } }, [])
            }
            try ok(["save-hf", dir + "/ranks", dir + "/hf"], ranks: 2)
            XCTAssertFalse(FS.exists(dir + "/hf/hf_quant_config.json"))
            XCTAssertTrue(FS.exists(dir + "/hf/generation_config.json"))
            let config = try JSON.parse(try readWholeFile(dir + "/hf/config.json"))
            XCTAssertNil(config["quantization_config"])
            XCTAssertEqual(config["hybrid_override_pattern"]?.stringValue, "E*")
            let exported = try readHF(dir + "/hf")
            XCTAssertEqual(Set(exported.keys).intersection(f.scaleKeys), [])
            for (key, w) in f.weights {
                XCTAssertEqual(exported[key]?.0, .bf16, key)
                XCTAssertEqual(exported[key]?.1, [w.rows, w.cols], key)
                XCTAssertTrue(exported[key]?.2 == w.expected(format, .bf16, transpose: false), "\(key) exported differs from the reference")
            }
        }
    }

    func testVerifyViewsTheQuantizedSourceDequantized() throws {
        let f = try fixture(.nvfp4)
        let dir = temporaryDirectory(self)
        try ok(["convert", f.dir, "--dequantize", "f32", "--out", dir + "/one"])
        let m = try Manifest.load(directory: dir + "/one")
        XCTAssertEqual(Set(m.tensors.filter(\.expertSharded).map(\.dtype)), [.f32], "experts default to the --dequantize dtype")
        let same = try ok(["verify", f.dir, dir + "/one", "--dequantize", "f32"])
        XCTAssertTrue(same.stdout.contains("equal:"), same.stdout)
        let other = try CLI.run(["verify", f.dir, dir + "/one", "--dequantize", "bf16"])
        XCTAssertEqual(other.code, 1, "a bf16 view of the source is not the f32 load")
    }

    // MARK: without --dequantize

    func testWithoutDequantizeOneLineNamesTheFormatAndTheOption() throws {
        for (format, words) in [(QuantizedFormat.fp8, "F8_E4M3 weights (ModelOpt FP8)"), (.nvfp4, "packed NVFP4 weights (ModelOpt NVFP4)")] {
            let f = try fixture(format)
            let dir = temporaryDirectory(self)
            for (args, ranks) in [(["load", f.dir, "--out", dir + "/out"], 2 as Int?), (["convert", f.dir, "--out", dir + "/out"], nil)] {
                let r = try CLI.run(args, ranks: ranks)
                XCTAssertEqual(r.code, 2, "\(args): \(r.stderr)")
                XCTAssertEqual(r.errorLines.count, 1, r.stderr)
                let line = r.errorLines.first ?? ""
                for fragment in [words, "use --dequantize bf16|f32", f.dir, "\(f.weights.count) ", "backbone.layers.0.mixer.experts.0.down_proj.weight"] {
                    XCTAssertTrue(line.contains(fragment), "\(line) lacks \(fragment)")
                }
                XCTAssertFalse(FS.exists(dir + "/out"), "nothing is written")
            }
            // The library names no flag: a typed usage error with its remedy.
            XCTAssertThrowsError(try LoadJob.run(LoadJob.Options(source: f.dir), world: SoloCollective())) { error in
                guard case let .usage(u) = NemoShardError(error) else { return XCTFail("\(error)") }
                XCTAssertEqual(u.remedy, .dequantize)
                XCTAssertFalse(u.message.contains("--"), u.message)
            }
        }
        let r = try CLI.run(["load", temporaryDirectory(self), "--dequantize", "f16"])
        XCTAssertEqual(r.code, 2)
        XCTAssertTrue(r.stderr.contains("--dequantize must be bf16 or f32"), r.stderr)
    }

    func testMalformedScalesAreOneLineErrorsNamingTheKey() throws {
        let f = try fixture(.nvfp4)
        let scales = f.dir + "/model-00002-of-00002.safetensors"
        var all = try readAll(scales)
        let key = "backbone.layers.1.mixer.q_proj.weight_scale"
        let (_, shape, bytes) = all[key]!
        all[key] = (.f8e4m3, [shape[0] * shape[1]], bytes)
        try SafetensorsWriter.write(path: scales, tensors: all.keys.sorted().map { ($0, Tensor(dtype: all[$0]!.0, shape: all[$0]!.1, bytes: all[$0]!.2)) })
        let dir = temporaryDirectory(self)
        let r = try CLI.run(["convert", f.dir, "--dequantize", "bf16", "--out", dir + "/out"])
        XCTAssertEqual(r.code, 1, r.stderr)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        for fragment in [scales, key, "not F8_E4M3 [32, 2]", "ModelOpt NVFP4"] {
            XCTAssertTrue(r.stderr.contains(fragment), "\(r.stderr) lacks \(fragment)")
        }
        XCTAssertFalse(FS.exists(dir + "/out"))
    }

    // MARK: inspect

    func testInspectReportsTheQuantization() throws {
        for format in QuantizedFormat.allCases {
            let f = try fixture(format)
            let j = try XCTUnwrap(try ok(["inspect", f.dir, "--json"]).json?["quantization"])
            XCTAssertEqual(j["method"]?.stringValue, "modelopt")
            XCTAssertEqual(j["algorithm"]?.stringValue, format.rawValue)
            XCTAssertEqual(j["kv_cache_algorithm"]?.stringValue, "FP8")
            XCTAssertEqual(j["declared_in"], .array([.string("config.json quantization_config"), .string("hf_quant_config.json")]))
            XCTAssertEqual(j["quantized_weights"]?.intValue, Int64(f.weights.count))
            XCTAssertEqual(j["formats"], .object([(format.rawValue, .int(Int64(f.weights.count)))]))
            XCTAssertEqual(j["weight_dtypes"], .object([(format == .fp8 ? "F8_E4M3" : "U8", .int(Int64(f.weights.count)))]))
            let experts = f.weights.keys.filter { $0.contains(".experts.") }.count
            XCTAssertEqual(j["expert_weights"]?.intValue, Int64(experts))
            XCTAssertEqual(j["other_weights"]?.intValue, Int64(f.weights.count - experts))
            XCTAssertEqual(j["with_input_scale"]?.intValue, Int64(f.weights.count))
            XCTAssertEqual(j["with_weight_scale_2"]?.intValue, format == .nvfp4 ? Int64(f.weights.count) : 0)
            XCTAssertEqual(j["quantization_tensors"]?["k_scale"]?.intValue, 1)
            XCTAssertEqual(j["quantization_tensors"]?["weight_scale"]?.intValue, Int64(f.weights.count))
            XCTAssertEqual(j["group_size"]?.intValue, format == .nvfp4 ? 16 : nil)
            let text = try ok(["inspect", f.dir]).stdout
            XCTAssertTrue(text.contains("quantization: modelopt \(format.rawValue) (declared in config.json quantization_config, hf_quant_config.json; kv cache FP8"), text)
            XCTAssertTrue(text.contains("quantized_weights: \(f.weights.count) (\(format.rawValue) \(f.weights.count); \(experts) expert"), text)
        }
        let plain = try XCTUnwrap(try ok(["inspect", try synthCLI(), "--json"]).json)
        XCTAssertNil(plain["quantization"], "a plain checkpoint reports no quantization")
    }
}
