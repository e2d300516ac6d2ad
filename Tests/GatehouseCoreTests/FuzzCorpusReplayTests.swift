import Foundation
import GatehouseCore
import Testing

/// Replays every committed fuzzing input (`Fuzz/Corpus/<target>/*`: seeds and the crashers the
/// fuzzers found) through the same oracles as the libFuzzer harnesses, against the real
/// GatehouseCore module, so each one is a regression test on every `swift test`.
/// See Fuzz/README.md; the oracles are in FuzzOracles/.
@Suite("Fuzz corpus replay")
struct FuzzCorpusReplayTests {
    static let targets = ["KeyParser", "SSEUsage", "PolicyHeader"]

    /// `Fuzz/Corpus`, found from this file (Tests/GatehouseCoreTests/ → the package root).
    static let corpusRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/Corpus", isDirectory: true)

    static func inputs(_ target: String) throws -> [(name: String, bytes: [UInt8])] {
        let dir = corpusRoot.appendingPathComponent(target, isDirectory: true)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path)
            .filter { !$0.hasPrefix(".") }
            .sorted()
        return try names.map { name in
            (name, [UInt8](try Data(contentsOf: dir.appendingPathComponent(name))))
        }
    }

    static func run(_ target: String, _ bytes: [UInt8]) throws(FuzzOracleFailure) {
        switch target {
        case "KeyParser": try KeyParserOracle.run(bytes)
        case "SSEUsage": try SSEUsageOracle.run(bytes)
        case "PolicyHeader": try PolicyHeaderOracle.run(bytes)
        default: throw FuzzOracleFailure(oracle: target, message: "no such fuzz target")
        }
    }

    @Test(arguments: targets)
    func corpusPassesTheOracles(_ target: String) throws {
        let inputs = try Self.inputs(target)
        #expect(inputs.count >= 10, "Fuzz/Corpus/\(target) looks empty or missing (\(Self.corpusRoot.path))")
        for input in inputs {
            do {
                try Self.run(target, input.bytes)
            } catch {
                Issue.record("Fuzz/Corpus/\(target)/\(input.name): \(error)")
            }
        }
    }

    @Test func everyCorpusFolderIsATarget() throws {
        let folders = try FileManager.default.contentsOfDirectory(atPath: Self.corpusRoot.path).filter { !$0.hasPrefix(".") }
        #expect(Set(folders) == Set(Self.targets))
    }

    /// The oracles are not vacuous: the corpus reaches the "accepted" side of every parser.
    @Test func corpusReachesTheAcceptingPaths() throws {
        let keys = try Self.inputs("KeyParser").compactMap { try? GatehouseKey.parse(String(decoding: $0.bytes, as: UTF8.self)) }
        #expect(Set(keys.map(\.kind)) == Set(KeyKind.allCases))

        let policies = try Self.inputs("PolicyHeader").compactMap { try? RateLimitPolicy.parse(String(decoding: $0.bytes, as: UTF8.self)) }
        #expect(policies.contains { $0.unit == .cents } && policies.contains { $0.perUser } && policies.count >= 5)

        var usages: [UsageDialect: Int] = [:]
        for input in try Self.inputs("SSEUsage") {
            var splitter = SSEEventSplitter()
            var events = splitter.feed(input.bytes)
            if let tail = splitter.finish() { events.append(tail) }
            for dialect in [UsageDialect.openai, .anthropic] {
                var extractor = UsageExtractor(dialect: dialect)
                for event in events { extractor.observe(json: event.data) }
                if let usage = extractor.usage, usage.promptTokens > 0 { usages[dialect, default: 0] += 1 }
            }
        }
        #expect(usages[.openai, default: 0] >= 3 && usages[.anthropic, default: 0] >= 3)
    }

    /// The oracles catch what they are meant to catch (a broken oracle would pass everything).
    @Test func oraclesRejectWrongAnswers() {
        #expect(KeyParserOracle.reference(Array("gate_proxy_".utf8)) == .malformed)
        let key = GatehouseKey.generate(kind: .read)
        #expect(KeyParserOracle.reference(Array(key.text.utf8)) == .accepted(kind: .read, id: key.id))
        #expect(PolicyHeaderOracle.reference(Array("10;w=60;u=cents".utf8)) == RateLimitPolicy(quota: 10, windowSeconds: 60, unit: .cents))
        #expect(PolicyHeaderOracle.reference(Array("10;=w=60".utf8)) == nil)
        #expect(PolicyHeaderOracle.positional(1e-7) == ".0000001")
        #expect(PolicyHeaderOracle.positional(0.5) == ".5")
        #expect(PolicyHeaderOracle.positional(1.5e-20) == ".000000000000000000015")
        #expect(PolicyHeaderOracle.positional(2.5e15) == "2500000000000000")
        #expect(PolicyHeaderOracle.positional(123.25) == "123.25")
        #expect(PolicyHeaderOracle.positional(1e12) == "1000000000000")
        #expect(SSEUsageOracle.reference(Array("data: a\r\n\r\nevent: e\ndata: b".utf8)) == [
            .init(raw: Array("data: a\r\n\r\n".utf8), data: Array("a".utf8), name: nil),
            .init(raw: Array("event: e\ndata: b".utf8), data: Array("b".utf8), name: "e"),
        ])
    }
}
