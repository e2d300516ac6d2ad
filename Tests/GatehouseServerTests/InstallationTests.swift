import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore
import Testing

/// Opening an installation fails closed: no master key, the wrong one, or one kept in the
/// wrong place stops everything before a request is served.
@Suite("Installation")
struct InstallationTests {
    /// Opens an installation that is expected to fail; closes it (and records an issue) if it
    /// unexpectedly opens, so no store is ever leaked.
    static func openError(
        paths: Installation.Paths, masterKey: MasterKeySource, initialise: Bool,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async -> (any Error)? {
        do {
            let opened = try await Installation.open(paths: paths, masterKey: masterKey, initialise: initialise, logger: quietLogger)
            try? await opened.controlPlane.store.close()
            Issue.record("the installation opened", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    /// Opens, runs `body`, and always closes the store.
    static func withOpened<T>(
        paths: Installation.Paths, masterKey: MasterKeySource, initialise: Bool, _ body: (Installation.Opened) async throws -> T
    ) async throws -> T {
        let opened = try await Installation.open(paths: paths, masterKey: masterKey, initialise: initialise, logger: quietLogger)
        do {
            let result = try await body(opened)
            try await opened.controlPlane.store.close()
            return result
        } catch {
            try? await opened.controlPlane.store.close()
            throw error
        }
    }

    static func env(_ text: String) -> MasterKeySource { MasterKeySource(environmentValue: text, filePath: "/nonexistent") }
    static func file(_ path: String) -> MasterKeySource { MasterKeySource(environmentValue: nil, filePath: path) }

    static func ownerPrincipal(_ plane: ControlPlane, _ ownerKey: String) throws -> Principal {
        guard case .success(let record) = plane.keyTable.authenticate(ownerKey) else {
            throw GatehouseError.unauthenticated
        }
        return Principal(kind: .apiKey, id: record.id, orgID: record.orgID)
    }

    // MARK: Fail closed

    @Test func reopeningWithADifferentMasterKeyFailsWithMismatch() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            try await Self.withOpened(paths: paths, masterKey: Self.env(randomMasterKeyText()), initialise: true) { opened in
                #expect(opened.ownerKey != nil)
            }
            for initialise in [false, true] {
                let error = await Self.openError(paths: paths, masterKey: Self.env(randomMasterKeyText()), initialise: initialise)
                #expect(error as? GatehouseError == .masterKeyMismatch(dataDir: paths.dataDir), "\(String(describing: error))")
            }
        }
    }

    @Test func reopeningWithoutAnyMasterKeyFailsAndCreatesNone() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            try await Self.withOpened(paths: paths, masterKey: Self.env(randomMasterKeyText()), initialise: true) { _ in }
            let missing = root + "/keys/master.key"
            for initialise in [false, true] {
                let error = await Self.openError(paths: paths, masterKey: Self.file(missing), initialise: initialise)
                guard case .vault(.masterKeyMissing(let source))? = error as? GatehouseError else {
                    Issue.record("expected masterKeyMissing, got \(String(describing: error))")
                    continue
                }
                #expect(source == missing)
                // An installation with data never gets a fresh master key.
                #expect(!FileManager.default.fileExists(atPath: missing))
            }
        }
    }

