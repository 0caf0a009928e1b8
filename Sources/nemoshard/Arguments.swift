import NemoShard
import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine
import NemoShardTools

/// Parsed arguments of one subcommand.
struct Arguments {
    var positionals: [String] = []
    var values: [String: String] = [:]
    var flags: Set<String> = []

    func value(_ name: String) -> String? { values[name] }
    func has(_ flag: String) -> Bool { flags.contains(flag) }

    func int(_ name: String, default d: Int) throws -> Int {
        guard let v = values[name] else { return d }
        guard let i = Int(v) else { throw UsageError("\(name) expects an integer, got \"\(v)\"") }
        return i
    }

    /// Parses `argv` (after the subcommand) against `spec`; `--help` is handled by the caller.
    static func parse(_ argv: [String], spec: CommandSpec) throws -> Arguments {
        var out = Arguments()
        var i = 0
        while i < argv.count {
            let a = argv[i]
            if a == "--" {
                out.positionals += argv[(i + 1)...]
                break
            }
            if a.hasPrefix("--") {
                var name = a
                var inline: String?
                if let eq = a.firstIndex(of: "=") {
                    name = String(a[..<eq])
                    inline = String(a[a.index(after: eq)...])
                }
                if spec.flags.contains(name) {
                    guard inline == nil else { throw UsageError("\(name) takes no value") }
                    guard out.flags.insert(name).inserted else { throw repeated(name) }
                } else if spec.options.contains(name) {
                    guard out.values[name] == nil else { throw repeated(name) }
                    if let inline {
                        out.values[name] = inline
                    } else {
                        guard i + 1 < argv.count else { throw UsageError("\(name) needs a value") }
                        i += 1
                        out.values[name] = argv[i]
                    }
                } else {
                    throw UsageError("unknown option \(name) for '\(spec.name)'")
                }
            } else {
                out.positionals.append(a)
            }
            i += 1
        }
        let required = spec.positionals.count - spec.optionalPositionals
        guard out.positionals.count >= required, out.positionals.count <= spec.positionals.count else {
            throw UsageError("'\(spec.name)' expects \(spec.positionals.joined(separator: " ")), got \(out.positionals.count) argument(s)")
        }
        return out
    }

    /// An option or flag given twice is refused rather than letting the last one win silently
    /// (`--out a --out b` would otherwise write to b whatever a script meant).
    private static func repeated(_ name: String) -> UsageError { UsageError("\(name) is given more than once") }
}

/// Parses a size such as 5GB, 500MB, 1GiB or a plain byte count: at least one byte.
func parseSize(_ text: String) throws -> Int {
    let units: [(String, Int)] = [("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10), ("GB", 1_000_000_000),
                                  ("MB", 1_000_000), ("KB", 1_000), ("B", 1)]
    let upper = text.uppercased()
    for (suffix, scale) in units where upper.hasSuffix(suffix) {
        // Finite and below 9e18 before converting (Int(Double) traps outside Int's range).
        guard let n = Double(upper.dropLast(suffix.count)), n.isFinite, n * Double(scale) >= 1, n * Double(scale) < 9e18 else { break }
        return Int(n * Double(scale))
    }
    if let n = Int(text), n > 0 { return n }
    throw UsageError("cannot read size \"\(text)\" (examples: 5GB, 500MB, 1GiB)")
}
