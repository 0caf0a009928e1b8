import Foundation
import NemoShardCore
import NemoShardFormat
import NemoShardMesh

/// Why an exclude pattern cannot be used: it is not a regular expression, or it would leave the
/// export without a single tensor (an empty checkpoint, which nemoshard itself refuses to read).
package struct ExcludePatternError: Error, CustomStringConvertible, Equatable, NemoShardErrorConvertible {
    package enum Reason: Sendable, Equatable {
        case invalidRegularExpression
        case removesEveryTensor
    }

    package let pattern: String
    package let reason: Reason

    package init(pattern: String, _ reason: Reason) {
        self.pattern = pattern
        self.reason = reason
    }

    package var description: String {
        switch reason {
        case .invalidRegularExpression: return "the exclude pattern \(quoted(pattern)) is not a valid regular expression"
        case .removesEveryTensor: return "the exclude pattern \(quoted(pattern)) removes every tensor; nothing would be exported"
        }
    }

    /// The pattern in double quotes, with quotes, backslashes and control characters escaped, so
    /// the message stays one line whatever the pattern holds.
    private func quoted(_ s: String) -> String {
        var out = ""
        JSON.escape(s, into: &out)
        return out
    }

    /// An invalid pattern is a wrong request; one that removes everything is the input's answer.
    package var nemoShardError: NemoShardError {
        switch reason {
        case .invalidRegularExpression: return .usage(UsageError(description))
        case .removesEveryTensor: return .other(type: "ExcludePatternError", message: description)
        }
    }
}

/// Python `re.match(pattern, key)` over keys: a match must start at the first character of the
/// key and may end anywhere (not a search, not a full match); the empty pattern matches every key.
/// The syntax is ICU's (NSRegularExpression), which agrees with Python's `re` for the patterns
/// used on tensor names (literals, escapes, classes, groups, alternation, quantifiers).
package struct KeyFilter: @unchecked Sendable {
    package let pattern: String
    package let regex: NSRegularExpression

    package init(pattern: String) throws {
        self.pattern = pattern
        // Foundation refuses an empty pattern; the empty group is the same regular expression.
        do { regex = try NSRegularExpression(pattern: pattern.isEmpty ? "(?:)" : pattern) } catch {
            throw ExcludePatternError(pattern: pattern, .invalidRegularExpression)
        }
    }

    /// Whether the pattern matches at the start of `key`.
    package func matches(_ key: String) -> Bool {
        let ns = key as NSString
        return regex.firstMatch(in: key, options: [.anchored], range: NSRange(location: 0, length: ns.length)) != nil
    }
}

