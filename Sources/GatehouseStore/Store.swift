import Foundation
import GatehouseCore

/// What an audit entry says before the store numbers and chains it.
///
/// The store assigns `sequence`, `time`, `prev_hash` and `hash` inside the transaction of the
/// change it records, so there is never a change without its entry.
public struct AuditDraft: Sendable, Equatable {
    public var orgID: String
    public var actorKind: String
    public var actorID: String
    public var clientIP: String
    public var action: String
    public var target: String
    public var outcome: AuditEntry.Outcome
    /// A JSON object, already free of secrets.
    public var details: String

    public init(
        orgID: String, actorKind: String, actorID: String, clientIP: String = "", action: String,
        target: String = "", outcome: AuditEntry.Outcome = .success, details: String = "{}"
    ) {
        self.orgID = orgID
        self.actorKind = actorKind
        self.actorID = actorID
        self.clientIP = clientIP
        self.action = action
        self.target = target
        self.outcome = outcome
        self.details = details
    }
}

/// Result of revoking a key.
public enum RevokeResult: Sendable, Equatable {
    case revoked
    case alreadyRevoked
    case notFound
}

/// Errors a store reports. Messages never contain row contents.
public enum StoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The database could not be opened or migrated.
    case unavailable(String)
    /// A uniqueness or foreign-key rule was violated.
    case conflict(String)
    /// The schema is newer than this binary understands.
    case schemaTooNew(found: Int, supported: Int)

    public var description: String {
        switch self {
        case .unavailable(let why): "database unavailable: \(why)"
        case .conflict(let why): "conflict: \(why)"
        case .schemaTooNew(let found, let supported):
            "database schema version \(found) is newer than this gatehouse supports (\(supported)); upgrade gatehouse"
        }
    }
}

/// The persistence contract. Every method that changes data takes the audit entry that
/// records the change and writes both in one transaction, and bumps the change sequence that
/// other processes follow.
///
/// Implementations: ``SQLiteStore`` (embedded, default). A PostgreSQL store will implement the
/// same protocol and pass the same conformance suite.
public protocol Store: Sendable {
    /// Creates or upgrades the schema.
    func migrate() async throws
    func close() async throws

    // MARK: Organizations

    /// `true` once any organization exists (the installation is initialised).
    func hasOrganizations() async throws -> Bool
    /// Creates an organization together with its first key (the owner API key).
    func createOrganization(_ org: Organization, firstKey: GateKeyRecord, audit: AuditDraft) async throws
    func organizations() async throws -> [Organization]
    /// Replaces wrapped data keys (master key rotation), all in one transaction.
    func replaceWrappedDataKeys(_ keys: [String: Vault.WrappedDataKey], audit: AuditDraft) async throws

    // MARK: Provider keys

    func insertProviderKey(_ record: ProviderKeyRecord, audit: AuditDraft) async throws
    func providerKeys(orgID: String) async throws -> [ProviderKeyRecord]
    func allProviderKeys() async throws -> [ProviderKeyRecord]
    func providerKey(orgID: String, id: String) async throws -> ProviderKeyRecord?
    /// Deletes a provider key and revokes every proxy key bound to it. Returns `false` if unknown.
    func deleteProviderKey(orgID: String, id: String, at: Date, audit: AuditDraft) async throws -> Bool

    // MARK: Gatehouse keys (api, read, proxy)

    func insertGateKey(_ record: GateKeyRecord, audit: AuditDraft) async throws
    func gateKeys(orgID: String, kind: KeyKind?) async throws -> [GateKeyRecord]
    /// Every key of every organization, for the in-memory key table.
    func allGateKeys() async throws -> [GateKeyRecord]
    func gateKey(orgID: String, id: String) async throws -> GateKeyRecord?
    /// Replaces the mutable fields (name, description, expiry, models, IPs, limits, budget).
    /// Returns `false` if unknown.
    func updateGateKey(_ record: GateKeyRecord, audit: AuditDraft) async throws -> Bool
    func revokeGateKey(orgID: String, id: String, at: Date, audit: AuditDraft) async throws -> RevokeResult

    // MARK: Change following

    /// A number that grows with every committed change, visible to every process.
    func changeSequence() async throws -> Int64

    // MARK: Audit

