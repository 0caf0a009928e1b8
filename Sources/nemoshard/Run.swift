import Glibc
import NemoShard
import NemoShardCore
import NemoShardFormat
import NemoShardMPI
import NemoShardMesh
import NemoShardModel
import NemoShardEngine
import NemoShardTools

/// Runs one parsed subcommand; returns the exit code.
func run(_ command: String, _ args: Arguments) throws -> Int32 {
    switch command {
    case "synth": return try synth(args)
    case "inspect":
        let j = try Inspect.run(args.positionals[0])
        print(args.has("--json") ? j.serialized(indent: 2) : Inspect.text(j))
        return 0
    case "convert": return try convert(args)
    case "load": return try load(args)
    case "save-hf": return try saveHF(args)
    case "reshard": return try reshard(args)
    case "verify": return try verify(args)
    case "bandwidth": return try bandwidth(args)
    case "consolidate": return try consolidate(args)
    default: throw UsageError("unknown command \(command)")
    }
}

func dtypeOption(_ args: Arguments, _ name: String) throws -> DType? {
    guard let v = args.value(name) else { return nil }
    guard let d = DType(cliName: v) else { throw UsageError("\(name) must be bf16, f16 or f32, got \"\(v)\"") }
    return d
}

func meshOption(_ args: Arguments) throws -> MeshShape? {
    if args.value("--ep") != nil && args.value("--mesh") != nil { throw UsageError("give --ep or --mesh, not both") }
    if let m = args.value("--mesh") { return try MeshShape(parsing: m) }
    if args.value("--ep") != nil {
        let n = try args.int("--ep", default: 0)
        guard n > 0 else { throw UsageError("--ep must be positive") }
        return try MeshShape.expertParallel(n)
    }
    return nil
}

/// Threads per rank: --threads, else cores / ranks on this node, at least 1.
func threadsOption(_ args: Arguments) throws -> Int {
    let cores = max(sysconf(Int32(_SC_NPROCESSORS_ONLN)), 1)
    let local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE").flatMap { Int(String(cString: $0)) } ?? 1
    let t = try args.int("--threads", default: min(max(cores / max(local, 1), 1), maxThreads))
    guard t >= 1, t <= maxThreads else { throw UsageError("--threads must be between 1 and \(maxThreads)") }
    return t
}

/// More threads per rank than any machine has cores is a typo, not a request.
let maxThreads = 4096

/// `--exclude REGEX`, compiled here once so a pattern that is not a regular expression is a usage
/// error before any work (the job compiles it again on every rank and checks what it removes).
func excludeOption(_ args: Arguments) throws -> String? {
    guard let pattern = args.value("--exclude") else { return nil }
    do { _ = try KeyFilter(pattern: pattern) } catch let e as ExcludePatternError {
        throw UsageError("--exclude: \(e)")
    }
    return pattern
}

/// The first of `names` given: options that only mean something in another mode of a command
/// are refused, not ignored.
func firstGiven(_ names: [String], _ args: Arguments) -> String? {
    names.first { args.value($0) != nil || args.has($0) }
}

func emit(_ report: JobReport, _ args: Arguments, world: Collective) {
    guard world.rank == 0 else { return }
    print(args.has("--json") ? report.json().serialized() : report.text())
}

/// Rank 0's single updating progress line on stderr: with `--progress` (under mpirun the ranks'
/// stderr is never a terminal), or by itself when stderr is a terminal. Bytes done over all ranks
/// (estimated from rank 0's share), GB/s and time left.
func progressLine(_ label: String, world: Collective, forced: Bool) -> (@Sendable (Int, Int) -> Void)? {
    guard world.rank == 0, forced || isatty(2) != 0 else { return nil }
    /// The executor calls one at a time (under its lock).
    final class State: @unchecked Sendable {
        var percent = -1
        let start = monotonicSeconds()
    }
    let state = State()
    let ranks = world.size
    return { done, total in
        let pct = total > 0 ? min(done * 100 / total, 100) : 100
        guard pct != state.percent else { return }
        state.percent = pct
        let elapsed = monotonicSeconds() - state.start
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let left = rate > 0 ? Double(total - done) / rate : 0
        printToStandardError("\r\(label): \(pct)% of \(formatBytes(total)) (est. over \(ranks) rank\(ranks == 1 ? "" : "s")), "
                             + "\(format2(rate / 1e9)) GB/s, " + (pct == 100 ? "done in \(format2(elapsed)) s\n" : "about \(format2(left)) s left   "))
    }
}

