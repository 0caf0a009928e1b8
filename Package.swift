// swift-tools-version:6.0
import PackageDescription

// The library's layers are targets, so an import against the grain does not compile:
//
//   NemoShardCore    errors, dtypes, strict JSON, tensors in memory, the syscall layer
//   NemoShardFormat  safetensors (header, reader, writer), torch DCP shards and their tiling   <- Core
//   NemoShardMPI     typed wrappers over OpenMPI (CMPI), collectives, agreement               <- Core
//   NemoShardMesh    MeshShape, ExpertRange, DeviceMesh                                       <- MPI
//   NemoShardModel   config, the adapter's rules, HF / per-rank checkpoints, manifest, plans  <- Format, Mesh
//   NemoShardEngine  the plan executor and its sinks                                          <- Model
//   NemoShard        the jobs, the output protocol, transport between ranks (the library)     <- Engine
//   NemoShardTools   the synthetic checkpoint generator and the bandwidth probe               <- NemoShard
//   nemoshard        the command-line tool                                                    <- Tools
//
// Declarations shared between layers are `package`; only the library's deliberate API is `public`.
let package = Package(
    name: "nemoshard",
    products: [
        .library(name: "NemoShard", targets: ["NemoShard"]),
        .executable(name: "nemoshard", targets: ["nemoshard"]),
    ],
    targets: [
        .systemLibrary(
            name: "CMPI",
            path: "CMPI",
            pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev"])]
        ),
        // Release builds compile C with -O2 (SwiftPM's default); the hot loops are written for it
        // (SSE2 tiles), and no unsafe flag keeps the library usable as a package dependency.
        .target(name: "CKernels", path: "Sources/CKernels"),
        .target(name: "NemoShardCore", dependencies: ["CKernels"], path: "Sources/Core"),
        .target(name: "NemoShardFormat", dependencies: ["NemoShardCore"], path: "Sources/Format"),
        .target(name: "NemoShardMPI", dependencies: ["CMPI", "NemoShardCore"], path: "Sources/MPI"),
        .target(name: "NemoShardMesh", dependencies: ["NemoShardMPI", "NemoShardCore"], path: "Sources/Mesh"),
        .target(name: "NemoShardModel", dependencies: ["NemoShardCore", "NemoShardFormat", "NemoShardMesh"], path: "Sources/Model"),
        .target(name: "NemoShardEngine", dependencies: ["CKernels", "NemoShardCore", "NemoShardFormat", "NemoShardModel"],
                path: "Sources/Engine"),
        .target(
            name: "NemoShard",
            dependencies: ["NemoShardCore", "NemoShardFormat", "NemoShardMPI", "NemoShardMesh", "NemoShardModel", "NemoShardEngine"],
            path: "Sources/NemoShard"
        ),
        .target(name: "NemoShardTools", dependencies: ["NemoShard"], path: "Sources/Tools"),
        .executableTarget(name: "nemoshard", dependencies: ["NemoShard", "NemoShardTools"], path: "Sources/nemoshard"),
        .testTarget(
            name: "NemoShardTests",
            dependencies: ["NemoShard", "NemoShardTools", "CKernels", "nemoshard"],
            path: "Tests/NemoShardTests",
            resources: [.copy("Fixtures")]
        ),
    ]
)
