import Foundation
import NemoShardCore

/// The one encoding of everything ranks send each other that is not tensor bytes (plans, location
/// tables, weight-map entries): `Codable` values as JSON. `root`'s value reaches every rank.
extension Collective {
    /// `value` from `root` on every rank (the others pass nil).
    public func broadcast<T: Codable>(_ value: T?, root: Int = 0) throws -> T {
        let bytes = rank == root ? Array(try JSONEncoder().encode(value)) : []
        let received = try broadcast(bytes, root: root)
        guard let decoded = try JSONDecoder().decode(T?.self, from: Data(received)) else {
            throw InternalError("rank \(root) broadcast no \(T.self)")
        }
        return decoded
    }

    /// Every rank's `value`, in rank order, on every rank.
    public func allgather<T: Codable>(_ value: T) throws -> [T] {
        try allgatherBytes(Array(try JSONEncoder().encode(value))).map { try JSONDecoder().decode(T.self, from: Data($0)) }
    }
}
