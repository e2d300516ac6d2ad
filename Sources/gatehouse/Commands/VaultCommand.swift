import ArgumentParser
import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore

struct VaultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vault", abstract: "Manage provider keys and the master key.",
        subcommands: [Add.self, List.self, Delete.self, RotateMaster.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Store a provider API key (encrypted).")
        @OptionGroup var common: CommonOptions
        @OptionGroup var output: OutputOptions
        @Option(help: "A name for the key.") var name: String
        @Option(help: "openai, anthropic or openai-compatible.") var provider: String
        @Option(help: "Base URL of the provider API (required for openai-compatible).") var baseUrl: String?
        @Flag(help: "Read the provider API key from standard input (recommended).") var apiKeyStdin = false
        @Option(help: "The provider API key (visible in the process list; prefer --api-key-stdin).") var apiKey: String?

        func validate() throws {
            guard Provider(rawValue: provider) != nil else {
                throw ValidationError("--provider must be one of: openai, anthropic, openai-compatible")
            }
            guard apiKeyStdin != (apiKey != nil) else { throw ValidationError("give exactly one of --api-key-stdin or --api-key") }
        }

        func run() async throws {
            var secret = apiKey ?? ""
            if apiKeyStdin {
                guard let line = readLine(strippingNewline: true) else {
                    throw GatehouseError.invalidRequest("no API key on standard input")
                }
                secret = line.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            let record = try await common.withPlane { plane in
                try await plane.createProviderKey(
                    ProviderKeyInput(name: name, provider: Provider(rawValue: provider)!, baseURL: baseUrl, apiKey: secret),
                    by: try common.principal(plane))
            }
            Console.out(output.json ? GatehouseJSON.providerKey(record).encodedString() : "Stored provider key \(record.id) (…\(record.last4)).")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List provider keys (never their secrets).")
        @OptionGroup var common: CommonOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let records = try await common.withPlane { plane in
                try await plane.providerKeys(orgID: try common.principal(plane).orgID)
            }
            if output.json {
                Console.out(GatehouseJSON.list(records.map(GatehouseJSON.providerKey)).encodedString())
            } else {
                records.forEach { Console.out($0.humanLine) }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a provider key; its proxy keys are revoked.")
        @OptionGroup var common: CommonOptions
        @Argument(help: "Provider key id.") var id: String

        func run() async throws {
            try await common.withPlane { plane in
                try await plane.deleteProviderKey(id: id, by: try common.principal(plane))
            }
            Console.out("Deleted provider key \(id).")
        }
    }

    struct RotateMaster: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-master",
            abstract: "Add a master key version, make it primary and re-wrap every data key (provider keys are not decrypted).")
        @OptionGroup var common: CommonOptions

        func run() async throws {
            let source = common.masterKey
            let (version, count) = try await common.withPlane { plane in
                try await plane.rotateMasterKey(by: try common.principal(plane), persistKeyring: { try source.save($0) })
            }
            Console.out("Master key rotated: version \(version) is primary; \(count) data key(s) re-wrapped in \(source.filePath).")
        }
    }
}
