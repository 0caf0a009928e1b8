import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardMPI
@testable import nemoshard

/// A value the thread ranks share, read-only.
private final class Shared<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

extension XCTestCase {
    /// Runs `nemoshard ARGS` as `ranks` ranks that are threads of this process (`ThreadWorld`):
    /// the command's own argument parsing and validation, then its `run` on every rank; throws the
    /// job's error, or if a rank's exit code is not 0. For the checkpoints a test starts from or
    /// compares with, where mpirun is not the point: what a test checks runs under mpirun (`ok`,
    /// `CLI.run`), and every command's MPI path is tested so somewhere. The files are the same
    /// (the same code writes them; RowExchangeTests and the reshard tests compare them).
    func inThreads(_ args: [String], ranks: Int) throws {
        guard let name = args.first, let spec = command(named: name) else { throw UsageError("no command in \(args)") }
        try runInThreads(spec, Array(args.dropFirst()), ranks: ranks)
    }
}

private func runInThreads<C: Command>(_ command: C.Type, _ argv: [String], ranks: Int) throws {
    let request = Shared(try C.validate(Arguments.parse(argv, for: C.self)))
    let codes = try ThreadWorld.values(ranks: ranks) { world in try C.run(request.value, world: world) }
    guard codes.allSatisfy({ $0 == 0 }) else {
        throw UsageError("nemoshard \(C.name) \(argv.joined(separator: " ")) on \(ranks) thread ranks exited with \(codes)")
    }
}
