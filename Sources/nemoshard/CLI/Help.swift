import NemoShard
import NemoShardCore

/// Rows of `(left, right)` as a two-column table: the right column starts two spaces after the
/// longest left entry, and a right side's further lines are indented to that column.
func helpColumns(_ rows: [(String, String)]) -> String {
    let width = (rows.map(\.0.count).max() ?? 0) + 2
    let indent = String(repeating: " ", count: 2 + width)
    return rows.map { left, right in
        "  " + pad(left, width) + right.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\n" + indent)
    }.joined(separator: "\n")
}

/// `nemoshard --help`: what the tool is, how to call it, and every command.
let toolUsage = """
nemoshard \(NemoShardVersion.string): load, reshard and export Nemotron-H (NemotronV3) MoE checkpoints across MPI ranks

usage: nemoshard COMMAND [ARGS] [--help]
       nemoshard --version

commands:
\(helpColumns(allCommands.map { ($0.name, $0.summary) }))
"""

/// `COMMAND --help`: usage, summary, details, then every option the command accepts.
func helpText(_ c: any Command.Type) -> String {
    var parts = ["usage: \(c.usage)", c.summary]
    if !c.details.isEmpty { parts.append(c.details) }
    if !c.options.isEmpty { parts.append(helpColumns(c.options.map { ($0.label, $0.help) })) }
    return parts.joined(separator: "\n\n")
}

/// Whether `argv` (after the command's name) asks for the command's help: `--help` or `-h`
/// before any `--` (after it everything is a positional, even `--help`).
func asksForHelp(_ argv: [String]) -> Bool {
    argv.prefix { $0 != "--" }.contains { $0 == "--help" || $0 == "-h" }
}
