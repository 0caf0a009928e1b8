import Glibc
import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// Fault injection for the fault tests: `NEMOSHARD_FAILPOINT=NAME:RANK[:ACTION]` makes that rank,
/// on reaching the point NAME, SIGKILL itself (`kill`, the default: as if the node died there),
/// wait there until a signal ends it (`hang`: for interrupt tests), or, at points that can fail,
/// throw (`error`: as if a read failed there), or pause (`pause`: creates
/// `$NEMOSHARD_FAILPOINT_DIR/NAME.RANK.reached`, then waits until `$NEMOSHARD_FAILPOINT_DIR/resume`
/// exists, so a test can change the world between two steps of a job). Unset, it costs one getenv.
package enum Failpoint {
    package enum Action: String { case kill, hang, error, pause }

    package static let spec: (name: String, rank: Int, action: Action)? = {
        guard let raw = ProcessFacts.environment("NEMOSHARD_FAILPOINT") else { return nil }
        let parts = raw.split(separator: ":")
        guard parts.count == 2 || parts.count == 3, let rank = Int(parts[1]) else { return nil }
        guard let action = parts.count == 3 ? Action(rawValue: String(parts[2])) : .kill else { return nil }
        return (String(parts[0]), rank, action)
    }()

    package static func hit(_ name: String, rank: Int) {
        guard let spec, spec.name == name, spec.rank == rank else { return }
        switch spec.action {
        case .hang: ProcessFacts.waitForever()
        case .kill, .error: ProcessFacts.killSelf()
        case .pause: pause(name, rank: rank)
        }
    }

    private static func pause(_ name: String, rank: Int) {
        let dir = ProcessFacts.environment("NEMOSHARD_FAILPOINT_DIR") ?? "."
        try? writeFileAtomically(FS.join(dir, "\(name).\(rank).reached"), [])
        while !FS.exists(FS.join(dir, "resume")) { usleep(10_000) }
    }

    /// A point that can fail: `error` throws here; the other actions are as in `hit`.
    package static func check(_ name: String, rank: Int) throws {
        guard let spec, spec.name == name, spec.rank == rank else { return }
        if spec.action == .error { throw Injected(point: name) }
        hit(name, rank: rank)
    }

    /// The error an `error` failpoint throws.
    package struct Injected: Error, CustomStringConvertible {
        package let point: String
        package var description: String { "injected failure at failpoint \(point)" }
    }
}
