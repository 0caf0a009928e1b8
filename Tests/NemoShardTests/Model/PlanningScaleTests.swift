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
@testable import nemoshard

/// Planning with many tensors (`synth --extra-tensors N`): the same plans, manifests and outputs
/// at a few thousand tensors, and the steps that were super-linear (coalescing a batch, the
/// ranks' messages, a page per small tensor, per-key string searches) checked by counts, not times.
final class PlanningScaleTests: XCTestCase {
    /// A seeded generator, so every run shuffles the same way.
    struct Seeded: RandomNumberGenerator {
        var source: SplitMix64
        init(_ seed: UInt64) { source = SplitMix64(seed: seed) }
        mutating func next() -> UInt64 { source.next() }
    }

    /// A tiny checkpoint with `extra` small non-expert tensors over `shards` files.
    func checkpoint(extra: Int, shards: Int = 4) throws -> String {
        let dir = temporaryDirectory(self) + "/hf"
        var o = SyntheticCheckpoint.Options()
        o.extraTensors = extra
        o.shards = shards
        try SyntheticCheckpoint.write(to: dir, options: o)
        return dir
    }

    func testSynthExtraTensorsAreManySmallNonExpertKeysOverSeveralFiles() throws {
        let base = try HFCheckpoint.open(try checkpoint(extra: 0))
        let c = try HFCheckpoint.open(try checkpoint(extra: 3000))
        XCTAssertEqual(c.tensors.count, base.tensors.count + 3000)
        let extras = c.tensors.filter { $0.name.contains(".mixer.extra_norms.") }
        XCTAssertEqual(extras.count, 3000)
        XCTAssertEqual(Set(extras.map(\.name)).count, 3000)
        XCTAssertTrue(extras.allSatisfy { $0.name.hasPrefix("backbone.layers.") && $0.shape == [16] && $0.dtype == .bf16 })
        // Round robin over the 5 layers of the tiny pattern, spread over every file.
        XCTAssertEqual(Set(extras.map { $0.name.split(separator: ".")[2] }), ["0", "1", "2", "3", "4"])
        XCTAssertEqual(Set(extras.map(\.file)).count, 4)
        // Every one is a plain renamed (non-expert) tensor of the adapter.
        let planner = try LoadPlanner(checkpoint: c)
        let renamed = Set(planner.layout.renamed.map(\.source.name))
        XCTAssertTrue(extras.allSatisfy { renamed.contains($0.name) })
        XCTAssertThrowsError(try SynthCommand.validate(try Arguments.parse(["out", "--extra-tensors", "-1"], for: SynthCommand.self)))
    }

    /// Every renamed tensor is one output of its own name, made by one piece from exactly its own
    /// bytes; grouped experts are whole; outputs are in name order, as the manifest lists them.
    func testLoadPlanHasEveryTensorOnceFromItsOwnBytes() throws {
        let c = try HFCheckpoint.open(try checkpoint(extra: 3000))
        let planner = try LoadPlanner(checkpoint: c)
        let n = c.config.nRoutedExperts ?? 0
        let (plan, globals) = try planner.plan(range: ExpertRange(start: 0, end: n), rank: 0)
        XCTAssertEqual(plan.outputs.map(\.name), globals.map(\.name))
        XCTAssertEqual(plan.outputs.map(\.name), plan.outputs.map(\.name).sorted())
        let output = Dictionary(uniqueKeysWithValues: plan.outputs.enumerated().map { ($1.name, $0) })
        var piecesOf = [Int: [Piece]]()
        for p in plan.pieces { piecesOf[p.output, default: []].append(p) }
        for r in planner.layout.renamed {
            let o = try XCTUnwrap(output[r.name], r.name)
            XCTAssertEqual(piecesOf[o], [Piece(source: SourceRange(file: r.source.file, offset: r.source.offset, count: r.source.byteCount),
                                                transform: plan.outputs[o].dtype == r.source.dtype ? .copy : piecesOf[o]?.first?.transform ?? .copy,
                                                output: o, destOffset: 0)], r.name)
            XCTAssertEqual(plan.outputs[o].shape, r.source.shape, r.name)
        }
        XCTAssertEqual(plan.outputs.count, planner.layout.renamed.count + 2 * planner.layout.experts.count)
        XCTAssertEqual(plan.pieces.count, planner.layout.renamed.count + 2 * planner.layout.experts.count * n)
        XCTAssertNoThrow(try plan.validateCoverage())
    }

