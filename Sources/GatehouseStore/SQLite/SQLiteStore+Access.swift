import Foundation
import GatehouseCore
import SQLiteNIO

/// Users, login sessions and organization settings (schema version 3).
///
/// Same guarantees as the rest of ``SQLiteStore``: every change commits together with its audit
/// entry and its `change_log` row (entities `user`, `session`, `settings`), reads that take an
/// organization id only return that organization's rows, and error messages never contain row
/// contents (an e-mail address in particular). The exceptions are spelled out per method:
/// ``touchSession(id:at:)`` and silent session cleanup write neither an audit entry nor a change.
extension SQLiteStore: AccessStore {
    // MARK: Users

    /// - Throws: ``StoreError/conflict(_:)`` if the e-mail address is taken (in any organization),
    ///   the id exists, or the organization does not exist. Nothing is written then.
    public func insertUser(_ user: UserRecord, audit: AuditDraft) async throws {
        try await writeTransaction("insertUser") { tx in
            do {
                _ = try await tx.query(
                    """
                    INSERT INTO users (id, org_id, email, role, password_hash, created_at_ms)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """,
                    [
                        .text(user.id), .text(user.orgID), .text(user.email), .text(user.role.rawValue),
                        .text(user.passwordHash), .date(user.createdAt),
                    ])
            } catch let error as SQLiteError where Self.isUniqueViolation(error, column: "users.email") {
                throw StoreError.conflict("insertUser: the e-mail address is already in use")
            }
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: user.orgID, entity: .user, entityID: user.id)
        }
    }

    /// The organization's users, oldest first.
    public func users(orgID: String) async throws -> [UserRecord] {
        try await read("users") { db in
            try await db.query(
                "SELECT \(Self.userColumns) FROM users WHERE org_id = ? ORDER BY created_at_ms, id", [.text(orgID)]
            ).map(Self.user(from:))
        }
    }

    public func user(orgID: String, id: String) async throws -> UserRecord? {
        try await read("user") { db in
            try await db.query(
                "SELECT \(Self.userColumns) FROM users WHERE org_id = ? AND id = ?", [.text(orgID), .text(id)]
            ).first.map(Self.user(from:))
        }
    }

    /// Exact match on the stored e-mail address; callers pass it lower-cased, as stored.
    public func user(email: String) async throws -> UserRecord? {
        try await read("userByEmail") { db in
            try await db.query("SELECT \(Self.userColumns) FROM users WHERE email = ?", [.text(email)])
                .first.map(Self.user(from:))
        }
    }

    /// Sets the role of `(orgID, id)`.
    ///
    /// The owner count is checked inside the same `BEGIN IMMEDIATE` transaction as the update, so
    /// two concurrent demotions (in this or another process) can never both succeed and leave
    /// the organization without an owner. ``UserChangeResult/notFound`` (unknown id or another
    /// organization's) and ``UserChangeResult/lastOwner`` write nothing, no audit entry either.
    public func updateUserRole(orgID: String, id: String, role: Role, audit: AuditDraft) async throws -> UserChangeResult {
        try await writeTransaction("updateUserRole") { tx in
            guard let current = try await Self.role(orgID: orgID, id: id, tx: tx) else { return .notFound }
            if current == .owner, role != .owner, try await Self.ownerCount(orgID: orgID, tx: tx) <= 1 {
                return .lastOwner
            }
            _ = try await tx.query(
                "UPDATE users SET role = ? WHERE org_id = ? AND id = ?", [.text(role.rawValue), .text(orgID), .text(id)])
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: orgID, entity: .user, entityID: id)
            return .done
        }
    }

    /// Deletes `(orgID, id)` and all their sessions. Same owner rule and same no-op outcomes as
    /// ``updateUserRole(orgID:id:role:audit:)``.
    public func deleteUser(orgID: String, id: String, audit: AuditDraft) async throws -> UserChangeResult {
        try await writeTransaction("deleteUser") { tx in
            guard let current = try await Self.role(orgID: orgID, id: id, tx: tx) else { return .notFound }
            if current == .owner, try await Self.ownerCount(orgID: orgID, tx: tx) <= 1 {
                return .lastOwner
            }
            // Explicitly (the foreign key would cascade too) so each ended session is announced
            // to processes that cache sessions.
            let sessions = try await tx.query("DELETE FROM sessions WHERE user_id = ? RETURNING id", [.text(id)])
            _ = try await tx.query("DELETE FROM users WHERE org_id = ? AND id = ?", [.text(orgID), .text(id)])
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: orgID, entity: .user, entityID: id)
            for row in sessions {
                try await tx.recordChange(orgID: orgID, entity: .session, entityID: try row.text("id"))
            }
            return .done
        }
    }

    // MARK: Sessions

    /// - Throws: ``StoreError/conflict(_:)`` if the id exists, or the user does not exist in
    ///   `session.orgID` (a session never points at another organization's user).
    public func insertSession(_ session: SessionRecord, audit: AuditDraft) async throws {
        try await writeTransaction("insertSession") { tx in
            let owner = try await tx.query(
                "SELECT 1 AS present FROM users WHERE org_id = ? AND id = ?", [.text(session.orgID), .text(session.userID)])
            guard !owner.isEmpty else {
                throw StoreError.conflict("insertSession: the referenced user does not exist")
            }
            _ = try await tx.query(
                """
                INSERT INTO sessions (id, user_id, org_id, created_at_ms, last_seen_at_ms, expires_at_ms)
                VALUES (?, ?, ?, ?, ?, ?)
                """,
                [
                    .text(session.id), .text(session.userID), .text(session.orgID), .date(session.createdAt),
                    .date(session.lastSeenAt), .date(session.expiresAt),
                ])
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: session.orgID, entity: .session, entityID: session.id)
        }
    }

    /// The session with this id (token hash), expired or not: the caller checks expiry.
    public func session(id: String) async throws -> SessionRecord? {
        try await read("session") { db in
            try await db.query(
                """
                SELECT id, user_id, org_id, created_at_ms, last_seen_at_ms, expires_at_ms
                FROM sessions WHERE id = ?
                """,
                [.text(id)]
            ).first.map { row in
                SessionRecord(
                    id: try row.text("id"), userID: try row.text("user_id"), orgID: try row.text("org_id"),
                    createdAt: try row.date("created_at_ms"), lastSeenAt: try row.date("last_seen_at_ms"),
                    expiresAt: try row.date("expires_at_ms"))
            }
        }
    }

    /// Moves `lastSeenAt` forward to `at` (never backward, so concurrent touches cannot undo one
    /// another). Writes no audit entry and no change; an unknown id is ignored.
    public func touchSession(id: String, at: Date) async throws {
        try await writeTransaction("touchSession") { tx in
            _ = try await tx.query(
                "UPDATE sessions SET last_seen_at_ms = max(last_seen_at_ms, ?) WHERE id = ?", [.date(at), .text(id)])
        }
    }

    /// Deletes the session. With an `audit` entry (logout) the entry and a change are written
    /// together with the deletion; with `nil` (expiry cleanup) neither is. An unknown id writes
    /// nothing.
    public func deleteSession(id: String, audit: AuditDraft?) async throws {
        try await writeTransaction("deleteSession") { tx in
            let deleted = try await tx.query("DELETE FROM sessions WHERE id = ? RETURNING org_id", [.text(id)])
            guard let row = deleted.first, let audit else { return }
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: try row.text("org_id"), entity: .session, entityID: id)
        }
    }

    // MARK: Settings

    /// The stored settings, or `OrgSettings()` if they were never changed (or the organization
    /// does not exist).
    public func settings(orgID: String) async throws -> OrgSettings {
        try await read("settings") { db in
            try await db.query("SELECT settings FROM org_settings WHERE org_id = ?", [.text(orgID)])
                .first?.json(OrgSettings.self, "settings") ?? OrgSettings()
        }
    }

    /// The settings of every organization, defaults for those never changed.
    public func allSettings() async throws -> [String: OrgSettings] {
        try await read("allSettings") { db in
            let rows = try await db.query(
                """
                SELECT o.id AS org_id, s.settings AS settings
                FROM organizations AS o LEFT JOIN org_settings AS s ON s.org_id = o.id
                """)
            var result: [String: OrgSettings] = [:]
            for row in rows {
                result[try row.text("org_id")] = try row.json(OrgSettings.self, "settings") ?? OrgSettings()
            }
            return result
        }
    }

    /// Replaces the organization's settings (inserting the row the first time).
    ///
    /// - Throws: ``StoreError/conflict(_:)`` if the organization does not exist.
    public func updateSettings(orgID: String, settings: OrgSettings, audit: AuditDraft) async throws {
        try await writeTransaction("updateSettings") { tx in
            _ = try await tx.query(
                """
                INSERT INTO org_settings (org_id, settings) VALUES (?, ?)
                ON CONFLICT (org_id) DO UPDATE SET settings = excluded.settings
                """,
                [.text(orgID), try .json(settings, column: "settings")])
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: orgID, entity: .settings, entityID: orgID)
        }
    }

    // MARK: Helpers

    private static let userColumns = "id, org_id, email, role, password_hash, created_at_ms"

    private static func user(from row: SQLiteRow) throws -> UserRecord {
        guard let role = Role(rawValue: try row.text("role")) else {
            throw StoreError.unavailable("unknown role in users")
        }
        return UserRecord(
            id: try row.text("id"), orgID: try row.text("org_id"), email: try row.text("email"), role: role,
            passwordHash: try row.text("password_hash"), createdAt: try row.date("created_at_ms"))
    }

    /// The role of `(orgID, id)`, `nil` if there is no such user in that organization.
    private static func role(orgID: String, id: String, tx: SQLiteTransaction) async throws -> Role? {
        guard let row = try await tx.query(
            "SELECT role FROM users WHERE org_id = ? AND id = ?", [.text(orgID), .text(id)]
        ).first else { return nil }
        guard let role = Role(rawValue: try row.text("role")) else {
            throw StoreError.unavailable("unknown role in users")
        }
        return role
    }

    private static func ownerCount(orgID: String, tx: SQLiteTransaction) async throws -> Int64 {
        try await tx.query(
            "SELECT count(*) AS n FROM users WHERE org_id = ? AND role = 'owner'", [.text(orgID)]
        ).first?.int64("n") ?? 0
    }

    /// Whether `error` is a UNIQUE violation on `column` (`table.column`). SQLite's message names
    /// the table and column, never the value.
    private static func isUniqueViolation(_ error: SQLiteError, column: String) -> Bool {
        guard case .constraintUniqueFailed = error.reason else { return false }
        return error.message.hasSuffix(column)
    }
}
