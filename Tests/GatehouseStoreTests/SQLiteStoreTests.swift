import Foundation
import GatehouseCore
@testable import GatehouseStore
import Testing

// MARK: - Fixtures

/// A date that survives the store's millisecond storage exactly.
private func date(ms: Int64) -> Date { Date(timeIntervalSince1970: Double(ms) / 1000) }

private let t0: Int64 = 1_700_000_000_123

private func makeOrg(_ id: String, at ms: Int64 = t0) -> Organization {
    Organization(
        id: id, name: "Org \(id)", createdAt: date(ms: ms),
        wrappedDataKey: Vault.WrappedDataKey(envelope: Data("wrapped-\(id)".utf8)))
}

private func makeKey(
    _ id: String, org: String, kind: KeyKind = .api, providerKeyID: String? = nil, at ms: Int64 = t0
) -> GateKeyRecord {
    GateKeyRecord(
        id: id, orgID: org, kind: kind, name: "key \(id)", hash: Data(repeating: 0xAB, count: 32),
        providerKeyID: providerKeyID, createdAt: date(ms: ms))
}

private func makeProviderKey(_ id: String, org: String, at ms: Int64 = t0) -> ProviderKeyRecord {
    ProviderKeyRecord(
        id: id, orgID: org, name: "provider \(id)", provider: .openai, baseURL: nil,
        ciphertext: Data([1, 2, 3, 4, 5]), last4: "wxyz", createdAt: date(ms: ms))
}

private func draft(_ org: String, _ action: String, target: String = "") -> AuditDraft {
    AuditDraft(orgID: org, actorKind: "user", actorID: "u-1", clientIP: "127.0.0.1", action: action, target: target)
}

/// Runs `body` with a fresh directory (mode 0700) that is removed afterwards.
private func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("gatehouse-store-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(
        at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    defer { try? FileManager.default.removeItem(at: dir) }
    return try await body(dir.path)
}

/// Opens and migrates the store at `path`, runs `body`, and always closes the store.
private func withStore<T>(path: String, _ body: (SQLiteStore) async throws -> T) async throws -> T {
    let store = try await SQLiteStore.open(path: path)
    do {
        try await store.migrate()
        let result = try await body(store)
        try await store.close()
        return result
    } catch {
        try? await store.close()
        throw error
    }
}

/// A migrated store in its own temporary directory.
private func withFreshStore<T>(_ body: (SQLiteStore) async throws -> T) async throws -> T {
    try await withTemporaryDirectory { dir in
        try await withStore(path: dir + "/gatehouse.db", body)
    }
}

/// A fresh store with organizations "o1" (owner key "o1-owner") and "o2" (owner key "o2-owner").
private func withTwoOrgs<T>(_ body: (SQLiteStore) async throws -> T) async throws -> T {
    try await withFreshStore { store in
        for org in ["o1", "o2"] {
            try await store.createOrganization(
                makeOrg(org), firstKey: makeKey("\(org)-owner", org: org), audit: draft(org, "org.create"))
        }
        return try await body(store)
    }
}

private func allAudit(_ store: SQLiteStore) async throws -> [AuditEntry] {
    try await store.auditEntries(orgID: nil, after: 0, limit: 100_000)
}

private func isConflict(_ error: StoreError?) -> Bool {
    if case .conflict? = error { return true }
    return false
}

// MARK: - Schema

@Test func migrateTwiceIsIdempotent() async throws {
    try await withFreshStore { store in
        try await store.migrate()
        try await store.migrate()
        let rows = try await store.executeForTesting("SELECT count(*) AS n, max(version) AS v FROM schema_migrations")
        #expect(rows.first?["n"] == String(SQLiteMigrations.all.count))
        #expect(rows.first?["v"] == String(SQLiteMigrations.latestVersion))
        #expect(try await store.hasOrganizations() == false)
        #expect(try await store.changeSequence() == 0)
        #expect(try await allAudit(store).isEmpty)
    }
}

@Test func refusesSchemaNewerThanBinary() async throws {
    try await withTemporaryDirectory { dir in
        let path = dir + "/gatehouse.db"
        try await withStore(path: path) { store in
            _ = try await store.executeForTesting(
                "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (999, 0)")
        }
        let store = try await SQLiteStore.open(path: path)
        let error = await #expect(throws: StoreError.self) { try await store.migrate() }
        #expect(error == .schemaTooNew(found: 999, supported: SQLiteMigrations.latestVersion))
        try await store.close()
    }
}

