import Foundation
import Crypto

/// One entry of the append-only audit trail.
public struct AuditEntry: Sendable, Equatable {
    public enum Outcome: String, Sendable, Codable {
        case success, denied, failed
    }

    public var sequence: Int64
    public var time: Date
    public var orgID: String
    public var actorKind: String
    public var actorID: String
    public var clientIP: String
    public var action: String
    public var target: String
    public var outcome: Outcome
    /// JSON object text; secrets are replaced by keyed fingerprints before they get here.
    public var details: String
    public var prevHash: Data
    public var hash: Data

    public init(
        sequence: Int64, time: Date, orgID: String, actorKind: String, actorID: String, clientIP: String,
        action: String, target: String, outcome: Outcome, details: String, prevHash: Data, hash: Data = Data()
    ) {
        self.sequence = sequence
        self.time = time
        self.orgID = orgID
        self.actorKind = actorKind
        self.actorID = actorID
        self.clientIP = clientIP
        self.action = action
        self.target = target
        self.outcome = outcome
        self.details = details
        self.prevHash = prevHash
        self.hash = hash
    }
}

/// The hash chain over audit entries: `hash = SHA-256(prev_hash ‖ canonical(entry))`.
///
/// The canonical encoding is each field as a 4-byte big-endian length followed by its UTF-8
/// bytes, in a fixed order, so no two different entries encode the same way.
public enum AuditChain {
    /// The `prev_hash` of the first entry.
    public static let genesis = Data(repeating: 0, count: 32)

    public static func canonicalEncoding(_ entry: AuditEntry) -> Data {
        var out = Data()
        func field(_ text: String) {
            let bytes = Array(text.utf8)
            let n = UInt32(bytes.count)
            out.append(contentsOf: [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)])
            out.append(contentsOf: bytes)
        }
        field("v1")
        field(String(entry.sequence))
        field(String(entry.time.unixMilliseconds))
        field(entry.orgID)
        field(entry.actorKind)
        field(entry.actorID)
        field(entry.clientIP)
        field(entry.action)
        field(entry.target)
        field(entry.outcome.rawValue)
        field(entry.details)
        return out
    }

    public static func hash(_ entry: AuditEntry) -> Data {
        var hasher = SHA256()
        hasher.update(data: entry.prevHash)
        hasher.update(data: canonicalEncoding(entry))
        return Data(hasher.finalize())
    }

    /// Returns the sequence number of the first entry that does not chain, or `nil` if intact.
    public static func firstBroken(_ entries: some Sequence<AuditEntry>) -> Int64? {
        var prev = genesis
        var expectedSeq: Int64? = nil
        for entry in entries {
            if let e = expectedSeq, entry.sequence != e { return min(entry.sequence, e) }
            if entry.prevHash != prev || hash(entry) != entry.hash { return entry.sequence }
            prev = entry.hash
            expectedSeq = entry.sequence + 1
        }
        return nil
    }
}
