/// A device mesh over MPI: the world communicator laid out as a `MeshShape`, with a
/// sub-communicator per dimension (`mesh["ep"]`).
public final class DeviceMesh {
    public let shape: MeshShape
    public let world: Collective
    /// This rank's coordinates.
    public let coordinates: [Int]
    private var subMeshes: [String: Collective] = [:]

    /// Lays `shape` over `world`; the product of the sizes must equal the world size.
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
    }

    /// Convenience: `sizes`/`names` as in `init_device_mesh`.
    public convenience init(shape sizes: [Int], names: [String], world: Collective) throws {
        try self.init(shape: try MeshShape(sizes: sizes, names: names), world: world)
    }

    /// The communicator along dimension `name` (its size and this rank's local rank on it).
    public subscript(name: String) -> Collective? { subMeshes[name] }

    /// The experts this rank holds out of `experts`.
    public func expertRange(experts: Int) -> ExpertRange { shape.expertRange(of: world.rank, experts: experts) }

    /// This rank's coordinate on the expert-parallel dimension (or its world rank without `ep`).
    public var expertParallelRank: Int { shape.expertParallelPosition(of: world.rank).rank }
}
