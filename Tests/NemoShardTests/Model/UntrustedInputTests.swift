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

/// Manifests and indexes are untrusted input: a name, key, prefix or config in them that
/// `load` would never have written is refused with one error line naming the file and the key,
/// exit code 1, and nothing written.
final class UntrustedInputTests: XCTestCase {
    // MARK: helpers

    /// A synthetic checkpoint (10 experts, pattern ME*-E, MTP *E) and its per-rank form, loaded by
    /// two ranks into `dir/sharded`.
    struct Fixture {
        let hf: String
        let dir: String
        var sharded: String { dir + "/sharded" }
        var manifest: String { sharded + "/" + Manifest.fileName }
        var out: String { dir + "/out" }
        var saveHF: [String] { ["save-hf", sharded, out] }
    }

    func fixture(prepare: (String) throws -> Void = { _ in }) throws -> Fixture {
        let hf = try synthCLI(["--experts", "10", "--pattern", "ME*-E", "--mtp", "*E", "--shards", "3"])
        try prepare(hf)
        let f = Fixture(hf: hf, dir: temporaryDirectory(self))
        try inThreads(["load", hf, "--out", f.sharded], ranks: 2)
        return f
    }

    /// Exit code 1, exactly one error line holding every fragment, no trap, and nothing but the
    /// per-rank checkpoint in its directory (no output, no staging left over).
    func assertRefused(_ r: CLI.Output, _ fragments: [String], in f: Fixture, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(r.code, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, "one error line:\n\(r.stderr)", file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(r.errorLines.first?.contains(fragment) ?? false, "\"\(r.errorLines.first ?? "")\" lacks \"\(fragment)\"", file: file, line: line)
        }
        XCTAssertFalse(r.stderr.contains("Fatal error"), "no Swift trap", file: file, line: line)
        XCTAssertEqual(try FS.list(f.dir), ["sharded"], "nothing written", file: file, line: line)
    }

    /// `json` with `edit` applied to the value at `path` (object keys); other values unchanged.
    func editing(_ json: JSON, _ path: ArraySlice<String>, _ edit: (JSON) -> JSON) -> JSON {
        guard let key = path.first else { return edit(json) }
        guard let object = json.objectValue else { return json }
        return .object(object.map { $0.0 == key ? ($0.0, editing($0.1, path.dropFirst(), edit)) : $0 })
    }

    /// Rewrites the manifest file with `edit` applied at `path`.
    func editManifest(_ f: Fixture, _ path: [String], _ edit: (JSON) -> JSON) throws {
        let json = try JSON.parse(try readWholeFile(f.manifest))
        try writeFileAtomically(f.manifest, Array(editing(json, path[...], edit).serialized().utf8))
    }

    /// The error `Manifest(json:path:)` gives the fixture's manifest with `edit` applied at `path`
    /// (nil when it is accepted).
    func manifestError(_ manifest: JSON, _ path: [String], _ edit: (JSON) -> JSON) -> String? {
        do {
            _ = try Manifest(json: editing(manifest, path[...], edit), path: "m/nemoshard.json")
            return nil
        } catch {
            return String(describing: error)
        }
    }

    /// The first tensor entry with an `hf_key`, with that key replaced.
    func withFirstHFKey(_ key: JSON) -> (JSON) -> JSON {
        { tensors in
            var done = false
            return .array((tensors.arrayValue ?? []).map { t in
                guard !done, t["hf_key"] != nil, let o = t.objectValue else { return t }
                done = true
                return .object(o.map { $0.0 == "hf_key" ? ($0.0, key) : $0 })
            })
        }
    }

    // MARK: 1. source.extra_files