@Test func fileIsOwnerOnlyAndPragmasAreSet() async throws {
    try await withTemporaryDirectory { dir in
        let path = dir + "/gatehouse.db"
        try await withStore(path: path) { store in
            let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
            #expect(mode.map { $0 & 0o777 } == 0o600)
            #expect(try await store.pragmaValue(.journalMode) == "wal")
            #expect(try await store.pragmaValue(.secureDelete) == "1")
            #expect(try await store.pragmaValue(.foreignKeys) == "1")
            #expect(try await store.pragmaValue(.busyTimeout) == "30000")
        }
        // An existing file with loose permissions is tightened on open.
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        try await withStore(path: path) { _ in }
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode.map { $0 & 0o777 } == 0o600)
    }
}

@Test func auditLogRefusesUpdateAndDelete() async throws {
    try await withTwoOrgs { store in
        await #expect(throws: StoreError.self) {
            _ = try await store.executeForTesting("DELETE FROM audit_log")
        }
        await #expect(throws: StoreError.self) {
            _ = try await store.executeForTesting("UPDATE audit_log SET details = '{}'")
        }
        let entries = try await allAudit(store)
        #expect(entries.count == 2)
    }
}

@Test func closedStoreReportsUnavailable() async throws {
    try await withTemporaryDirectory { dir in
        let store = try await SQLiteStore.open(path: dir + "/gatehouse.db")
        try await store.migrate()
        try await store.close()
        try await store.close()  // harmless
        let error = await #expect(throws: StoreError.self) { _ = try await store.changeSequence() }
        guard case .unavailable? = error else {
            Issue.record("expected .unavailable, got \(String(describing: error))")
            return
        }
    }
}

// MARK: - Organizations

@Test func createOrganizationReadsBackEqual() async throws {
    try await withFreshStore { store in
        let org = makeOrg("o1")
        var key = makeKey("k1", org: "o1", kind: .api)
        key.description = "owner key"
        key.expiresAt = date(ms: t0 + 86_400_000)
        key.allowedModels = ["gpt-4o", "claude-sonnet"]
        key.allowedIPs = ["10.0.0.0/8", "::1"]
        key.rateLimits = [RateLimit(metric: .requests, limit: 60, windowSeconds: 60)]
        key.budget = Budget(limitUSD: 12.5, period: .month)

        try await store.createOrganization(org, firstKey: key, audit: draft("o1", "org.create"))

        #expect(try await store.hasOrganizations())
        #expect(try await store.organizations() == [org])
        #expect(try await store.gateKey(orgID: "o1", id: "k1") == key)
        #expect(try await store.allGateKeys() == [key])
        let audit = try await allAudit(store)
        #expect(audit.count == 1)
        #expect(audit.first?.action == "org.create")
    }
}

@Test func createOrganizationIsAtomic() async throws {
    try await withTwoOrgs { store in
        let before = try await store.changeSequence()
        // The new organization is valid, but its first key's id is taken: nothing may remain.
        let error = await #expect(throws: StoreError.self) {
            try await store.createOrganization(
                makeOrg("o3"), firstKey: makeKey("o1-owner", org: "o3"), audit: draft("o3", "org.create"))
        }
        #expect(isConflict(error))
        #expect(try await store.organizations().map(\.id) == ["o1", "o2"])
        #expect(try await store.changeSequence() == before)
        let entries = try await allAudit(store)
        #expect(entries.count == 2)
    }
}

@Test func replaceWrappedDataKeysIsAllOrNothing() async throws {
    try await withTwoOrgs { store in
        let newKey = Vault.WrappedDataKey(envelope: Data("rotated".utf8))
        let error = await #expect(throws: StoreError.self) {
            try await store.replaceWrappedDataKeys(["o1": newKey, "nope": newKey], audit: draft("o1", "master.rotate"))
        }
        #expect(isConflict(error))
        #expect(try await store.organizations().map(\.wrappedDataKey) == [makeOrg("o1"), makeOrg("o2")].map(\.wrappedDataKey))

        let before = try await store.changeSequence()
        try await store.replaceWrappedDataKeys(["o1": newKey, "o2": newKey], audit: draft("o1", "master.rotate"))
        #expect(try await store.organizations().map(\.wrappedDataKey) == [newKey, newKey])
        #expect(try await store.changeSequence() > before)
        #expect(try await allAudit(store).last?.action == "master.rotate")
    }
}

