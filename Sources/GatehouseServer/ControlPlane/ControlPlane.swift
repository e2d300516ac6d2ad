import Foundation
import GatehouseCore
import GatehouseStore
import Logging
import Synchronization

/// Every change an operator can make, in one place, used by both the admin API and the CLI.
///
/// Each operation validates its input, writes the change and its audit entry in one store
/// transaction, and then refreshes the in-memory ``KeyTable`` so the change applies to the very
/// next request on this instance. Other processes pick it up through the change sequence.
public final class ControlPlane: Sendable {
    public let store: any Store
    public let keyTable: KeyTable
    /// Rate-limit windows and budget spend of every proxy key (used by the gateway, shown by the API).
    public let ledger = LimitLedger()
    /// Decrypted provider keys, briefly (see `providerSecret(for:)`).
    let secretCache = ProviderSecretCache()
    private let vaultState: Mutex<Vault>
    let logger: Logger
    /// Callbacks installed by the server (the CLI has none).
    struct Hooks: Sendable {
        /// Flushes the request-log writer, so a rebuild from the log sees every call so far.
        var beforeLimitRestore: (@Sendable () async -> Void)?
    }

    let hooks = Mutex(Hooks())

    public func setBeforeLimitRestore(_ hook: @escaping @Sendable () async -> Void) {
        hooks.withLock { $0.beforeLimitRestore = hook }
    }

    /// Re-reads the master keyring from its source, after another process rotated it.
    let keyringReloader: (@Sendable () throws -> MasterKeyring?)?

    public init(
        store: any Store, vault: Vault, keyTable: KeyTable = KeyTable(), logger: Logger,
        keyringReloader: (@Sendable () throws -> MasterKeyring?)? = nil
    ) {
        self.store = store
        self.keyringReloader = keyringReloader
        self.vaultState = Mutex(vault)
        self.keyTable = keyTable
        self.logger = logger
    }

    public var vault: Vault { vaultState.withLock { $0 } }

    // MARK: Loading

