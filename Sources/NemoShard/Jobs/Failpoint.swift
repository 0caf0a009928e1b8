/// Fault injection for the fault tests: `NEMOSHARD_FAILPOINT=NAME:RANK[:ACTION]` makes that rank,
/// on reaching the point NAME, SIGKILL itself (`kill`, the default: as if the node died there) or
/// wait there until a signal ends it (`hang`: for interrupt tests). Unset, it costs one getenv.
enum Failpoint {
    static let spec: (name: String, rank: Int, hang: Bool)? = {
        guard let raw = ProcessFacts.environment("NEMOSHARD_FAILPOINT") else { return nil }
        let parts = raw.split(separator: ":")
        guard parts.count == 2 || parts.count == 3, let rank = Int(parts[1]) else { return nil }
        return (String(parts[0]), rank, parts.count == 3 && parts[2] == "hang")
    }()

    static func hit(_ name: String, rank: Int) {
        guard let spec, spec.name == name, spec.rank == rank else { return }
        if spec.hang { ProcessFacts.waitForever() }
        ProcessFacts.killSelf()
    }
}