    /// The executor's batches (the step that was quadratic in the pieces of one batch) are what a
    /// plain grouping of the sorted pieces gives.
    func testBatchesAreAPlainCoalescingOfTheSortedPieces() throws {
        var rng = Seeded(7)
        var outputs: [TensorSpec] = []
        var pieces: [Piece] = []
        var offsets = [0, 0, 0]
        for i in 0..<6000 {
            let file = Int(rng.next() % 3)
            let large = rng.next() % 400 == 0
            let tiny = Int(rng.next() % 64)
            let count: Int = large ? 3 << 20 : tiny  // some large, mostly tiny, some empty
            let gap: Int = rng.next() % 1500 == 0 ? 8 : 0
            outputs.append(TensorSpec(name: "t\(i)", dtype: .u8, shape: [count]))
            pieces.append(Piece(source: SourceRange(file: file, offset: offsets[file] + gap, count: count), transform: .copy, output: i, destOffset: 0))
            offsets[file] += gap + count
        }
        let plan = TransferPlan(files: ["a", "b", "c"], outputs: outputs, pieces: pieces.shuffled(using: &rng))
        let executor = PlanExecutor(chunkBytes: 1 << 20)
        let got = executor.batches(plan)
        // Reference: split at 1 MiB, sort, start a batch wherever the next piece does not follow
        // on in the same file or would pass 1 MiB.
        let split = plan.pieces.flatMap { $0.source.count == 0 ? [$0] : $0.split(max: 1 << 20) }
            .sorted { ($0.source.file, $0.source.offset) < ($1.source.file, $1.source.offset) }
        var want: [[Piece]] = []
        var bytes = 0
        for p in split {
            if let last = want.last?.last, last.source.file == p.source.file, last.source.end == p.source.offset, bytes + p.source.count <= 1 << 20 {
                want[want.count - 1].append(p)
                bytes += p.source.count
            } else {
                want.append([p])
                bytes = p.source.count
            }
        }
        XCTAssertEqual(got.count, want.count)
        XCTAssertEqual(got.map { $0.pieces }, want)
        for b in got {
            XCTAssertEqual(b.offset, b.pieces[0].source.offset)
            XCTAssertEqual(b.count, b.pieces.reduce(0) { $0 + $1.source.count })
        }
        XCTAssertGreaterThan(got.map { $0.pieces.count }.max() ?? 0, 200, "long runs of tiny pieces coalesce into one batch")
        XCTAssertGreaterThan(got.count, 20, "and the gaps, file ends and large pieces cut them")
    }

    /// Coverage of many outputs, pieces in any order: fine when exact, and the first output (in
    /// output order) that is wrong is the one named.
    func testCoverageOfManyOutputsInAnyOrder() throws {
        let n = 40_000
        let outputs = (0..<n).map { TensorSpec(name: "t\($0)", dtype: .u8, shape: [2]) }
        var rng = Seeded(3)
        var pieces = (0..<n).flatMap { i in
            [Piece(source: SourceRange(file: 0, offset: 2 * i, count: 1), transform: .copy, output: i, destOffset: 0),
             Piece(source: SourceRange(file: 0, offset: 2 * i + 1, count: 1), transform: .copy, output: i, destOffset: 1)]
        }
        pieces.shuffle(using: &rng)
        XCTAssertNoThrow(try TransferPlan(files: ["f"], outputs: outputs, pieces: pieces).validateCoverage())
        let broken = pieces.filter { !($0.output == 30_000 && $0.destOffset == 1) && !($0.output == 35_000 && $0.destOffset == 0) }
        XCTAssertEqual(broken.count, pieces.count - 2)
        XCTAssertThrowsError(try TransferPlan(files: ["f"], outputs: outputs, pieces: broken).validateCoverage()) {
            XCTAssertEqual(($0 as? InternalError)?.message, "t30000: the plan covers 1 of 2 bytes; bytes [1, 2) are produced by no piece")
        }
        let twice = pieces + [Piece(source: SourceRange(file: 0, offset: 0, count: 2), transform: .copy, output: 20_000, destOffset: 0)]
        XCTAssertThrowsError(try TransferPlan(files: ["f"], outputs: outputs, pieces: twice).validateCoverage()) {
            XCTAssertEqual(($0 as? InternalError)?.message, "t20000: the plan produces bytes [0, 1) more than once")
        }
    }

