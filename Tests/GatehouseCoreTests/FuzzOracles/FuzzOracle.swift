// Shared by the libFuzzer harnesses (Fuzz/*/Harness.swift, built by Scripts/fuzz, which compiles
// these oracle files together with the GatehouseCore sources they exercise into one module) and
// by FuzzCorpusReplayTests, which replays every committed corpus input through the real
// GatehouseCore module. Keep this code to GatehouseCore's public API and the standard library
// so that it compiles both ways.

/// An oracle violation: the code under test accepted, refused or produced something it must not.
struct FuzzOracleFailure: Error, CustomStringConvertible {
    let oracle: String
    let message: String
    var description: String { "\(oracle): \(message)" }
}

/// Throws a ``FuzzOracleFailure`` unless `condition` holds.
@inline(__always)
func fuzzCheck(
    _ condition: Bool, _ oracle: String, _ message: @autoclosure () -> String
) throws(FuzzOracleFailure) {
    if !condition { throw FuzzOracleFailure(oracle: oracle, message: message()) }
}

/// A deterministic stream of numbers derived from the input (FNV-1a seed, then SplitMix64), so
/// that the same input always exercises the same chunking/mutations and crashes reproduce.
struct FuzzRandom {
    private var state: UInt64

    init(seed bytes: some Sequence<UInt8>) {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        state = h
    }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// A number in `0..<bound` (`bound` > 0).
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

/// A short, printable rendering of bytes for failure messages.
func fuzzDescribe(_ bytes: some Collection<UInt8>, limit: Int = 160) -> String {
    var s = String(decoding: bytes.prefix(limit), as: UTF8.self).debugDescription
    if bytes.count > limit { s += "… (\(bytes.count) bytes)" }
    return s
}