// MARK: - Provider keys

@Test func providerKeyCRUDIsScopedByOrganization() async throws {
    try await withTwoOrgs { store in
        var pk1 = makeProviderKey("pk1", org: "o1", at: t0)
        pk1.provider = .openaiCompatible
        pk1.baseURL = "http://localhost:11434"
        let pk2 = makeProviderKey("pk2", org: "o1", at: t0 + 1)
        let other = makeProviderKey("pk3", org: "o2")
        for record in [pk1, pk2, other] {
            try await store.insertProviderKey(record, audit: draft(record.orgID, "provider_key.create"))
        }

        #expect(try await store.providerKeys(orgID: "o1") == [pk1, pk2])
        #expect(try await store.providerKeys(orgID: "o2") == [other])
        #expect(try await store.allProviderKeys().count == 3)
        #expect(try await store.providerKey(orgID: "o1", id: "pk1") == pk1)
        // Another organization's id is invisible and cannot be deleted.
        #expect(try await store.providerKey(orgID: "o1", id: "pk3") == nil)
        #expect(try await store.deleteProviderKey(orgID: "o1", id: "pk3", at: date(ms: t0), audit: draft("o1", "x")) == false)
        #expect(try await store.providerKey(orgID: "o2", id: "pk3") == other)

        #expect(try await store.deleteProviderKey(orgID: "o1", id: "pk1", at: date(ms: t0), audit: draft("o1", "del")))
        #expect(try await store.providerKey(orgID: "o1", id: "pk1") == nil)
        #expect(try await store.providerKeys(orgID: "o1") == [pk2])
        #expect(try await store.deleteProviderKey(orgID: "o1", id: "pk1", at: date(ms: t0), audit: draft("o1", "del")) == false)
    }
}

@Test func insertIntoUnknownOrganizationIsAConflict() async throws {
    try await withTwoOrgs { store in
        let error = await #expect(throws: StoreError.self) {
            try await store.insertProviderKey(makeProviderKey("pk", org: "ghost"), audit: draft("ghost", "x"))
        }
        #expect(isConflict(error))
        let gateError = await #expect(throws: StoreError.self) {
            try await store.insertGateKey(makeKey("k", org: "ghost"), audit: draft("ghost", "x"))
        }
        #expect(isConflict(gateError))
        let entries = try await allAudit(store)
        #expect(entries.count == 2)
    }
}

@Test func deleteProviderKeyRevokesBoundProxyKeys() async throws {
    try await withTwoOrgs { store in
        for pk in ["pk1", "pk2"] {
            try await store.insertProviderKey(makeProviderKey(pk, org: "o1"), audit: draft("o1", "provider_key.create"))
        }
        var earlier = makeKey("p-old", org: "o1", kind: .proxy, providerKeyID: "pk1")
        earlier.revokedAt = date(ms: t0 + 5)
        let keys = [
            makeKey("p-a", org: "o1", kind: .proxy, providerKeyID: "pk1"),
            makeKey("p-b", org: "o1", kind: .proxy, providerKeyID: "pk1"),
            earlier,
            makeKey("p-c", org: "o1", kind: .proxy, providerKeyID: "pk2"),
        ]
        for key in keys {
            try await store.insertGateKey(key, audit: draft("o1", "key.create"))
        }

        let at = date(ms: t0 + 1_000)
        #expect(try await store.deleteProviderKey(orgID: "o1", id: "pk1", at: at, audit: draft("o1", "provider_key.delete")))

        let a = try #require(try await store.gateKey(orgID: "o1", id: "p-a"))
        let b = try #require(try await store.gateKey(orgID: "o1", id: "p-b"))
        #expect(a.revokedAt == at && b.revokedAt == at)
        #expect(a.providerKeyID == "pk1")  // kept so the UI can show what it was bound to
        #expect(try await store.gateKey(orgID: "o1", id: "p-old")?.revokedAt == date(ms: t0 + 5))
        #expect(try await store.gateKey(orgID: "o1", id: "p-c")?.revokedAt == nil)
        #expect(try await store.gateKey(orgID: "o1", id: "o1-owner")?.revokedAt == nil)
    }
}

