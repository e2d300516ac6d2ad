import Foundation
import GatehouseCore
import GatehouseStore
import Logging
import ServiceLifecycle
import Synchronization

/// Turns failed authentications into audit entries without letting a flood bloat the trail:
/// failures are counted in memory per (organization, client IP, reason class, minute) and
/// written as one entry per bucket when the minute is over. Use of a genuine but revoked or
/// expired key is counted per key and minute the same way, attributed to the key's org.
public final class AuthFailureRecorder: Service, Sendable {
    struct Bucket: Hashable, Sendable {
        var orgID: String
        var clientIP: String
        var action: String
        var target: String
        var minute: Int64
    }

    let store: any Store
    let logger: Logger
    private let buckets = Mutex<[Bucket: [String: Int]]>([:])

    public init(store: any Store, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// Records one failure. `key` is the genuine key for `revoked`/`expired` failures.
    public func record(plane: String, reason: KeyTable.Failure, key: GateKeyRecord?, clientIP: String, now: Date = Date()) {
        let minute = Int64(now.timeIntervalSince1970 / 60)
        let bucket: Bucket
        if let key, reason == .revoked || reason == .expired {
            bucket = Bucket(orgID: key.orgID, clientIP: clientIP, action: "\(plane).\(reason.rawValue)_key_used", target: key.id, minute: minute)
        } else {
            bucket = Bucket(orgID: "", clientIP: clientIP, action: "\(plane).auth_failed", target: "", minute: minute)
        }
        buckets.withLock { all in
            guard all.count < 100_000 || all[bucket] != nil else { return }  // bounded under a flood of distinct IPs
            all[bucket, default: [:]][reason.rawValue, default: 0] += 1
        }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(5))
                await self.flush(all: false)
            }
        }
        await flush(all: true)
    }

    /// Writes every bucket whose minute is over (or all of them at shutdown).
    public func flush(all: Bool, now: Date = Date()) async {
        let currentMinute = Int64(now.timeIntervalSince1970 / 60)
        let due = buckets.withLock { b -> [(Bucket, [String: Int])] in
            let ready = b.filter { all || $0.key.minute < currentMinute }
            for key in ready.keys { b[key] = nil }
            return Array(ready)
        }
        for (bucket, reasons) in due.sorted(by: { ($0.0.minute, $0.0.clientIP) < ($1.0.minute, $1.0.clientIP) }) {
            let total = reasons.values.reduce(0, +)
            let details = JSONValue.object([
                "count": .int(total), "reasons": .object(reasons.mapValues { .int($0) }),
                "minute_start": .date(Date(timeIntervalSince1970: Double(bucket.minute * 60))),
            ])
            do {
                try await store.appendAudit(
                    AuditDraft(
                        orgID: bucket.orgID, actorKind: "anonymous", actorID: "", clientIP: bucket.clientIP, action: bucket.action,
                        target: bucket.target, outcome: .denied, details: details.encodedString()))
            } catch {
                logger.error("writing an authentication-failure audit entry failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
