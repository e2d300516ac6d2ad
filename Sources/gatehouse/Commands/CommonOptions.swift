import ArgumentParser
import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore
import Logging

/// Options every command shares: where the data and the master key are.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Data directory (default: $GATEHOUSE_DATA_DIR or ~/.local/share/gatehouse).")
    var dataDir: String?

    @Option(
        name: .long,
        help: "Master key file (default: $GATEHOUSE_MASTER_KEY_FILE or ~/.config/gatehouse/master.key). $GATEHOUSE_MASTER_KEY takes precedence."
    )
    var masterKeyFile: String?

    @Option(name: .long, help: "Organization id (needed only when the installation has several).")
    var org: String?

    var paths: Installation.Paths { Installation.Paths(dataDir: dataDir ?? Installation.Paths.defaultDataDir) }
    var masterKey: MasterKeySource { MasterKeySource.fromEnvironment(filePath: masterKeyFile) }

    /// Opens an existing installation (every command except `serve` and `init`).
    func open() async throws -> ControlPlane {
        try await Installation.open(paths: paths, masterKey: masterKey, initialise: false, logger: CLILog.logger).controlPlane
    }

    /// Runs `body` with the installation open and always closes the store afterwards, error
    /// or not (an unclosed SQLite connection is a bug the driver asserts on).
    func withPlane<T>(_ body: (ControlPlane) async throws -> T) async throws -> T {
        let plane = try await open()
        do {
            let result = try await body(plane)
            try? await plane.store.close()
            return result
        } catch {
            try? await plane.store.close()
            throw error
        }
    }

    /// The principal for CLI actions: `cli` + the OS user, in the chosen organization.
    func principal(_ plane: ControlPlane) throws -> Principal {
        let orgs = plane.keyTable.snapshot.organizations
        let orgID: String
        if let org {
            guard orgs[org] != nil else { throw GatehouseError.notFound("no organization with id \(org.prefix(40))") }
            orgID = org
        } else if orgs.count == 1, let only = orgs.keys.first {
            orgID = only
        } else {
            throw GatehouseError.invalidRequest("this installation has several organizations; choose one with --org")
        }
        return Principal(kind: .cli, id: CLILog.osUser, orgID: orgID)
    }
}

enum CLILog {
    static let logger: Logger = {
        var logger = Logger(label: "gatehouse")
        logger.logLevel = .warning
        return logger
    }()

    static var osUser: String {
        if let pw = getpwuid(geteuid()), let name = pw.pointee.pw_name { return String(cString: name) }
        return ProcessInfo.processInfo.environment["USER"] ?? "uid:\(geteuid())"
    }
}

/// `--json` output or human lines.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print JSON.")
    var json = false
}

extension ProviderKeyRecord {
    var humanLine: String {
        "\(id)  \(provider.rawValue)  \(name)  …\(last4)  \(baseURL ?? provider.defaultBaseURL ?? "")"
    }
}

extension GateKeyRecord {
    var humanLine: String {
        "\(id)  \(kind.rawValue)  \(GatehouseJSON.status(self))  \(name)" + (providerKeyID.map { "  provider key \($0)" } ?? "")
    }
}
