import Glibc

/// Crash injection for the fault tests: `NEMOSHARD_FAILPOINT=NAME:RANK` makes that rank SIGKILL
/// itself when it reaches the point NAME (as if the node died there). Unset, it costs one getenv.
enum Failpoint {
    static let spec: (name: String, rank: Int)? = {
        guard let raw = getenv("NEMOSHARD_FAILPOINT") else { return nil }
        let parts = String(cString: raw).split(separator: ":")
        guard parts.count == 2, let rank = Int(parts[1]) else { return nil }
        return (String(parts[0]), rank)
    }()

    static func hit(_ name: String, rank: Int) {
        guard let spec, spec.name == name, spec.rank == rank else { return }
        kill(getpid(), SIGKILL)
    }
}