    /// Appends an entry that records no data change (access, denied request, failed login).
    func appendAudit(_ draft: AuditDraft) async throws
    /// Entries with `sequence > after`, oldest first; `orgID == nil` reads every org.
    func auditEntries(orgID: String?, after: Int64, limit: Int) async throws -> [AuditEntry]
}

/// The request log: written in batches by a background writer, read by the admin API.
///
/// Kept apart from ``Store`` because its volume and access pattern differ (append-mostly,
/// no audit entry per row); a store implements both.
public protocol RequestLogStore: Sendable {
    /// Inserts a batch in one transaction. Duplicate ids are ignored (a retried batch is safe).
    func insertRequestLogs(_ records: [RequestLogRecord]) async throws
    /// Entries matching `query`, newest first, at most `query.limit`.
    func requestLogs(_ query: RequestLogQuery) async throws -> [RequestLogRecord]
    func requestLog(orgID: String, id: String) async throws -> RequestLogRecord?
    /// Totals per group over `[since, until)`, ordered by group.
    func usage(orgID: String, groupBy: UsageGrouping, since: Date?, until: Date?) async throws -> [UsageRow]
}

/// Result of a change to a user that must keep at least one owner.
public enum UserChangeResult: Sendable, Equatable {
    case done
    case notFound
    /// Refused: the organization would be left without an owner.
    case lastOwner
}

/// Users, sessions and organization settings.
public protocol AccessStore: Sendable {
    /// Inserts a user; `StoreError.conflict` if the e-mail is taken (in any organization).
    func insertUser(_ user: UserRecord, audit: AuditDraft) async throws
    func users(orgID: String) async throws -> [UserRecord]
    func user(orgID: String, id: String) async throws -> UserRecord?
    /// For login: the user with this (lower-cased) e-mail in any organization.
    func user(email: String) async throws -> UserRecord?
    /// Changes a role; refuses (in the same transaction) to leave the org without an owner.
    func updateUserRole(orgID: String, id: String, role: Role, audit: AuditDraft) async throws -> UserChangeResult
    /// Deletes a user and their sessions; refuses to delete the last owner.
    func deleteUser(orgID: String, id: String, audit: AuditDraft) async throws -> UserChangeResult

    func insertSession(_ session: SessionRecord, audit: AuditDraft) async throws
    func session(id: String) async throws -> SessionRecord?
    /// Records activity (idle expiry is measured from `lastSeenAt`). No audit entry.
    func touchSession(id: String, at: Date) async throws
    /// Deletes a session (logout or expiry). `audit` nil for silent expiry cleanup.
    func deleteSession(id: String, audit: AuditDraft?) async throws

    /// The org's settings (defaults when never changed).
    func settings(orgID: String) async throws -> OrgSettings
    func allSettings() async throws -> [String: OrgSettings]
    func updateSettings(orgID: String, settings: OrgSettings, audit: AuditDraft) async throws
}

/// Filters for reading the audit trail. Results are newest first.
public struct AuditQuery: Sendable, Equatable {
    public var orgID: String
    public var action: String?
    public var actorKind: String?
    public var actorID: String?
    public var target: String?
    public var outcome: AuditEntry.Outcome?
    public var since: Date?
    public var until: Date?
    /// Paging: entries with a smaller sequence than this.
    public var beforeSequence: Int64?
    public var limit: Int

    public init(
        orgID: String, action: String? = nil, actorKind: String? = nil, actorID: String? = nil, target: String? = nil,
        outcome: AuditEntry.Outcome? = nil, since: Date? = nil, until: Date? = nil, beforeSequence: Int64? = nil,
        limit: Int = 100
    ) {
        self.orgID = orgID
        self.action = action
        self.actorKind = actorKind
        self.actorID = actorID
        self.target = target
        self.outcome = outcome
        self.since = since
        self.until = until
        self.beforeSequence = beforeSequence
        self.limit = limit
    }
}

/// Reading the audit trail and keeping its signed checkpoints.
public protocol AuditStore: Sendable {
    func auditEntries(_ query: AuditQuery) async throws -> [AuditEntry]
    func insertCheckpoint(_ checkpoint: AuditCheckpoint) async throws
    func latestCheckpoint() async throws -> AuditCheckpoint?
    /// Every stored checkpoint, oldest first.
    func checkpoints() async throws -> [AuditCheckpoint]
    /// The newest entry's sequence and hash, `nil` for an empty trail.
    func auditTail() async throws -> (sequence: Int64, hash: Data)?
}
