import Foundation
import GatehouseCore
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO
import Synchronization

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The embedded ``Store`` and ``RequestLogStore``: one SQLite file, shared safely by several processes (the server and
/// the CLI) through WAL mode and `BEGIN IMMEDIATE` write transactions.
///
/// Open it with ``open(path:logger:)``, call ``migrate()`` once, and ``close()`` it when done
/// (the underlying connection must be closed before the store is released).
///
/// Guarantees:
/// - Every change, its audit entry and its `change_log` row commit together or not at all.
/// - The audit trail is one hash chain across all organizations, numbered from 1 without gaps;
///   rows are only ever inserted (the schema also refuses updates and deletes).
/// - Every read that takes an organization id only ever returns that organization's rows.
/// - Dates are stored as integer Unix milliseconds, so values read back are rounded to the
///   millisecond.
/// - Error messages name the operation and the kind of failure, never row contents.
///
/// Within one process, all work on the single connection goes through a ``SerialGate`` so a
/// transaction never interleaves with another caller's statements; between processes SQLite's
/// own locking (`busy_timeout` = 30 s) serializes writers.
public final class SQLiteStore: Store {
    /// The database file.
    public let path: String

    private let connection: SQLiteConnection
    private let gate = SerialGate()
    private let isClosed = Mutex(false)
    private let logger: Logger

    private init(path: String, connection: SQLiteConnection, logger: Logger) {
        self.path = path
        self.connection = connection
        self.logger = logger
    }

    /// Opens (creating if needed, with mode 0600) the database at `path` and configures the
    /// connection. The parent directory must exist. Does not migrate: call ``migrate()``.
    ///
    /// - Throws: ``StoreError/unavailable(_:)`` if the file cannot be created, opened or
    ///   configured.
    public static func open(
        path: String, logger: Logger = Logger(label: "gatehouse.store.sqlite")
    ) async throws -> SQLiteStore {
        // Create the file ourselves, owner-only, before SQLite does: SQLite would create it with
        // the process umask (often world-readable) and there would be a window before chmod.
        // SQLite gives the -wal and -shm files the permissions of the database file.
        try createOwnerOnlyFileIfMissing(path)

        let connection: SQLiteConnection
        do {
            connection = try await SQLiteConnection.open(
                storage: .file(path: path),
                threadPool: NIOThreadPool.singleton,
                logger: logger,
                on: MultiThreadedEventLoopGroup.singleton.any()
            )
        } catch {
            throw mapError(error, operation: "open", logger: logger)
        }

        let store = SQLiteStore(path: path, connection: connection, logger: logger)
        do {
            try await store.configureConnection()
        } catch {
            try? await connection.close()
            throw mapError(error, operation: "open", logger: logger)
        }
        // For files that already existed (possibly created by an older version or by hand).
        restrictPermissions(path, logger: logger)
        return store
    }

    /// Sets the connection pragmas. They are per connection, so every open does this.
    private func configureConnection() async throws {
        // First, so that switching to WAL below waits for another process instead of failing.
        // This also replaces the driver's default busy handler, which would retry forever.
        _ = try await connection.query("PRAGMA busy_timeout = 30000")

        let mode = try await connection.query("PRAGMA journal_mode = WAL").first?.column("journal_mode")?.string
        if mode?.lowercased() != "wal" {
            // Still correct (writers use BEGIN IMMEDIATE either way), but readers would block
            // writers; worth telling the operator.
            logger.warning("SQLite WAL journal mode unavailable; continuing with rollback journal")
        }
        // FULL rather than NORMAL: an acknowledged change and its audit entry survive power loss.
        _ = try await connection.query("PRAGMA synchronous = FULL")
        _ = try await connection.query("PRAGMA foreign_keys = ON")
        // Overwrite deleted content (revoked key material, old wrapped keys) instead of leaving
        // it in free pages.
        _ = try await connection.query("PRAGMA secure_delete = ON")
        // Do not let schema objects (views, triggers) call functions with side effects.
        _ = try await connection.query("PRAGMA trusted_schema = OFF")

        // Pragmas silently do nothing if SQLite was built without the feature; these two are
        // security properties, so check them.
        guard try await pragmaValue(.foreignKeys) == "1" else {
            throw StoreError.unavailable("open: SQLite foreign key enforcement unavailable")
        }
        guard try await pragmaValue(.secureDelete) == "1" else {
            throw StoreError.unavailable("open: SQLite secure_delete unavailable")
        }
    }

    // MARK: Lifecycle

    /// Creates the schema or upgrades it to ``SQLiteMigrations/latestVersion``, in one
    /// transaction. Safe to call repeatedly and from several processes at once.
    ///
    /// - Throws: ``StoreError/schemaTooNew(found:supported:)`` if the database was migrated by a
    ///   newer Gatehouse; nothing is changed then.
    public func migrate() async throws {
        try await writeTransaction("migrate") { tx in
            _ = try await tx.query(SQLiteMigrations.bootstrap)
            let current = try await tx.query(
                "SELECT coalesce(max(version), 0) AS version FROM schema_migrations"
            ).first?.int64("version") ?? 0
            let supported = SQLiteMigrations.latestVersion
            guard current <= Int64(supported) else {
                throw StoreError.schemaTooNew(found: Int(current), supported: supported)
            }
            for migration in SQLiteMigrations.all where Int64(migration.version) > current {
                for statement in migration.statements {
                    _ = try await tx.query(statement)
                }
                _ = try await tx.query(
                    "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?, ?)",
                    [.integer(SQLiteInt64(migration.version)), .date(tx.now)])
                logger.info("applied schema migration", metadata: ["version": "\(migration.version)"])
            }
        }
    }

    /// Closes the connection. Later calls fail with ``StoreError/unavailable(_:)``; closing
    /// twice is harmless. Waits for the transaction in progress, if any.
    public func close() async throws {
        try await gate.withExclusiveAccess {
            let wasClosed = isClosed.withLock { closed in
                defer { closed = true }
                return closed
            }
            if wasClosed { return }
            do {
                try await connection.close()
            } catch {
                throw Self.mapError(error, operation: "close", logger: logger)
            }
        }
    }

    // MARK: Organizations

    public func hasOrganizations() async throws -> Bool {
        try await read("hasOrganizations") { db in
            try await db.query("SELECT EXISTS (SELECT 1 FROM organizations) AS present")
                .first?.int64("present") == 1
        }
    }

    /// Creates the organization and its first key. `firstKey.orgID` must be `org.id`.
    ///
    /// - Throws: ``StoreError/conflict(_:)`` if either id exists already.
    public func createOrganization(_ org: Organization, firstKey: GateKeyRecord, audit: AuditDraft) async throws {
        guard firstKey.orgID == org.id else {
            throw StoreError.conflict("createOrganization: the first key must belong to the new organization")
        }
        try await writeTransaction("createOrganization") { tx in
            _ = try await tx.query(
                "INSERT INTO organizations (id, name, created_at_ms, wrapped_dek) VALUES (?, ?, ?, ?)",
                [.text(org.id), .text(org.name), .date(org.createdAt), .data(org.wrappedDataKey.envelope)])
            try await Self.insertGateKeyRow(firstKey, tx: tx)
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: org.id, entity: .organization, entityID: org.id)
            try await tx.recordChange(orgID: org.id, entity: .gateKey, entityID: firstKey.id)
        }
    }

    public func organizations() async throws -> [Organization] {
        try await read("organizations") { db in
            try await db.query(
                "SELECT id, name, created_at_ms, wrapped_dek FROM organizations ORDER BY created_at_ms, id"
            ).map { row in
                Organization(
                    id: try row.text("id"), name: try row.text("name"), createdAt: try row.date("created_at_ms"),
                    wrappedDataKey: Vault.WrappedDataKey(envelope: try row.data("wrapped_dek")))
            }
        }
    }

    /// Replaces the wrapped data key of each listed organization.
    ///
    /// - Throws: ``StoreError/conflict(_:)`` if an organization does not exist; then no key is
    ///   replaced (a rotation is all or nothing).
    public func replaceWrappedDataKeys(_ keys: [String: Vault.WrappedDataKey], audit: AuditDraft) async throws {
        try await writeTransaction("replaceWrappedDataKeys") { tx in
            // Sorted so the change_log order does not depend on dictionary order.
            for (orgID, wrapped) in keys.sorted(by: { $0.key < $1.key }) {
                let updated = try await tx.query(
                    "UPDATE organizations SET wrapped_dek = ? WHERE id = ? RETURNING id",
                    [.data(wrapped.envelope), .text(orgID)])
                guard !updated.isEmpty else {
                    throw StoreError.conflict("replaceWrappedDataKeys: unknown organization")
                }
                try await tx.recordChange(orgID: orgID, entity: .organization, entityID: orgID)
            }
            try await tx.appendAudit(audit)
        }
    }

    // MARK: Provider keys

    /// - Throws: ``StoreError/conflict(_:)`` if the id exists or the organization does not.
    public func insertProviderKey(_ record: ProviderKeyRecord, audit: AuditDraft) async throws {
        try await writeTransaction("insertProviderKey") { tx in
            _ = try await tx.query(
                """
                INSERT INTO provider_keys (id, org_id, name, provider, base_url, ciphertext, last4, created_at_ms)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    .text(record.id), .text(record.orgID), .text(record.name), .text(record.provider.rawValue),
                    .optionalText(record.baseURL), .data(record.ciphertext), .text(record.last4),
                    .date(record.createdAt),
                ])
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: record.orgID, entity: .providerKey, entityID: record.id)
        }
    }

    public func providerKeys(orgID: String) async throws -> [ProviderKeyRecord] {
        try await read("providerKeys") { db in
            try await db.query(
                "SELECT \(Self.providerKeyColumns) FROM provider_keys WHERE org_id = ? ORDER BY created_at_ms, id",
                [.text(orgID)]
            ).map(Self.providerKey(from:))
        }
    }

    public func allProviderKeys() async throws -> [ProviderKeyRecord] {
        try await read("allProviderKeys") { db in
            try await db.query(
                "SELECT \(Self.providerKeyColumns) FROM provider_keys ORDER BY org_id, created_at_ms, id"
            ).map(Self.providerKey(from:))
        }
    }

    public func providerKey(orgID: String, id: String) async throws -> ProviderKeyRecord? {
        try await read("providerKey") { db in
            try await db.query(
                "SELECT \(Self.providerKeyColumns) FROM provider_keys WHERE org_id = ? AND id = ?",
                [.text(orgID), .text(id)]
            ).first.map(Self.providerKey(from:))
        }
    }

    /// Deletes the provider key and sets `revokedAt = at` on every proxy key bound to it that is
    /// not revoked yet; the proxy key rows (and the id they were bound to) are kept.
    ///
    /// Returns `false`, writing nothing (no audit entry either), if `orgID` has no such key.
    public func deleteProviderKey(orgID: String, id: String, at: Date, audit: AuditDraft) async throws -> Bool {
        try await writeTransaction("deleteProviderKey") { tx in
            let deleted = try await tx.query(
                "DELETE FROM provider_keys WHERE org_id = ? AND id = ? RETURNING id", [.text(orgID), .text(id)])
            guard !deleted.isEmpty else { return false }
            let revoked = try await tx.query(
                """
                UPDATE gate_keys SET revoked_at_ms = ?
                WHERE org_id = ? AND provider_key_id = ? AND revoked_at_ms IS NULL
                RETURNING id
                """,
                [.date(at), .text(orgID), .text(id)])
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: orgID, entity: .providerKey, entityID: id)
            for row in revoked {
                try await tx.recordChange(orgID: orgID, entity: .gateKey, entityID: try row.text("id"))
            }
            return true
        }
    }

    // MARK: Gatehouse keys

    /// - Throws: ``StoreError/conflict(_:)`` if the id exists or the organization does not.
    public func insertGateKey(_ record: GateKeyRecord, audit: AuditDraft) async throws {
        try await writeTransaction("insertGateKey") { tx in
            try await Self.insertGateKeyRow(record, tx: tx)
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: record.orgID, entity: .gateKey, entityID: record.id)
        }
    }

    /// The organization's keys, of one kind or (`kind == nil`) all, revoked ones included.
    public func gateKeys(orgID: String, kind: KeyKind?) async throws -> [GateKeyRecord] {
        try await read("gateKeys") { db in
            let rows: [SQLiteRow]
            if let kind {
                rows = try await db.query(
                    """
                    SELECT \(Self.gateKeyColumns) FROM gate_keys WHERE org_id = ? AND kind = ?
                    ORDER BY created_at_ms, id
                    """,
                    [.text(orgID), .text(kind.rawValue)])
            } else {
                rows = try await db.query(
                    "SELECT \(Self.gateKeyColumns) FROM gate_keys WHERE org_id = ? ORDER BY created_at_ms, id",
                    [.text(orgID)])
            }
            return try rows.map(Self.gateKey(from:))
        }
    }

    public func allGateKeys() async throws -> [GateKeyRecord] {
        try await read("allGateKeys") { db in
            try await db.query(
                "SELECT \(Self.gateKeyColumns) FROM gate_keys ORDER BY org_id, created_at_ms, id"
            ).map(Self.gateKey(from:))
        }
    }

    public func gateKey(orgID: String, id: String) async throws -> GateKeyRecord? {
        try await read("gateKey") { db in
            try await db.query(
                "SELECT \(Self.gateKeyColumns) FROM gate_keys WHERE org_id = ? AND id = ?",
                [.text(orgID), .text(id)]
            ).first.map(Self.gateKey(from:))
        }
    }

    /// Replaces name, description, expiry, allowed models and IPs, rate limits and budget of the
    /// key `(record.orgID, record.id)`; every other field of `record` is ignored.
    ///
    /// Returns `false`, writing nothing (no audit entry either), if there is no such key.
    public func updateGateKey(_ record: GateKeyRecord, audit: AuditDraft) async throws -> Bool {
        try await writeTransaction("updateGateKey") { tx in
            let updated = try await tx.query(
                """
                UPDATE gate_keys
                SET name = ?, description = ?, expires_at_ms = ?, allowed_models = ?, allowed_ips = ?,
                    rate_limits = ?, budget = ?
                WHERE org_id = ? AND id = ?
                RETURNING id
                """,
                [
                    .text(record.name), .optionalText(record.description), .optionalDate(record.expiresAt),
                    try .json(record.allowedModels, column: "allowed_models"),
                    try .json(record.allowedIPs, column: "allowed_ips"),
                    try .json(record.rateLimits, column: "rate_limits"),
                    try .json(record.budget, column: "budget"),
                    .text(record.orgID), .text(record.id),
                ])
            guard !updated.isEmpty else { return false }
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: record.orgID, entity: .gateKey, entityID: record.id)
            return true
        }
    }

    /// Revokes the key as of `at`.
    ///
    /// Only ``RevokeResult/revoked`` writes anything; ``RevokeResult/notFound`` (unknown id or
    /// another organization's) and ``RevokeResult/alreadyRevoked`` write no audit entry and no
    /// change, so the caller can audit the attempt with ``appendAudit(_:)`` if it wants.
    public func revokeGateKey(orgID: String, id: String, at: Date, audit: AuditDraft) async throws -> RevokeResult {
        try await writeTransaction("revokeGateKey") { tx in
            // Check and update inside one IMMEDIATE transaction, so no other process can revoke
            // in between.
            let rows = try await tx.query(
                "SELECT revoked_at_ms FROM gate_keys WHERE org_id = ? AND id = ?", [.text(orgID), .text(id)])
            guard let row = rows.first else { return .notFound }
            if try row.optionalInt64("revoked_at_ms") != nil { return .alreadyRevoked }
            _ = try await tx.query(
                "UPDATE gate_keys SET revoked_at_ms = ? WHERE org_id = ? AND id = ?",
                [.date(at), .text(orgID), .text(id)])
            try await tx.appendAudit(audit)
            try await tx.recordChange(orgID: orgID, entity: .gateKey, entityID: id)
            return .revoked
        }
    }

    // MARK: Change following

    /// The highest `change_log` sequence, `0` for a fresh database. A single lookup at the end of
    /// the `change_log` primary-key b-tree, so cheap enough to poll several times a second.
    public func changeSequence() async throws -> Int64 {
        try await read("changeSequence") { db in
            try await db.query("SELECT coalesce(max(seq), 0) AS seq FROM change_log").first?.int64("seq") ?? 0
        }
    }

    // MARK: Audit

    /// Appends an entry that records no data change. It does not bump ``changeSequence()``:
    /// nothing that other processes cache has changed, and denied requests must not make every
    /// server reload its key tables.
    public func appendAudit(_ draft: AuditDraft) async throws {
        try await writeTransaction("appendAudit") { tx in
            try await tx.appendAudit(draft)
        }
    }

    /// Entries with `sequence > after`, oldest first, at most `limit` (none if `limit <= 0`).
    public func auditEntries(orgID: String?, after: Int64, limit: Int) async throws -> [AuditEntry] {
        guard limit > 0 else { return [] }
        return try await read("auditEntries") { db in
            let columns = """
                seq, time_ms, org_id, actor_kind, actor_id, client_ip, action, target, outcome, details, \
                prev_hash, hash
                """
            let rows: [SQLiteRow]
            if let orgID {
                rows = try await db.query(
                    "SELECT \(columns) FROM audit_log WHERE org_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    [.text(orgID), .int64(after), .integer(SQLiteInt64(limit))])
            } else {
                rows = try await db.query(
                    "SELECT \(columns) FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
                    [.int64(after), .integer(SQLiteInt64(limit))])
            }
            return try rows.map { row in
                guard let outcome = AuditEntry.Outcome(rawValue: try row.text("outcome")) else {
                    throw StoreError.unavailable("auditEntries: unknown outcome in audit_log")
                }
                return AuditEntry(
                    sequence: try row.int64("seq"), time: try row.date("time_ms"), orgID: try row.text("org_id"),
                    actorKind: try row.text("actor_kind"), actorID: try row.text("actor_id"),
                    clientIP: try row.text("client_ip"), action: try row.text("action"),
                    target: try row.text("target"), outcome: outcome, details: try row.text("details"),
                    prevHash: try row.data("prev_hash"), hash: try row.data("hash"))
            }
        }
    }

    // MARK: Transactions

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction: committed if it returns, rolled back if it
    /// throws. IMMEDIATE takes the write lock up front, so the read-then-write steps inside (the
    /// audit chain tail, revoke checks) cannot race another process.
    func writeTransaction<T>(
        _ operation: String, _ body: (SQLiteTransaction) async throws -> T
    ) async throws -> T {
        try await gate.withExclusiveAccess {
            try ensureOpen(operation)
            do {
                _ = try await connection.query("BEGIN IMMEDIATE")
            } catch {
                throw Self.mapError(error, operation: operation, logger: logger)
            }
            do {
                let result = try await body(SQLiteTransaction(connection: connection, now: Date()))
                _ = try await connection.query("COMMIT")
                return result
            } catch {
                // May fail harmlessly if SQLite already rolled back by itself (e.g. disk full).
                _ = try? await connection.query("ROLLBACK")
                throw Self.mapError(error, operation: operation, logger: logger)
            }
        }
    }

    /// Runs a read. It also goes through the gate: on a shared connection a read would otherwise
    /// see another caller's uncommitted, possibly rolled back, writes.
    func read<T>(_ operation: String, _ body: (SQLiteConnection) async throws -> T) async throws -> T {
        try await gate.withExclusiveAccess {
            try ensureOpen(operation)
            do {
                return try await body(connection)
            } catch {
                throw Self.mapError(error, operation: operation, logger: logger)
            }
        }
    }

    private func ensureOpen(_ operation: String) throws {
        if isClosed.withLock({ $0 }) { throw StoreError.unavailable("\(operation): store is closed") }
    }

    /// Turns driver errors into ``StoreError`` without row contents. SQLite's own message (which
    /// names tables and columns, never bound values) goes to the debug log only.
    private static func mapError(_ error: any Error, operation: String, logger: Logger) -> any Error {
        if error is StoreError || error is CancellationError { return error }
        guard let error = error as? SQLiteError else {
            return StoreError.unavailable("\(operation): \(type(of: error))")
        }
        logger.debug(
            "SQLite error", metadata: ["operation": "\(operation)", "reason": "\(error.reason)", "message": "\(error.message)"])
        switch error.reason {
        case .constraintPrimaryKeyFailed, .constraintUniqueFailed, .constraintUniqueRowIDFailed:
            return StoreError.conflict("\(operation): a row with this id already exists")
        case .constraintForeignKeyFailed:
            return StoreError.conflict("\(operation): the referenced organization does not exist")
        case .constraint, .constraintCheckFailed, .constraintNotNullFailed, .constraintTriggerFailed,
            .constraintStrictDataTypeFailed, .constraintCommitHookFailed, .constraintUserFunctionFailed,
            .constraintVirtualTableFailed, .constraintUpdateTriggerDeletedRow:
            return StoreError.conflict("\(operation): a database constraint was violated")
        case .busy, .busyTimeout, .busyInRecovery, .busyInSnapshot, .locked:
            return StoreError.unavailable("\(operation): the database is locked by another process")
        default:
            return StoreError.unavailable("\(operation): SQLite error \(error.reason)")
        }
    }

    // MARK: Row mapping

    private static let providerKeyColumns = "id, org_id, name, provider, base_url, ciphertext, last4, created_at_ms"

    private static func providerKey(from row: SQLiteRow) throws -> ProviderKeyRecord {
        guard let provider = Provider(rawValue: try row.text("provider")) else {
            throw StoreError.unavailable("unknown provider in provider_keys")
        }
        return ProviderKeyRecord(
            id: try row.text("id"), orgID: try row.text("org_id"), name: try row.text("name"), provider: provider,
            baseURL: try row.optionalText("base_url"), ciphertext: try row.data("ciphertext"),
            last4: try row.text("last4"), createdAt: try row.date("created_at_ms"))
    }

    private static let gateKeyColumns = """
        id, org_id, kind, name, description, hash, provider_key_id, expires_at_ms, allowed_models, \
        allowed_ips, rate_limits, budget, created_at_ms, revoked_at_ms
        """

    private static func gateKey(from row: SQLiteRow) throws -> GateKeyRecord {
        guard let kind = KeyKind(rawValue: try row.text("kind")) else {
            throw StoreError.unavailable("unknown key kind in gate_keys")
        }
        return GateKeyRecord(
            id: try row.text("id"), orgID: try row.text("org_id"), kind: kind, name: try row.text("name"),
            description: try row.optionalText("description"), hash: try row.data("hash"),
            providerKeyID: try row.optionalText("provider_key_id"), expiresAt: try row.optionalDate("expires_at_ms"),
            allowedModels: try row.json([String].self, "allowed_models"),
            allowedIPs: try row.json([String].self, "allowed_ips"),
            rateLimits: try row.json([RateLimit].self, "rate_limits"),
            budget: try row.json(Budget.self, "budget"),
            createdAt: try row.date("created_at_ms"), revokedAt: try row.optionalDate("revoked_at_ms"))
    }

    private static func insertGateKeyRow(_ record: GateKeyRecord, tx: SQLiteTransaction) async throws {
        _ = try await tx.query(
            """
            INSERT INTO gate_keys (
                id, org_id, kind, name, description, hash, provider_key_id, expires_at_ms, allowed_models,
                allowed_ips, rate_limits, budget, created_at_ms, revoked_at_ms
            ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [
                .text(record.id), .text(record.orgID), .text(record.kind.rawValue), .text(record.name),
                .optionalText(record.description), .data(record.hash), .optionalText(record.providerKeyID),
                .optionalDate(record.expiresAt),
                try .json(record.allowedModels, column: "allowed_models"),
                try .json(record.allowedIPs, column: "allowed_ips"),
                try .json(record.rateLimits, column: "rate_limits"),
                try .json(record.budget, column: "budget"),
                .date(record.createdAt), .optionalDate(record.revokedAt),
            ])
    }
}

// MARK: - Request log

extension SQLiteStore: RequestLogStore {
    /// Rows per `INSERT` statement. At 25 binds (columns) a row, a statement stays far below
    /// SQLite's 32 766-variable limit, and a batch of hundreds of rows takes a few round trips
    /// to the driver's thread pool instead of one per row (the gate is held for the whole
    /// batch). 25 rows rather than 100: a statement runs on the driver's thread without a
    /// break (~25 µs a row), and an event loop woken on that core waits for it; with 25 the
    /// one-connection p99 through the gateway was ~1.0–1.2 ms against ~2.0 ms, at the same CPU
    /// a row (`Benchmarks/README.md`).
    private static let requestLogRowsPerInsert = 25

    private static let requestLogColumns = """
        id, org_id, proxy_key_id, provider_key_id, provider, model, method, path, status, streamed, \
        user_hash, user_sealed, properties_sealed, client_ip, started_at_ms, latency_ms, \
        time_to_first_token_ms, overhead_ms, prompt_tokens, completion_tokens, cached_tokens, cost_micros, \
        error, request_body_sealed, response_body_sealed
        """
    private static let requestLogColumnCount = 25

    /// Inserts the batch in one transaction; rows whose id exists already (a retried batch, or a
    /// repeat within the batch) are skipped. Writes no audit entry and does not bump
    /// ``changeSequence()``: nothing other processes cache has changed.
    ///
    /// Only a duplicate id is skipped (`ON CONFLICT (id) DO NOTHING`, unlike `INSERT OR IGNORE`,
    /// which would also silently drop rows violating other constraints).
    ///
    /// - Throws: ``StoreError/conflict(_:)`` if a record's organization does not exist or a
    ///   duration is NaN (SQLite would store it as NULL); then nothing of the batch is written.
    public func insertRequestLogs(_ records: [RequestLogRecord]) async throws {
        guard !records.isEmpty else { return }
        for record in records
        where record.latencyMs.isNaN || record.overheadMs.isNaN || record.timeToFirstTokenMs?.isNaN == true {
            throw StoreError.conflict("insertRequestLogs: a duration is not a number")
        }
        let rowPlaceholders = "(" + Array(repeating: "?", count: Self.requestLogColumnCount).joined(separator: ", ") + ")"
        try await writeTransaction("insertRequestLogs") { tx in
            for start in stride(from: 0, to: records.count, by: Self.requestLogRowsPerInsert) {
                let chunk = records[start..<min(start + Self.requestLogRowsPerInsert, records.count)]
                let values = Array(repeating: rowPlaceholders, count: chunk.count).joined(separator: ", ")
                _ = try await tx.query(
                    "INSERT INTO request_logs (\(Self.requestLogColumns)) VALUES \(values) ON CONFLICT (id) DO NOTHING",
                    chunk.flatMap(Self.requestLogBinds(_:)))
            }
        }
    }

    /// The organization's entries matching every set filter, newest first (ties on the start
    /// millisecond broken by descending id), at most `query.limit` clamped to 1...1000.
    public func requestLogs(_ query: RequestLogQuery) async throws -> [RequestLogRecord] {
        var conditions = ["org_id = ?"]
        var binds: [SQLiteData] = [.text(query.orgID)]
        if let proxyKeyID = query.proxyKeyID {
            conditions.append("proxy_key_id = ?")
            binds.append(.text(proxyKeyID))
        }
        if let userHash = query.userHash {
            conditions.append("user_hash = ?")
            binds.append(.text(userHash))
        }
        if let model = query.model {
            conditions.append("model = ?")
            binds.append(.text(model))
        }
        if let status = query.status {
            conditions.append("status = ?")
            binds.append(.integer(SQLiteInt64(status)))
        }
        Self.appendWindow(since: query.since, until: query.until, to: &conditions, &binds)
        if let before = query.before {
            // Strictly older in (started_at_ms DESC, id DESC) order. The leading `<=` is implied
            // by the rest; it gives the planner a range to seek to instead of scanning from the
            // newest entry on every page.
            conditions.append("started_at_ms <= ? AND (started_at_ms < ? OR (started_at_ms = ? AND id < ?))")
            binds += [.int64(before.startedAtMs), .int64(before.startedAtMs), .int64(before.startedAtMs), .text(before.id)]
        }
        binds.append(.integer(SQLiteInt64(min(max(query.limit, 1), 1000))))
        let sql = """
            SELECT \(Self.requestLogColumns) FROM request_logs
            WHERE \(conditions.joined(separator: " AND "))
            ORDER BY started_at_ms DESC, id DESC
            LIMIT ?
            """
        return try await read("requestLogs") { db in
            try await db.query(sql, binds).map(Self.requestLog(from:))
        }
    }

    public func requestLog(orgID: String, id: String) async throws -> RequestLogRecord? {
        try await read("requestLog") { db in
            try await db.query(
                "SELECT \(Self.requestLogColumns) FROM request_logs WHERE org_id = ? AND id = ?",
                [.text(orgID), .text(id)]
            ).first.map(Self.requestLog(from:))
        }
    }

    /// Totals per group over `[since, until)`, ordered by group (ascending text; days are
    /// `YYYY-MM-DD` in UTC, so that is chronological).
    ///
    /// - `model`: entries without a model count under `"unknown"`.
    /// - `user`: entries without a user hash are left out. The sample is one entry of the group
    ///   in the window that has a sealed user id (none if no entry has one).
    /// - Token totals count a missing count as 0; `costMicros` sums the priced entries and
    ///   `unpricedRequests` counts the entries without a cost.
    public func usage(orgID: String, groupBy: UsageGrouping, since: Date?, until: Date?) async throws -> [UsageRow] {
        let group: String = switch groupBy {
        case .proxyKey: "proxy_key_id"
        case .model: "coalesce(model, 'unknown')"
        case .user: "user_hash"
        case .day: "strftime('%Y-%m-%d', started_at_ms / 1000, 'unixepoch')"
        }
        var conditions = ["org_id = ?"]
        var binds: [SQLiteData] = [.text(orgID)]
        Self.appendWindow(since: since, until: until, to: &conditions, &binds)
        if groupBy == .user {
            conditions.append("user_hash IS NOT NULL")
        }
        // For `user`: the largest id among the group's entries that have a sealed user id is
        // the sample (any entry would do: all entries of a user hash seal the same user id).
        let sample = groupBy == .user ? "max(CASE WHEN user_sealed IS NOT NULL THEN id END)" : "NULL"
        let totals = """
            SELECT \(group) AS grp, count(*) AS requests,
                sum(coalesce(prompt_tokens, 0)) AS prompt_tokens,
                sum(coalesce(completion_tokens, 0)) AS completion_tokens,
                sum(coalesce(cached_tokens, 0)) AS cached_tokens,
                coalesce(sum(cost_micros), 0) AS cost_micros,
                sum(cost_micros IS NULL) AS unpriced_requests,
                \(sample) AS sample_id
            FROM request_logs
            WHERE \(conditions.joined(separator: " AND "))
            GROUP BY grp
            """
        let sql: String
        if groupBy == .user {
            // The org condition on the join is redundant (ids are unique) but keeps every row
            // read scoped; its placeholder comes after the totals' ones.
            sql = """
                SELECT t.*, s.user_sealed AS sample_user_sealed
                FROM (\(totals)) AS t
                LEFT JOIN request_logs AS s ON s.id = t.sample_id AND s.org_id = ?
                ORDER BY t.grp
                """
            binds.append(.text(orgID))
        } else {
            sql = totals + "\nORDER BY grp"
        }
        return try await read("usage") { db in
            try await db.query(sql, binds).map { row in
                UsageRow(
                    group: try row.text("grp"),
                    sampleUserSealed: groupBy == .user ? try row.optionalData("sample_user_sealed") : nil,
                    sampleRequestID: groupBy == .user ? try row.optionalText("sample_id") : nil,
                    requests: Int(try row.int64("requests")),
                    promptTokens: Int(try row.int64("prompt_tokens")),
                    completionTokens: Int(try row.int64("completion_tokens")),
                    cachedTokens: Int(try row.int64("cached_tokens")),
                    costMicros: try row.int64("cost_micros"),
                    unpricedRequests: Int(try row.int64("unpriced_requests")))
            }
        }
    }

    /// `since` inclusive, `until` exclusive, on the start time.
    private static func appendWindow(since: Date?, until: Date?, to conditions: inout [String], _ binds: inout [SQLiteData]) {
        if let since {
            conditions.append("started_at_ms >= ?")
            binds.append(.date(since))
        }
        if let until {
            conditions.append("started_at_ms < ?")
            binds.append(.date(until))
        }
    }

    /// Binds in ``requestLogColumns`` order.
    private static func requestLogBinds(_ record: RequestLogRecord) -> [SQLiteData] {
        [
            .text(record.id), .text(record.orgID), .text(record.proxyKeyID), .text(record.providerKeyID),
            .text(record.provider), .optionalText(record.model), .text(record.method), .text(record.path),
            .integer(SQLiteInt64(record.status)), .integer(record.streamed ? 1 : 0), .optionalText(record.userHash),
            .optionalData(record.userSealed), .optionalData(record.propertiesSealed), .text(record.clientIP),
            .date(record.startedAt), .float(record.latencyMs), .optionalFloat(record.timeToFirstTokenMs),
            .float(record.overheadMs), .optionalInt(record.promptTokens), .optionalInt(record.completionTokens),
            .optionalInt(record.cachedTokens), record.costMicros.map(SQLiteData.int64) ?? .null,
            .optionalText(record.error), .optionalData(record.requestBodySealed),
            .optionalData(record.responseBodySealed),
        ]
    }

    private static func requestLog(from row: SQLiteRow) throws -> RequestLogRecord {
        RequestLogRecord(
            id: try row.text("id"), orgID: try row.text("org_id"), proxyKeyID: try row.text("proxy_key_id"),
            providerKeyID: try row.text("provider_key_id"), provider: try row.text("provider"),
            model: try row.optionalText("model"), method: try row.text("method"), path: try row.text("path"),
            status: Int(try row.int64("status")), streamed: try row.int64("streamed") != 0,
            userHash: try row.optionalText("user_hash"), userSealed: try row.optionalData("user_sealed"),
            propertiesSealed: try row.optionalData("properties_sealed"), clientIP: try row.text("client_ip"),
            startedAt: try row.date("started_at_ms"), latencyMs: try row.double("latency_ms"),
            timeToFirstTokenMs: try row.optionalDouble("time_to_first_token_ms"),
            overheadMs: try row.double("overhead_ms"),
            promptTokens: try row.optionalInt64("prompt_tokens").map { Int($0) },
            completionTokens: try row.optionalInt64("completion_tokens").map { Int($0) },
            cachedTokens: try row.optionalInt64("cached_tokens").map { Int($0) },
            costMicros: try row.optionalInt64("cost_micros"), error: try row.optionalText("error"),
            requestBodySealed: try row.optionalData("request_body_sealed"),
            responseBodySealed: try row.optionalData("response_body_sealed"))
    }
}

// MARK: - Testing and diagnostics

extension SQLiteStore {
    /// Pragmas whose current value can be read back (fixed names: pragma names cannot be bound).
    enum InspectablePragma: String {
        case journalMode = "journal_mode"
        case secureDelete = "secure_delete"
        case foreignKeys = "foreign_keys"
        case synchronous
        case busyTimeout = "busy_timeout"
    }

    /// The pragma's current value as text, e.g. `"wal"` or `"1"`.
    func pragmaValue(_ pragma: InspectablePragma) async throws -> String? {
        try await read("pragma") { db in
            try await db.query("PRAGMA \(pragma.rawValue)").first?.columns.first?.data.string
        }
    }

    /// Runs fixed SQL outside the store's API. For tests only (e.g. to fake a newer schema);
    /// never pass anything built from input.
    func executeForTesting(_ sql: String) async throws -> [[String: String]] {
        try await read("executeForTesting") { db in
            try await db.query(sql).map { row in
                Dictionary(row.columns.map { ($0.name, $0.data.string ?? $0.data.description) }, uniquingKeysWith: { a, _ in a })
            }
        }
    }
}

// MARK: - Transaction context

/// What a mutating method can do inside its transaction. Only exists within
/// `SQLiteStore.writeTransaction`, which holds the gate and the SQLite write lock.
struct SQLiteTransaction {
    let connection: SQLiteConnection
    /// One timestamp for the whole transaction (audit time, change_log time).
    let now: Date

    enum Entity: String {
        case organization
        case providerKey = "provider_key"
        case gateKey = "gate_key"
        case user
        case session
        case settings
    }

    func query(_ sql: String, _ binds: [SQLiteData] = []) async throws -> [SQLiteRow] {
        try await connection.query(sql, binds)
    }

    /// Numbers, timestamps and chains `draft` onto the single global audit chain.
    func appendAudit(_ draft: AuditDraft) async throws {
        let tail = try await query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").first
        let previousSequence = try tail?.int64("seq") ?? 0
        let previousHash = try tail?.data("hash") ?? AuditChain.genesis

        // Round-trip the time through milliseconds now, so the hash is computed over exactly
        // the value that is stored and read back.
        var entry = AuditEntry(
            sequence: previousSequence + 1, time: Date(unixMilliseconds: now.unixMilliseconds), orgID: draft.orgID,
            actorKind: draft.actorKind, actorID: draft.actorID, clientIP: draft.clientIP, action: draft.action,
            target: Redactor.shared.redact(draft.target), outcome: draft.outcome,
            details: Redactor.shared.redact(draft.details),  // the one redaction layer, as for every sink
            prevHash: previousHash)
        entry.hash = AuditChain.hash(entry)

        _ = try await query(
            """
            INSERT INTO audit_log (
                seq, time_ms, org_id, actor_kind, actor_id, client_ip, action, target, outcome, details,
                prev_hash, hash
            ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [
                .int64(entry.sequence), .date(entry.time), .text(entry.orgID), .text(entry.actorKind),
                .text(entry.actorID), .text(entry.clientIP), .text(entry.action), .text(entry.target),
                .text(entry.outcome.rawValue), .text(entry.details), .data(entry.prevHash), .data(entry.hash),
            ])
    }

    /// Records that `entity` `entityID` changed, for processes following ``SQLiteStore/changeSequence()``.
    func recordChange(orgID: String, entity: Entity, entityID: String) async throws {
        _ = try await query(
            "INSERT INTO change_log (org_id, entity, entity_id, at_ms) VALUES (?, ?, ?, ?)",
            [.text(orgID), .text(entity.rawValue), .text(entityID), .date(now)])
    }
}

// MARK: - Value conversion

extension Date {

    fileprivate init(unixMilliseconds ms: Int64) {
        self.init(timeIntervalSince1970: Double(ms) / 1000)
    }
}

extension SQLiteData {
    fileprivate static func int64(_ value: Int64) -> SQLiteData { .integer(SQLiteInt64(value)) }
    static func date(_ date: Date) -> SQLiteData { .int64(date.unixMilliseconds) }
    fileprivate static func optionalDate(_ date: Date?) -> SQLiteData { date.map(SQLiteData.date) ?? .null }
    fileprivate static func optionalText(_ text: String?) -> SQLiteData { text.map(SQLiteData.text) ?? .null }
    fileprivate static func data(_ data: Data) -> SQLiteData { .blob(ByteBuffer(bytes: data)) }
    fileprivate static func optionalData(_ data: Data?) -> SQLiteData { data.map(SQLiteData.data) ?? .null }
    fileprivate static func optionalInt(_ value: Int?) -> SQLiteData { value.map { .integer(SQLiteInt64($0)) } ?? .null }
    fileprivate static func optionalFloat(_ value: Double?) -> SQLiteData { value.map(SQLiteData.float) ?? .null }

    /// JSON text for an optional value; `nil` is SQL NULL (distinct from an empty list).
    static func json(_ value: (some Encodable)?, column: String) throws -> SQLiteData {
        guard let value else { return .null }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            return .text(String(decoding: try encoder.encode(value), as: UTF8.self))
        } catch {
            // E.g. a non-finite number in a rate limit.
            throw StoreError.conflict("\(column) cannot be stored as JSON")
        }
    }
}

/// Typed column access. Errors name the column, never its value.
extension SQLiteRow {
    private func mismatch(_ column: String) -> StoreError {
        StoreError.unavailable("unexpected value type in column \(column)")
    }

    func text(_ column: String) throws -> String {
        guard case .text(let value)? = self.column(column) else { throw mismatch(column) }
        return value
    }

    fileprivate func optionalText(_ column: String) throws -> String? {
        switch self.column(column) {
        case .text(let value)?: return value
        case .null?: return nil
        default: throw mismatch(column)
        }
    }

    func int64(_ column: String) throws -> Int64 {
        guard case .integer(let value)? = self.column(column) else { throw mismatch(column) }
        return Int64(value)
    }

    fileprivate func optionalInt64(_ column: String) throws -> Int64? {
        switch self.column(column) {
        case .integer(let value)?: return Int64(value)
        case .null?: return nil
        default: throw mismatch(column)
        }
    }

    func data(_ column: String) throws -> Data {
        guard case .blob(let buffer)? = self.column(column) else { throw mismatch(column) }
        return Data(buffer.readableBytesView)
    }

    fileprivate func optionalData(_ column: String) throws -> Data? {
        switch self.column(column) {
        case .blob(let buffer)?: return Data(buffer.readableBytesView)
        case .null?: return nil
        default: throw mismatch(column)
        }
    }

    fileprivate func double(_ column: String) throws -> Double {
        guard case .float(let value)? = self.column(column) else { throw mismatch(column) }
        return value
    }

    fileprivate func optionalDouble(_ column: String) throws -> Double? {
        switch self.column(column) {
        case .float(let value)?: return value
        case .null?: return nil
        default: throw mismatch(column)
        }
    }

    func date(_ column: String) throws -> Date {
        Date(unixMilliseconds: try int64(column))
    }

    fileprivate func optionalDate(_ column: String) throws -> Date? {
        try optionalInt64(column).map(Date.init(unixMilliseconds:))
    }

    func json<T: Decodable>(_ type: T.Type, _ column: String) throws -> T? {
        guard let text = try optionalText(column) else { return nil }
        do {
            return try JSONDecoder().decode(type, from: Data(text.utf8))
        } catch {
            throw StoreError.unavailable("malformed JSON in column \(column)")
        }
    }
}

// MARK: - File permissions

/// Creates `path` with mode 0600 unless it exists. `O_EXCL` so an existing file (or a symlink
/// planted in its place) is never truncated or followed.
private func createOwnerOnlyFileIfMissing(_ path: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    if fd >= 0 {
        _ = close(fd)
        return
    }
    let code = errno
    if code == EEXIST { return }
    throw StoreError.unavailable("open: cannot create the database file (errno \(code))")
}

/// Makes the database and its WAL side files owner-only. A failure (e.g. the file belongs to
/// another user) is logged rather than fatal: the data was already exposed to whoever could
/// read it, and refusing to start would not change that.
private func restrictPermissions(_ path: String, logger: Logger) {
    for file in [path, path + "-wal", path + "-shm"] {
        if chmod(file, 0o600) != 0 {
            let code = errno
            if code == ENOENT && file != path { continue }
            logger.warning(
                "could not restrict database file permissions to 0600", metadata: ["file": "\(file)", "errno": "\(code)"])
        }
    }
}
