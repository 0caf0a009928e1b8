import Glibc
import NemoShard
import NemoShardCore
import NemoShardMPI
import NemoShardMesh

/// Reading option values that several commands share; each failure is a `UsageError` naming the option.

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

/// `key`'s size (`parseSize`), if given.
func sizeOption(_ args: Arguments, _ key: ValueKey) throws -> Int? {
    try args.value(key).map(parseSize)
}

/// `key` as bf16, f16 or f32, if given.
func dtypeOption(_ args: Arguments, _ key: ValueKey) throws -> DType? {
    guard let v = args.value(key) else { return nil }
    guard let d = DType(cliName: v) else { throw UsageError("\(key.name) must be bf16, f16 or f32, got \"\(v)\"") }
    return d
}

/// `--dequantize bf16|f32`, if given.
func dequantizeOption(_ args: Arguments) throws -> DType? {
    guard let v = args.value(.dequantize) else { return nil }
    guard let d = DType(cliName: v), d == .bf16 || d == .f32 else {
        throw UsageError("--dequantize must be bf16 or f32, got \"\(v)\"")
    }
    return d
}

/// `--rules nemo-0.7|seed`, if given.
func rulesOption(_ args: Arguments) throws -> Rules? {
    guard let v = args.value(.rules) else { return nil }
    guard let r = Rules(rawValue: v) else {
        throw UsageError("--rules must be \(Rules.allCases.map(\.rawValue).joined(separator: " or ")), got \"\(v)\"")
    }
    return r
}

/// `--ep N` or `--mesh SPEC` (not both), if given.
func meshOption(_ args: Arguments) throws -> MeshShape? {
    if args.given(ValueKey.ep) && args.given(ValueKey.mesh) { throw UsageError("give --ep or --mesh, not both") }
    if let m = args.value(.mesh) { return try MeshShape(parsing: m) }
    if args.given(ValueKey.ep) {
        let n = try args.int(.ep, default: 0)
        guard n > 0 else { throw UsageError("--ep must be positive") }
        return try MeshShape.expertParallel(n)
    }
    return nil
}

/// More threads per rank than any machine has cores is a typo, not a request.
let maxThreads = 4096

/// Threads per rank: --threads, else cores / ranks on this node (as `launcher` says), at least 1.
func threadsOption(_ args: Arguments, launcher: Launcher = .current) throws -> Int {
    let cores = max(sysconf(Int32(_SC_NPROCESSORS_ONLN)), 1)
    let t = try args.int(.threads, default: min(max(cores / launcher.localSize, 1), maxThreads))
    guard t >= 1, t <= maxThreads else { throw UsageError("--threads must be between 1 and \(maxThreads)") }
    return t
}

/// The Hugging Face export options `save-hf`, `load --to-hf` and `convert --to-hf` share, writing
/// into `output`: --gather (a command without it never has it), --max-shard-size, --exclude,
/// --format, --keep-source-dtypes, --force and --threads.
func exportOptions(_ args: Arguments, output: String) throws -> HFExportOptions {
    var o = HFExportOptions(output: output)
    o.gather = args.has(.gather)
    o.maxShardBytes = try sizeOption(args, .maxShardSize) ?? o.maxShardBytes
    o.exclude = try excludeOption(args)
    o.format = try formatOption(args) ?? o.format
    o.keepSourceDTypes = args.has(.keepSourceDTypes)
    o.force = args.has(.force)
    o.threads = try threadsOption(args)
    return o
}

/// `--exclude REGEX`, compiled here once so a pattern that is not a regular expression is a usage
/// error before any work (the job compiles it again on every rank and checks what it removes).
func excludeOption(_ args: Arguments) throws -> String? {
    guard let pattern = args.value(.exclude) else { return nil }
    do { _ = try KeyFilter(pattern: pattern) } catch let e as ExcludePatternError {
        throw UsageError("--exclude: \(e)")
    }
    return pattern
}

/// `--format original|fused`, if given.
func formatOption(_ args: Arguments) throws -> HFExpertFormat? {
    guard let v = args.value(.format) else { return nil }
    guard let f = HFExpertFormat(rawValue: v) else { throw UsageError("--format must be original or fused, got \"\(v)\"") }
    return f
}