// MARK: - Gatehouse keys

@Test func gateKeysListByKindUpdateAndRevoke() async throws {
    try await withTwoOrgs { store in
        try await store.insertProviderKey(makeProviderKey("pk1", org: "o1"), audit: draft("o1", "provider_key.create"))
        let read = makeKey("r1", org: "o1", kind: .read, at: t0 + 1)
        let proxy = makeKey("p1", org: "o1", kind: .proxy, providerKeyID: "pk1", at: t0 + 2)
        try await store.insertGateKey(read, audit: draft("o1", "key.create"))
        try await store.insertGateKey(proxy, audit: draft("o1", "key.create"))

        #expect(try await store.gateKeys(orgID: "o1", kind: .proxy) == [proxy])
        #expect(try await store.gateKeys(orgID: "o1", kind: .read) == [read])
        #expect(try await store.gateKeys(orgID: "o1", kind: nil).map(\.id) == ["o1-owner", "r1", "p1"])
        #expect(try await store.gateKeys(orgID: "o2", kind: nil).map(\.id) == ["o2-owner"])
        #expect(try await store.gateKey(orgID: "o2", id: "p1") == nil)

        // Update changes exactly the mutable fields.
        var changed = proxy
        changed.name = "renamed"
        changed.description = "for CI"
        changed.expiresAt = date(ms: t0 + 10_000)
        changed.allowedModels = []
        changed.allowedIPs = ["192.168.1.0/24"]
        changed.rateLimits = [
            RateLimit(metric: .tokens, limit: 10_000, windowSeconds: 3600),
            RateLimit(metric: .costUSD, limit: 1.5, windowSeconds: 86_400),
        ]
        changed.budget = Budget(limitUSD: 100, period: .total)
        var attempt = changed
        attempt.hash = Data(repeating: 0, count: 32)
        attempt.kind = .api
        attempt.providerKeyID = "other"
        attempt.createdAt = date(ms: 1)
        attempt.revokedAt = date(ms: 2)
        #expect(try await store.updateGateKey(attempt, audit: draft("o1", "key.update")))
        #expect(try await store.gateKey(orgID: "o1", id: "p1") == changed)

        // Another org's id, or an unknown id, is not updated.
        var foreign = changed
        foreign.orgID = "o2"
        #expect(try await store.updateGateKey(foreign, audit: draft("o2", "key.update")) == false)
        var unknown = changed
        unknown.id = "nope"
        #expect(try await store.updateGateKey(unknown, audit: draft("o1", "key.update")) == false)

        // Revoke.
        let at = date(ms: t0 + 20_000)
        #expect(try await store.revokeGateKey(orgID: "o2", id: "p1", at: at, audit: draft("o2", "key.revoke")) == .notFound)
        #expect(try await store.revokeGateKey(orgID: "o1", id: "nope", at: at, audit: draft("o1", "key.revoke")) == .notFound)
        #expect(try await store.revokeGateKey(orgID: "o1", id: "p1", at: at, audit: draft("o1", "key.revoke")) == .revoked)
        #expect(try await store.gateKey(orgID: "o1", id: "p1")?.revokedAt == at)
        let auditCount = try await allAudit(store).count
        let sequence = try await store.changeSequence()
        #expect(try await store.revokeGateKey(orgID: "o1", id: "p1", at: date(ms: t0 + 30_000), audit: draft("o1", "key.revoke")) == .alreadyRevoked)
        #expect(try await store.gateKey(orgID: "o1", id: "p1")?.revokedAt == at)
        #expect(try await allAudit(store).count == auditCount)
        #expect(try await store.changeSequence() == sequence)
    }
}

// MARK: - Change following

