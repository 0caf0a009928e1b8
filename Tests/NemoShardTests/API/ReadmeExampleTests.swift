import Foundation
import XCTest
@testable import NemoShardTools

// The README's "## Library" example, character for character (`testTheReadmeShowsThisCode`
// compares the two): compiled here with the tests and run below on a synthetic checkpoint.
// README example begins
import NemoShard

/// Every rank of `world` calls this: the experts of the Hugging Face checkpoint at `source` are
/// shared out over a dp x ep mesh, each rank reads only its own, and the state is written back
/// as a Hugging Face checkpoint at `export`.
func loadAndExport(_ source: String, to export: String, world: any Collective) throws -> LoadJob.Result {
    // Two data-parallel replicas (holding the same experts) when the world is even, else one.
    let dp = world.size % 2 == 0 ? 2 : 1
    let mesh = try DeviceMesh(shape: [dp, world.size / dp], names: ["dp", "ep"], world: world)
    let loaded = try LoadJob.run(LoadJob.Options(source: source), mesh: mesh)
    _ = try ToHFJob.run(loaded, ToHFJob.Options(output: export))
    return loaded
}

/// The program under `mpirun -n 8`: MPI started once, stopped at the end. A failure on any
/// rank reaches every rank as the same `JobFailure`: the failing rank and its typed error.
func runUnderMPI() throws {
    let world = try MPIRuntime.start()
    defer { MPIRuntime.stop() }
    do {
        let loaded = try loadAndExport("/ckpt/nemotron-3-nano", to: "/ckpt/nano-hf", world: world)
        for (name, tensor) in loaded.tensors where name.hasSuffix(".experts.down_projs") {
            // Rank 3 of Nemotron 3 Nano on dp=2 x ep=4: experts [96,128), shape [32, 1856, 2688], bf16.
            let first = tensor.withUnsafeBytes { Array($0.prefix(8)) }  // raw bytes only inside the scope
            print("rank \(world.rank): \(name) \(loaded.experts) \(tensor.shape) \(tensor.dtype) \(first)")
        }
    } catch let failure as JobFailure {
        if case .checkpoint(let bad) = failure.error { print("not a usable checkpoint: \(bad.path): \(bad.reason)") }
        throw failure
    }
}
// README example ends

/// The README's library example is true: it is the code above, which compiles against the
/// public API alone and does what the README says on a world of one and on four ranks.
final class ReadmeExampleTests: XCTestCase {
    /// The ```swift block of README.md's "## Library" section.
    static func readmeExample() throws -> String {
        let readme = try String(contentsOfFile: CLI.packageRoot + "/README.md", encoding: .utf8)
        guard let section = readme.range(of: "\n## Library\n") else { throw Missing("README.md has no \"## Library\" section") }
        let rest = readme[section.upperBound...]
        guard let open = rest.range(of: "```swift\n"),
              let close = rest[open.upperBound...].range(of: "\n```\n") else {
            throw Missing("README.md's Library section has no ```swift block")
        }
        return String(rest[open.upperBound..<close.lowerBound])
    }