    // MARK: the ranks' messages

    /// A checkpoint, a manifest and everything else ranks send each other arrive as they left,
    /// the same as through Foundation's JSON coders (the encoding they replaced).
    func testWireFormatCarriesCheckpointAndManifestAsJSONDid() throws {
        let dir = try checkpoint(extra: 2000)
        let c = try HFCheckpoint.open(dir)
        func viaJSON<T: Codable>(_ v: T) throws -> T { try JSONDecoder().decode(T.self, from: JSONEncoder().encode(v)) }
        func viaWire<T: Codable>(_ v: T) throws -> T { try WireFormat.decode(T.self, from: try WireFormat.encode(v)) }
        for back in [try viaWire(c), try viaJSON(c)] {
            XCTAssertEqual(back.tensors, c.tensors)
            XCTAssertEqual(back.files, c.files)
            XCTAssertEqual(back.directory, c.directory)
            XCTAssertEqual(back.extraFiles, c.extraFiles)
            XCTAssertEqual(back.fingerprints, c.fingerprints)
            XCTAssertEqual(back.config.json, c.config.json)
        }
        let out = temporaryDirectory(self) + "/sharded"
        var o = LoadJob.Options(source: dir)
        o.output = out
        let m = try LoadJob.run(o, world: SoloCollective()).manifest
        XCTAssertEqual(try viaWire(m).toJSON(), m.toJSON())
        XCTAssertEqual(try viaJSON(m).toJSON(), m.toJSON())
        XCTAssertEqual(try viaWire(m).toJSON().serialized(indent: 1), try String(decoding: readWholeFile(out + "/" + Manifest.fileName), as: UTF8.self))
        let s = try ShardedCheckpoint.open(out)
        XCTAssertEqual(try viaWire(s.locations[0]), s.locations[0])
        XCTAssertEqual(try viaWire([3: s.locations[0]]), [3: s.locations[0]])
        let weights = [HFExport.WeightEntry(key: "a", file: "f", bytes: 3)]
        XCTAssertEqual(try viaWire(weights).map(\.key), ["a"])
    }

