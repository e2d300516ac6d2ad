import ArgumentParser
import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage Gatehouse keys: proxy, API and read-only.",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key; the key is printed once.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var output: OutputOptions
        @Option(help: "proxy, api or read.") var kind: String
        @Option(help: "A name for the key.") var name: String
        @Option(help: "Provider key id (proxy keys).") var providerKey: String?
        @Option(help: "Description.") var description: String?
        @Option(help: "Expiry, ISO 8601 (e.g. 2027-01-31T00:00:00Z).") var expiresAt: String?
        @Option(help: "A model the key may use (repeatable; default: any).") var allowedModel: [String] = []
        @Option(help: "An IP address or CIDR the key may be used from (repeatable; default: any).") var allowedIp: [String] = []

        func validate() throws {
            guard let kind = KeyKind(rawValue: kind) else { throw ValidationError("--kind must be one of: proxy, api, read") }
            if kind == .proxy, providerKey == nil { throw ValidationError("--provider-key is required for a proxy key") }
            if let expiresAt, JSONValue.parseDate(expiresAt) == nil {
                throw ValidationError("--expires-at must be an ISO 8601 timestamp such as 2027-01-31T00:00:00Z")
            }
        }

        func run() async throws {
            let (record, key) = try await common.withPlane { plane in
            let input = GateKeyInput(
                kind: KeyKind(rawValue: kind)!, name: name, description: description, providerKeyID: providerKey,
                expiresAt: expiresAt.flatMap(JSONValue.parseDate),
                allowedModels: allowedModel.isEmpty ? nil : allowedModel, allowedIPs: allowedIp.isEmpty ? nil : allowedIp)
            return try await plane.createGateKey(input, by: try common.principal(plane))
            }
            if output.json {
                Console.out(GatehouseJSON.createdKey(record, key: key).encodedString())
            } else {
                Console.out("Created \(record.kind.rawValue) key \(record.id).")
                Console.out("Key (shown once): \(key)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (never their secrets).")
        @OptionGroup var common: CommonOptions
        @OptionGroup var output: OutputOptions
        @Option(help: "Only keys of this kind: proxy, api or read.") var kind: String?

        func validate() throws {
            if let kind, KeyKind(rawValue: kind) == nil { throw ValidationError("--kind must be one of: proxy, api, read") }
        }

        func run() async throws {
            let records = try await common.withPlane { plane in
                try await plane.gateKeys(orgID: try common.principal(plane).orgID, kind: kind.flatMap(KeyKind.init))
            }
            if output.json {
                Console.out(GatehouseJSON.list(records.map(GatehouseJSON.gateKey)).encodedString())
            } else {
                records.forEach { Console.out($0.humanLine) }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key, effective on running servers within a second.")
        @OptionGroup var common: CommonOptions
        @Argument(help: "Key id (the 12 characters after gate_<kind>_).") var id: String

        func run() async throws {
            let record = try await common.withPlane { plane in
                try await plane.revokeGateKey(id: id, kinds: [.proxy, .api, .read], by: try common.principal(plane))
            }
            Console.out("Revoked \(record.kind.rawValue) key \(record.id).")
        }
    }
}
