import Foundation
import GatehouseCore
@testable import GatehouseStore
import Testing

// MARK: - Fixtures

/// A date that survives the store's millisecond storage exactly.
private func date(ms: Int64) -> Date { Date(timeIntervalSince1970: Double(ms) / 1000) }

private let t0: Int64 = 1_700_000_000_123
private let hour: Int64 = 3_600_000

private func makeOrg(_ id: String) -> Organization {
    Organization(
        id: id, name: "Org \(id)", createdAt: date(ms: t0),
        wrappedDataKey: Vault.WrappedDataKey(envelope: Data("wrapped-\(id)".utf8)))
}

private func makeOwnerKey(org: String) -> GateKeyRecord {
    GateKeyRecord(
        id: "\(org)-owner", orgID: org, kind: .api, name: "owner", hash: Data(repeating: 0xAB, count: 32),
        createdAt: date(ms: t0))
}

private func makeUser(_ id: String, org: String = "o1", role: Role = .member, at ms: Int64 = t0) -> UserRecord {
    UserRecord(
        id: id, orgID: org, email: "\(id)@example.com", role: role,
        passwordHash: "$2b$12$abcdefghijklmnopqrstuv\(id)", createdAt: date(ms: ms))
}

private func makeSession(_ id: String, user: String, org: String = "o1", at ms: Int64 = t0) -> SessionRecord {
    SessionRecord(
        id: id, userID: user, orgID: org, createdAt: date(ms: ms), lastSeenAt: date(ms: ms),
        expiresAt: date(ms: ms + 12 * hour))
}

private func draft(_ org: String, _ action: String, target: String = "") -> AuditDraft {
    AuditDraft(orgID: org, actorKind: "user", actorID: "u-1", clientIP: "127.0.0.1", action: action, target: target)
}

private func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("gatehouse-access-tests-\(UUID().uuidString)", isDirectory: true)
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

private func createTwoOrgs(_ store: SQLiteStore) async throws {
    for org in ["o1", "o2"] {
        try await store.createOrganization(makeOrg(org), firstKey: makeOwnerKey(org: org), audit: draft(org, "org.create"))
    }
}

/// A fresh, migrated store with organizations "o1" and "o2".
private func withTwoOrgs<T>(_ body: (SQLiteStore) async throws -> T) async throws -> T {
    try await withTemporaryDirectory { dir in
        try await withStore(path: dir + "/gatehouse.db") { store in
            try await createTwoOrgs(store)
            return try await body(store)
        }
    }
}

private func allAudit(_ store: SQLiteStore) async throws -> [AuditEntry] {
    try await store.auditEntries(orgID: nil, after: 0, limit: 100_000)
}

private func owners(_ store: SQLiteStore, org: String = "o1") async throws -> [String] {
    try await store.users(orgID: org).filter { $0.role == .owner }.map(\.id)
}

@Suite("Access store")
struct AccessStoreTests {
    // MARK: Users

    @Test func userCRUDIsScopedByOrganization() async throws {
        try await withTwoOrgs { store in
            let alice = makeUser("alice", role: .owner, at: t0)
            let bob = makeUser("bob", role: .member, at: t0 + 1)
            let carol = makeUser("carol", org: "o2", role: .owner, at: t0)
            for user in [bob, alice, carol] {
                try await store.insertUser(user, audit: draft(user.orgID, "user.create", target: user.id))
            }

            #expect(try await store.users(orgID: "o1") == [alice, bob])
            #expect(try await store.users(orgID: "o2") == [carol])
            #expect(try await store.users(orgID: "nope").isEmpty)
            #expect(try await store.user(orgID: "o1", id: "bob") == bob)
            #expect(try await store.user(orgID: "o2", id: "bob") == nil)
            #expect(try await store.user(email: "carol@example.com") == carol)
            #expect(try await store.user(email: "Carol@example.com") == nil)  // exact match on the stored form
            #expect(try await store.user(email: "nobody@example.com") == nil)

            let auditBefore = try await allAudit(store)
            let sequenceBefore = try await store.changeSequence()
            // Another organization's id is unknown: nothing changes, nothing is audited.
            #expect(try await store.updateUserRole(orgID: "o2", id: "bob", role: .admin, audit: draft("o2", "x")) == .notFound)
            #expect(try await store.deleteUser(orgID: "o2", id: "bob", audit: draft("o2", "x")) == .notFound)
            #expect(try await store.updateUserRole(orgID: "o1", id: "ghost", role: .admin, audit: draft("o1", "x")) == .notFound)
            #expect(try await store.deleteUser(orgID: "o1", id: "ghost", audit: draft("o1", "x")) == .notFound)
            #expect(try await allAudit(store) == auditBefore)
            #expect(try await store.changeSequence() == sequenceBefore)
            #expect(try await store.user(orgID: "o1", id: "bob") == bob)

            #expect(try await store.updateUserRole(orgID: "o1", id: "bob", role: .admin, audit: draft("o1", "user.role")) == .done)
            var promoted = bob
            promoted.role = .admin
            #expect(try await store.user(orgID: "o1", id: "bob") == promoted)
            #expect(try await store.user(email: "bob@example.com") == promoted)

            #expect(try await store.deleteUser(orgID: "o1", id: "bob", audit: draft("o1", "user.delete")) == .done)
            #expect(try await store.user(orgID: "o1", id: "bob") == nil)
            #expect(try await store.user(email: "bob@example.com") == nil)
            #expect(try await store.users(orgID: "o1") == [alice])
            #expect(try await store.users(orgID: "o2") == [carol])
            #expect(try await allAudit(store).suffix(2).map(\.action) == ["user.role", "user.delete"])
        }
    }