    /// Every shape of `Codable` value: optionals present and absent, enums with associated values,
    /// dictionaries of both key kinds, nested lists, an empty struct, extreme numbers, any text.
    func testWireFormatRoundTripsEveryCodableShape() throws {
        struct Empty: Codable, Equatable {}
        indirect enum Kind: Codable, Equatable { case plain, sized(Int, name: String), nested([Kind]) }
        struct Sample: Codable, Equatable {
            var a: Int64 = .min, b: UInt64 = .max, c = -0.0, d = "é\u{0}\"\\ key", e: [Int]? = nil, f: [Int]? = [1, -2]
            var g: [String: [Int]] = ["k": [1], "": []], h: [Int: String] = [3: "x", -1: ""], i: Kind = .sized(7, name: "n")
            var j: [Kind] = [.plain, .nested([.plain, .sized(0, name: "")])], k = Empty(), l: [String?] = [nil, "x", nil]
            var m: Int8 = -128, n = true, o: Float = 1.5, p: [[UInt16]] = [[], [65535]], q: Double = .infinity
        }
        var s = Sample()
        XCTAssertEqual(try WireFormat.decode(Sample.self, from: try WireFormat.encode(s)), s)
        s.e = [0]
        s.f = nil
        s.i = .plain
        XCTAssertEqual(try WireFormat.decode(Sample.self, from: try WireFormat.encode(s)), s)
        XCTAssertEqual(try WireFormat.decode(Empty?.self, from: try WireFormat.encode(Empty?.none)), nil)
        XCTAssertEqual(try WireFormat.decode(Double.self, from: try WireFormat.encode(Double.nan)).isNaN, true)
        XCTAssertEqual(try WireFormat.decode([Int].self, from: try WireFormat.encode([Int]())), [])
        // Damaged bytes are an error, never a trap.
        let bytes = try WireFormat.encode(s)
        for cut in [0, 1, bytes.count / 2, bytes.count - 1] {
            XCTAssertThrowsError(try WireFormat.decode(Sample.self, from: Array(bytes.prefix(cut))), "cut at \(cut)")
        }
        XCTAssertThrowsError(try WireFormat.decode(Sample.self, from: bytes + [0]), "trailing byte")
        XCTAssertThrowsError(try WireFormat.decode(Int8.self, from: try WireFormat.encode(300)), "out of range")
    }

    /// Decoding is one pass in the written order: the keyed entries it searches grow with the
    /// manifest's tensors exactly linearly (a search per tensor of its own few fields, never of
    /// the list), and so do the bytes.
    func testWireFormatWorkIsLinearInTheTensors() throws {
        func manifest(_ n: Int) throws -> Manifest {
            let tensors = (0..<n).map { Manifest.TensorEntry(name: "model.layers.\($0 % 5).mixer.extra_norms.\($0).weight", dtype: .bf16,
                                                              shape: [16], expert: nil, hfKey: "backbone.layers.\($0 % 5).mixer.extra_norms.\($0).weight") }
            let mesh = try MeshShape.expertParallel(2)
            return Manifest(worldSize: 2, mesh: mesh, nRoutedExperts: 0, ranks: Manifest.rankEntries(worldSize: 2, mesh: mesh, experts: 0),
                            tensors: tensors, sourceDirectory: "/src", config: .object([]), hfPrefix: "backbone.",
                            hfKeys: tensors.compactMap(\.hfKey), extraFiles: [])
        }
        var work: [(bytes: Int, scanned: Int)] = []
        for n in [2000, 8000] {
            let m = try manifest(n)
            let bytes = try WireFormat.encode(m)
            let (back, scanned) = try WireFormat.decodeCountingScans(Manifest.self, from: bytes)
            XCTAssertEqual(back.toJSON(), m.toJSON())
            work.append((bytes.count, scanned))
        }
        XCTAssertLessThan(work[0].scanned, 2000 * 16, "a few entries per tensor")
        // 4x the tensors: 4x the work, up to the constant part (config, ranks, mesh).
        XCTAssertLessThanOrEqual(work[1].scanned, 4 * work[0].scanned + 64)
        XCTAssertGreaterThanOrEqual(work[1].scanned, 4 * work[0].scanned - 64)
        XCTAssertLessThan(abs(Double(work[1].bytes) / Double(work[0].bytes) - 4), 0.1)
    }

    // MARK: memory and strings

    /// A small tensor takes about its own bytes, not a page: a million tensors of 32 bytes held
    /// in memory once took 4 GiB, a page each. (Pages counted from the addresses: no timing.)
    func testSmallTensorsTakeTheirSizeNotAPage() throws {
        let held = try (0..<20_000).map { _ in try TensorStorage(count: 32, for: "test") }
        let pages = Set(held.map { Int(bitPattern: $0.bytes.baseAddress) / Memory.pageSize }).count
        XCTAssertLessThan(pages, held.count / 8, "20,000 tensors of 32 bytes on \(pages) pages")
        XCTAssertTrue(held.allSatisfy { Int(bitPattern: $0.bytes.baseAddress) % 64 == 0 }, "cache-line aligned")
        let page = try TensorStorage(count: Memory.pageSize, for: "test")
        XCTAssertEqual(Int(bitPattern: page.bytes.baseAddress) % Memory.pageSize, 0, "a page or more: page-aligned")
    }

