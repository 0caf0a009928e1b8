// swift-tools-version:6.0
import PackageDescription

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
        .target(
            name: "CKernels",
            path: "Sources/CKernels"
        ),
        .target(
            name: "NemoShard",
            dependencies: ["CMPI", "CKernels"],
            path: "Sources/NemoShard"
        ),
        .executableTarget(
            name: "nemoshard",
            dependencies: ["NemoShard"],
            path: "Sources/nemoshard"
        ),
        .testTarget(
            name: "NemoShardTests",
            dependencies: ["NemoShard", "CKernels", "nemoshard"],
            path: "Tests/NemoShardTests",
            resources: [.copy("Fixtures")]
        ),
    ]
)