@Test func everyMutationBumpsChangeSequence() async throws {
    try await withFreshStore { store in
        var last = try await store.changeSequence()
        #expect(last == 0)
        func expectBump(_ what: Comment) async throws {
            let now = try await store.changeSequence()
            #expect(now > last, what)
            last = now
        }
        func expectNoBump(_ what: Comment) async throws {
            #expect(try await store.changeSequence() == last, what)
        }

        try await store.createOrganization(makeOrg("o1"), firstKey: makeKey("k0", org: "o1"), audit: draft("o1", "a"))
        try await expectBump("createOrganization")
        try await store.replaceWrappedDataKeys(["o1": .init(envelope: Data([9]))], audit: draft("o1", "a"))
        try await expectBump("replaceWrappedDataKeys")
        try await store.insertProviderKey(makeProviderKey("pk", org: "o1"), audit: draft("o1", "a"))
        try await expectBump("insertProviderKey")
        try await store.insertGateKey(makeKey("k1", org: "o1", kind: .proxy, providerKeyID: "pk"), audit: draft("o1", "a"))
        try await expectBump("insertGateKey")
        var renamed = makeKey("k1", org: "o1", kind: .proxy, providerKeyID: "pk")
        renamed.name = "renamed"
        _ = try await store.updateGateKey(renamed, audit: draft("o1", "a"))
        try await expectBump("updateGateKey")
        _ = try await store.revokeGateKey(orgID: "o1", id: "k0", at: date(ms: t0), audit: draft("o1", "a"))
        try await expectBump("revokeGateKey")
        _ = try await store.deleteProviderKey(orgID: "o1", id: "pk", at: date(ms: t0), audit: draft("o1", "a"))
        try await expectBump("deleteProviderKey")

        // Audit-only entries and no-op outcomes change nothing other processes cache.
        try await store.appendAudit(draft("o1", "login.failed"))
        try await expectNoBump("appendAudit")
        _ = try await store.revokeGateKey(orgID: "o1", id: "k0", at: date(ms: t0), audit: draft("o1", "a"))
        _ = try await store.deleteProviderKey(orgID: "o1", id: "pk", at: date(ms: t0), audit: draft("o1", "a"))
        _ = try await store.updateGateKey(makeKey("nope", org: "o1"), audit: draft("o1", "a"))
        try await expectNoBump("no-op outcomes")
    }
}

@Test func secondInstanceSeesChangesOfTheFirst() async throws {
    try await withTemporaryDirectory { dir in
        let path = dir + "/gatehouse.db"
        try await withStore(path: path) { server in
            try await withStore(path: path) { cli in
                #expect(try await server.changeSequence() == 0)
                try await cli.createOrganization(makeOrg("o1"), firstKey: makeKey("k0", org: "o1"), audit: draft("o1", "org.create"))
                let afterCreate = try await server.changeSequence()
                #expect(afterCreate > 0)
                #expect(try await server.gateKey(orgID: "o1", id: "k0") == makeKey("k0", org: "o1"))

                _ = try await cli.revokeGateKey(orgID: "o1", id: "k0", at: date(ms: t0), audit: draft("o1", "key.revoke"))
                #expect(try await server.changeSequence() > afterCreate)
                #expect(try await server.gateKey(orgID: "o1", id: "k0")?.isRevoked == true)

                // Both processes extend the same chain.
                try await server.appendAudit(draft("o1", "access"))
                let entries = try await allAudit(cli)
                #expect(entries.map(\.sequence) == [1, 2, 3])
                #expect(AuditChain.firstBroken(entries) == nil)
            }
        }
    }
}

// MARK: - Audit

