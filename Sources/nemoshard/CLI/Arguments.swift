import NemoShardCore

/// A command's arguments, parsed against its grammar: positionals in order, then the options and
/// flags given, read back through typed keys.
struct Arguments {
    /// The positional arguments, as many as the command names (`parse` checks the count).
    private(set) var positionals: [String] = []
    private var values: [String: String] = [:]
    private var flags: Set<String> = []

    /// The value given for `key`, if any.
    func value(_ key: ValueKey) -> String? { values[key.name] }

    /// Whether flag `key` was given.
    func has(_ key: FlagKey) -> Bool { flags.contains(key.name) }

    /// Whether `key` was given (as a flag or with a value).
    func given(_ key: any OptionKey) -> Bool { values[key.name] != nil || flags.contains(key.name) }

    /// The name of the first of `keys` given: options that only mean something in another mode
    /// of a command are refused, not ignored.
    func firstGiven(_ keys: [any OptionKey]) -> String? { keys.first { given($0) }?.name }

    /// The value of `key` as an integer, `d` when not given.
    func int(_ key: ValueKey, default d: Int) throws -> Int {
        guard let v = values[key.name] else { return d }
        guard let i = Int(v) else { throw UsageError("\(key.name) expects an integer, got \"\(v)\"") }
        return i
    }

    /// Parses `argv` (after the command's name) against `command`'s grammar; `--help` is
    /// handled by the caller.
    static func parse(_ argv: [String], for command: any Command.Type) throws -> Arguments {
        try parse(argv, command: command.name, positionals: command.positionals, options: command.options)
    }

    /// Parses `argv` for command `command` taking exactly `positionals` and the `options`.
    /// `--name=value` and `--name value` both give a value; after `--` everything is a positional.
    static func parse(_ argv: [String], command: String, positionals: [String], options: [OptionSpec]) throws -> Arguments {
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
                guard let option = options.first(where: { $0.name == name }) else {
                    throw UsageError("unknown option \(name) for '\(command)'")
                }
                if option.isFlag {
                    guard inline == nil else { throw UsageError("\(name) takes no value") }
                    guard out.flags.insert(name).inserted else { throw repeated(name) }
                } else {
                    guard out.values[name] == nil else { throw repeated(name) }
                    if let inline {
                        out.values[name] = inline
                    } else {
                        guard i + 1 < argv.count else { throw UsageError("\(name) needs a value") }
                        i += 1
                        out.values[name] = argv[i]
                    }
                }
            } else {
                out.positionals.append(a)
            }
            i += 1
        }
        guard out.positionals.count == positionals.count else {
            throw UsageError("'\(command)' expects \(positionals.joined(separator: " ")), got \(out.positionals.count) argument(s)")
        }
        return out
    }

    /// An option or flag given twice is refused rather than letting the last one win silently
    /// (`--out a --out b` would otherwise write to b whatever a script meant).
    private static func repeated(_ name: String) -> UsageError { UsageError("\(name) is given more than once") }
}
