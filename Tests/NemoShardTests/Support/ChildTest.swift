import Foundation
import XCTest

/// A test whose body must run in a process of its own (it installs signal handling, starts MPI,
/// or ends the process): the test runs this same test binary again with only itself selected and
/// `NEMOSHARD_TEST_CHILD` set, and checks what that process did. In the child, `isChild` is true
/// and the test does the work instead.
enum ChildTest {
    static let variable = "NEMOSHARD_TEST_CHILD"

    /// Whether this process is the child of `name` (the parent sets the variable to the test's name).
    static func isChild(_ name: String) -> Bool { ProcessInfo.processInfo.environment[variable] == name }

    /// The value the parent passed to the child under `key`.
    static func argument(_ key: String) -> String { ProcessInfo.processInfo.environment["NEMOSHARD_TEST_ARG_" + key] ?? "" }

    /// Runs test `name` ("Class/testMethod") of this bundle in a new process with `arguments`
    /// (read with `argument(_:)`), ended after `timeout` seconds.
    static func run(_ name: String, arguments: [String: String] = [:], env: [String: String] = [:],
                    timeout: Int = 60) throws -> (code: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        p.arguments = ["-k", "5", String(timeout), CommandLine.arguments[0], "NemoShardTests." + name]
        var e = env
        e[variable] = name
        for (k, v) in arguments { e["NEMOSHARD_TEST_ARG_" + k] = v }
        return try runProcess(p, env: e)
    }
}
