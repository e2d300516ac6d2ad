import Foundation

/// Recomputes the audit chain and says where and how it is damaged.
///
/// Works on entries in stored order (by sequence). The kinds are best-effort diagnoses of
/// what an attacker with write access to the database did; the sequence number is exact: the
/// first entry that does not chain.
public enum AuditVerifier {
    public enum Damage: String, Sendable, Equatable, Codable {
        /// An entry's content no longer matches its hash.
        case edited
        /// One or more entries are gone (a gap, or a chain link that points to nothing).
        case missing
        /// An entry that does not belong was added.
        case inserted
        /// Entries were moved.
        case reordered
        /// The end of the trail is gone (detected against a checkpoint).
        case truncated
        /// A checkpoint's signature does not verify.
        case badCheckpoint = "bad_checkpoint"
    }

    public struct Report: Sendable, Equatable {
        public var intact: Bool { firstBrokenSequence == nil }
        public var entries: Int
        public var lastSequence: Int64
        public var firstBrokenSequence: Int64?
        public var damage: Damage?

        public init(entries: Int, lastSequence: Int64, firstBrokenSequence: Int64? = nil, damage: Damage? = nil) {
            self.entries = entries
            self.lastSequence = lastSequence
            self.firstBrokenSequence = firstBrokenSequence
            self.damage = damage
        }
    }

    /// Verifies `entries` (sorted by sequence), and optionally that the trail still contains a
    /// checkpointed `(sequence, hash)`.
    public static func verify(_ entries: [AuditEntry], checkpoint: AuditCheckpoint? = nil) -> Report {
        var report = Report(entries: entries.count, lastSequence: entries.last?.sequence ?? 0)
        func broken(_ seq: Int64, _ damage: Damage) -> Report {
            report.firstBrokenSequence = seq
            report.damage = damage
            return report
        }
        let hashes = Dictionary(entries.map { ($0.hash, $0.sequence) }, uniquingKeysWith: { a, _ in a })
        var previousHash = AuditChain.genesis
        var expected: Int64 = 1
        for (i, entry) in entries.enumerated() {
            if entry.sequence < expected { return broken(entry.sequence, .inserted) }
            let contentMatches = AuditChain.hash(entry) == entry.hash
            if entry.prevHash != previousHash {
                if i >= 1, i >= 2 ? entry.prevHash == entries[i - 2].hash : entry.prevHash == AuditChain.genesis {
                    // It chains to the entry before the previous one: the previous one was added.
                    return broken(entries[i - 1].sequence, .inserted)
                }
                if let other = hashes[entry.prevHash], other != entry.sequence {
                    return broken(expected, .reordered)
                }
                // Points to an entry we do not have: something before it was removed (or an
                // entry was rewritten with a fresh hash, which looks the same from here).
                return broken(entry.sequence > expected ? expected : entry.sequence, .missing)
            }
            if !contentMatches { return broken(entry.sequence, .edited) }
            if entry.sequence > expected { return broken(expected, .missing) }
            previousHash = entry.hash
            expected = entry.sequence + 1
        }
        if let checkpoint {
            guard let at = entries.first(where: { $0.sequence == checkpoint.sequence }) else {
                return broken(min(checkpoint.sequence, (entries.last?.sequence ?? 0) + 1), .truncated)
            }
            if at.hash != checkpoint.hash { return broken(checkpoint.sequence, .edited) }
        }
        return report
    }
}