    /// The byte searches that replaced Foundation's on tensor names find what it finds.
    func testByteSearchAgreesWithFoundation() {
        let keys = ["backbone.layers.12.mixer.experts.3.up_proj.weight", "mtp.layers.0.mixer.experts.down_projs", "layers.",
                    "x.mixer.mixer.norm", "", "model.layers.1.mixer._fp32_params.A_log", "lm_head.weight", "é.layers.1é"]
        for key in keys {
            for needle in [".mixer.experts.", "layers.", ".mixer.", "_fp32_params", "é", "weight", "z"] {
                XCTAssertEqual(key.hasSubstring(needle), key.contains(needle), "\(key) / \(needle)")
                XCTAssertEqual(Substring(key).hasSubstring(needle), key.contains(needle), "\(key) / \(needle)")
                for backwards in [false, true] {
                    let mine = key.range(ofSubstring: needle, backwards: backwards).map { key[$0] }
                    let theirs = key.range(of: needle, options: backwards ? [.backwards, .literal] : [.literal]).map { key[$0] }
                    XCTAssertEqual(mine, theirs, "\(key) / \(needle) backwards \(backwards)")
                    if let r = key.range(ofSubstring: needle, backwards: backwards), let f = key.range(of: needle, options: backwards ? [.backwards, .literal] : [.literal]) {
                        XCTAssertEqual(r, f)
                    }
                }
            }
            XCTAssertEqual(key.containsByte(UInt8(ascii: "/")), key.contains("/"))
            XCTAssertEqual(Substring(key).hasBytePrefix("backbone."), key.hasPrefix("backbone."))
        }
        XCTAssertTrue("a\u{0}b".containsByte(0))
        // The adapter's key rules on the keys above are unchanged by the byte searches.
        let adapter = NemotronV3Adapter(numHiddenLayers: 20, nRoutedExperts: 8, moeIntermediateSize: 16)
        XCTAssertEqual(adapter.backboneLayerIndex("backbone.layers.12.mixer.x"), 12)
        XCTAssertEqual(adapter.backboneLayerIndex("model.layers.99999999999999999999.x"), Int.max)
        XCTAssertNil(adapter.backboneLayerIndex("backbone.layers.x.mixer"))
        XCTAssertNil(adapter.backboneLayerIndex("backbone.layers.12"))
        XCTAssertEqual(adapter.firstLayerNumber("model.layers.layers.7.x"), 7)
    }

    /// The parser's fast paths keep it strict: duplicate keys in a large object, an invalid
    /// UTF-8 string (at the same byte offset as before), escapes both ways.
    func testJSONFastPathsKeepTheParserStrict() throws {
        let many = (0..<40).map { "\"k\($0)\": \($0)" }
        XCTAssertNoThrow(try JSON.parse("{" + many.joined(separator: ",") + "}"))
        XCTAssertThrowsError(try JSON.parse("{" + (many + ["\"k3\": 0"]).joined(separator: ",") + "}")) {
            XCTAssertTrue("\($0)".hasPrefix("duplicate key \"k3\""), "\($0)")
        }
        XCTAssertThrowsError(try JSON.parse("{\"a\": 1, \"a\": 2}")) { XCTAssertTrue("\($0)".hasPrefix("duplicate key \"a\""), "\($0)") }
        XCTAssertThrowsError(try JSON.parse([0x22, 0xFF, 0x22])) { XCTAssertEqual("\($0)", "string is not valid UTF-8 at byte 3") }
        XCTAssertThrowsError(try JSON.parse([0x22, 0x61, 0x0A, 0x22])) { XCTAssertEqual("\($0)", "control character in string at byte 2") }
        XCTAssertEqual(try JSON.parse("\"a\\u00e9\\\"\\n\\\\b\""), .string("aé\"\n\\b"))
        XCTAssertEqual(try JSON.parse(Array("\"é€\"".utf8)), .string("é€"))
        XCTAssertEqual(JSON.string("plain.name").serialized(), "\"plain.name\"")
        XCTAssertEqual(JSON.string("q\"\\\n\u{1}").serialized(), "\"q\\\"\\\\\\n\\u0001\"")
    }

