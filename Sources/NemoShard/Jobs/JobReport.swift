import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine

/// One rank's counters, gathered to rank 0 for the summary.
public struct RankStats: Sendable, Codable {
    public package(set) var rank = 0
    /// The routed experts the rank held (empty for jobs without experts).
    public package(set) var experts = ExpertRange(start: 0, end: 0)
    /// Tensors the rank produced.
    public package(set) var tensors = 0
    /// Bytes read from the inputs, bytes of the tensors produced, bytes written to files.
    public package(set) var bytesRead = 0
    public package(set) var bytesProduced = 0
    public package(set) var bytesWritten = 0
    /// Files the rank wrote.
    public package(set) var files = 0
    /// The process's peak resident memory (VmHWM), bytes.
    public package(set) var peakRSS = 0

    package init() {}

    /// Every rank's stats on every rank.
    package static func gather(_ mine: RankStats, over world: Collective) throws -> [RankStats] {
        try world.allgather(mine)
    }
}

/// What a job did: mesh, per-rank bytes, phase times. Printed by rank 0 as text or JSON.
public struct JobReport: Sendable {
    /// What ran (`load`, `save-hf --gather`, `reshard ep=4 -> ep=2`, ...).
    public package(set) var command: String
    /// The mesh the job ran on (nil for jobs without one).
    public package(set) var mesh: MeshShape?
    public package(set) var worldSize: Int
    /// (phase, seconds) in order.
    public package(set) var phases: [(String, Double)] = []
    /// Every rank's counters, in rank order (the same on every rank).
    public package(set) var ranks: [RankStats] = []
    /// The output directory, for jobs that write one.
    public package(set) var outputPath: String?
    package var notes: [(String, JSON)] = []

    package init(command: String, mesh: MeshShape?, worldSize: Int) {
        self.command = command
        self.mesh = mesh
        self.worldSize = worldSize
    }

    package var totalSeconds: Double { phases.reduce(0) { $0 + $1.1 } }
    package var totalRead: Int { ranks.reduce(0) { $0 + $1.bytesRead } }

    /// Bytes read per second over the whole job.
    public var gigabytesPerSecond: Double { totalSeconds > 0 ? Double(totalRead) / totalSeconds / 1e9 : 0 }

    package func json() -> JSON {
        var m: [(String, JSON)] = [("command", .string(command)), ("world_size", .int(Int64(worldSize)))]
        if let mesh { m.append(("mesh", .string(mesh.description))) }
        if let outputPath { m.append(("output", .string(outputPath))) }
        m.append(("phases", .object(phases.map { ($0.0, .double(($0.1 * 1e4).rounded() / 1e4)) })))
        m.append(("seconds", .double((totalSeconds * 1e4).rounded() / 1e4)))
        m.append(("bytes_read", .int(Int64(totalRead))))
        m.append(("gb_per_s", .double((gigabytesPerSecond * 1e3).rounded() / 1e3)))
        m.append(("max_peak_rss", .int(Int64(ranks.map(\.peakRSS).max() ?? 0))))
        m.append(("ranks", .array(ranks.map { r in
            .object([("rank", .int(Int64(r.rank))), ("experts", .array([.int(Int64(r.experts.start)), .int(Int64(r.experts.end))])),
                     ("tensors", .int(Int64(r.tensors))), ("bytes_read", .int(Int64(r.bytesRead))),
                     ("bytes_produced", .int(Int64(r.bytesProduced))), ("bytes_written", .int(Int64(r.bytesWritten))),
                     ("files", .int(Int64(r.files))), ("peak_rss", .int(Int64(r.peakRSS)))])
        })))
        m += notes
        return .object(m)
    }

    package func text() -> String {
        var lines: [String] = []
        let meshText = mesh?.description ?? "-"
        lines.append("nemoshard \(command): \(worldSize) rank\(worldSize == 1 ? "" : "s"), mesh \(meshText)"
                     + (outputPath.map { " -> \($0)" } ?? ""))
        lines.append("  rank  experts      tensors   read        produced    written     files  peak RSS")
        for r in ranks {
            lines.append("  " + [pad(String(r.rank), 4), pad(r.experts.description, 11), pad(String(r.tensors), 8),
                                 pad(formatBytes(r.bytesRead), 10), pad(formatBytes(r.bytesProduced), 10),
                                 pad(formatBytes(r.bytesWritten), 10), pad(String(r.files), 5),
                                 formatBytes(r.peakRSS)].joined(separator: "  "))
        }
        lines.append("  phases: " + phases.map { "\($0.0) \(formatSeconds($0.1))" }.joined(separator: ", ")
                     + "; total \(formatSeconds(totalSeconds))")
        lines.append("  read \(formatBytes(totalRead)) in all, \(String(format2(gigabytesPerSecond))) GB/s; "
                     + "largest peak RSS \(formatBytes(ranks.map(\.peakRSS).max() ?? 0))")
        for (k, v) in notes { lines.append("  \(k): \(v.stringValue ?? v.serialized())") }
        return lines.joined(separator: "\n")
    }
}

/// `s` padded with spaces to `n` characters (text tables).
package func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }

/// `x` with two decimals.
package func format2(_ x: Double) -> String {
    let v = (x * 100).rounded() / 100
    let whole = Int(v)
    let frac = Int(((v - Double(whole)) * 100).rounded())
    return "\(whole).\(frac < 10 ? "0" : "")\(frac)"
}

/// 1.23 GB, 45.6 MB, 789 B.
package func formatBytes(_ n: Int) -> String {
    let units = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")]
    for (scale, unit) in units where Double(n) >= scale { return "\(format2(Double(n) / scale)) \(unit)" }
    return "\(n) B"
}

package func formatSeconds(_ s: Double) -> String { "\(format2(s)) s" }
