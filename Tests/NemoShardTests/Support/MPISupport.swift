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

/// Runs the real `nemoshard` binary, under `scripts/mpirun` when `ranks` is given.
struct CLI {
    /// The package's root: the nearest directory above this file that holds Package.swift (the
    /// test files live in folders below Tests/NemoShardTests).
    static let packageRoot: String = {
        var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while dir.path != "/" && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) {
            dir = dir.deletingLastPathComponent()
        }
        return dir.path
    }()

    static var binary: String {
        if let b = ProcessInfo.processInfo.environment["NEMOSHARD_BIN"] { return b }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("nemoshard").path
    }

    struct Output {
        let code: Int32
        let stdout: String
        let stderr: String
        /// stdout parsed as JSON (for --json runs).
        var json: JSON? { try? JSON.parse(stdout.trimmingCharacters(in: .whitespacesAndNewlines)) }
        /// The lines nemoshard itself printed to stderr (mpirun adds its own).
        var errorLines: [String] { stderr.split(separator: "\n").map(String.init).filter { $0.hasPrefix("nemoshard: error:") } }
    }

    /// What every test's mpirun gets unless the test's `env` says otherwise:
    /// - its own OpenMPI session directory (`orte_tmpdir_base`): mpiruns started in the same instant
    ///   (tests run in parallel, or two jobs of one test) otherwise race on creating OpenMPI's
    ///   shared one ("orte_session_dir failed");
    /// - no grace second before mpirun SIGKILLs the ranks left after one failed
    ///   (`odls_base_sigkill_timeout` 0): every failing job would otherwise wait out that second.
    ///   That second is what lets a rank's SIGTERM handler remove its staging directory; the tests
    ///   of that (and of what a user sees through scripts/mpirun) keep OpenMPI's default by passing
    ///   `CLI.userMPIDefaults`. A rank killed at once is the harsher case for everything else: what
    ///   it leaves, the next job must clean.
    static let fastFailure = ["OMPI_MCA_odls_base_sigkill_timeout": "0"]
    /// OpenMPI's own default, as users run it.
    static let userMPIDefaults = ["OMPI_MCA_odls_base_sigkill_timeout": "1"]

    /// `ranks == nil`: run the binary directly; else `scripts/mpirun -n ranks [prefix] nemoshard args`.
    /// A run that takes longer than `timeout` seconds is ended (a hang fails the test, never the suite).
    @discardableResult
    static func run(_ args: [String], ranks: Int? = nil, env: [String: String] = [:], mpmd: [String]? = nil,
                    timeout: Int = 300) throws -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        var environment = env
        var session: String?
        if let ranks {
            p.arguments = ["-k", "5", String(timeout), packageRoot + "/scripts/mpirun", "-n", String(ranks), binary] + args + (mpmd ?? [])
            environment = fastFailure.merging(env) { _, given in given }
            if environment["OMPI_MCA_orte_tmpdir_base"] == nil {
                let dir = NSTemporaryDirectory() + "nemoshard-ompi-" + UUID().uuidString.prefix(8)
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                environment["OMPI_MCA_orte_tmpdir_base"] = dir
                session = dir
            }
        } else {
            p.arguments = ["-k", "5", String(timeout), binary] + args
        }
        defer { if let session { try? FileManager.default.removeItem(atPath: session) } }
        let start = Date()
        let r = try runProcess(p, env: environment)
        trace(ranks: ranks, seconds: Date().timeIntervalSince(start), code: r.code, args: args)
        return Output(code: r.code, stdout: r.out, stderr: r.err)
    }

    /// With `NEMOSHARD_TEST_TRACE=FILE`, each run appends a line: test, ranks, seconds, exit code,
    /// command (to find what a slow test spends its time on).
    static func trace(ranks: Int?, seconds: Double, code: Int32, args: [String]) {
        guard let path = ProcessInfo.processInfo.environment["NEMOSHARD_TEST_TRACE"] else { return }
        let line = "\(currentTestName)\t\(ranks.map(String.init) ?? "-")\t\(String(format: "%.3f", seconds))\t\(code)\t\(args.prefix(1).joined())\n"
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard fd >= 0 else { return }
        _ = Array(line.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// The test this process runs (`swift test --parallel` starts one process per test, named in
    /// its arguments), for traces.
    static var currentTestName: String {
        CommandLine.arguments.dropFirst().first { $0.contains("/test") } ?? "?"
    }
}

/// Runs a prepared process with extra environment variables, reading both pipes to the end.
func runProcess(_ p: Process, env: [String: String]) throws -> (code: Int32, out: String, err: String) {
    p.environment = ProcessInfo.processInfo.environment.merging(env) { _, b in b }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // read both pipes fully before waiting (large outputs would otherwise block)
    final class Box: @unchecked Sendable { var data = Data() }
    let box = Box()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async { box.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: box.data, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

extension XCTestCase {
    /// Runs and asserts exit code 0, showing stderr otherwise.
    @discardableResult
    func ok(_ args: [String], ranks: Int? = nil, env: [String: String] = [:], file: StaticString = #filePath, line: UInt = #line) throws -> CLI.Output {
        let r = try CLI.run(args, ranks: ranks, env: env)
        XCTAssertEqual(r.code, 0, "nemoshard \(args.joined(separator: " ")) failed:\n\(r.stderr)", file: file, line: line)
        return r
    }

    /// Synthesises a checkpoint as `nemoshard synth DIR extra...` does (its own argument parsing
    /// and validation, then the same library call), in this process: a checkpoint to work on, not
    /// a test of the command (CLI tests run `synth` itself).
    func synthCLI(_ extra: [String] = []) throws -> String {
        let dir = temporaryDirectory(self) + "/hf"
        let request = try SynthCommand.validate(Arguments.parse([dir] + extra, for: SynthCommand.self))
        _ = try SyntheticCheckpoint.create(at: request.output, options: request.options, force: request.force)
        return dir
    }

    /// Asserts what `nemoshard verify A B [--strict]` run as one process asserts (exit code 0:
    /// equal), in this process: the same job, without starting MPI for a check. Tests of verify
    /// itself run the command.
    @discardableResult
    func assertVerified(_ a: String, _ b: String, strict: Bool = false,
                        file: StaticString = #filePath, line: UInt = #line) throws -> VerifyJob.Result {
        var o = VerifyJob.Options(a: a, b: b)
        o.strict = strict
        let r = try VerifyJob.run(o, world: SoloCollective())
        XCTAssertTrue(r.equal, "verify \(a) \(b)\(strict ? " --strict" : ""): \(r.differences.prefix(5))", file: file, line: line)
        return r
    }
}
