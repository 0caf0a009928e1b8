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

/// `consolidate` writes a complete Hugging Face checkpoint: `config.json` and the small files
/// beside it (generation config, tokenizer) come from DCP_DIR or its parent (`CompanionFiles`).
final class ConsolidateCompleteTests: XCTestCase {
    let config = Array(#"{"architectures": ["NemotronHForCausalLM"], "x": NaN, "n": 1}"#.utf8)
    let generation = Array(#"{"do_sample": false}"#.utf8)
    let tokenizer = Array(#"{"model": {"type": "BPE"}}"#.utf8)

    /// `dir` gets config.json (`config` unless given), generation_config.json and tokenizer.json.
    func writeCompanions(_ dir: String, config: [UInt8]? = nil) {
        writeBytes(dir + "/config.json", config ?? self.config)
        writeBytes(dir + "/generation_config.json", generation)
        writeBytes(dir + "/tokenizer.json", tokenizer)
    }

    /// The names of an output directory, the hidden output marker aside.
    func names(_ dir: String) throws -> [String] { try FS.list(dir).filter { !$0.hasPrefix(".") } }

    let weights = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", HFIndex.fileName]

    /// Configs in DCP_DIR (shards under its sharded/): copied byte for byte, with the small files
    /// only; weights of other formats, hidden files, subdirectories and torch's own index stay out.
    func testConfigAndSmallFilesComeFromTheDCPDirectory() throws {
        let dcp = try fixtureCopy(self, "dcp")
        // The fixture's own notes are plain files too (they would come along): not part of this case.
        for name in ["VERSIONS", "expected.json"] { FS.removeFile(dcp + "/" + name) }
        writeCompanions(dcp)
        writeBytes(dcp + "/optimizer.pt", [1, 2, 3])
        writeBytes(dcp + "/pytorch_model.bin", [1])
        writeBytes(dcp + "/.metadata", [0])
        for ranks in [1, 2] {
            let out = temporaryDirectory(self) + "/out"
            let r = try ok(["consolidate", dcp, out, "--json"], ranks: ranks)
            XCTAssertEqual(try names(out), (["config.json", "generation_config.json", "tokenizer.json"] + weights).sorted(), "\(ranks) ranks")
            XCTAssertEqual(try readWholeFile(out + "/config.json"), config, "byte for byte, NaN kept")
            XCTAssertEqual(try readWholeFile(out + "/generation_config.json"), generation)
            XCTAssertEqual(try readWholeFile(out + "/tokenizer.json"), tokenizer)
            XCTAssertEqual(r.json?["config"]?.stringValue, FS.realPath(dcp) + "/config.json")
            XCTAssertEqual(r.json?["extra_files"]?.arrayValue?.compactMap(\.stringValue), ["generation_config.json", "tokenizer.json"])
        }
        // The sharded/ directory given itself: its parent (the DCP directory) holds the configs.
        let out = temporaryDirectory(self) + "/from-sharded"
        try ok(["consolidate", dcp + "/sharded", out])
        XCTAssertEqual(try readWholeFile(out + "/config.json"), config)
    }

    /// Shards in DCP_DIR itself, configs in its parent (the training run's directory): copied from
    /// the parent, and an output beside DCP_DIR in that parent is fine. A config in DCP_DIR wins.
    func testConfigFromTheParentAndTheDCPDirectoryWins() throws {
        let fixture = try fixtureCopy(self, "dcp")
        let run = temporaryDirectory(self) + "/run"
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixture + "/sharded", toPath: run + "/dcp")
        writeCompanions(run)
        try FileManager.default.createDirectory(atPath: run + "/logs", withIntermediateDirectories: true)
        try ok(["consolidate", run + "/dcp", run + "/hf"], ranks: 2)
        XCTAssertEqual(try names(run + "/hf"), (["config.json", "generation_config.json", "tokenizer.json"] + weights).sorted())
        XCTAssertEqual(try readWholeFile(run + "/hf/config.json"), config)
        // Run again with --force: the first output (a directory in the parent) is not carried along.
        try ok(["consolidate", run + "/dcp", run + "/hf", "--force"])
        XCTAssertFalse(FS.exists(run + "/hf/hf"))
        // DCP_DIR's own config.json wins over the parent's, and only DCP_DIR's files come along.
        let own = Array(#"{"own": true}"#.utf8)
        writeBytes(run + "/dcp/config.json", own)
        let r = try ok(["consolidate", run + "/dcp", run + "/hf2", "--json"])
        XCTAssertEqual(try readWholeFile(run + "/hf2/config.json"), own)
        XCTAssertEqual(try names(run + "/hf2"), (["config.json"] + weights).sorted())
        XCTAssertEqual(r.json?["extra_files"]?.arrayValue?.count, 0)
        // Consolidating into the parent itself would replace the configs it reads: refused.
        let into = try CLI.run(["consolidate", run + "/dcp", run, "--force"])
        XCTAssertEqual(into.code, 2, into.stderr)
    }

    /// No config.json in DCP_DIR or its parent: the weights and the index, and the report says so.
    func testWithoutAConfigTheReportSaysSo() throws {
        let dcp = try fixtureCopy(self, "dcp")
        let out = temporaryDirectory(self) + "/out"
        let r = try ok(["consolidate", dcp, out, "--json"])
        XCTAssertEqual(try names(out), weights.sorted())
        let note = try XCTUnwrap(r.json?["config"]?.stringValue)
        XCTAssertTrue(note.hasPrefix("none in " + FS.realPath(dcp)), note)
        XCTAssertTrue(note.contains("weights and index only"), note)
        let text = try ok(["consolidate", dcp, out, "--force"])
        XCTAssertTrue(text.stdout.contains("config: none in"), text.stdout)
    }

    /// A config.json that is no JSON object, or not a regular file, and an extra file that is a
    /// FIFO are one error line naming the file; nothing is written and nothing hangs.
    func testBadConfigsAndSpecialFilesAreNamed() throws {
        let dcp = try fixtureCopy(self, "dcp")
        let parent = temporaryDirectory(self)
        func refused(_ what: String, _ words: [String], ranks: Int? = nil) throws {
            let r = try CLI.run(["consolidate", dcp, parent + "/out"], ranks: ranks, timeout: 60)
            XCTAssertEqual(r.code, 1, "\(what): \(r.stderr)")
            XCTAssertEqual(r.errorLines.count, 1, "\(what): \(r.stderr)")
            for w in words { XCTAssertTrue(r.errorLines.first?.contains(w) ?? false, "\(what): \(w) in \(r.stderr)") }
            XCTAssertEqual(try FS.list(parent), [], "\(what): nothing written")
        }
        writeCompanions(dcp, config: Array("{\"a\": ".utf8))
        try refused("broken JSON", [dcp + "/config.json", "not valid JSON"])
        writeCompanions(dcp, config: Array("[1, 2]".utf8))
        try refused("a list", [dcp + "/config.json", "is not a JSON object"], ranks: 2)
        FS.removeFile(dcp + "/config.json")
        XCTAssertEqual(mkfifo(dcp + "/config.json", 0o644), 0)
        try refused("a FIFO config", [dcp + "/config.json", "not a regular file"])
        FS.removeFile(dcp + "/config.json")
        writeCompanions(dcp)
        XCTAssertEqual(mkfifo(dcp + "/vocab.txt", 0o644), 0)
        try refused("a FIFO beside it", [dcp + "/vocab.txt"], ranks: 2)
    }

    /// A transformers 5 checkpoint laid out as a DCP checkpoint (its files as whole-tensor shard
    /// files, its config and generation config in the parent): the consolidated output is that
    /// checkpoint again, config included; `verify --strict` (which also compares config.json)
    /// finds no difference, and nemoshard loads it as an HF checkpoint.
    func testATransformersCheckpointComesBackComplete() throws {
        let fixture = try fixtureCopy(self, "transformers5/moe")
        let run = temporaryDirectory(self) + "/run"
        try FS.makeDirectories(run + "/dcp")
        for name in try FS.list(fixture) {
            if ExtraFileName.isShardName(name) {  // model-IIIII-of-NNNNN.safetensors -> shard-00001-model-IIIII-of-NNNNN...
                try FileManager.default.copyItem(atPath: fixture + "/" + name, toPath: run + "/dcp/shard-00001-" + name)
            } else if name.hasSuffix(".json"), name != HFIndex.fileName, name != "expected.json" {
                try FileManager.default.copyItem(atPath: fixture + "/" + name, toPath: run + "/" + name)
            }
        }
        try ok(["consolidate", run + "/dcp", run + "/hf"], ranks: 2)
        for name in ["config.json", "generation_config.json"] {
            XCTAssertEqual(try readWholeFile(run + "/hf/" + name), try readWholeFile(fixture + "/" + name), name)
        }
        let want = try readHF(fixture), got = try readHF(run + "/hf")
        XCTAssertEqual(Set(got.keys), Set(want.keys))
        for (k, v) in want { XCTAssertTrue(got[k].map { $0.0 == v.0 && $0.1 == v.1 && $0.2 == v.2 } ?? false, k) }
        try ok(["verify", fixture, run + "/hf", "--strict"])
        try ok(["load", run + "/hf"], ranks: 2)
    }
}