    /// The code between this file's markers.
    static func codeInThisFile() throws -> String {
        let text = try String(contentsOfFile: #filePath, encoding: .utf8)
        guard let begin = text.range(of: "// README example begins\n"),
              let end = text.range(of: "\n// README example ends\n", range: begin.upperBound..<text.endIndex) else {
            throw Missing("\(#filePath) has lost its README example markers")
        }
        return String(text[begin.upperBound..<end.lowerBound])
    }

    struct Missing: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    func testTheReadmeShowsThisCode() throws {
        let readme = try Self.readmeExample()
        XCTAssertTrue(readme.hasPrefix("import NemoShard\n"))
        XCTAssertEqual(readme, try Self.codeInThisFile(),
                       "README.md's Library example and ReadmeExampleTests.swift differ: change both")
    }

    func testTheExampleRoundTripsACheckpointInAWorldOfOne() throws {
        let hf = try synth(self, experts: 8)
        let export = temporaryDirectory(self) + "/export"
        let loaded = try loadAndExport(hf, to: export, world: SoloCollective())
        XCTAssertEqual(loaded.mesh.shape.description, "dp=1,ep=1")
        XCTAssertEqual(loaded.experts.description, "[0,8)")
        let grouped = loaded.tensors.filter { $0.0.hasSuffix(".experts.down_projs") }
        XCTAssertFalse(grouped.isEmpty)
        for (name, tensor) in grouped {
            XCTAssertEqual(tensor.shape.first, 8, name)
            XCTAssertEqual(tensor.withUnsafeBytes { $0.count }, tensor.byteCount, name)
        }
        try assertSameCheckpoint(export, hf)
    }

    func testTheExampleSharesTheExpertsOverATwoByTwoMeshOfFourRanks() throws {
        let hf = try synth(self, experts: 8)
        let export = temporaryDirectory(self) + "/export"
        let experts = try ThreadWorld.values(ranks: 4) { world -> String in
            let loaded = try loadAndExport(hf, to: export, world: world)
            return "\(loaded.mesh.shape) \(loaded.experts)"
        }
        // dp=2 x ep=2: ranks 2 and 3 are replicas of ranks 0 and 1.
        XCTAssertEqual(experts, ["dp=2,ep=2 [0,4)", "dp=2,ep=2 [4,8)", "dp=2,ep=2 [0,4)", "dp=2,ep=2 [4,8)"])
        try assertSameCheckpoint(export, hf)
    }

    func testAMissingCheckpointIsAJobFailureNamingIt() throws {
        let missing = temporaryDirectory(self) + "/no-such-checkpoint"
        XCTAssertThrowsError(try loadAndExport(missing, to: temporaryDirectory(self) + "/out", world: SoloCollective())) { error in
            guard let failure = error as? JobFailure else { return XCTFail("not a JobFailure: \(error)") }
            XCTAssertEqual(failure.rank, 0)
            XCTAssertTrue("\(failure.error)".contains(missing), "\(failure.error)")
        }
    }

    func testTheExampleUsesOnlyThePublicAPI() throws {
        // Inside the package every `package` declaration is visible too, so the test build alone
        // cannot tell; the example is type-checked again the way a user's program sees the
        // library: against the modules this build made, outside the package.
        guard let swiftc = Self.swiftc() else { throw XCTSkip("no swiftc beside the toolchain's swift") }
        let build = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        let mpi = (try? Self.run("/usr/bin/env", ["pkg-config", "--cflags-only-I", "ompi-c"]).output) ?? ""
        let includes = mpi.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { $0.hasPrefix("-I") }
        let source = temporaryDirectory(self) + "/example.swift"
        let arguments = ["-typecheck", "-I", build + "/Modules",
                         "-Xcc", "-fmodule-map-file=\(build)/CKernels.build/module.modulemap",
                         "-Xcc", "-fmodule-map-file=\(CLI.packageRoot)/CMPI/module.modulemap"]
            + includes.flatMap { ["-Xcc", $0] } + [source]
        try Self.readmeExample().write(toFile: source, atomically: true, encoding: .utf8)
        var result = try Self.run(swiftc, arguments)
        XCTAssertEqual(result.code, 0, "the README example does not type-check as a user's program:\n\(result.output)")
        // The check can fail: a package-only declaration is refused the same way.
        try (Self.readmeExample() + "\nlet hidden = Manifest.rankFileName(0, of: 1)\n").write(toFile: source, atomically: true, encoding: .utf8)
        result = try Self.run(swiftc, arguments)
        XCTAssertNotEqual(result.code, 0, "a package declaration was visible to the out-of-package check")
        XCTAssertTrue(result.output.contains("'rankFileName' is inaccessible due to 'package' protection level"), result.output)
    }

    /// `swiftc` from the directory of the `swift` on PATH (or /opt/swift/usr/bin).
    static func swiftc() -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/opt/swift/usr/bin"]
        return path.map { $0 + "/swiftc" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func run(_ tool: String, _ arguments: [String]) throws -> (code: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// `export` is `source` again: the same Hugging Face keys, and the same tensors, dtypes,
    /// shapes and bytes in the internal view (`VerifyJob`, strict: nothing ignored).
    func assertSameCheckpoint(_ export: String, _ source: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(try HFCheckpoint.open(export).tensors.map(\.name).sorted(),
                       try HFCheckpoint.open(source).tensors.map(\.name).sorted(), file: file, line: line)
        var o = VerifyJob.Options(a: source, b: export)
        o.strict = true
        let verdict = try VerifyJob.run(o, world: SoloCollective())
        XCTAssertTrue(verdict.equal, "\(verdict.differences.prefix(5))", file: file, line: line)
        XCTAssertGreaterThan(verdict.a.count, 10, file: file, line: line)
    }
}
