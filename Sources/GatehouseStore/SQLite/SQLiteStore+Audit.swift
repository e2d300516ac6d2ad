import Foundation
import GatehouseCore
import SQLiteNIO

/// The audit trail's read side and its signed checkpoints (schema version 4).
extension SQLiteStore: AuditStore {
    static let auditColumns = """
        seq, time_ms, org_id, actor_kind, actor_id, client_ip, action, target, outcome, details, prev_hash, hash
        """

    public func auditEntries(_ query: AuditQuery) async throws -> [AuditEntry] {
        var conditions = ["org_id = ?"]
        var binds: [SQLiteData] = [.text(query.orgID)]
        if let v = query.action { conditions.append("action = ?"); binds.append(.text(v)) }
        if let v = query.actorKind { conditions.append("actor_kind = ?"); binds.append(.text(v)) }
        if let v = query.actorID { conditions.append("actor_id = ?"); binds.append(.text(v)) }
        if let v = query.target { conditions.append("target = ?"); binds.append(.text(v)) }
        if let v = query.outcome { conditions.append("outcome = ?"); binds.append(.text(v.rawValue)) }
        if let v = query.since { conditions.append("time_ms >= ?"); binds.append(.date(v)) }
        if let v = query.until { conditions.append("time_ms < ?"); binds.append(.date(v)) }
        if let v = query.beforeSequence { conditions.append("seq < ?"); binds.append(.integer(SQLiteInt64(v))) }
        binds.append(.integer(SQLiteInt64(min(max(query.limit, 1), 1000))))
        let sql = "SELECT \(Self.auditColumns) FROM audit_log WHERE \(conditions.joined(separator: " AND ")) ORDER BY seq DESC LIMIT ?"
        return try await read("auditQuery") { db in
            try await db.query(sql, binds).map(Self.auditEntry(from:))
        }
    }

    static func auditEntry(from row: SQLiteRow) throws -> AuditEntry {
        guard let outcome = AuditEntry.Outcome(rawValue: try row.text("outcome")) else {
            throw StoreError.unavailable("audit: unknown outcome in audit_log")
        }
        return AuditEntry(
            sequence: try row.int64("seq"), time: try row.date("time_ms"), orgID: try row.text("org_id"),
            actorKind: try row.text("actor_kind"), actorID: try row.text("actor_id"), clientIP: try row.text("client_ip"),
            action: try row.text("action"), target: try row.text("target"), outcome: outcome, details: try row.text("details"),
            prevHash: try row.data("prev_hash"), hash: try row.data("hash"))
    }

    public func insertCheckpoint(_ checkpoint: AuditCheckpoint) async throws {
        try await writeTransaction("insertCheckpoint") { tx in
            _ = try await tx.query(
                """
                INSERT INTO audit_checkpoints (seq, hash, time_ms, master_key_version, signature) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (seq) DO NOTHING
                """,
                [
                    .integer(SQLiteInt64(checkpoint.sequence)), .blob(.init(bytes: checkpoint.hash)), .date(checkpoint.time),
                    .integer(SQLiteInt64(checkpoint.masterKeyVersion)), .blob(.init(bytes: checkpoint.signature)),
                ])
        }
    }

    public func latestCheckpoint() async throws -> AuditCheckpoint? {
        try await read("latestCheckpoint") { db -> AuditCheckpoint? in
            guard let row = try await db.query(
                "SELECT seq, hash, time_ms, master_key_version, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
            ).first else { return nil }
            return AuditCheckpoint(
                sequence: try row.int64("seq"), hash: try row.data("hash"), time: try row.date("time_ms"),
                masterKeyVersion: UInt32(truncatingIfNeeded: try row.int64("master_key_version")), signature: try row.data("signature"))
        }
    }

    public func checkpoints() async throws -> [AuditCheckpoint] {
        try await read("checkpoints") { db in
            try await db.query("SELECT seq, hash, time_ms, master_key_version, signature FROM audit_checkpoints ORDER BY seq").map { row in
                AuditCheckpoint(
                    sequence: try row.int64("seq"), hash: try row.data("hash"), time: try row.date("time_ms"),
                    masterKeyVersion: UInt32(truncatingIfNeeded: try row.int64("master_key_version")),
                    signature: try row.data("signature"))
            }
        }
    }

    public func auditTail() async throws -> (sequence: Int64, hash: Data)? {
        try await read("auditTail") { db -> (sequence: Int64, hash: Data)? in
            guard let row = try await db.query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").first else { return nil }
            return (try row.int64("seq"), try row.data("hash"))
        }
    }
}
