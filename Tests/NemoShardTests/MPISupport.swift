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

/// Runs the real `nemoshard` binary, under `scripts/mpirun` when `ranks` is given.
struct CLI {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

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

    /// `ranks == nil`: run the binary directly; else `scripts/mpirun -n ranks [prefix] nemoshard args`.
    /// A run that takes longer than `timeout` seconds is ended (a hang fails the test, never the suite).
    @discardableResult
    static func run(_ args: [String], ranks: Int? = nil, env: [String: String] = [:], mpmd: [String]? = nil,
                    timeout: Int = 300) throws -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        if let ranks {
            p.arguments = ["-k", "5", String(timeout), packageRoot + "/scripts/mpirun", "-n", String(ranks), binary] + args + (mpmd ?? [])
        } else {
            p.arguments = ["-k", "5", String(timeout), binary] + args
        }
        let r = try runProcess(p, env: env)
        return Output(code: r.code, stdout: r.out, stderr: r.err)
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

    /// Synthesises a checkpoint with the CLI.
    func synthCLI(_ extra: [String] = []) throws -> String {
        let dir = temporaryDirectory(self) + "/hf"
        try ok(["synth", dir] + extra)
        return dir
    }
}