func synth(_ args: Arguments) throws -> Int32 {
    var o = SyntheticCheckpoint.Options()
    let presetName = args.value("--preset") ?? "tiny"
    guard let preset = SyntheticCheckpoint.Preset.named(presetName) else { throw UsageError("--preset must be tiny or nano") }
    o.preset = preset
    if let p = args.value("--pattern") { o.preset.pattern = p }
    if let m = args.value("--mtp") { o.preset.mtpPattern = m }
    o.preset.experts = try args.int("--experts", default: preset.experts)
    o.preset.vocab = try args.int("--vocab", default: preset.vocab)
    guard o.preset.vocab > 0, o.preset.vocab <= 1 << 24 else { throw UsageError("--vocab must be between 1 and 16777216") }
    guard o.preset.experts > 0, o.preset.experts <= 4096 else { throw UsageError("--experts must be between 1 and 4096") }
    o.shards = try args.int("--shards", default: 2)
    if let seed = args.value("--seed") {
        guard let s = UInt64(seed) else { throw UsageError("--seed expects a non-negative integer, got \"\(seed)\"") }
        o.seed = s
    }
    o.expertDType = try dtypeOption(args, "--expert-dtype") ?? .bf16
    o.modelPrefix = args.has("--model-prefix")
    o.embedTokensName = args.has("--embed-tokens")
    let out = args.positionals[0]
    let entries = try SyntheticCheckpoint.create(at: out, options: o, force: args.has("--force"))
    let bytes = entries.reduce(0) { $0 + $1.shape.reduce(1, *) * $1.dtype.size }
    print("wrote \(out): pattern \(o.preset.pattern)\(o.preset.mtpPattern.isEmpty ? "" : ", mtp \(o.preset.mtpPattern)"), "
          + "\(o.preset.experts) experts, \(entries.count) tensors, \(formatBytes(bytes))")
    return 0
}

func convert(_ args: Arguments) throws -> Int32 {
    guard let out = args.value("--out") else { throw UsageError("convert needs --out DIR") }
    let world = SoloCollective()
    if args.has("--to-hf") {
        if let n = firstGiven(["--dtype"], args) { throw UsageError("\(n) does not go with --to-hf") }
        var o = SaveHFJob.Options(source: args.positionals[0], output: out)
        o.maxShardBytes = try args.value("--max-shard-size").map(parseSize) ?? o.maxShardBytes
        o.exclude = try excludeOption(args)
        o.force = args.has("--force")
        o.threads = try threadsOption(args)
        emit(try SaveHFJob.run(o, world: world), args, world: world)
        return 0
    }
    if let n = firstGiven(["--max-shard-size", "--exclude"], args) { throw UsageError("\(n) goes with --to-hf") }
    var o = LoadJob.Options(source: args.positionals[0])
    o.output = out
    o.dtype = try dtypeOption(args, "--dtype") ?? .bf16
    o.force = args.has("--force")
    o.threads = try threadsOption(args)
    emit(try LoadJob.run(o, world: world).report, args, world: world)
    return 0
}

func load(_ args: Arguments) throws -> Int32 {
    let mesh = try meshOption(args)
    let dtype = try dtypeOption(args, "--dtype") ?? .bf16
    let threads = try threadsOption(args)
    let world = try MPIRuntime.start()
    var o = LoadJob.Options(source: args.positionals[0])
    o.output = args.value("--out")
    o.mesh = mesh
    o.dtype = dtype
    o.force = args.has("--force")
    o.threads = threads
    o.mapNonExpertTensors = !args.has("--copy-non-expert")
    o.progress = progressLine("load", world: world, forced: args.has("--progress"))
    guard let hfOut = args.value("--to-hf") else {
        if args.has("--gather") || args.value("--max-shard-size") != nil || args.value("--exclude") != nil {
            throw UsageError("--gather, --max-shard-size and --exclude go with --to-hf")
        }
        emit(try LoadJob.run(o, world: world).report, args, world: world)
        return 0
    }
    guard o.output == nil else { throw UsageError("give --out or --to-hf, not both") }
    var h = ToHFJob.Options(output: hfOut)
    h.gather = args.has("--gather")
    h.maxShardBytes = try args.value("--max-shard-size").map(parseSize) ?? h.maxShardBytes
    h.exclude = try excludeOption(args)
    h.force = o.force
    h.threads = threads
    let loaded = try LoadJob.run(o, world: world)
    let back = try ToHFJob.run(loaded, h)
    if world.rank == 0 {
        print(args.has("--json") ? JSON.object([("load", loaded.report.json()), ("to_hf", back.json())]).serialized()
                                 : loaded.report.text() + "\n" + back.text())
    }
    return 0
}

