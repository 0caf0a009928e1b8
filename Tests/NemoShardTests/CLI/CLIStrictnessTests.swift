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

/// The command line refuses what it cannot mean (a repeated option, an option of the other mode,
/// an exclude pattern that keeps nothing), says its version, lists everything it accepts, and
/// reports every error on one line.
final class CLIStrictnessTests: XCTestCase {
    /// Asserts a failed run: `code`, exactly one `nemoshard: error:` line holding every part.
    func assertError(_ r: CLI.Output, code: Int32, _ parts: String..., file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.code, code, r.stderr, file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, "one error line:\n\(r.stderr)", file: file, line: line)
        for p in parts {
            XCTAssertTrue(r.errorLines.first?.contains(p) ?? false, "\"\(r.errorLines.first ?? "")\" lacks \"\(p)\"", file: file, line: line)
        }
    }

    // MARK: repeated options

    func testAnOptionOrFlagGivenTwiceIsAUsageErrorNamingIt() throws {
        let dir = temporaryDirectory(self)
        let hf = try synthCLI()
        for (args, name) in [(["convert", hf, "--out", dir + "/a", "--out", dir + "/b"], "--out"),
                             (["convert", hf, "--out=\(dir)/a", "--out", dir + "/b"], "--out"),
                             (["convert", hf, "--out", dir + "/a", "--dtype", "bf16", "--dtype", "f32"], "--dtype"),
                             (["convert", hf, "--out", dir + "/a", "--force", "--force"], "--force"),
                             (["synth", dir + "/s", "--experts", "4", "--experts", "8"], "--experts"),
                             (["save-hf", dir + "/x", dir + "/y", "--gather", "--gather"], "--gather")] {
            let r = try CLI.run(args)
            assertError(r, code: 2, "\(name) is given more than once")
        }
        XCTAssertEqual(try FS.list(dir), [], "nothing written")
    }

    // MARK: --version

    func testVersionPrintsTheLibrarysVersionString() throws {
        let r = try CLI.run(["--version"])
        XCTAssertEqual(r.code, 0, r.stderr)
        XCTAssertEqual(r.stdout, "nemoshard \(NemoShardVersion.string)\n")
        XCTAssertEqual(r.stderr, "")
        XCTAssertFalse(NemoShardVersion.string.isEmpty)
        assertError(try CLI.run(["--version", "extra"]), code: 2, "--version takes no arguments")
    }

    // MARK: help

    /// Lines of the top-level help's command table: (name, column where the summary starts).
    func commandTable() throws -> [(String, Int)] {
        let r = try CLI.run(["--help"])
        XCTAssertEqual(r.code, 0)
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let start = try XCTUnwrap(lines.firstIndex(of: "commands:")) + 1
        return lines[start...].filter { !$0.isEmpty }.map { line in
            let body = line.dropFirst(2)
            let name = body.prefix { $0 != " " }
            let gap = body.dropFirst(name.count).prefix { $0 == " " }
            return (String(name), 2 + name.count + gap.count)
        }
    }

    func testTopLevelHelpAlignsTheSummaryColumnPastTheLongestName() throws {
        let table = try commandTable()
        let names = table.map(\.0)
        XCTAssertTrue(names.contains("consolidate") && names.contains("bandwidth"), "\(names)")
        let longest = names.map(\.count).max() ?? 0
        XCTAssertEqual(Set(table.map(\.1)).count, 1, "one summary column: \(table)")
        XCTAssertGreaterThanOrEqual(table.first?.1 ?? 0, 2 + longest + 2, "at least two spaces after the longest name")
    }

    /// The option names a command's `--help` lists in its table (lines `  --name ...`).
    func listedOptions(_ command: String) throws -> (listed: Set<String>, usage: String) {
        let r = try CLI.run([command, "--help"])
        XCTAssertEqual(r.code, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        let listed = lines.filter { $0.hasPrefix("  --") }.map { String($0.dropFirst(2).prefix { $0 != " " }) }
        return (Set(listed), lines.first ?? "")
    }

    func testEveryCommandsHelpListsEveryOptionItAccepts() throws {
        XCTAssertEqual(try commandTable().map(\.0), allCommands.map { $0.name })
        for spec in allCommands {
            let (listed, usage) = try listedOptions(spec.name)
            XCTAssertEqual(listed, Set(spec.options.map(\.name)), "\(spec.name): --help lists exactly what the parser accepts")
            for word in usage.split(whereSeparator: { " [|]".contains($0) }) where word.hasPrefix("--") {
                XCTAssertTrue(listed.contains(String(word)), "\(spec.name): usage names \(word) but the option list lacks it")
            }
        }
    }

    func testAnOptionOfTheOtherConvertModeIsRefused() throws {
        let hf = try synthCLI()
        let dir = temporaryDirectory(self)
        assertError(try CLI.run(["convert", hf, "--out", dir + "/o", "--exclude", "x"]), code: 2, "--exclude goes with --to-hf")
        assertError(try CLI.run(["convert", hf, "--out", dir + "/o", "--max-shard-size", "1MB"]), code: 2, "--max-shard-size goes with --to-hf")
        assertError(try CLI.run(["convert", "--to-hf", hf, "--out", dir + "/o", "--dtype", "f32"]), code: 2, "--dtype does not go with --to-hf")
        XCTAssertEqual(try FS.list(dir), [])
    }

    // MARK: --exclude as Python's re.match

    func testKeyFilterIsAnchoredAtTheStartOnly() throws {
        let everything = try KeyFilter(pattern: "")
        for key in ["backbone.embeddings.weight", "mtp.layers.0.norm.weight", ""] {
            XCTAssertTrue(everything.matches(key), "re.match('', \(key)) matches")
        }
        XCTAssertTrue(try KeyFilter(pattern: #"backbone\.layers\.1"#).matches("backbone.layers.10.mixer.A_log"), "may end anywhere")
        XCTAssertFalse(try KeyFilter(pattern: "layers").matches("backbone.layers.0.norm.weight"), "must start at 0")
        XCTAssertTrue(try KeyFilter(pattern: "x|back").matches("backbone.norm_f.weight"), "alternation, anchored as a whole")
        XCTAssertTrue(try KeyFilter(pattern: "z*").matches("backbone.norm_f.weight"), "an empty match at 0 is a match")
        XCTAssertThrowsError(try KeyFilter(pattern: "(")) {
            XCTAssertEqual($0 as? ExcludePatternError, ExcludePatternError(pattern: "(", .invalidRegularExpression))
        }
    }

    func testAnExcludeThatRemovesEveryTensorFailsBeforeAnyOutput() throws {
        let hf = try synthCLI(["--mtp", "*E"])
        let dir = temporaryDirectory(self)
        try ok(["convert", hf, "--out", dir + "/sharded"])
        for pattern in [".*", "", "[a-z]"] {
            let message = "the exclude pattern \(JSON.string(pattern).serialized()) removes every tensor; nothing would be exported"
            assertError(try CLI.run(["convert", "--to-hf", dir + "/sharded", "--out", dir + "/c", "--exclude", pattern]), code: 1, message)
            assertError(try CLI.run(["load", hf, "--to-hf", dir + "/l", "--exclude", pattern]), code: 1, message)
        }
        assertError(try CLI.run(["save-hf", dir + "/sharded", dir + "/s", "--exclude", ".*"], ranks: 1), code: 1, "removes every tensor")
        XCTAssertEqual(try FS.list(dir), ["sharded"], "no output, no staging directory")
        // A pattern that keeps something still exports.
        try ok(["convert", "--to-hf", dir + "/sharded", "--out", dir + "/kept", "--exclude", "mtp"])
        let kept = try readHF(dir + "/kept").keys
        XCTAssertFalse(kept.isEmpty)
        XCTAssertFalse(kept.contains { $0.hasPrefix("mtp") })
    }

    func testAnExcludeUnderMPIFailsOnceOnEveryRank() throws {
        let hf = try synthCLI()
        let dir = temporaryDirectory(self)
        try inThreads(["load", hf, "--out", dir + "/sharded"], ranks: 2)
        assertError(try CLI.run(["save-hf", dir + "/sharded", dir + "/out", "--exclude", "", "--gather"], ranks: 2), code: 1,
                    "the exclude pattern \"\" removes every tensor")
        XCTAssertFalse(FS.exists(dir + "/out"))
    }

    func testAnInvalidExcludeIsAUsageError() throws {
        let dir = temporaryDirectory(self)
        assertError(try CLI.run(["convert", "--to-hf", dir + "/missing", "--out", dir + "/o", "--exclude", "("]), code: 2,
                    #"--exclude: the exclude pattern "(" is not a valid regular expression"#)
    }

    // MARK: one line, no traps

    func testErrorsStayOnOneLine() throws {
        let dir = temporaryDirectory(self)
        let r = try CLI.run(["inspect", dir + "/first\nsecond"])
        XCTAssertNotEqual(r.code, 0)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains(#"first\nsecond"#), r.stderr)
        let u = try CLI.run(["load", dir, "--exclude", "a\nb(", "--to-hf", dir + "/o"])
        assertError(u, code: 2, #"a\nb("#)
        assertError(try CLI.run(["no\nsuch"]), code: 2, #"unknown command 'no\nsuch'"#)
    }

    func testOutOfRangeNumbersAreUsageErrorsNotTraps() throws {
        let dir = temporaryDirectory(self)
        let toHF = ["convert", "--to-hf", dir + "/x", "--out", dir + "/o"]
        for size in ["0.1B", "1e-10GB", "nanB", "infGB", "1e300GB", "-5MB", "0", "99999999999999999999"] {
            assertError(try CLI.run(toHF + ["--max-shard-size", size]), code: 2, "cannot read size")
        }
        assertError(try CLI.run(toHF + ["--threads", "99999999999"]), code: 2, "--threads must be between 1 and")
        assertError(try CLI.run(toHF + ["--threads", "999999999999999999999999"]), code: 2, "--threads expects an integer")
        XCTAssertEqual(try FS.list(dir), [])
    }
}

/// `NaN`, `Infinity` and `-Infinity` as Python's `json.loads` reads them and `json.dumps` writes
/// them; a byte order mark named as such.
final class JSONNonFiniteTests: XCTestCase {
    func testParsesNonFiniteLiteralsAsDoubles() throws {
        let j = try JSON.parse(#"{"a": NaN, "b": Infinity, "c": -Infinity, "d": [NaN, -Infinity, 1.5], "e": -0.0}"#)
        guard case let .double(a)? = j["a"], case let .double(b)? = j["b"], case let .double(c)? = j["c"] else {
            return XCTFail("not doubles: \(j)")
        }
        XCTAssertTrue(a.isNaN)
        XCTAssertEqual(b, .infinity)
        XCTAssertEqual(c, -.infinity)
        XCTAssertEqual(j["d"]?.arrayValue?.count, 3)
        XCTAssertEqual(j, j, "a NaN field equals itself")
    }

    func testWritesThemBackAsPythonDoes() throws {
        let text = #"{"a":NaN,"b":Infinity,"c":-Infinity,"d":[NaN,-Infinity,1.5],"e":-0.0,"f":1e-05}"#
        let j = try JSON.parse(text)
        XCTAssertEqual(j.serialized(), text, "json.dumps(json.loads(text), separators=(',', ':'))")
        XCTAssertEqual(try JSON.parse(j.serialized(indent: 2)), j, "round trip")
    }

    func testRejectsWhatPythonRejects() {
        for bad in ["nan", "-NaN", "+Infinity", "infinity", "-Inf", "Infinityx", "NaNa", "[-]", "Inf"] {
            XCTAssertThrowsError(try JSON.parse(bad), bad)
        }
    }

    func testAByteOrderMarkIsNamed() throws {
        XCTAssertThrowsError(try JSON.parse([0xEF, 0xBB, 0xBF] + Array("{}".utf8))) {
            XCTAssertEqual(($0 as? JSONError)?.description, "starts with a UTF-8 byte order mark (EF BB BF); JSON files must not")
        }
        let dir = temporaryDirectory(self)
        writeBytes(dir + "/config.json", [0xEF, 0xBB, 0xBF] + Array(#"{"hidden_size": 8}"#.utf8))
        XCTAssertThrowsError(try NemotronConfig(path: dir + "/config.json")) {
            XCTAssertTrue("\($0)".contains("byte order mark (EF BB BF)"), "\($0)")
        }
    }

    func testConfigWithNonFiniteFieldsLoads() throws {
        let dir = temporaryDirectory(self)
        let text = #"{"hybrid_override_pattern":"ME","num_hidden_layers":2,"hidden_size":8,"n_routed_experts":4,"#
            + #""moe_intermediate_size":2,"rms_norm_eps":NaN,"time_step_limit":[0.0,Infinity],"time_step_floor":-Infinity}"#
        writeBytes(dir + "/config.json", Array(text.utf8))
        let c = try NemotronConfig(path: dir + "/config.json")
        XCTAssertEqual(c.layers, [.mamba, .moe])
        XCTAssertTrue(c.json["time_step_limit"]?.serialized() == "[0.0,Infinity]")
        XCTAssertEqual(c.json.serialized(), text, "kept to be written back unchanged")
    }

    /// config.json travels in the per-rank manifest and between ranks, and is written back on
    /// export: its NaN and Infinity fields come out as Python wrote them.
    func testNonFiniteConfigFieldsSurviveTheRoundTrip() throws {
        let hf = try synthCLI()
        let added = ["rms_norm_eps", "time_step_limit", "floor"]
        var config = (try JSON.parse(try readWholeFile(hf + "/config.json")).objectValue ?? []).filter { !added.contains($0.0) }
        config += [("rms_norm_eps", .double(.nan)), ("time_step_limit", .array([.double(0), .double(.infinity)])),
                   ("floor", .double(-.infinity))]
        writeBytes(hf + "/config.json", Array(JSON.object(config).serialized(indent: 2).utf8))
        let dir = temporaryDirectory(self)
        try ok(["load", hf, "--out", dir + "/sharded"], ranks: 2)
        try ok(["save-hf", dir + "/sharded", dir + "/back"], ranks: 2)
        let back = try String(decoding: readWholeFile(dir + "/back/config.json"), as: UTF8.self)
        XCTAssertTrue(back.contains(#""rms_norm_eps": NaN"#), back)
        XCTAssertTrue(back.contains("Infinity") && back.contains(#""floor": -Infinity"#), back)
        XCTAssertEqual(try JSON.parse(Array(back.utf8)), .object(config))
        try assertVerified(hf, dir + "/back", strict: true)
    }
}