    @Test func duplicateEmailIsAConflictWithoutAuditEntry() async throws {
        try await withTwoOrgs { store in
            try await store.insertUser(makeUser("alice", role: .owner), audit: draft("o1", "user.create"))
            let auditBefore = try await allAudit(store)
            let sequenceBefore = try await store.changeSequence()

            var sameOrg = makeUser("alice2")
            sameOrg.email = "alice@example.com"
            var otherOrg = makeUser("alice3", org: "o2")
            otherOrg.email = "alice@example.com"
            for user in [sameOrg, otherOrg] {
                let error = await #expect(throws: StoreError.self) {
                    try await store.insertUser(user, audit: draft(user.orgID, "user.create"))
                }
                guard case .conflict(let message)? = error else {
                    Issue.record("expected .conflict, got \(String(describing: error))")
                    continue
                }
                #expect(!message.contains("alice"))
            }

            // A taken id and an unknown organization are conflicts too.
            await #expect(throws: StoreError.self) {
                try await store.insertUser(makeUser("alice"), audit: draft("o1", "user.create"))
            }
            await #expect(throws: StoreError.self) {
                try await store.insertUser(makeUser("dave", org: "o9"), audit: draft("o9", "user.create"))
            }

            #expect(try await allAudit(store) == auditBefore)
            #expect(try await store.changeSequence() == sequenceBefore)
            #expect(try await store.users(orgID: "o1").map(\.id) == ["alice"])
            #expect(try await store.users(orgID: "o2").isEmpty)
        }
    }

    // MARK: Last owner

    @Test func lastOwnerCannotBeDemotedOrDeleted() async throws {
        try await withTwoOrgs { store in
            try await store.insertUser(makeUser("alice", role: .owner), audit: draft("o1", "user.create"))
            try await store.insertUser(makeUser("bob", role: .owner, at: t0 + 1), audit: draft("o1", "user.create"))
            try await store.insertUser(makeUser("eve", role: .admin, at: t0 + 2), audit: draft("o1", "user.create"))
            // Another organization's owner does not count for o1.
            try await store.insertUser(makeUser("carol", org: "o2", role: .owner), audit: draft("o2", "user.create"))

            #expect(try await store.updateUserRole(orgID: "o1", id: "bob", role: .admin, audit: draft("o1", "user.role")) == .done)
            #expect(try await owners(store) == ["alice"])

            let auditBefore = try await allAudit(store)
            let sequenceBefore = try await store.changeSequence()
            for role in [Role.admin, .member, .viewer] {
                #expect(try await store.updateUserRole(orgID: "o1", id: "alice", role: role, audit: draft("o1", "x")) == .lastOwner)
            }
            #expect(try await store.deleteUser(orgID: "o1", id: "alice", audit: draft("o1", "x")) == .lastOwner)
            #expect(try await allAudit(store) == auditBefore)
            #expect(try await store.changeSequence() == sequenceBefore)
            #expect(try await store.user(orgID: "o1", id: "alice")?.role == .owner)

            // Keeping the role, and changing or deleting non-owners, is always fine.
            #expect(try await store.updateUserRole(orgID: "o1", id: "alice", role: .owner, audit: draft("o1", "user.role")) == .done)
            #expect(try await store.updateUserRole(orgID: "o1", id: "eve", role: .viewer, audit: draft("o1", "user.role")) == .done)
            #expect(try await store.deleteUser(orgID: "o1", id: "eve", audit: draft("o1", "user.delete")) == .done)

            // With a second owner again, the first can go.
            #expect(try await store.updateUserRole(orgID: "o1", id: "bob", role: .owner, audit: draft("o1", "user.role")) == .done)
            #expect(try await store.deleteUser(orgID: "o1", id: "alice", audit: draft("o1", "user.delete")) == .done)
            #expect(try await owners(store) == ["bob"])
            #expect(try await store.deleteUser(orgID: "o1", id: "bob", audit: draft("o1", "x")) == .lastOwner)
            #expect(try await owners(store, org: "o2") == ["carol"])
        }
    }

    /// Two owners demoted at the same time: exactly one demotion wins, the other sees the last
    /// owner (the owner count is checked inside the demotion's transaction).
    @Test func concurrentDemotionsKeepOneOwner() async throws {
        try await withTwoOrgs { store in
            for round in 0..<20 {
                let a = "a\(round)", b = "b\(round)"
                try await store.insertUser(makeUser(a, role: .owner), audit: draft("o1", "user.create"))
                try await store.insertUser(makeUser(b, role: .owner), audit: draft("o1", "user.create"))
                // Leave exactly these two owners.
                for id in try await owners(store) where id != a && id != b {
                    #expect(try await store.deleteUser(orgID: "o1", id: id, audit: draft("o1", "user.delete")) == .done)
                }
                #expect(try await owners(store).sorted() == [a, b])

                async let demoteA = store.updateUserRole(orgID: "o1", id: a, role: .admin, audit: draft("o1", "user.role"))
                async let demoteB = store.updateUserRole(orgID: "o1", id: b, role: .member, audit: draft("o1", "user.role"))
                let results = try await [demoteA, demoteB]
                #expect(results.filter { $0 == .done }.count == 1, "round \(round): \(results)")
                #expect(results.filter { $0 == .lastOwner }.count == 1, "round \(round): \(results)")
                #expect(try await owners(store).count == 1)
            }
            let entries = try await allAudit(store)
            #expect(AuditChain.firstBroken(entries) == nil)
            #expect(entries.map(\.sequence) == Array(1...Int64(entries.count)))
        }
    }

    @Test func concurrentDeleteAndDemotionKeepOneOwner() async throws {
        try await withTwoOrgs { store in
            try await store.insertUser(makeUser("alice", role: .owner), audit: draft("o1", "user.create"))
            try await store.insertUser(makeUser("bob", role: .owner), audit: draft("o1", "user.create"))
            async let deleteAlice = store.deleteUser(orgID: "o1", id: "alice", audit: draft("o1", "user.delete"))
            async let demoteBob = store.updateUserRole(orgID: "o1", id: "bob", role: .viewer, audit: draft("o1", "user.role"))
            let results = try await [deleteAlice, demoteBob]
            #expect(results.sorted { "\($0)" < "\($1)" } == [.done, .lastOwner])
            #expect(try await owners(store).count == 1)
        }
    }

    // MARK: Sessions

    @Test func sessionsInsertGetTouchAndDelete() async throws {
        try await withTwoOrgs { store in
            try await store.insertUser(makeUser("alice", role: .owner), audit: draft("o1", "user.create"))
            let session = makeSession("s1", user: "alice")
            try await store.insertSession(session, audit: draft("o1", "login"))
            #expect(try await store.session(id: "s1") == session)
            #expect(try await store.session(id: "s2") == nil)

            // Touching writes neither an audit entry nor a change.
            let auditBefore = try await allAudit(store)
            let sequenceBefore = try await store.changeSequence()
            try await store.touchSession(id: "s1", at: date(ms: t0 + hour))
            var touched = session
            touched.lastSeenAt = date(ms: t0 + hour)
            #expect(try await store.session(id: "s1") == touched)
            // Never backward; an unknown id is ignored.
            try await store.touchSession(id: "s1", at: date(ms: t0 + 1))
            try await store.touchSession(id: "unknown", at: date(ms: t0 + hour))
            #expect(try await store.session(id: "s1") == touched)
            #expect(try await allAudit(store) == auditBefore)
            #expect(try await store.changeSequence() == sequenceBefore)

            // Logout: audited and announced.
            try await store.deleteSession(id: "s1", audit: draft("o1", "logout"))
            #expect(try await store.session(id: "s1") == nil)
            #expect(try await allAudit(store).count == auditBefore.count + 1)
            #expect(try await allAudit(store).last?.action == "logout")
            #expect(try await store.changeSequence() > sequenceBefore)

            // Expiry cleanup: silent.
            try await store.insertSession(makeSession("s2", user: "alice"), audit: draft("o1", "login"))
            let auditMid = try await allAudit(store)
            let sequenceMid = try await store.changeSequence()
            try await store.deleteSession(id: "s2", audit: nil)
            #expect(try await store.session(id: "s2") == nil)
            // Unknown sessions write nothing either.
            try await store.deleteSession(id: "s2", audit: draft("o1", "logout"))
            #expect(try await allAudit(store) == auditMid)
            #expect(try await store.changeSequence() == sequenceMid)
        }
    }

    @Test func sessionMustReferenceAUserOfItsOrganization() async throws {
        try await withTwoOrgs { store in
            try await store.insertUser(makeUser("alice", role: .owner), audit: draft("o1", "user.create"))
            let auditBefore = try await allAudit(store)
            for bad in [makeSession("s1", user: "ghost"), makeSession("s2", user: "alice", org: "o2")] {
                let error = await #expect(throws: StoreError.self) {
                    try await store.insertSession(bad, audit: draft(bad.orgID, "login"))
                }
                guard case .conflict? = error else {
                    Issue.record("expected .conflict, got \(String(describing: error))")
                    continue
                }
            }
            try await store.insertSession(makeSession("s3", user: "alice"), audit: draft("o1", "login"))
            await #expect(throws: StoreError.self) {
                try await store.insertSession(makeSession("s3", user: "alice"), audit: draft("o1", "login"))
            }
            #expect(try await allAudit(store).count == auditBefore.count + 1)
        }
    }

    @Test func deletingAUserDeletesTheirSessions() async throws {
        try await withTwoOrgs { store in
            try await store.insertUser(makeUser("alice", role: .owner), audit: draft("o1", "user.create"))
            try await store.insertUser(makeUser("bob"), audit: draft("o1", "user.create"))
            try await store.insertUser(makeUser("carol"), audit: draft("o1", "user.create"))
            for (id, user) in [("s1", "bob"), ("s2", "bob"), ("s3", "alice"), ("s4", "carol")] {
                try await store.insertSession(makeSession(id, user: user), audit: draft("o1", "login"))
            }
            #expect(try await store.deleteUser(orgID: "o1", id: "bob", audit: draft("o1", "user.delete")) == .done)
            #expect(try await store.session(id: "s1") == nil)
            #expect(try await store.session(id: "s2") == nil)
            #expect(try await store.session(id: "s3") != nil)

            // The schema cascades too, whoever deletes the row.
            _ = try await store.executeForTesting("DELETE FROM users WHERE id = 'carol'")
            #expect(try await store.session(id: "s4") == nil)
            #expect(try await store.session(id: "s3") != nil)
        }
    }

    // MARK: Settings

    @Test func settingsDefaultUpsertAndAll() async throws {
        try await withTwoOrgs { store in
            #expect(try await store.settings(orgID: "o1") == OrgSettings())
            #expect(try await store.settings(orgID: "nope") == OrgSettings())
            #expect(try await store.allSettings() == ["o1": OrgSettings(), "o2": OrgSettings()])

            var changed = OrgSettings()
            changed.apiIPAllowlist = ["10.0.0.0/8", "::1/128"]
            changed.trustedProxies = ["192.0.2.1"]
            changed.retentionDays = 30
            changed.logBodies = false
            try await store.updateSettings(orgID: "o1", settings: changed, audit: draft("o1", "settings.update"))
            #expect(try await store.settings(orgID: "o1") == changed)
            #expect(try await store.settings(orgID: "o2") == OrgSettings())

            changed.gatewayIPAllowlist = ["203.0.113.0/24"]
            changed.retentionDays = 730
            try await store.updateSettings(orgID: "o1", settings: changed, audit: draft("o1", "settings.update"))
            #expect(try await store.settings(orgID: "o1") == changed)
            #expect(try await store.allSettings() == ["o1": changed, "o2": OrgSettings()])
            let rows = try await store.executeForTesting("SELECT org_id, settings FROM org_settings")
            #expect(rows.count == 1)
            #expect(rows.first?["settings"]?.contains("\"retention_days\":730") == true)

            let auditBefore = try await allAudit(store)
            let error = await #expect(throws: StoreError.self) {
                try await store.updateSettings(orgID: "o9", settings: changed, audit: draft("o9", "settings.update"))
            }
            guard case .conflict? = error else {
                Issue.record("expected .conflict, got \(String(describing: error))")
                return
            }
            #expect(try await allAudit(store) == auditBefore)
        }
    }

    // MARK: Audit and change following

    @Test func mutationsChainAuditAndBumpChangeSequence() async throws {
        try await withTwoOrgs { store in
            var last = try await store.changeSequence()
            func expectBump(_ what: Comment) async throws {
                let now = try await store.changeSequence()
                #expect(now > last, what)
                last = now
            }
            func expectNoBump(_ what: Comment) async throws {
                #expect(try await store.changeSequence() == last, what)
            }
            let auditStart = try await allAudit(store).count

            try await store.insertUser(makeUser("alice", role: .owner), audit: draft("o1", "user.create"))
            try await expectBump("insertUser")
            try await store.insertUser(makeUser("bob", role: .owner), audit: draft("o1", "user.create"))
            try await expectBump("insertUser")
            _ = try await store.updateUserRole(orgID: "o1", id: "bob", role: .admin, audit: draft("o1", "user.role"))
            try await expectBump("updateUserRole")
            try await store.insertSession(makeSession("s1", user: "bob"), audit: draft("o1", "login"))
            try await expectBump("insertSession")
            try await store.touchSession(id: "s1", at: date(ms: t0 + hour))
            try await expectNoBump("touchSession")
            try await store.deleteSession(id: "s1", audit: draft("o1", "logout"))
            try await expectBump("deleteSession")
            try await store.insertSession(makeSession("s2", user: "bob"), audit: draft("o1", "login"))
            try await expectBump("insertSession")
            try await store.deleteSession(id: "s2", audit: nil)
            try await expectNoBump("silent deleteSession")
            try await store.updateSettings(orgID: "o2", settings: OrgSettings(), audit: draft("o2", "settings.update"))
            try await expectBump("updateSettings")
            _ = try await store.deleteUser(orgID: "o1", id: "bob", audit: draft("o1", "user.delete"))
            try await expectBump("deleteUser")

            // Refused and unknown changes bump nothing.
            _ = try await store.updateUserRole(orgID: "o1", id: "alice", role: .viewer, audit: draft("o1", "x"))
            _ = try await store.deleteUser(orgID: "o1", id: "alice", audit: draft("o1", "x"))
            _ = try await store.deleteUser(orgID: "o1", id: "bob", audit: draft("o1", "x"))
            try await expectNoBump("no-op outcomes")

            let entities = try await store.executeForTesting("SELECT DISTINCT entity FROM change_log ORDER BY entity")
            #expect(entities.compactMap { $0["entity"] } == ["gate_key", "organization", "session", "settings", "user"])

            let entries = try await allAudit(store)
            #expect(entries.count == auditStart + 8)
            #expect(entries.map(\.sequence) == Array(1...Int64(entries.count)))
            #expect(AuditChain.firstBroken(entries) == nil)
        }
    }

    // MARK: Schema

    @Test func upgradeFromVersion2CreatesTheTables() async throws {
        try await withTemporaryDirectory { dir in
            let store = try await SQLiteStore.open(path: dir + "/gatehouse.db")
            do {
                // Build a version-2 database by hand, with data, then migrate to the latest.
                _ = try await store.executeForTesting(SQLiteMigrations.bootstrap)
                for migration in SQLiteMigrations.all where migration.version <= 2 {
                    for statement in migration.statements {
                        _ = try await store.executeForTesting(statement)
                    }
                    _ = try await store.executeForTesting(
                        "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (\(migration.version), 0)")
                }
                try await createTwoOrgs(store)
                try await store.migrate()

                let versions = try await store.executeForTesting("SELECT version FROM schema_migrations ORDER BY version")
                #expect(versions.compactMap { $0["version"] } == SQLiteMigrations.all.map { String($0.version) })
                let tables = try await store.executeForTesting(
                    "SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN ('users', 'sessions', 'org_settings') ORDER BY name")
                #expect(tables.compactMap { $0["name"] } == ["org_settings", "sessions", "users"])
                try await store.insertUser(makeUser("alice", role: .owner), audit: draft("o1", "user.create"))
                #expect(try await store.user(email: "alice@example.com") == makeUser("alice", role: .owner))
                #expect(try await store.organizations().map(\.id) == ["o1", "o2"])
                try await store.close()
            } catch {
                try? await store.close()
                throw error
            }
        }
    }

    @Test func roleIsCheckedByTheSchema() async throws {
        try await withTwoOrgs { store in
            let error = await #expect(throws: StoreError.self) {
                _ = try await store.executeForTesting(
                    "INSERT INTO users (id, org_id, email, role, password_hash, created_at_ms) VALUES ('x', 'o1', 'x@e', 'root', 'h', 0)")
            }
            guard case .conflict? = error else {
                Issue.record("expected .conflict, got \(String(describing: error))")
                return
            }
        }
    }
}