    /// The canonical header reader is a shortcut, never a second opinion: on every header it
    /// gives what the general parser gives, or declines and leaves it to the parser (which then
    /// names what is wrong, as before). Writers' headers take the shortcut.
    func testCanonicalHeaderAgreesWithTheGeneralParser() throws {
        func same(_ a: SafetensorsHeader, _ b: SafetensorsHeader) -> Bool {
            a.tensors == b.tensors && a.dataStart == b.dataStart && a.metadata.map(\.0) == b.metadata.map(\.0)
                && a.metadata.map(\.1) == b.metadata.map(\.1)
        }
        var taken = 0
        func check(_ text: String, dataBytes: Int, shortcut: Bool? = nil, file: StaticString = #filePath, line: UInt = #line) {
            let bytes = Array(text.utf8)
            let size = 8 + bytes.count + dataBytes
            let fast = SafetensorsHeader.canonical(headerBytes: bytes, fileSize: size)
            let general = Result { try SafetensorsHeader.parseGeneral(headerBytes: bytes, fileSize: size, path: "f") }
            if let fast {
                taken += 1
                guard case let .success(g) = general else { return XCTFail("shortcut accepted what the parser refuses: \(text)", file: file, line: line) }
                XCTAssertTrue(same(fast, g), text, file: file, line: line)
            }
            if let shortcut { XCTAssertEqual(fast != nil, shortcut, text, file: file, line: line) }
        }
        let e = #""dtype":"BF16","shape":[2,3],"data_offsets":[0,12]"#
        let f = #""dtype":"F32","shape":[1],"data_offsets":[12,16]"#
        check(#"{"a":{\#(e)},"b":{\#(f)}}"#, dataBytes: 16, shortcut: true)
        check(#"{"b":{\#(f)},"a":{\#(e)}}"#, dataBytes: 16, shortcut: true)
        check(#"{ "__metadata__" : { "format" : "pt" , "x":"" } , "a" : { "dtype" : "BF16" , "shape" : [ 2 , 3 ] , "data_offsets" : [ 0 , 12 ] }, "b":{\#(f)} }    "#,
              dataBytes: 16, shortcut: true)
        check(#" {"a":{\#(e)},"b":{\#(f)}}"#, dataBytes: 16, shortcut: false)  // a space before the brace: refused
        check(#"{}"#, dataBytes: 0, shortcut: true)
        check(#"{"__metadata__":{"DCP_SHARDING_INFO":"{\"a\": {\"saved_offsets\": [0, 0]}, \"x\\\"}\"}","f":"pt"},"a":{\#(e)},"b":{\#(f)}}"#,
              dataBytes: 16, shortcut: true)  // an escaped metadata value (a per-rank file's)
        check(#"{"é €":{\#(e)},"b":{\#(f)}}"#, dataBytes: 16, shortcut: true)
        check(#"{"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]},"z":{"dtype":"U8","shape":[0],"data_offsets":[1,1]}}"#, dataBytes: 1, shortcut: true)
        // Declined (the general parser decides): refused by it, or valid but not canonical.
        for declined in [
            #"{"a":{\#(e)},"a":{\#(f)}}"#,                                   // a name twice
            #"{"a":{\#(e)},"b":{\#(f)},}"#,                                  // trailing comma
            #"{"a":{\#(e)},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,17]}}"#,  // size mismatch
            #"{"a":{\#(e)},"b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}"#,  // a hole
            #"{"a":{\#(e)},"b":{"dtype":"F32","shape":[01],"data_offsets":[12,16]}}"#, // leading zero
            #"{"a":{\#(e)},"b":{"dtype":"F32","shape":[-0],"data_offsets":[12,16]}}"#, // valid, not plain
            #"{"a":{\#(e)},"b":{"shape":[1],"dtype":"F32","data_offsets":[12,16]}}"#,  // valid, other order
            #"{"a":{\#(e)},"b":{\#(f),"extra":1}}"#,                         // valid, extra field
            #"{"a\u0041":{\#(e)},"b":{\#(f)}}"#,                         // valid, an escape
            #"{"a":{\#(e)},"b":{"dtype":"F99","shape":[1],"data_offsets":[12,16]}}"#,  // unknown dtype
            #"{"__metadata__":{"k":1},"a":{\#(e)},"b":{\#(f)}}"#,            // metadata not strings
            #"{"__metadata__":{"k":"1","k":"2"},"a":{\#(e)},"b":{\#(f)}}"#,  // metadata key twice
            #"{"a":{\#(e)},"b":{\#(f)}} x"#,                                 // trailing garbage
            #"{"a":{"dtype":"BF16","shape":[9999999999999999999],"data_offsets":[0,12]}}"#,  // too large
        ] { check(declined, dataBytes: 16, shortcut: false) }
        // Every header a writer makes (ours, Python's) takes the shortcut and reads the same.
        let hf = try checkpoint(extra: 500, shards: 2)
        var load = LoadJob.Options(source: hf)
        load.output = temporaryDirectory(self) + "/sharded"
        _ = try LoadJob.run(load, world: SoloCollective())
        for (dir, name) in try FS.list(hf).map({ (hf, $0) }) + FS.list(load.output!).map({ (load.output!, $0) }) where name.hasSuffix(".safetensors") {
            let file = try SystemFile(readingAt: dir + "/" + name)
            let size = try file.fingerprint().size
            let n = try SafetensorsHeader.headerLength(try file.readBytes(count: 8, at: 0), fileSize: size, path: name)
            check(String(decoding: try file.readBytes(count: n, at: 8), as: UTF8.self), dataBytes: size - 8 - n, shortcut: true)
        }
        let python = try readWholeFile(try XCTUnwrap(Bundle.module.resourcePath) + "/Fixtures/python_safetensors.safetensors")
        let n = try SafetensorsHeader.headerLength(Array(python.prefix(8)), fileSize: python.count, path: "python")
        check(String(decoding: python[8..<(8 + n)], as: UTF8.self), dataBytes: python.count - 8 - n, shortcut: true)
        XCTAssertGreaterThanOrEqual(taken, 11)
    }

    // MARK: end to end

    /// Thousands of tensors out through `load --out` on two ranks and back with `save-hf`: the
    /// manifest reads back as written, and every tensor comes back byte for byte.
    func testThousandsOfTensorsRoundTripByteForByte() throws {
        let hf = try checkpoint(extra: 3000, shards: 3)
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/sharded"], ranks: 2)
        let written = try readWholeFile(dir + "/sharded/" + Manifest.fileName)
        let manifest = try Manifest.load(directory: dir + "/sharded")
        XCTAssertEqual(Array(manifest.toJSON().serialized(indent: 1).utf8), written)
        XCTAssertEqual(Set(manifest.tensors.compactMap(\.holder)), [0, 1], "both owners hold non-expert tensors")
        try ok(["save-hf", dir + "/sharded", dir + "/back"], ranks: 2)
        let source = try readHF(hf), back = try readHF(dir + "/back")
        XCTAssertEqual(back.count, source.count)
        for (key, (dtype, shape, bytes)) in source where key.contains("extra_norms") {
            XCTAssertEqual(back[key]?.0, dtype, key)
            XCTAssertEqual(back[key]?.1, shape, key)
            XCTAssertEqual(back[key]?.2, bytes, key)
        }
    }
}
