import Foundation
import GatehouseCore
import Synchronization

/// The in-memory view of every key the gateway and admin API check on each request.
///
/// Read on every request, changed rarely: it holds one immutable snapshot behind a `Mutex`
/// and swaps it whole on change, so a lookup is a lock, a dictionary read and an unlock — no
/// actor hop and no database round-trip.
public final class KeyTable: Sendable {
    /// One consistent view of the keys of every organization.
    public struct Snapshot: Sendable {
        /// The store's change sequence this snapshot reflects.
        public var sequence: Int64
        public var gateKeys: [String: GateKeyRecord]
        public var providerKeys: [String: ProviderKeyRecord]
        public var orgKeys: [String: OrgKeys]
        public var organizations: [String: Organization]
        /// Each organization's parsed network rules (allowlists, trusted proxies).
        public var networkPolicies: [String: NetworkPolicy] = [:]
        /// Keys with an `allowed_ips` list, parsed once per change rather than per request.
        public var keyAllowlists: [String: IPAllowlist] = [:]

        public static let empty = Snapshot(sequence: -1, gateKeys: [:], providerKeys: [:], orgKeys: [:], organizations: [:])
    }

    /// Why a presented key was refused. Only ever written to the audit trail; clients get one
    /// uniform 401.
    public enum Failure: String, Sendable, Error {
        case missing
        case malformed
        case badChecksum = "bad_checksum"
        case unknownKey = "unknown_key"
        case hashMismatch = "hash_mismatch"
        case revoked
        case expired
        /// A session cookie that is unknown, expired or idle too long.
        case invalidSession = "invalid_session"
    }

    private let state = Mutex(Snapshot.empty)

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0 } }

    /// Publishes `snapshot` unless a newer one is already published.
    @discardableResult
    public func publish(_ snapshot: Snapshot) -> Bool {
        state.withLock { current in
            guard snapshot.sequence >= current.sequence else { return false }
            current = snapshot
            return true
        }
    }

    public func networkPolicy(_ orgID: String) -> NetworkPolicy {
        state.withLock { $0.networkPolicies[orgID] } ?? NetworkPolicy()
    }

    /// Whether `key`'s own `allowed_ips` (if any) admit `address`.
    public func keyPermits(_ key: GateKeyRecord, _ address: IPAddress?) -> Bool {
        state.withLock { $0.keyAllowlists[key.id] }?.permits(address) ?? true
    }

    public func orgKeys(_ orgID: String) -> OrgKeys? {
        state.withLock { $0.orgKeys[orgID] }
    }

    /// Checks a presented key: format and checksum (no lookup), then the key id in memory,
    /// then a constant-time HMAC comparison, then revocation and expiry.
    ///
    /// Revocation and expiry are checked only after the HMAC matched, so "revoked" is reported
    /// only for the genuine key, never for a guess that happens to reuse a revoked id.
    public func authenticate(_ text: some StringProtocol, now: Date = Date()) -> Result<GateKeyRecord, Failure> {
        authenticateDetailed(text, now: now).result
    }

    /// Like ``authenticate(_:now:)``, and also the genuine key record when the failure is
    /// `revoked` or `expired` (for the audit trail: a revoked key being used is an event).
    public func authenticateDetailed(_ text: some StringProtocol, now: Date = Date()) -> (result: Result<GateKeyRecord, Failure>, key: GateKeyRecord?) {
        var proven: ProvenKey?
        return authenticateDetailed(text, now: now, proven: &proven)
    }

    /// The last key a connection proved (its HMAC matched), remembered by that connection only.
    ///
    /// A client on a kept-alive connection sends the same key with every request. When the
    /// bytes presented are exactly those proved before (compared in constant time) and the key
    /// in the table still has the hash they matched, the format check and the HMAC are not
    /// redone; the lookup, kind, revocation and expiry checks always are, so a revoked, expired,
    /// deleted or re-hashed key is refused on the next request as without it. The key's bytes
    /// live as long as the connection (as they do in its read buffer); they are never logged.
    public struct ProvenKey: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
        fileprivate let credential: [UInt8]
        fileprivate let keyID: String
        fileprivate let hash: Data

        /// Never the key's bytes, should one be printed.
        public var description: String { "ProvenKey(\(keyID))" }
        public var debugDescription: String { description }
    }

    /// ``authenticateDetailed(_:now:)`` for a connection that remembers the key it last proved:
    /// `proven` is read first and replaced by the key proved here. A failure leaves it as it
    /// was, except when the remembered key is gone from the table or its hash changed: then it
    /// is cleared.
    public func authenticateDetailed(
        _ text: some StringProtocol, now: Date = Date(), proven: inout ProvenKey?
    ) -> (result: Result<GateKeyRecord, Failure>, key: GateKeyRecord?) {
        if let remembered = proven, Self.sameBytes(remembered.credential, text.utf8) {
            let record = state.withLock { snap -> GateKeyRecord? in
                guard let record = snap.gateKeys[remembered.keyID], snap.orgKeys[record.orgID] != nil else { return nil }
                return record
            }
            if let record, record.hash == remembered.hash { return Self.standing(of: record, now: now) }
            // Deleted, or its hash changed: the full check below decides, as for any key.
            proven = nil
        }
        let outcome = authenticateFully(text, now: now)
        if case .success(let record) = outcome.result {
            proven = ProvenKey(credential: Array(text.utf8), keyID: record.id, hash: record.hash)
        }
        return outcome
    }

    /// Whether `presented` is byte for byte `remembered`, in time that depends only on the
    /// lengths (a key's length is fixed by its format, not secret).
    static func sameBytes(_ remembered: [UInt8], _ presented: some Collection<UInt8>) -> Bool {
        guard remembered.count == presented.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(remembered, presented) { difference |= a ^ b }
        return difference == 0
    }

    private func authenticateFully(_ text: some StringProtocol, now: Date) -> (result: Result<GateKeyRecord, Failure>, key: GateKeyRecord?) {
        let parsed: GatehouseKey
        do {
            parsed = try GatehouseKey.parse(text)
        } catch .badChecksum {
            return (.failure(.badChecksum), nil)
        } catch {
            return (.failure(.malformed), nil)
        }
        let found = state.withLock { snap -> (GateKeyRecord, OrgKeys)? in
            guard let record = snap.gateKeys[parsed.id], let keys = snap.orgKeys[record.orgID] else { return nil }
            return (record, keys)
        }
        guard let (record, keys) = found else { return (.failure(.unknownKey), nil) }
        guard record.kind == parsed.kind, keys.verifyKey(parsed.text, storedHash: record.hash) else {
            return (.failure(.hashMismatch), nil)
        }
        return Self.standing(of: record, now: now)
    }

    /// A genuine key's answer: refused when revoked or expired, otherwise let in.
    private static func standing(of record: GateKeyRecord, now: Date) -> (result: Result<GateKeyRecord, Failure>, key: GateKeyRecord?) {
        if record.isRevoked { return (.failure(.revoked), record) }
        if record.isExpired(at: now) { return (.failure(.expired), record) }
        return (.success(record), record)
    }
}
