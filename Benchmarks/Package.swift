// swift-tools-version:6.1
// Microbenchmarks of Gatehouse's hot-path building blocks (ordo-one/benchmark).
// Run from this folder: `swift package benchmark` (see README.md).
import PackageDescription

let package = Package(
    name: "GatehouseBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        // The parent package, through a link named after it (Benchmarks/micro creates it), because
        // SwiftPM names a path dependency after its folder, which differs between checkouts.
        .package(path: ".deps/gatehouse"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "HotPath",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "GatehouseCore", package: "gatehouse"),
                .product(name: "GatehouseServer", package: "gatehouse"),
                .product(name: "GatehouseStore", package: "gatehouse"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/HotPath",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
