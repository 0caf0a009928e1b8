import NemoShardCore
import NemoShardMPI

/// A device mesh over MPI: the world communicator laid out as a `MeshShape`, with a
/// sub-communicator per dimension (`mesh["ep"]`). Every distributed job builds one and asks it
/// which experts this rank holds, which communicator the experts move on, and whether this rank
/// is a replica of another.
public final class DeviceMesh {
    public let shape: MeshShape
    public let world: Collective
    /// This rank's coordinates.
    public let coordinates: [Int]
    private var subMeshes: [String: Collective] = [:]
    /// The ranks with this rank's expert-parallel coordinate (ordered by world rank): they hold
    /// the same experts. Who of them writes is `isPrimaryReplica(experts:)`.
    package let replicaGroup: Collective

    /// Lays `shape` over `world`; the product of the sizes must equal the world size. Collective.
    public init(shape: MeshShape, world: Collective) throws {
        guard shape.worldSize == world.size else {
            throw UsageError("mesh \(shape) has \(shape.worldSize) ranks but the job has \(world.size)")
        }
        self.shape = shape
        self.world = world
        coordinates = shape.coordinates(of: world.rank)
        for (d, name) in shape.names.enumerated() {
            // Ranks that agree on every other coordinate share this dimension's communicator.
            var color = 0
            for (e, size) in shape.sizes.enumerated() where e != d { color = color * size + coordinates[e] }
            subMeshes[name] = try world.split(color: color, key: coordinates[d])
        }
        let ep = shape.expertParallelPosition(of: world.rank).rank
        replicaGroup = shape.dimension("ep") == nil ? try world.split(color: world.rank, key: 0)
                                                     : try world.split(color: ep, key: world.rank)
    }

    /// Convenience: `sizes`/`names` as in `init_device_mesh`.
    public convenience init(shape sizes: [Int], names: [String], world: Collective) throws {
        try self.init(shape: try MeshShape(sizes: sizes, names: names), world: world)
    }

    /// `shape`, or a 1-D `ep` mesh over the whole world, checked on every rank (the same usage
    /// error everywhere) and then laid over `world`.
    package static func resolve(_ shape: MeshShape?, world: Collective) throws -> DeviceMesh {
        let s = try world.agree { () -> MeshShape in
            let s = try shape ?? MeshShape.expertParallel(world.size)
            guard s.worldSize == world.size else {
                throw UsageError("mesh \(s) has \(s.worldSize) ranks but the job has \(world.size)")
            }
            return s
        }
        return try DeviceMesh(shape: s, world: world)
    }

    /// Checks on every rank that this mesh has the shape a job needs (`shape`; nil needs none):
    /// otherwise the same usage error, `message`, on every rank. Collective.
    package func require(_ shape: MeshShape?, else message: @autoclosure () -> String) throws {
        _ = try world.agree { if let shape, shape != self.shape { throw UsageError(message()) } }
    }

    /// The communicator along dimension `name` (its size and this rank's local rank on it).
    public subscript(name: String) -> Collective? { subMeshes[name] }

    /// The communicator the experts are partitioned over: `ep`, or the whole world without one.
    public var expertGroup: Collective { subMeshes["ep"] ?? world }

    /// The experts this rank holds out of `experts`.
    public func expertRange(experts: Int) -> ExpertRange { shape.expertRange(of: world.rank, experts: experts) }

    /// This rank's coordinate on the expert-parallel dimension (or its world rank without `ep`).
    package var expertParallelRank: Int { shape.expertParallelPosition(of: world.rank).rank }

    /// Whether this rank is the primary replica of its range of `experts`: the lowest rank holding
    /// that range, the one that writes it (the rule is `MeshShape.primaryReplicas(of:)`, which the
    /// manifest's owner ranks use too).
    package func isPrimaryReplica(experts: Int) -> Bool { shape.isPrimaryReplica(world.rank, experts: experts) }
}