/// Plans one rank's share of `to_hf` (`convert_single_tensor_to_hf` per tensor): its own experts
/// split back to per-expert HF weights with global ids, and the non-expert tensors it holds.
/// Replica ranks (same experts as a lower rank) get nothing. The same rules serve a per-rank
/// checkpoint on disk and a state dict in memory: only where a tensor's bytes are differs.
package struct ExportPlanner {
    package let manifest: Manifest
    package let exclude: KeyFilter?
    /// Write every tensor in its source checkpoint's dtype (`hf_dtype`), nothing forced to F32:
    /// a BF16 source comes back byte for byte under any rules.
    package var keepSourceDTypes = false

    package init(manifest: Manifest, exclude: KeyFilter?) {
        self.manifest = manifest
        self.exclude = exclude
    }

    /// Where the bytes of one internal tensor of this rank are: `file` indexes the plan's sources.
    package struct Location {
        package let file: Int
        package let offset: Int

        package init(file: Int, offset: Int) {
            self.file = file
            self.offset = offset
        }
    }

    /// The rank's HF outputs in the source's key order, and the plan that produces them from
    /// `sources` (files, or names of in-memory tensors); `locate` finds a tensor of this rank in any
    /// of them (`save-hf` plans every old rank's share from all rank files: `ExportLayout`).
    /// `writesExperts`: the mesh's word that this rank is its experts' primary replica.
    package func plan(rank: Int, writesExperts: Bool, sources: [String], locate: (String) -> Location?) throws -> TransferPlan {
        let m = manifest
        let adapter = try m.adapter()
        let orderOf = Dictionary(m.hfKeys.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let range = m.ranks[rank].experts
        /// The file (or tensor) an error is about: where the tensor's bytes are.
        func here(_ loc: Location) -> String { sources.indices.contains(loc.file) ? sources[loc.file] : "rank \(rank)" }
        try checkSomethingSurvivesExclude(adapter)
        var items: [(spec: TensorSpec, order: Int, piece: Piece)] = []
        for t in m.tensors {
            guard let loc = locate(t.name) else { continue }
            if !t.expertSharded {
                guard t.holder == rank else { continue }
                let key: String
                switch adapter.toHF(t.name, shape: t.shape, firstExpert: 0) {
                case let .renamed(k): key = adapter.exportKey(generated: k, recorded: t.hfKey)
                case .split: throw CheckpointError(path: here(loc), "tensor \"\(t.name)\" looks grouped but is not expert-sharded")
                }
                let dtype = try exportDType(key, t, adapter, at: here(loc))
                let spec = TensorSpec(name: key, dtype: dtype, shape: t.shape)
                let count = spec.byteCount / dtype.size * t.dtype.size
                items.append((spec, orderOf[key] ?? Int.max,
                              Piece(source: SourceRange(file: loc.file, offset: loc.offset, count: count),
                                    transform: dtype == t.dtype ? .copy : .cast(count: count / t.dtype.size, from: t.dtype, to: dtype),
                                    output: 0, destOffset: 0)))
                continue
            }
            guard writesExperts, !range.isEmpty else { continue }
            let local = [range.count] + t.shape.dropFirst()
            guard local.count == 3, case let .split(keys, _) = adapter.toHF(t.name, shape: local, firstExpert: range.start) else {
                throw CheckpointError(path: here(loc), "grouped tensor \"\(t.name)\" \(local) does not map back to experts")
            }
            let slice = local[1] * local[2] * t.dtype.size
            for (j, key) in keys.enumerated() {
                let dtype = try exportDType(key, t, adapter, at: here(loc))
                items.append((TensorSpec(name: key, dtype: dtype, shape: [local[2], local[1]]), orderOf[key] ?? Int.max,
                              Piece(source: SourceRange(file: loc.file, offset: loc.offset + j * slice, count: slice),
                                    transform: .transpose(rows: local[1], cols: local[2], from: t.dtype, to: dtype),
                                    output: 0, destOffset: 0)))
            }
        }
        if let exclude { items.removeAll { exclude.matches($0.spec.name) } }
        items.sort { ($0.order, $0.spec.name) < ($1.order, $1.spec.name) }
        var plan = TransferPlan(files: sources)
        for (i, item) in items.enumerated() {
            plan.outputs.append(item.spec)
            plan.pieces.append(Piece(source: item.piece.source, transform: item.piece.transform, output: i, destOffset: 0))
        }
        try plan.validateCoverage()
        return plan
    }

    /// Throws when `exclude` matches every key of the whole export (all ranks' shares, which are
    /// the same on every rank): such an export would be an empty checkpoint. Stops at the first
    /// key that survives, usually the first tensor.
    package func checkSomethingSurvivesExclude(_ adapter: NemotronV3Adapter) throws {
        guard let exclude else { return }
        for t in manifest.tensors {
            switch adapter.toHF(t.name, shape: t.shape, firstExpert: 0) {
            case let .renamed(k): if !exclude.matches(adapter.exportKey(generated: k, recorded: t.hfKey)) { return }
            case let .split(keys, _): if keys.contains(where: { !exclude.matches($0) }) { return }
            }
        }
        throw ExcludePatternError(pattern: exclude.pattern, .removesEveryTensor)
    }

    /// The dtype HF key `key` of internal tensor `t` is exported in (`NemotronV3Adapter.exportDType`),
    /// refused where no kernel converts `t`'s dtype to it. `at` names the file in the error.
    package func exportDType(_ key: String, _ t: Manifest.TensorEntry, _ adapter: NemotronV3Adapter, at: String) throws -> DType {
        let dtype = adapter.exportDType(key, held: t.dtype, source: t.hfDType, keepSource: keepSourceDTypes)
        guard dtype == t.dtype || (dtype.kernelKind != nil && t.dtype.kernelKind != nil) else {
            throw CheckpointError(path: at, "\"\(key)\": the export writes it as \(dtype.rawValue), and nemoshard converts \(t.dtype.rawValue) only between BF16, F16 and F32")
        }
        return dtype
    }

    /// Hugging Face's shard split: fill a shard until the next tensor would pass `maxBytes`.
    package static func shardGroups(_ specs: [TensorSpec], maxBytes: Int) -> [[Int]] {
        var groups: [[Int]] = []
        var size = 0
        for (i, s) in specs.enumerated() {
            if groups.isEmpty || (size + s.byteCount > maxBytes && !groups[groups.count - 1].isEmpty) {
                groups.append([])
                size = 0
            }
            groups[groups.count - 1].append(i)
            size += s.byteCount
        }
        return groups
    }
}