    func testExtraFileNamesMustBePlainAndNeverTheExportsOwnOrWeights() throws {
        let f = try fixture()
        let manifest = try JSON.parse(try readWholeFile(f.manifest))
        let refused: [(String, String)] = [
            ("", "is empty"), ("a/b", "contains '/'"), ("../config.json", "contains '/'"), ("x\u{0}y", "contains a NUL byte"),
            (".", "is not a file name"), ("..", "is not a file name"), (".nemoshard-output", "is a hidden name"),
            ("model.safetensors.index.json", "is a file the export writes itself"), ("model.safetensors", "is a file the export writes itself"),
            ("model-00001-of-00003.safetensors", "is a file the export writes itself"), ("config.json", "is a file the export writes itself"),
            ("nemoshard.json", "is a file the export writes itself"),
            ("pytorch_model.bin", "is a weights file"), ("pytorch_model.bin.index.json", "is a weights file"),
            ("w.pt", "is a weights file"), ("w.pth", "is a weights file"), ("model.gguf", "is a weights file"),
            ("other.safetensors", "is a weights file"), ("other.safetensors.index.json", "is a weights file"),
            ("tf_model.h5", "is a weights file"),
        ]
        for (name, why) in refused {
            let e = manifestError(manifest, ["source", "extra_files"]) { _ in .array([.string("tokenizer.json"), .string(name)]) }
            XCTAssertTrue(e?.hasPrefix("m/nemoshard.json: source.extra_files entry \(jsonQuoted(name)) \(why)") ?? false, "\(name): \(e ?? "accepted")")
        }
        XCTAssertNotNil(manifestError(manifest, ["source", "extra_files"]) { _ in .array([.string("a.json"), .string("a.json")]) })
        XCTAssertNil(manifestError(manifest, ["source", "extra_files"]) { _ in
            .array(["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                    "tokenizer.model", "chat_template.jinja", "README.md", "model-card.safetensors.md"].map { .string($0) })
        })
    }

    func testExtraFilesNeverOverwriteTheExportsIndexOrShards() throws {
        let f = try fixture()
        let original = try readWholeFile(f.manifest)
        for name in ["model.safetensors.index.json", "model-00001-of-00003.safetensors", "config.json"] {
            try editManifest(f, ["source", "extra_files"]) { .array(($0.arrayValue ?? []) + [.string(name)]) }
            try assertRefused(try CLI.run(f.saveHF, ranks: 2),
                              [f.manifest, "source.extra_files entry \"\(name)\" is a file the export writes itself"], in: f)
            writeBytes(f.manifest, original)
        }
    }

    func testASourceDirectoryThatIsNoCheckpointIsRefused() throws {
        let f = try fixture()
        try editManifest(f, ["source"]) { source in
            .object((source.objectValue ?? []).map { k, v in
                k == "directory" ? (k, .string("/etc")) : k == "extra_files" ? (k, .array([.string("passwd")])) : (k, v)
            })
        }
        try assertRefused(try CLI.run(f.saveHF, ranks: 2),
                          ["/etc: source.directory of nemoshard.json holds no config.json", "\"passwd\""], in: f)
        // A directory with a config.json that is not a Nemotron-H config is no better.
        let other = temporaryDirectory(self)
        writeBytes(other + "/config.json", Array("{\"some_app\": true}".utf8))
        writeBytes(other + "/secret.txt", [1])
        try editManifest(f, ["source"]) { source in
            .object((source.objectValue ?? []).map { k, v in
                k == "directory" ? (k, .string(other)) : k == "extra_files" ? (k, .array([.string("secret.txt")])) : (k, v)
            })
        }
        try assertRefused(try CLI.run(f.saveHF, ranks: 2), [other, "is not a Hugging Face Nemotron-H checkpoint"], in: f)
        XCTAssertNotNil(manifestError(try JSON.parse(try readWholeFile(f.manifest)), ["source", "directory"]) { _ in .string("relative/dir") })
    }

    func testAMovedSourceOrAVanishedExtraFileIsAnErrorNotAMissingTokenizer() throws {
        let f = try fixture { hf in writeBytes(hf + "/tokenizer.json", Array("{}".utf8)) }
        // An extra file removed from the source after load.
        unlink(f.hf + "/tokenizer.json")
        try assertRefused(try CLI.run(f.saveHF, ranks: 2),
                          ["tokenizer.json: listed in nemoshard.json source.extra_files but no longer exists"], in: f)
        // The whole source moved.
        XCTAssertEqual(rename(f.hf, f.hf + "-moved"), 0)
        try assertRefused(try CLI.run(f.saveHF, ranks: 2),
                          ["source.directory of nemoshard.json no longer exists", "\"generation_config.json\""], in: f)
        // Put back, with its tokenizer: the export carries every extra file.
        XCTAssertEqual(rename(f.hf + "-moved", f.hf), 0)
        writeBytes(f.hf + "/tokenizer.json", Array("{}".utf8))
        try ok(f.saveHF, ranks: 2)
        XCTAssertEqual(try readWholeFile(f.out + "/tokenizer.json"), Array("{}".utf8))
        XCTAssertTrue(FS.exists(f.out + "/generation_config.json"))
    }

    // MARK: 2. scanning an HF directory

    func testWeightsOfOtherFormatsAreNeverExtraFiles() throws {
        let weights = ["pytorch_model.bin", "pytorch_model.bin.index.json", "model.gguf", "optimizer.pt", "rng_state.pth",
                       "tf_model.h5"]
        let f = try fixture { hf in
            for name in weights + ["tokenizer.json", ".nemoshard-output"] { writeBytes(hf + "/" + name, [1, 2, 3]) }
        }
        XCTAssertEqual(try HFCheckpoint.extraFiles(in: f.hf), ["generation_config.json", "tokenizer.json"])
        let manifest = try JSON.parse(try readWholeFile(f.manifest))
        XCTAssertEqual(manifest["source"]?["extra_files"]?.arrayValue?.compactMap(\.stringValue), ["generation_config.json", "tokenizer.json"])
        try ok(f.saveHF, ranks: 2)
        let written = try FS.list(f.out)
        for name in weights { XCTAssertFalse(written.contains(name), name) }
        XCTAssertTrue(written.contains("tokenizer.json"))
        XCTAssertNotEqual(try? readWholeFile(f.out + "/.nemoshard-output"), [1, 2, 3], "the source's hidden marker is not carried")
    }

    // MARK: 3. HF keys and prefix

    func testHFKeysMustBeNonEmptyWithoutNULAndThePrefixKnown() throws {
        let f = try fixture()
        let manifest = try JSON.parse(try readWholeFile(f.manifest))
        XCTAssertTrue(manifestError(manifest, ["tensors"], withFirstHFKey(.string(""))).map { $0.contains("hf_key \"\" is empty") } ?? false)
        XCTAssertTrue(manifestError(manifest, ["tensors"], withFirstHFKey(.string("a\u{0}b"))).map { $0.contains("hf_key \"a\\u0000b\" contains a NUL byte") } ?? false)
        XCTAssertTrue(manifestError(manifest, ["tensors"], withFirstHFKey(.int(3))).map { $0.contains("\"hf_key\" must be a string") } ?? false)
        XCTAssertEqual(manifestError(manifest, ["source", "hf_keys"]) { .array(($0.arrayValue ?? []) + [.string("")]) }.map { $0.contains("source.hf_keys[") && $0.hasSuffix("\"\" is empty") }, true)
        XCTAssertEqual(manifestError(manifest, ["source", "hf_keys"]) { .array([.string("x\u{0}")] + ($0.arrayValue ?? [])) },
                       "m/nemoshard.json: source.hf_keys[0] \"x\\u0000\" contains a NUL byte")
        XCTAssertEqual(manifestError(manifest, ["source", "hf_prefix"]) { _ in .string("") },
                       "m/nemoshard.json: source.hf_prefix \"\" is not one of \"backbone.\", \"model.\"")
        XCTAssertNil(manifestError(manifest, ["source", "hf_prefix"]) { _ in .string("model.") })
        // A key taken from another tensor, or an expert's key: the index would list it twice.
        let keyed = (manifest["tensors"]?.arrayValue ?? []).filter { $0["hf_key"] != nil }
        let second = try XCTUnwrap(keyed.dropFirst().first?["hf_key"]?.stringValue)
        XCTAssertTrue(manifestError(manifest, ["tensors"], withFirstHFKey(.string(second))).map { $0.contains("two tensors have hf_key") } ?? false)
        XCTAssertTrue(manifestError(manifest, ["tensors"], withFirstHFKey(.string("backbone.other.weight")))
            .map { $0.contains("hf_key \"backbone.other.weight\" would load back as \"model.other.weight\", not as this tensor") } ?? false)
        XCTAssertTrue(manifestError(manifest, ["tensors"], withFirstHFKey(.string("backbone.layers.1.mixer.experts.0.up_proj.weight")))
            .map { $0.contains("hf_key \"backbone.layers.1.mixer.experts.0.up_proj.weight\" is an expert weight's key") } ?? false)
        XCTAssertTrue(manifestError(manifest, ["tensors"], withFirstHFKey(.string("backbone.layers.0.mixer.A_log_scale_inv")))
            .map { $0.contains("is a key load drops (_scale_inv)") } ?? false)

        let original = try readWholeFile(f.manifest)
        try editManifest(f, ["tensors"], withFirstHFKey(.string("")))
        try assertRefused(try CLI.run(f.saveHF, ranks: 2), [f.manifest, "hf_key \"\" is empty"], in: f)
        writeBytes(f.manifest, original)
        try editManifest(f, ["source", "hf_prefix"]) { _ in .string("evil/../") }
        try assertRefused(try CLI.run(f.saveHF, ranks: 2),
                          [f.manifest, "source.hf_prefix \"evil/../\" is not one of \"backbone.\", \"model.\""], in: f)
    }

    // MARK: 4. source.config against the tensors

    func testTheConfigMustAgreeWithTheGroupedTensors() throws {
        let f = try fixture()
        let original = try readWholeFile(f.manifest)
        let cases: [(String, JSON, [String])] = [
            ("n_routed_experts", .int(12), ["n_routed_experts is 10 but source.config's n_routed_experts is 12"]),
            ("hybrid_override_pattern", .string("M**-E"),
             ["tensor \"model.layers.1.mixer.experts.", "layer 1 is not an MoE layer of source.config's hybrid_override_pattern \"M**-E\""]),
            ("hybrid_override_pattern", .string("ME*EE"),
             ["source.config's hybrid_override_pattern makes layer 3 an MoE layer, but no grouped tensor holds its experts' up_proj"]),
            ("mtp_hybrid_override_pattern", .string("**"),
             ["tensor \"mtp.layers.1.mixer.experts.", "layer 1 is not an MoE layer of source.config's mtp_hybrid_override_pattern \"**\""]),
            ("moe_intermediate_size", .int(7), ["does not have source.config's moe_intermediate_size 7"]),
        ]
        for (key, value, fragments) in cases {
            try editManifest(f, ["source", "config", key]) { _ in value }
            try assertRefused(try CLI.run(f.saveHF, ranks: 2), [f.manifest] + fragments, in: f)
            writeBytes(f.manifest, original)
        }
        // A manifest whose count, rank ranges and grouped tensors' dim 0 all say 12 is still
        // refused by its config's 10.
        let manifest = try JSON.parse(original)
        var bumped = editing(manifest, ["n_routed_experts"]) { _ in .int(12) }
        bumped = editing(bumped, ["ranks"]) { ranks in
            .array((ranks.arrayValue ?? []).enumerated().map { i, r in
                .object((r.objectValue ?? []).map { k, v in k == "experts" ? (k, .array([.int(Int64(6 * i)), .int(Int64(6 * i + 6))])) : (k, v) })
            })
        }
        bumped = editing(bumped, ["tensors"]) { tensors in
            .array((tensors.arrayValue ?? []).map { t in
                guard t["expert_sharded"]?.boolValue == true, let o = t.objectValue else { return t }
                return .object(o.map { k, v in k == "shape" ? (k, .array([.int(12)] + (v.arrayValue ?? []).dropFirst())) : (k, v) })
            })
        }
        XCTAssertEqual(manifestError(bumped, []) { $0 }, "m/nemoshard.json: n_routed_experts is 12 but source.config's n_routed_experts is 10")
        // A config that is not a Nemotron-H config at all.
        XCTAssertEqual(manifestError(manifest, ["source", "config"]) { _ in .array([]) }, "m/nemoshard.json: source.config: config is not a JSON object")
    }

    // MARK: 5. NUL in index and rank file names

    func testNULInTheWeightMapIsRefused() throws {
        let index = { (key: String, file: String) in
            Array(JSON.object([("weight_map", .object([(key, .string(file))]))]).serialized().utf8)
        }
        XCTAssertThrowsError(try HFIndex.parse(index("a", "model-00002-of-00002.safetensors\u{0}junk"), path: "i.json")) {
            XCTAssertEqual(String(describing: $0), "i.json: weight_map entry \"a\" names a file with a NUL byte: \"model-00002-of-00002.safetensors\\u0000junk\"")
        }
        XCTAssertThrowsError(try HFIndex.parse(index("a\u{0}b", "model.safetensors"), path: "i.json")) {
            XCTAssertEqual(String(describing: $0), "i.json: weight_map key \"a\\u0000b\" contains a NUL byte")
        }
        // End to end: the C open would have read the real shard behind the NUL.
        let hf = try synthCLI(["--experts", "10", "--shards", "2"])
        let indexPath = hf + "/" + HFIndex.fileName
        let json = try JSON.parse(try readWholeFile(indexPath))
        let edited = editing(json, ["weight_map"]) { map in
            .object((map.objectValue ?? []).map { k, v in (k, v.stringValue == "model-00002-of-00002.safetensors" ? .string("model-00002-of-00002.safetensors\u{0}junk") : v) })
        }
        try writeFileAtomically(indexPath, Array(edited.serialized().utf8))
        let parent = temporaryDirectory(self)
        let r = try CLI.run(["load", hf, "--out", parent + "/out"], ranks: 2)
        XCTAssertEqual(r.code, 1, r.stderr)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        XCTAssertTrue(r.errorLines.first?.contains("model.safetensors.index.json: weight_map entry") ?? false, r.stderr)
        XCTAssertTrue(r.errorLines.first?.contains("names a file with a NUL byte") ?? false, r.stderr)
        XCTAssertEqual(try FS.list(parent), [])
    }

    func testRankFileNamesMustBePlain() throws {
        let f = try fixture()
        let manifest = try JSON.parse(try readWholeFile(f.manifest))
        func rank0File(_ name: String) -> (JSON) -> JSON {
            { ranks in
                .array((ranks.arrayValue ?? []).enumerated().map { i, r in
                    guard i == 0, let o = r.objectValue else { return r }
                    return .object(o.map { $0.0 == "file" ? ($0.0, .string(name)) : $0 })
                })
            }
        }
        XCTAssertEqual(manifestError(manifest, ["ranks"], rank0File("rank-00000-of-00002.safetensors\u{0}.safetensors")),
                       "m/nemoshard.json: ranks[0].file \"rank-00000-of-00002.safetensors\\u0000.safetensors\" contains a NUL byte")
        XCTAssertEqual(manifestError(manifest, ["ranks"], rank0File("../x.safetensors")),
                       "m/nemoshard.json: ranks[0].file \"../x.safetensors\" contains '/'")
        // End to end: today the C open cuts the name at the NUL and reads the real rank file.
        try editManifest(f, ["ranks"], rank0File("rank-00000-of-00002.safetensors\u{0}.safetensors"))
        try assertRefused(try CLI.run(f.saveHF, ranks: 2), [f.manifest, "ranks[0].file", "contains a NUL byte"], in: f)
    }

    // MARK: JSON

    func testJSONCarriesNULBothWays() throws {
        let parsed = try JSON.parse(Array("\"a\\u0000b\"".utf8))
        XCTAssertEqual(parsed.stringValue, "a\u{0}b")
        XCTAssertEqual(JSON.string("a\u{0}b").serialized(), "\"a\\u0000b\"")
        XCTAssertEqual(try JSON.parse(Array(JSON.string("x\u{0}").serialized().utf8)).stringValue, "x\u{0}")
    }
}