@Test func auditEntriesChainAcrossMutationsAndOrganizations() async throws {
    try await withTwoOrgs { store in
        try await store.appendAudit(draft("o1", "login.failed"))
        try await store.insertProviderKey(makeProviderKey("pk", org: "o2"), audit: draft("o2", "provider_key.create", target: "pk"))
        try await store.insertGateKey(makeKey("k", org: "o1"), audit: draft("o1", "key.create", target: "k"))
        try await store.appendAudit(AuditDraft(
            orgID: "", actorKind: "anonymous", actorID: "", action: "request.denied", outcome: .denied,
            details: #"{"reason":"bad key"}"#))
        _ = try await store.revokeGateKey(orgID: "o1", id: "k", at: date(ms: t0), audit: draft("o1", "key.revoke"))

        let entries = try await allAudit(store)
        #expect(entries.map(\.sequence) == Array(1...7))
        #expect(entries.first?.prevHash == AuditChain.genesis)
        #expect(AuditChain.firstBroken(entries) == nil)
        #expect(entries[5].outcome == .denied && entries[5].details == #"{"reason":"bad key"}"#)

        // Paging and org filtering.
        #expect(try await store.auditEntries(orgID: nil, after: 2, limit: 3).map(\.sequence) == [3, 4, 5])
        #expect(try await store.auditEntries(orgID: "o1", after: 0, limit: 100).map(\.sequence) == [1, 3, 5, 7])
        #expect(try await store.auditEntries(orgID: "o1", after: 3, limit: 2).map(\.sequence) == [5, 7])
        #expect(try await store.auditEntries(orgID: nil, after: 7, limit: 10).isEmpty)
        #expect(try await store.auditEntries(orgID: nil, after: 0, limit: 0).isEmpty)

        // A tampered entry is detected (the chain is over what was stored).
        var tampered = entries
        tampered[3].details = #"{"forged":true}"#
        #expect(AuditChain.firstBroken(tampered) == 4)
    }
}

@Test func failedChangeWritesNoAuditEntryAndNoChange() async throws {
    try await withTwoOrgs { store in
        try await store.insertGateKey(makeKey("k", org: "o1"), audit: draft("o1", "key.create"))
        let auditBefore = try await allAudit(store)
        let sequenceBefore = try await store.changeSequence()
        let changeRowsBefore = try await store.executeForTesting("SELECT count(*) AS n FROM change_log")

        let error = await #expect(throws: StoreError.self) {
            try await store.insertGateKey(makeKey("k", org: "o1"), audit: draft("o1", "key.create"))
        }
        #expect(isConflict(error))
        // The message names the problem, not the row.
        #expect(error.map { !String(describing: $0).contains("key k") } == true)

        #expect(try await allAudit(store) == auditBefore)
        #expect(try await store.changeSequence() == sequenceBefore)
        #expect(try await store.executeForTesting("SELECT count(*) AS n FROM change_log") == changeRowsBefore)

        // The store is still usable and the chain continues without a gap.
        try await store.appendAudit(draft("o1", "after"))
        let entries = try await allAudit(store)
        #expect(entries.map(\.sequence) == Array(1...Int64(auditBefore.count + 1)))
        #expect(AuditChain.firstBroken(entries) == nil)
    }
}

// MARK: - Concurrency

@Test func concurrentMutationsAllSucceedAndChain() async throws {
    try await withTemporaryDirectory { dir in
        let path = dir + "/gatehouse.db"
        try await withStore(path: path) { first in
            try await withStore(path: path) { second in
                try await first.createOrganization(makeOrg("o1"), firstKey: makeKey("k0", org: "o1"), audit: draft("o1", "org.create"))

                // 50 parallel inserts on one store, plus 20 through a second connection
                // (another process's view) competing for the SQLite write lock.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for i in 0..<50 {
                        group.addTask {
                            try await first.insertGateKey(makeKey("a\(i)", org: "o1"), audit: draft("o1", "key.create"))
                        }
                    }
                    for i in 0..<20 {
                        group.addTask {
                            try await second.insertGateKey(makeKey("b\(i)", org: "o1"), audit: draft("o1", "key.create"))
                            try await second.appendAudit(draft("o1", "access"))
                        }
                    }
                    try await group.waitForAll()
                }

                #expect(try await first.gateKeys(orgID: "o1", kind: nil).count == 71)
                let entries = try await allAudit(first)
                #expect(entries.map(\.sequence) == Array(1...91))
                #expect(AuditChain.firstBroken(entries) == nil)
                #expect(try await second.changeSequence() == 2 + 70)
            }
        }
    }
}

@Test func emptyBlobsRoundTrip() async throws {
    try await withFreshStore { store in
        let org = Organization(
            id: "o1", name: "", createdAt: date(ms: 0), wrappedDataKey: Vault.WrappedDataKey(envelope: Data()))
        var key = makeKey("k", org: "o1")
        key.hash = Data()
        try await store.createOrganization(org, firstKey: key, audit: draft("o1", "org.create"))
        #expect(try await store.organizations() == [org])
        #expect(try await store.gateKey(orgID: "o1", id: "k") == key)
    }
}