    /// Reloads organizations (unwrapping their data keys) and every key into the key table.
    ///
    /// Throws ``GatehouseError/masterKeyMismatch(dataDir:)`` when a data key does not unwrap,
    /// which is how a wrong master key is detected: fail closed, never serve without the vault.
    public func reload(dataDir: String = "the data directory") async throws {
        let sequence = try await store.changeSequence()
        let orgs = try await store.organizations()
        let previous = keyTable.snapshot
        let vault = self.vault
        var orgKeys: [String: OrgKeys] = [:]
        for org in orgs {
            // An organization's DEK never changes (rotation re-wraps it), so once unwrapped it
            // stays valid even when its wrapping changes under us.
            if let known = previous.orgKeys[org.id] {
                orgKeys[org.id] = known
                continue
            }
            do {
                orgKeys[org.id] = try vault.unwrap(org.wrappedDataKey, orgID: org.id)
            } catch .unknownMasterKeyVersion(let v) {
                // Another process (the CLI) may have rotated the master key: re-read the keyring once.
                guard let fresh = try? keyringReloader?(), fresh.keys[v] != nil else {
                    throw GatehouseError.vault(.unknownMasterKeyVersion(v))
                }
                vaultState.withLock { $0 = Vault(keyring: fresh) }
                do {
                    orgKeys[org.id] = try Vault(keyring: fresh).unwrap(org.wrappedDataKey, orgID: org.id)
                } catch {
                    throw GatehouseError.masterKeyMismatch(dataDir: dataDir)
                }
            } catch {
                throw GatehouseError.masterKeyMismatch(dataDir: dataDir)
            }
        }
        let gateKeys = try await store.allGateKeys()
        let providerKeys = try await store.allProviderKeys()
        let settings = try await (store as? any AccessStore)?.allSettings() ?? [:]
        keyTable.publish(
            KeyTable.Snapshot(
                sequence: sequence,
                gateKeys: Dictionary(gateKeys.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }),
                providerKeys: Dictionary(providerKeys.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }),
                orgKeys: orgKeys,
                organizations: Dictionary(orgs.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }),
                networkPolicies: settings.mapValues(NetworkPolicy.init),
                keyAllowlists: Dictionary(
                    gateKeys.compactMap { key in
                        key.allowedIPs.flatMap { $0.isEmpty ? nil : (key.id, IPAllowlist($0.compactMap { CIDR($0) })) }
                    }, uniquingKeysWith: { a, _ in a })
            ))
        ledger.retain(keyIDs: Set(gateKeys.lazy.filter { $0.kind == .proxy && !$0.isRevoked }.map(\.id)))
    }

    /// Reloads after a local change; a failure here is logged, not thrown, because the change
    /// itself is committed and the change follower will retry.
    func refreshAfterChange() async {
        do { try await reload() } catch {
            logger.error("key table refresh failed after a change", metadata: ["error": "\(error)"])
        }
    }

    func orgKeys(_ orgID: String) throws -> OrgKeys {
        guard let keys = keyTable.orgKeys(orgID) else { throw GatehouseError.notFound("unknown organization") }
        return keys
    }

    // MARK: Organizations

    /// Creates an organization with a fresh data key and its owner API key.
    /// Returns the organization and the owner key text (shown once).
    public func createOrganization(name: String, by principal: Principal) async throws -> (Organization, String) {
        let name = try Validation.name(name)
        let orgID = "org_" + Base62.random(count: 16)
        let (keys, wrapped) = try vault.newDataKey(orgID: orgID)
        let now = Date()
        let org = Organization(id: orgID, name: name, createdAt: now, wrappedDataKey: wrapped)
        let key = GatehouseKey.generate(kind: .api)
        let record = GateKeyRecord(
            id: key.id, orgID: orgID, kind: .api, name: "owner", description: "created with the organization",
            hash: keys.keyHash(key.text), createdAt: now)
        let audit = AuditDraft(
            orgID: orgID, actorKind: principal.kind.rawValue, actorID: principal.id, clientIP: principal.clientIP,
            action: "organization.create", target: orgID,
            details: JSONValue.object(["name": .string(name), "owner_key_id": .string(key.id)]).encodedString())
        try await store.createOrganization(org, firstKey: record, audit: audit)
        await refreshAfterChange()
        return (org, key.text)
    }

    /// Rotates the master key: adds a version, makes it primary and re-wraps every data key.
    ///
    /// `persistKeyring` must durably save the new keyring *before* the store commits, so the
    /// database never names a master key version that exists nowhere.
    public func rotateMasterKey(
        by principal: Principal, persistKeyring: (MasterKeyring) throws -> Void
    ) async throws -> (version: UInt32, rewrapped: Int) {
        var keyring = vault.keyring
        let oldPrimary = keyring.primaryVersion
        let version = keyring.addPrimary()
        let newVault = Vault(keyring: keyring)
        let orgs = try await store.organizations()
        var rewrapped: [String: Vault.WrappedDataKey] = [:]
        for org in orgs {
            do {
                rewrapped[org.id] = try newVault.rewrap(org.wrappedDataKey, orgID: org.id)
            } catch {
                throw GatehouseError.masterKeyMismatch(dataDir: "the data directory")
            }
        }
        try persistKeyring(keyring)
        let audit = draft(
            principal, action: "vault.rotate_master", target: "master_key",
            details: [
                "from_version": .int(Int(oldPrimary)), "to_version": .int(Int(version)),
                "data_keys_rewrapped": .int(rewrapped.count),
            ])
        try await store.replaceWrappedDataKeys(rewrapped, audit: audit)
        vaultState.withLock { $0 = newVault }
        await refreshAfterChange()
        return (version, rewrapped.count)
    }

    // MARK: Provider keys

    public func createProviderKey(_ input: ProviderKeyInput, by principal: Principal) async throws -> ProviderKeyRecord {
        let name = try Validation.name(input.name)
        let baseURL = try Validation.baseURL(input.baseURL, provider: input.provider)
        let secret = try Validation.providerSecret(input.apiKey)
        Redactor.shared.register(secret)
        let keys = try orgKeys(principal.orgID)
        let id = "pk_" + Base62.random(count: 16)
        let record = ProviderKeyRecord(
            id: id, orgID: principal.orgID, name: name, provider: input.provider, baseURL: baseURL,
            ciphertext: try keys.sealProviderKey(secret, rowID: id, provider: input.provider.rawValue),
            last4: Self.last4(of: secret), createdAt: Date())
        let audit = draft(
            principal, action: "provider_key.create", target: id,
            details: [
                "name": .string(name), "provider": .string(input.provider.rawValue), "base_url": .string(baseURL),
                "secret": .string(keys.fingerprint(secret)), "last4": .string(record.last4),
            ])
        try await store.insertProviderKey(record, audit: audit)
        await refreshAfterChange()
        return record
    }

    /// The only part of a provider secret Gatehouse ever shows; nothing at all for short secrets.
    static func last4(of secret: String) -> String {
        secret.count >= 12 ? String(secret.suffix(4)) : ""
    }

    public func providerKeys(orgID: String) async throws -> [ProviderKeyRecord] {
        try await store.providerKeys(orgID: orgID)
    }

    public func providerKey(orgID: String, id: String) async throws -> ProviderKeyRecord {
        guard let record = try await store.providerKey(orgID: orgID, id: id) else {
            throw GatehouseError.notFound("no provider key with id \(Self.safeID(id))")
        }
        return record
    }

    /// Deletes a provider key; every proxy key bound to it is revoked in the same transaction.
    public func deleteProviderKey(id: String, by principal: Principal) async throws {
        let existing = try await providerKey(orgID: principal.orgID, id: id)
        let audit = draft(
            principal, action: "provider_key.delete", target: id,
            details: ["name": .string(existing.name), "provider": .string(existing.provider.rawValue)])
        guard try await store.deleteProviderKey(orgID: principal.orgID, id: id, at: Date(), audit: audit) else {
            throw GatehouseError.notFound("no provider key with id \(Self.safeID(id))")
        }
        await refreshAfterChange()
    }

    /// Decrypts a provider key for forwarding. The plaintext lives only in memory, in a small
    /// cache for at most ``ProviderSecretCache/lifetime`` (an AES-GCM open per request otherwise).
    public func providerSecret(for record: ProviderKeyRecord) throws -> String {
        if let cached = secretCache.secret(for: record) { return cached }
        let keys = try orgKeys(record.orgID)
        let secret = try keys.openProviderKey(record.ciphertext, rowID: record.id, provider: record.provider.rawValue)
        Redactor.shared.register(secret)
        secretCache.store(secret, for: record)
        return secret
    }

    // MARK: Gatehouse keys

    /// Creates a key; returns its record and the full key text, which is never available again.
    public func createGateKey(_ input: GateKeyInput, by principal: Principal) async throws -> (GateKeyRecord, String) {
        let now = Date()
        let name = try Validation.name(input.name)
        let description = try Validation.description(input.description)
        let expiresAt = try Validation.expiry(input.expiresAt, now: now)
        var record = GateKeyRecord(
            id: "", orgID: principal.orgID, kind: input.kind, name: name, description: description, hash: Data(),
            expiresAt: expiresAt, createdAt: now)
        switch input.kind {
        case .proxy:
            guard let pkID = input.providerKeyID else {
                throw GatehouseError.validation(field: "provider_key_id", message: "is required for a proxy key")
            }
            guard try await store.providerKey(orgID: principal.orgID, id: pkID) != nil else {
                throw GatehouseError.validation(field: "provider_key_id", message: "no provider key with this id")
            }
            record.providerKeyID = pkID
            record.allowedModels = try Validation.models(input.allowedModels)
            record.allowedIPs = try Validation.cidrs(input.allowedIPs)
            record.rateLimits = try Validation.rateLimits(input.rateLimits)
            record.budget = try Validation.budget(input.budget)
        case .api, .read:
            if input.providerKeyID != nil || input.allowedModels != nil || input.rateLimits != nil || input.budget != nil {
                throw GatehouseError.validation(
                    field: "kind", message: "provider_key_id, allowed_models, rate_limits and budget apply to proxy keys only")
            }
            record.allowedIPs = try Validation.cidrs(input.allowedIPs)
        }
        let keys = try orgKeys(principal.orgID)
        let key = GatehouseKey.generate(kind: input.kind)
        record.id = key.id
        record.hash = keys.keyHash(key.text)
        let audit = draft(
            principal, action: "\(input.kind.rawValue)_key.create", target: key.id,
            details: Self.auditDetails(of: record))
        try await store.insertGateKey(record, audit: audit)
        await refreshAfterChange()
        return (record, key.text)
    }

    public func gateKeys(orgID: String, kind: KeyKind?) async throws -> [GateKeyRecord] {
        try await store.gateKeys(orgID: orgID, kind: kind)
    }

    /// A key of one of `kinds` in the caller's organization; anything else is "not found".
    public func gateKey(orgID: String, id: String, kinds: Set<KeyKind>) async throws -> GateKeyRecord {
        guard let record = try await store.gateKey(orgID: orgID, id: id), kinds.contains(record.kind) else {
            throw GatehouseError.notFound("no key with id \(Self.safeID(id))")
        }
        return record
    }

    public func updateProxyKey(id: String, patch: GateKeyPatch, by principal: Principal) async throws -> GateKeyRecord {
        let before = try await gateKey(orgID: principal.orgID, id: id, kinds: [.proxy])
        guard !before.isRevoked else { throw GatehouseError.conflict("key \(id) is revoked; create a new key instead") }
        var after = before
        if let name = patch.name { after.name = try Validation.name(name) }
        after.description = try Validation.description(patch.description.apply(to: before.description))
        if case .set(let date) = patch.expiresAt { after.expiresAt = try Validation.expiry(date, now: Date()) }
        if case .clear = patch.expiresAt { after.expiresAt = nil }
        after.allowedModels = try Validation.models(patch.allowedModels.apply(to: before.allowedModels))
        after.allowedIPs = try Validation.cidrs(patch.allowedIPs.apply(to: before.allowedIPs))
        after.rateLimits = try Validation.rateLimits(patch.rateLimits.apply(to: before.rateLimits))
        after.budget = try Validation.budget(patch.budget.apply(to: before.budget))
        let audit = draft(
            principal, action: "proxy_key.update", target: id,
            details: ["before": .object(Self.auditDetails(of: before)), "after": .object(Self.auditDetails(of: after))])
        guard try await store.updateGateKey(after, audit: audit) else {
            throw GatehouseError.notFound("no key with id \(Self.safeID(id))")
        }
        await refreshAfterChange()
        if after.rateLimits != before.rateLimits || after.budget != before.budget, let logs = store as? any RequestLogStore {
            // New windows and budget periods start from what the key already used.
            await hooks.withLock { $0.beforeLimitRestore }?()
            try? await restoreLimits(for: after, from: logs)
        }
        return after
    }

    /// Revokes a key of one of `kinds`; effective on this instance before this returns.
    public func revokeGateKey(id: String, kinds: Set<KeyKind>, by principal: Principal) async throws -> GateKeyRecord {
        let record = try await gateKey(orgID: principal.orgID, id: id, kinds: kinds)
        let now = Date()
        if record.kind == .api, !record.isRevoked, !record.isExpired(at: now), principal.kind != .cli {
            // Revoking the last active API key would lock the organization out of its own
            // admin API (the CLI on the server can always create a new one).
            let others = try await store.gateKeys(orgID: principal.orgID, kind: .api)
                .filter { $0.id != id && !$0.isRevoked && !$0.isExpired(at: now) }
            if others.isEmpty {
                throw GatehouseError.conflict("key \(id) is the organization's last active API key; create another before revoking it")
            }
        }
        let audit = draft(principal, action: "\(record.kind.rawValue)_key.revoke", target: id, details: ["name": .string(record.name)])
        switch try await store.revokeGateKey(orgID: principal.orgID, id: id, at: Date(), audit: audit) {
        case .notFound: throw GatehouseError.notFound("no key with id \(Self.safeID(id))")
        case .alreadyRevoked: throw GatehouseError.conflict("key \(id) is already revoked")
        case .revoked: break
        }
        await refreshAfterChange()
        return try await gateKey(orgID: principal.orgID, id: id, kinds: kinds)
    }

    // MARK: Helpers

    func draft(_ principal: Principal, action: String, target: String, details: [String: JSONValue]) -> AuditDraft {
        var details = details
        details["actor_name"] = .string(principal.name ?? (principal.kind == .cli ? principal.id : nil))
        return AuditDraft(
            orgID: principal.orgID, actorKind: principal.kind.rawValue, actorID: principal.id, clientIP: principal.clientIP,
            action: action, target: target, details: JSONValue.object(details).encodedString())
    }

    static func auditDetails(of record: GateKeyRecord) -> [String: JSONValue] {
        var d: [String: JSONValue] = [
            "name": .string(record.name), "kind": .string(record.kind.rawValue),
            "description": .string(record.description), "expires_at": .date(record.expiresAt),
            "allowed_ips": .strings(record.allowedIPs),
        ]
        if record.kind == .proxy {
            d["provider_key_id"] = .string(record.providerKeyID)
            d["allowed_models"] = .strings(record.allowedModels)
            d["rate_limits"] = record.rateLimits.map { JSONValue.array($0.map(GatehouseJSON.rateLimit)) } ?? .null
            d["budget"] = record.budget.map(GatehouseJSON.budget) ?? .null
        }
        return d
    }

    /// An id from a client, shortened and stripped to base62/underscore so that whatever a
    /// client sends as an id can never smuggle text (or a pasted secret) into a message.
    static func safeID(_ id: String) -> String {
        let cleaned = id.unicodeScalars.filter { $0.isASCII && (Base62.isSymbol(UInt8($0.value)) || $0 == "_") }
        let text = String(String.UnicodeScalarView(cleaned))
        if text.isEmpty || text.count > 24 || text.count != id.count { return "(invalid id)" }
        if text.hasPrefix("gate_") { return "(a key, not an id)" }
        return text
    }
}
