import Foundation
import GatehouseCore
import Synchronization

/// Decrypted provider keys, held in memory for a short, bounded time so that the hot path does
/// not open the vault (AES-256-GCM) on every request.
///
/// An entry is tied to the stored ciphertext: a provider key replaced under the same id never
/// serves the old secret. A deleted provider key is no longer in the key table, so nothing asks
/// for it, and its entry leaves at the latest after ``lifetime``.
public final class ProviderSecretCache: Sendable {
    public static let lifetime: Duration = .seconds(60)
    public static let capacity = 1024

    struct Entry {
        var secret: String
        var ciphertext: Data
        var expires: ContinuousClock.Instant
    }

    private let entries = Mutex<[String: Entry]>([:])

    public init() {}

    public func secret(for record: ProviderKeyRecord, now: ContinuousClock.Instant = .now) -> String? {
        entries.withLock { entries in
            guard let entry = entries[record.id] else { return nil }
            guard entry.expires > now, entry.ciphertext == record.ciphertext else {
                entries[record.id] = nil
                return nil
            }
            return entry.secret
        }
    }

    public func store(_ secret: String, for record: ProviderKeyRecord, now: ContinuousClock.Instant = .now) {
        entries.withLock { entries in
            if entries.count >= Self.capacity {
                entries = entries.filter { $0.value.expires > now }
                if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
            }
            entries[record.id] = Entry(secret: secret, ciphertext: record.ciphertext, expires: now.advanced(by: Self.lifetime))
        }
    }

    var count: Int { entries.withLock { $0.count } }
}
