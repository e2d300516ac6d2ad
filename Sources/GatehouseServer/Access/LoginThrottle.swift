import Foundation
import Synchronization

/// Slows password guessing: after `maxFailures` failed logins within `window` for one account,
/// or `maxFailuresPerIP` from one address, further attempts are refused with 429 until the
/// oldest failure leaves the window. Counted in memory per instance.
public final class LoginThrottle: Sendable {
    let maxFailures: Int
    let maxFailuresPerIP: Int
    let window: TimeInterval
    private let failures = Mutex<[String: [Date]]>([:])

    public init(maxFailures: Int = 5, maxFailuresPerIP: Int = 20, window: TimeInterval = 15 * 60) {
        self.maxFailures = maxFailures
        self.maxFailuresPerIP = maxFailuresPerIP
        self.window = window
    }

    /// Seconds to wait if either the account or the address is throttled; `nil` if allowed.
    public func retryAfter(account: String, ip: String, now: Date = Date()) -> Int? {
        failures.withLock { all in
            var wait: TimeInterval? = nil
            for (key, limit) in [("a:" + account, maxFailures), ("i:" + ip, maxFailuresPerIP)] {
                let recent = (all[key] ?? []).filter { now.timeIntervalSince($0) < window }
                all[key] = recent.isEmpty ? nil : recent
                if recent.count >= limit, let oldest = recent.first {
                    wait = max(wait ?? 0, window - now.timeIntervalSince(oldest))
                }
            }
            return wait.map { max(1, Int($0.rounded(.up))) }
        }
    }

    public func recordFailure(account: String, ip: String, now: Date = Date()) {
        failures.withLock { all in
            all["a:" + account, default: []].append(now)
            all["i:" + ip, default: []].append(now)
            if all.count > 100_000 { all.removeAll() }  // bounded: a flood of distinct keys cannot exhaust memory
        }
    }

    public func recordSuccess(account: String) {
        _ = failures.withLock { $0.removeValue(forKey: "a:" + account) }
    }
}
