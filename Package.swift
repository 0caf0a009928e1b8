// swift-tools-version:5.9
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
        .target(
            name: "CKernels",
            path: "Sources/CKernels",
            cSettings: [.unsafeFlags(["-O3"])]
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
