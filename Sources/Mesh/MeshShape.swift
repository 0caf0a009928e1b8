import NemoShardCore
import NemoShardMPI

/// The named dimensions of a device mesh, row-major (the last dimension varies fastest),
/// as PyTorch's `init_device_mesh` lays them out. Pure arithmetic, no MPI.
public struct MeshShape: Sendable, Equatable, CustomStringConvertible {
    public let sizes: [Int]
    public let names: [String]

    public init(sizes: [Int], names: [String]) throws {
        guard sizes.count == names.count, !sizes.isEmpty else { throw UsageError("mesh needs one name per dimension") }
        guard sizes.allSatisfy({ $0 > 0 }) else { throw UsageError("mesh dimension sizes must be positive: \(sizes)") }
        guard Set(names).count == names.count else { throw UsageError("mesh dimension names repeat: \(names)") }
        for n in names where !MeshShape.knownNames.contains(n) {
            throw UsageError("unknown mesh dimension \"\(n)\" (known: \(MeshShape.knownNames.joined(separator: ", ")))")
        }
        var product = 1
        for s in sizes {
            let (p, o) = product.multipliedReportingOverflow(by: s)
            guard !o else { throw UsageError("mesh size overflows") }
            product = p
        }
        self.sizes = sizes
        self.names = names
    }

    /// Dimension names a mesh may use.
    package static let knownNames = ["pp", "dp", "dp_replicate", "dp_shard", "fsdp", "cp", "tp", "ep", "ep_shard"]

    /// Parses `dp=2,ep=4`.
    public init(parsing text: String) throws {
        var sizes: [Int] = [], names: [String] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let kv = part.split(separator: "=", omittingEmptySubsequences: false)
            guard kv.count == 2, !kv[0].isEmpty, let n = Int(kv[1]) else {
                throw UsageError("a mesh is written name=size[,name=size...], got \"\(text)\"")
            }
            names.append(String(kv[0]))
            sizes.append(n)
        }
        try self.init(sizes: sizes, names: names)
    }

    /// A one-dimensional `ep` mesh.
    public static func expertParallel(_ size: Int) throws -> MeshShape { try MeshShape(sizes: [size], names: ["ep"]) }

    public var worldSize: Int { sizes.reduce(1, *) }

    /// Coordinates of `rank` along each dimension.
    package func coordinates(of rank: Int) -> [Int] {
        var rest = rank
        var out = [Int](repeating: 0, count: sizes.count)
        for d in sizes.indices.reversed() {
            out[d] = rest % sizes[d]
            rest /= sizes[d]
        }
        return out
    }

    /// Index of dimension `name`.
    package func dimension(_ name: String) -> Int? { names.firstIndex(of: name) }

    /// The expert-parallel (rank, size) of `rank`: its `ep` coordinate, or the whole mesh without `ep`.
    package func expertParallelPosition(of rank: Int) -> (rank: Int, size: Int) {
        if let d = dimension("ep") { return (coordinates(of: rank)[d], sizes[d]) }
        return (rank, worldSize)
    }

    /// The experts `rank` holds.
    public func expertRange(of rank: Int, experts: Int) -> ExpertRange {
        let p = expertParallelPosition(of: rank)
        return ExpertRange(rank: p.rank, of: p.size, experts: experts)
    }

    /// The primary-replica rule, stated once (`DeviceMesh.isPrimaryReplica(experts:)` and the
    /// manifest's owner ranks ask it): among ranks holding the same expert range, only the lowest
    /// writes; the others are its replicas. Takes each rank's range in rank order (a manifest's
    /// entries) and returns the positions of the primaries, ascending.
    package static func primaryReplicas(of ranges: [ExpertRange]) -> [Int] {
        var seen = Set<[Int]>()
        return ranges.indices.filter { seen.insert([ranges[$0].start, ranges[$0].end]).inserted }
    }

    /// Whether `rank` is the lowest rank of this mesh holding its range of `experts`.
    package func isPrimaryReplica(_ rank: Int, experts: Int) -> Bool {
        MeshShape.primaryReplicas(of: (0...rank).map { expertRange(of: $0, experts: experts) }).last == rank
    }

    public var description: String { zip(names, sizes).map { "\($0)=\($1)" }.joined(separator: ",") }
}

/// Sent between ranks as its sizes and names, checked again on arrival.
extension MeshShape: Codable {
    private enum CodingKeys: String, CodingKey { case sizes, names }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(sizes: try c.decode([Int].self, forKey: .sizes), names: try c.decode([String].self, forKey: .names))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sizes, forKey: .sizes)
        try c.encode(names, forKey: .names)
    }
}
