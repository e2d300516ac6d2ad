import Foundation
import GatehouseCore
import GatehouseStore
import Logging

/// Opens (and on first use, creates) a Gatehouse installation: data directory, database,
/// master keyring and the first organization.
///
/// The order matters for failing closed: the database is opened and, if it holds data, the
/// master key must be present and must unwrap every data key before anything else happens.
/// A new master key is only ever created for an empty installation.
public enum Installation {
    /// What the data directory holds.
    public struct Paths: Sendable {
        public let dataDir: String
        public var database: String { dataDir + "/gatehouse.sqlite" }
        public var tlsCertificate: String { dataDir + "/tls/cert.pem" }
        public var tlsPrivateKey: String { dataDir + "/tls/key.pem" }

        public init(dataDir: String) {
            self.dataDir = URL(fileURLWithPath: dataDir).standardizedFileURL.path
        }

        public static var defaultDataDir: String {
            let env = ProcessInfo.processInfo.environment
            if let dir = env["GATEHOUSE_DATA_DIR"], !dir.isEmpty { return dir }
            let home = env["HOME"] ?? NSHomeDirectory()
            return home + "/.local/share/gatehouse"
        }
    }

    /// The result of opening: a ready control plane, and the owner API key if this call
    /// created the installation (to be printed once).
    public struct Opened: Sendable {
        public let controlPlane: ControlPlane
        public let ownerKey: String?
        public let createdMasterKeyFile: String?
    }

    /// Opens the installation in `paths`.
    /// - Parameter initialise: create the installation if it is empty (`serve`, `init`);
    ///   otherwise an empty data directory is an error (every other command).
    public static func open(
        paths: Paths, masterKey: MasterKeySource, initialise: Bool, logger: Logger
    ) async throws -> Opened {
        try masterKey.checkOutside(dataDir: paths.dataDir)
        let fm = FileManager.default
        if !fm.fileExists(atPath: paths.dataDir) {
            guard initialise else { throw GatehouseError.notInitialised(dataDir: paths.dataDir) }
            do {
                try fm.createDirectory(atPath: paths.dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw GatehouseError.startup("cannot create data directory \(paths.dataDir): \(error.localizedDescription)")
            }
        }
        if !initialise, !fm.fileExists(atPath: paths.database) {
            throw GatehouseError.notInitialised(dataDir: paths.dataDir)
        }
        let store: SQLiteStore
        do {
            store = try await SQLiteStore.open(path: paths.database, logger: logger)
        } catch let error as StoreError {
            throw GatehouseError.startup(error.description)
        }
        do {
            try await store.migrate()
        } catch {
            try? await store.close()
            throw GatehouseError.startup((error as? StoreError)?.description ?? "database migration failed")
        }
        do {
            let initialised = try await store.hasOrganizations()
            if initialised {
                guard let keyring = try masterKey.load() else {
                    throw GatehouseError.vault(.masterKeyMissing(source: masterKey.describe))
                }
                let plane = ControlPlane(
                store: store, vault: Vault(keyring: keyring), logger: logger, keyringReloader: { try masterKey.load() })
                try await plane.reload(dataDir: paths.dataDir)
                return Opened(controlPlane: plane, ownerKey: nil, createdMasterKeyFile: nil)
            }
            guard initialise else { throw GatehouseError.notInitialised(dataDir: paths.dataDir) }
            var createdFile: String? = nil
            let keyring: MasterKeyring
            if let existing = try masterKey.load() {
                keyring = existing
            } else {
                keyring = MasterKeyring.generate()
                try masterKey.save(keyring)
                createdFile = masterKey.filePath
            }
            let plane = ControlPlane(
                store: store, vault: Vault(keyring: keyring), logger: logger, keyringReloader: { try masterKey.load() })
            try await plane.reload(dataDir: paths.dataDir)
            let (_, ownerKey) = try await plane.createOrganization(
                name: "default", by: Principal(kind: .system, id: "init", orgID: ""))
            return Opened(controlPlane: plane, ownerKey: ownerKey, createdMasterKeyFile: createdFile)
        } catch {
            try? await store.close()
            throw error
        }
    }
}
