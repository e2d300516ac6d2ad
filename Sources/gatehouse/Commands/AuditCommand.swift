import ArgumentParser
import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Verify the tamper-evident audit trail and keep checkpoints of it.",
        subcommands: [Verify.self, Checkpoint.self])

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute the hash chain; exit 0 when intact, 2 when broken (naming the first bad entry).")
        @OptionGroup var common: CommonOptions
        @OptionGroup var output: OutputOptions
        @Option(help: "A checkpoint file written by `audit checkpoint --out`: proves no truncation or rollback since.")
        var checkpoint: String?

        func run() async throws {
            var external: AuditCheckpoint? = nil
            if let checkpoint {
                guard let data = FileManager.default.contents(atPath: checkpoint),
                    let parsed = try? JSONDecoder().decode(AuditCheckpoint.self, from: data)
                else { throw GatehouseError.startup("cannot read the checkpoint file \(checkpoint)") }
                external = parsed
            }
            let report = try await common.withPlane { plane in try await plane.verifyAudit(checkpoint: external) }
            if output.json {
                Console.out(JSONValue.object([
                    "intact": .bool(report.intact), "entries": .int(report.entries),
                    "last_sequence": .number(Double(report.lastSequence)),
                    "first_broken_sequence": report.firstBrokenSequence.map { .number(Double($0)) } ?? .null,
                    "damage": .string(report.damage?.rawValue),
                ]).encodedString())
            }
            if let seq = report.firstBrokenSequence {
                let kind = report.damage?.rawValue ?? "broken"
                throw GatehouseError.startup("audit trail is NOT intact: first bad entry is sequence \(seq) (\(kind))")
            }
            if !output.json {
                Console.out("Audit trail intact: \(report.entries) entries, last sequence \(report.lastSequence)\(external != nil ? ", checkpoint verified" : "").")
            }
        }
    }

    struct Checkpoint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign a checkpoint of the current end of the trail; optionally write it to a file kept elsewhere.")
        @OptionGroup var common: CommonOptions
        @Option(help: "Write the checkpoint (JSON) to this file.") var out: String?

        func run() async throws {
            let checkpoint = try await common.withPlane { plane in try await plane.checkpointAudit(ifAtLeast: 0) }
            guard let checkpoint else { throw GatehouseError.startup("the audit trail is empty") }
            if let out {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
                try SecureFile.write(try encoder.encode(checkpoint), to: out, mode: 0o644)
            }
            Console.out("Checkpoint at sequence \(checkpoint.sequence) signed with master key version \(checkpoint.masterKeyVersion)\(out.map { "; written to \($0)" } ?? "").")
        }
    }
}
