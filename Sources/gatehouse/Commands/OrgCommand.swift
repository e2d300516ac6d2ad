import ArgumentParser
import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore

struct OrgCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "org", abstract: "Manage organizations.", subcommands: [Create.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an organization; its owner API key is printed once.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var output: OutputOptions
        @Option(help: "Organization name.") var name: String

        func run() async throws {
            let (org, key) = try await common.withPlane { plane in
                try await plane.createOrganization(name: name, by: Principal(kind: .cli, id: CLILog.osUser, orgID: ""))
            }
            if output.json {
                Console.out(JSONValue.object(["id": .string(org.id), "name": .string(org.name), "owner_api_key": .string(key)]).encodedString())
            } else {
                Console.out("Created organization \(org.id) (\(org.name)).")
                Console.out("Owner API key (shown once): \(key)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List organizations.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let orgs = try await common.withPlane { plane in plane.keyTable.snapshot.organizations.values.sorted { $0.createdAt < $1.createdAt } }
            if output.json {
                Console.out(GatehouseJSON.list(orgs.map { .object(["id": .string($0.id), "name": .string($0.name), "created_at": .date($0.createdAt)]) }).encodedString())
            } else {
                orgs.forEach { Console.out("\($0.id)  \($0.name)") }
            }
        }
    }
}

struct UsersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "users", abstract: "Manage team members (dashboard and session logins).", subcommands: [Create.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a user (the first owner is created here).")
        @OptionGroup var common: CommonOptions
        @OptionGroup var output: OutputOptions
        @Option(help: "E-mail address (the login).") var email: String
        @Option(help: "owner, admin, member or viewer.") var role: String
        @Flag(help: "Read the password from standard input.") var passwordStdin = false

        func validate() throws {
            guard Role(rawValue: role) != nil else { throw ValidationError("--role must be one of: owner, admin, member, viewer") }
            guard passwordStdin else { throw ValidationError("--password-stdin is required (passwords are never taken as arguments)") }
        }

        func run() async throws {
            guard let password = readLine(strippingNewline: true), !password.isEmpty else {
                throw GatehouseError.invalidRequest("no password on standard input")
            }
            let user = try await common.withPlane { plane in
                try await plane.createUser(email: email, role: Role(rawValue: role)!, password: password, by: try common.principal(plane))
            }
            Console.out(output.json ? GatehouseJSON.user(user).encodedString() : "Created user \(user.id) (\(user.email), \(user.role.rawValue)).")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let users = try await common.withPlane { plane in try await plane.users(orgID: try common.principal(plane).orgID) }
            if output.json {
                Console.out(GatehouseJSON.list(users.map(GatehouseJSON.user)).encodedString())
            } else {
                users.forEach { Console.out("\($0.id)  \($0.role.rawValue)  \($0.email)") }
            }
        }
    }
}