func saveHF(_ args: Arguments) throws -> Int32 {
    var o = SaveHFJob.Options(source: args.positionals[0], output: args.positionals[1])
    o.gather = args.has("--gather")
    o.maxShardBytes = try args.value("--max-shard-size").map(parseSize) ?? o.maxShardBytes
    o.exclude = try excludeOption(args)
    o.force = args.has("--force")
    o.threads = try threadsOption(args)
    let world = try MPIRuntime.start()
    emit(try SaveHFJob.run(o, world: world), args, world: world)
    return 0
}

func reshard(_ args: Arguments) throws -> Int32 {
    guard let out = args.value("--out") else { throw UsageError("reshard needs --out DIR") }
    let mesh = try meshOption(args)
    var o = ReshardJob.Options(source: args.positionals[0], output: out)
    o.mesh = mesh
    o.force = args.has("--force")
    o.threads = try threadsOption(args)
    let world = try MPIRuntime.start()
    emit(try ReshardJob.run(o, world: world).1, args, world: world)
    return 0
}

func bandwidth(_ args: Arguments) throws -> Int32 {
    let bytes = try args.value("--bytes").map(parseSize) ?? 256 << 20
    let rounds = try args.int("--rounds", default: 5)
    guard rounds >= 1, rounds <= 1000 else { throw UsageError("--rounds must be between 1 and 1000") }
    guard bytes <= 64 << 30 else { throw UsageError("--bytes must be at most 64GiB") }
    let world = try MPIRuntime.start()
    let r = try BandwidthProbe.run(bytes: bytes, rounds: rounds, world: world)
    if world.rank == 0 {
        if args.has("--json") {
            print(JSON.object([("bytes", .int(Int64(r.bytes))), ("rounds", .int(Int64(r.rounds))), ("seconds", .double(r.seconds)),
                               ("gb_per_s", .double(r.gigabytesPerSecond)), ("world_size", .int(Int64(world.size)))]).serialized())
        } else {
            print("rank 0 -> rank \(world.size - 1): \(formatBytes(r.bytes)) in \(format2(r.seconds)) s (median of \(r.rounds)): \(format2(r.gigabytesPerSecond)) GB/s")
        }
    }
    return 0
}

func consolidate(_ args: Arguments) throws -> Int32 {
    var o = ConsolidateJob.Options(source: args.positionals[0], output: args.positionals[1])
    o.force = args.has("--force")
    let world = try MPIRuntime.start()
    emit(try ConsolidateJob.run(o, world: world), args, world: world)
    return 0
}

func verify(_ args: Arguments) throws -> Int32 {
    var o = VerifyJob.Options(a: args.positionals[0], b: args.positionals[1])
    o.dtype = try dtypeOption(args, "--dtype") ?? .bf16
    o.strict = args.has("--strict")
    let world = try MPIRuntime.start()
    let r = try VerifyJob.run(o, world: world)
    if world.rank == 0 {
        if args.has("--json") {
            print(r.json().serialized())
        } else {
            for t in r.a {
                print("\(hex(t.checksum))  \(t.dtype.rawValue) \(t.shape)  \(t.name)")
            }
            if !o.strict {
                for note in r.ignored { print("ignored (--strict counts it): \(note)") }
            }
            if r.equal {
                print("equal: \(r.a.count) tensors, \(formatBytes(r.report.totalRead)) read by \(world.size) rank(s)")
            } else {
                print("DIFFERENT: \(r.differences.count) difference(s); first:")
                for d in r.differences.prefix(10) { print("  \(d)") }
            }
        }
    }
    return r.equal ? 0 : 1
}
