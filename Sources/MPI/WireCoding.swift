import NemoShardCore

/// The one encoding of everything ranks send each other that is not tensor bytes (plans, location
/// tables, weight-map entries): `Codable` values in `WireFormat`, a compact binary form that
/// encodes and decodes in linear time (a manifest of a million tensors in about a second, where
/// Foundation's JSON coders took minutes). `root`'s value reaches every rank. In a world of one
/// the value is returned as it is, never encoded.
extension Collective {
    /// `value` from `root` on every rank (the others pass nil).
    package func broadcast<T: Codable>(_ value: T?, root: Int = 0) throws -> T {
        if size == 1, let value { return value }
        let bytes = rank == root ? try WireFormat.encode(value) : []
        let received = try broadcast(bytes, root: root)
        guard let decoded = try WireFormat.decode(T?.self, from: received) else {
            throw InternalError("rank \(root) broadcast no \(T.self)")
        }
        return decoded
    }

    /// Every rank's `value`, in rank order, on every rank.
    package func allgather<T: Codable>(_ value: T) throws -> [T] {
        if size == 1 { return [value] }
        return try allgatherBytes(try WireFormat.encode(value)).map { try WireFormat.decode(T.self, from: $0) }
    }
}
