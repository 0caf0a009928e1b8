// The library is its layers: `import NemoShard` gives a user the public API of every one of them
// (readers, the adapter, DeviceMesh, tensors), not only the jobs.
@_exported import NemoShardCore
@_exported import NemoShardFormat
@_exported import NemoShardMPI
@_exported import NemoShardMesh
@_exported import NemoShardModel