    @Test func reopeningWithAMalformedMasterKeyFails() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            try await Self.withOpened(paths: paths, masterKey: Self.env(randomMasterKeyText()), initialise: true) { _ in }
            let error = await Self.openError(paths: paths, masterKey: Self.env("not a key"), initialise: false)
            guard case .masterKeyMalformed? = error as? VaultError else {
                if case .vault(.masterKeyMalformed)? = error as? GatehouseError { return }
                Issue.record("expected masterKeyMalformed, got \(String(describing: error))")
                return
            }
        }
    }

    @Test func masterKeyFileInsideTheDataDirectoryIsRefused() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            for keyPath in [
                root + "/data/master.key", root + "/data/sub/dir/master.key", root + "/data", root + "/other/../data/master.key",
                root + "/data/./master.key", root + "/data/",
            ] {
                let error = await Self.openError(paths: paths, masterKey: Self.file(keyPath), initialise: true)
                #expect(error as? GatehouseError == .masterKeyInsideDataDir(path: keyPath), "\(keyPath): \(String(describing: error))")
                #expect(!FileManager.default.fileExists(atPath: root + "/data/master.key"))
                #expect(!FileManager.default.fileExists(atPath: paths.database), "refused before the database is created")
            }
        }
    }

    @Test func masterKeyFileReachedThroughASymlinkToTheDataDirectoryIsRefused() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            try FileManager.default.createDirectory(atPath: root + "/data", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try FileManager.default.createSymbolicLink(atPath: root + "/alias", withDestinationPath: root + "/data")
            let keyPath = root + "/alias/master.key"
            let error = await Self.openError(paths: paths, masterKey: Self.file(keyPath), initialise: true)
            #expect(error as? GatehouseError == .masterKeyInsideDataDir(path: keyPath), "\(String(describing: error))")
            #expect(!FileManager.default.fileExists(atPath: root + "/data/master.key"), "the key file was written into the data directory")
        }
    }

    @Test func dataDirectoryReachedThroughASymlinkStillKeepsTheKeyOut() async throws {
        try await withTemporaryDirectory { root in
            try FileManager.default.createDirectory(atPath: root + "/real", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try FileManager.default.createSymbolicLink(atPath: root + "/link", withDestinationPath: root + "/real")
            let paths = Installation.Paths(dataDir: root + "/link")
            let keyPath = root + "/real/master.key"
            let error = await Self.openError(paths: paths, masterKey: Self.file(keyPath), initialise: true)
            #expect(error as? GatehouseError == .masterKeyInsideDataDir(path: keyPath), "\(String(describing: error))")
            #expect(!FileManager.default.fileExists(atPath: keyPath))
        }
    }

    @Test func masterKeyFileNextToTheDataDirectoryIsAllowed() async throws {
        // `data-keys/` shares a name prefix with `data/` but is not inside it.
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            try await Self.withOpened(paths: paths, masterKey: Self.file(root + "/data-keys/master.key"), initialise: true) { opened in
                #expect(opened.createdMasterKeyFile == root + "/data-keys/master.key")
            }
        }
    }

    @Test func emptyDirectoryWithoutInitialiseIsNotInitialised() async throws {
        try await withTemporaryDirectory { root in
            let missing = Installation.Paths(dataDir: root + "/nothing-here")
            let error = await Self.openError(paths: missing, masterKey: Self.env(randomMasterKeyText()), initialise: false)
            #expect(error as? GatehouseError == .notInitialised(dataDir: missing.dataDir))
            #expect(!FileManager.default.fileExists(atPath: missing.dataDir), "the data directory is not created")

            let empty = Installation.Paths(dataDir: root + "/empty")
            try FileManager.default.createDirectory(atPath: empty.dataDir, withIntermediateDirectories: true)
            let error2 = await Self.openError(paths: empty, masterKey: Self.file(root + "/keys/master.key"), initialise: false)
            #expect(error2 as? GatehouseError == .notInitialised(dataDir: empty.dataDir))
            #expect(!FileManager.default.fileExists(atPath: empty.database))
            #expect(!FileManager.default.fileExists(atPath: root + "/keys/master.key"), "no key is generated")
        }
    }

    // MARK: Key file

    @Test func generatedMasterKeyFileIsOwnerOnly() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            let keyPath = root + "/config/gatehouse/master.key"
            try await Self.withOpened(paths: paths, masterKey: Self.file(keyPath), initialise: true) { opened in
                #expect(opened.createdMasterKeyFile == keyPath)
                #expect(opened.ownerKey != nil)
            }
            #expect(SecureFile.mode(of: keyPath) == 0o600)
            #expect(SecureFile.mode(of: root + "/config/gatehouse") == 0o700)
            #expect(SecureFile.mode(of: paths.dataDir) == 0o700)
            #expect(SecureFile.mode(of: paths.database) == 0o600)
            let text = try String(contentsOfFile: keyPath, encoding: .utf8)
            #expect(try MasterKeyring.parse(text, source: keyPath).versions == [1])
            // No temporary file is left next to it.
            #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/config/gatehouse") == ["master.key"])
            // And it opens the installation it created.
            try await Self.withOpened(paths: paths, masterKey: Self.file(keyPath), initialise: false) { opened in
                #expect(opened.ownerKey == nil)
                #expect(opened.createdMasterKeyFile == nil)
            }
        }
    }

    @Test func environmentMasterKeyIsNeverWrittenToDisk() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            let key = randomMasterKeyText()
            try await Self.withOpened(paths: paths, masterKey: MasterKeySource(environmentValue: key, filePath: root + "/keys/master.key"), initialise: true) { opened in
                #expect(opened.createdMasterKeyFile == nil)
            }
            #expect(!FileManager.default.fileExists(atPath: root + "/keys/master.key"))
            let raw = try #require(Data(base64Encoded: key))
            for file in FileManager.default.enumerator(atPath: root)?.compactMap({ $0 as? String }) ?? [] {
                guard let data = FileManager.default.contents(atPath: root + "/" + file) else { continue }
                #expect(data.range(of: Data(key.utf8)) == nil && data.range(of: raw) == nil, "\(file) holds the master key")
            }
        }
    }

    @Test(arguments: [0o644, 0o640, 0o604, 0o660, 0o606])
    func masterKeyFileReadableByOthersIsRefused(mode: Int) async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            let keyPath = root + "/keys/master.key"
            try await Self.withOpened(paths: paths, masterKey: Self.file(keyPath), initialise: true) { _ in }
            #expect(chmod(keyPath, mode_t(mode)) == 0)
            let error = await Self.openError(paths: paths, masterKey: Self.file(keyPath), initialise: false)
            #expect(error as? GatehouseError == .vault(.masterKeyFileTooOpen(path: keyPath)), "\(String(describing: error))")
        }
    }

    @Test func openKeyFileIsRefusedEvenForANewInstallation() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            let keyPath = root + "/keys/master.key"
            try FileManager.default.createDirectory(atPath: root + "/keys", withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: keyPath, contents: Data(randomMasterKeyText().utf8), attributes: [.posixPermissions: 0o644]))
            let error = await Self.openError(paths: paths, masterKey: Self.file(keyPath), initialise: true)
            #expect(error as? GatehouseError == .vault(.masterKeyFileTooOpen(path: keyPath)))
        }
    }

    @Test func secondInitialiseOfAnExistingInstallationCreatesNothing() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            let source = Self.env(randomMasterKeyText())
            try await Self.withOpened(paths: paths, masterKey: source, initialise: true) { _ in }
            try await Self.withOpened(paths: paths, masterKey: source, initialise: true) { opened in
                #expect(opened.ownerKey == nil)
                let organizations = try await opened.controlPlane.store.organizations()
                #expect(organizations.count == 1)
            }
        }
    }

    // MARK: Rotation

    @Test func rotatedMasterKeyFileOpensEverythingAndOldProviderKeysDecrypt() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            let keyPath = root + "/keys/master.key"
            let source = Self.file(keyPath)
            let secret = newCanarySecret()
            let (ownerKey, providerKeyID) = try await Self.withOpened(paths: paths, masterKey: source, initialise: true) { opened in
                let plane = opened.controlPlane
                let ownerKey = try #require(opened.ownerKey)
                let principal = try Self.ownerPrincipal(plane, ownerKey)
                let record = try await plane.createProviderKey(
                    ProviderKeyInput(name: "before", provider: .openai, baseURL: nil, apiKey: secret), by: principal)
                let (version, rewrapped) = try await plane.rotateMasterKey(
                    by: Principal(kind: .cli, id: "operator", orgID: principal.orgID), persistKeyring: { try source.save($0) })
                #expect(version == 2)
                #expect(rewrapped == 1)
                // Still usable in this process right after the rotation.
                #expect(try plane.providerSecret(for: record) == secret)
                #expect(plane.keyTable.authenticate(ownerKey).isSuccess)
                return (ownerKey, record.id)
            }
            #expect(SecureFile.mode(of: keyPath) == 0o600)
            let keyring = try MasterKeyring.parse(try String(contentsOfFile: keyPath, encoding: .utf8), source: keyPath)
            #expect(keyring.versions == [1, 2])
            #expect(keyring.primaryVersion == 2)

            try await Self.withOpened(paths: paths, masterKey: source, initialise: false) { opened in
                let plane = opened.controlPlane
                let orgs = try await plane.store.organizations()
                #expect(orgs.map(\.wrappedDataKey.masterKeyVersion) == [2])
                #expect(plane.keyTable.authenticate(ownerKey).isSuccess)
                let principal = try Self.ownerPrincipal(plane, ownerKey)
                let record = try await plane.providerKey(orgID: principal.orgID, id: providerKeyID)
                #expect(try plane.providerSecret(for: record) == secret)
                // New organizations are wrapped with the new version.
                let (org, _) = try await plane.createOrganization(name: "after", by: Principal(kind: .system, id: "tests", orgID: ""))
                #expect(org.wrappedDataKey.masterKeyVersion == 2)
            }
        }
    }

    @Test func retiringTheOldVersionAfterRotationStillOpens() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            let keyPath = root + "/keys/master.key"
            let source = Self.file(keyPath)
            let secret = newCanarySecret()
            let providerKeyID = try await Self.withOpened(paths: paths, masterKey: source, initialise: true) { opened in
                let principal = try Self.ownerPrincipal(opened.controlPlane, try #require(opened.ownerKey))
                let record = try await opened.controlPlane.createProviderKey(
                    ProviderKeyInput(name: "p", provider: .anthropic, baseURL: nil, apiKey: secret), by: principal)
                _ = try await opened.controlPlane.rotateMasterKey(by: principal, persistKeyring: { try source.save($0) })
                return record.id
            }
            var keyring = try #require(try source.load())
            keyring.retire(version: 1)
            try source.save(keyring)
            try await Self.withOpened(paths: paths, masterKey: source, initialise: false) { opened in
                let orgID = try #require(try await opened.controlPlane.store.organizations().first?.id)
                let record = try await opened.controlPlane.providerKey(orgID: orgID, id: providerKeyID)
                #expect(try opened.controlPlane.providerSecret(for: record) == secret)
            }
        }
    }

    @Test func preRotationKeyringAloneCannotOpenARotatedInstallation() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            let keyPath = root + "/keys/master.key"
            let source = Self.file(keyPath)
            try await Self.withOpened(paths: paths, masterKey: source, initialise: true) { _ in }
            let before = try String(contentsOfFile: keyPath, encoding: .utf8)
            try await Self.withOpened(paths: paths, masterKey: source, initialise: false) { opened in
                _ = try await opened.controlPlane.rotateMasterKey(
                    by: Principal(kind: .cli, id: "operator", orgID: ""), persistKeyring: { try source.save($0) })
            }
            let error = await Self.openError(paths: paths, masterKey: Self.env(before), initialise: false)
            #expect(error is GatehouseError, "\(String(describing: error))")
        }
    }

    @Test func failedKeyringPersistenceLeavesTheInstallationUnchanged() async throws {
        struct DiskFull: Error {}
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            let keyPath = root + "/keys/master.key"
            let source = Self.file(keyPath)
            let secret = newCanarySecret()
            let before = try await Self.withOpened(paths: paths, masterKey: source, initialise: true) { opened in
                let principal = try Self.ownerPrincipal(opened.controlPlane, try #require(opened.ownerKey))
                let record = try await opened.controlPlane.createProviderKey(
                    ProviderKeyInput(name: "p", provider: .openai, baseURL: nil, apiKey: secret), by: principal)
                await #expect(throws: DiskFull.self) {
                    _ = try await opened.controlPlane.rotateMasterKey(by: principal, persistKeyring: { _ in throw DiskFull() })
                }
                #expect(try await opened.controlPlane.store.organizations().map(\.wrappedDataKey.masterKeyVersion) == [1])
                #expect(try opened.controlPlane.providerSecret(for: record) == secret)
                return (record, try String(contentsOfFile: keyPath, encoding: .utf8))
            }
            #expect(try String(contentsOfFile: keyPath, encoding: .utf8) == before.1)
            try await Self.withOpened(paths: paths, masterKey: source, initialise: false) { opened in
                let reopened = try opened.controlPlane.providerSecret(for: before.0)
                #expect(reopened == secret)
            }
        }
    }

    @Test func serverPicksUpAKeyringRotatedByAnotherProcess() async throws {
        try await withTemporaryDirectory { root in
            let paths = Installation.Paths(dataDir: root + "/data")
            let source = Self.file(root + "/keys/master.key")
            try await Self.withOpened(paths: paths, masterKey: source, initialise: true) { server in
                // The CLI rotates and then creates an organization wrapped with the new version.
                let newOwnerKey = try await Self.withOpened(paths: paths, masterKey: source, initialise: false) { cli in
                    _ = try await cli.controlPlane.rotateMasterKey(
                        by: Principal(kind: .cli, id: "operator", orgID: ""), persistKeyring: { try source.save($0) })
                    let (_, key) = try await cli.controlPlane.createOrganization(
                        name: "after-rotation", by: Principal(kind: .cli, id: "operator", orgID: ""))
                    return key
                }
                try await server.controlPlane.reload()
                #expect(server.controlPlane.keyTable.authenticate(newOwnerKey).isSuccess)
                #expect(server.controlPlane.vault.keyring.primaryVersion == 2)
            }
        }
    }
}
