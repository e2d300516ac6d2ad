import Foundation
import Synchronization

/// Rate limits and budgets of every proxy key, in memory: reserve the worst case before a
/// request is forwarded, settle to the actual usage afterwards.
///
/// All checks and reservations of one request happen under one lock, so concurrent requests
/// cannot both see the same headroom: the sum of admitted reservations never exceeds a
/// limit. The bound on actual spend is therefore: spend ≤ budget + Σ over in-flight requests of
/// (actual − reserved), which is zero as long as reservations are upper bounds (see
/// `docs/limits.md`).
public final class LimitLedger: Sendable {
    /// One counted window: a key's own limit, or a client policy (optionally per user).
    struct WindowKey: Hashable, Sendable {
        var metric: RateLimit.Metric
        var windowSeconds: Int
        var policy: RateLimitPolicy?
        var user: String?
    }

    struct KeyState: Sendable {
        var windows: [WindowKey: SlidingWindowLog] = [:]
        var budgetPeriodStart: Date?
        /// The cached bounds of the current budget period (calendar math is slow).
        var budgetPeriodEnd: Date?
        var budgetPeriod: Budget.Period?
        var spentMicros: Int64 = 0
        var pendingBudget: [UInt64: Int64] = [:]
        var pendingBudgetSum: Int64 = 0
    }

    /// What a request is expected to use at most.
    public struct Estimate: Sendable, Equatable {
        public var tokens: Int
        /// `nil` when the model has no known price.
        public var costMicros: Int64?
        public init(tokens: Int, costMicros: Int64?) {
            self.tokens = tokens
            self.costMicros = costMicros
        }
    }

    /// What a request actually used.
    public struct Actual: Sendable, Equatable {
        public var tokens: Int
        public var costMicros: Int64
        public init(tokens: Int, costMicros: Int64) {
            self.tokens = tokens
            self.costMicros = costMicros
        }
    }

    /// The state of one limit, for `RateLimit-*` headers.
    public struct Status: Sendable, Equatable {
        enum Source: Sendable, Equatable {
            case window(WindowKey)
            case budget(Budget.Period)
        }

        let source: Source
        public var limit: Double
        public var remaining: Double
        /// Seconds until the window has room again (or the budget period ends).
        public var resetSeconds: Int

        /// `RateLimit-Policy` text, e.g. `100;w=60;u=requests` or `5;w=day;u=usd` — built only
        /// when a header or message needs it, not on every admitted request.
        public var policy: String {
            switch source {
            case .window(let key): LimitLedger.policyText(key, limit: limit)
            case .budget(let period): "\(LimitLedger.formatNumber(limit));w=\(period.rawValue);u=usd"
            }
        }
    }

    /// A granted reservation, to be settled exactly once.
    public struct Reservation: Sendable {
        let id: UInt64
        let keyID: String
        let windows: [WindowKey]
        let budgeted: Bool
        public let estimate: Estimate
    }

    public enum Decision: Sendable {
        /// Admitted; `tightest` is the limit with the least headroom left (for headers).
        case admitted(Reservation, tightest: Status?)
        case rateLimited(Status, retryAfterSeconds: Int)
        case budgetExhausted(Status, retryAfterSeconds: Int?)
    }

    private let state = Mutex<[String: KeyState]>([:])
    private let nextID = Atomic<UInt64>(1)

    public init() {}

    static func amount(_ metric: RateLimit.Metric, tokens: Int, costMicros: Int64) -> Double {
        switch metric {
        case .requests: 1
        case .tokens: Double(tokens)
        case .costUSD: Double(costMicros) / 1_000_000
        }
    }

    static func amount(_ policy: RateLimitPolicy, costMicros: Int64) -> Double {
        policy.unit == .request ? 1 : Double(costMicros) / 10_000
    }

    /// `RateLimit-Policy` text: `<limit>;w=<seconds>` plus the unit.
    static func policyText(_ key: WindowKey, limit: Double) -> String {
        if let p = key.policy {
            var t = "\(formatNumber(p.quota));w=\(p.windowSeconds)"
            if p.unit == .cents { t += ";u=cents" }
            if p.perUser { t += ";s=user" }
            return t
        }
        let unit = switch key.metric {
        case .requests: "requests"
        case .tokens: "tokens"
        case .costUSD: "usd"
        }
        return "\(formatNumber(limit));w=\(key.windowSeconds);u=\(unit)"
    }

    public static func formatNumber(_ v: Double) -> String {
        v.rounded() == v && abs(v) < 1e15 ? String(Int64(v)) : String(v)
    }

    /// Checks every limit of a key and, if all have room, reserves the estimate in each.
    public func reserve(
        keyID: String, limits: [RateLimit], budget: Budget?, policy: RateLimitPolicy?, user: String?,
        estimate: Estimate, now: Date = Date()
    ) -> Decision {
        let nowMs = Int64((now.timeIntervalSince1970 * 1000).rounded(.down))
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let costMicros = estimate.costMicros ?? 0
        return state.withLock { keys -> Decision in
            // Take the state out of the dictionary so that it is mutated in place (a copy still
            // referenced by the dictionary would make every window's log copy on write).
            var s = keys.removeValue(forKey: keyID) ?? KeyState()
            defer { keys[keyID] = s }

            var checks: [(WindowKey, limit: Double, amount: Double)] = limits.map {
                (WindowKey(metric: $0.metric, windowSeconds: $0.windowSeconds), $0.limit,
                 Self.amount($0.metric, tokens: estimate.tokens, costMicros: costMicros))
            }
            if let policy {
                let key = WindowKey(metric: policy.unit == .request ? .requests : .costUSD, windowSeconds: policy.windowSeconds, policy: policy, user: policy.perUser ? (user ?? "") : nil)
                checks.append((key, policy.quota, Self.amount(policy, costMicros: costMicros)))
            }
            // Check everything first: a request refused by one limit reserves nothing anywhere.
            for (key, limit, amount) in checks {
                let used = s.windows[key, default: SlidingWindowLog(windowSeconds: key.windowSeconds)].total(now: nowMs)
                if used + amount > limit + 1e-9 {
                    let wait = s.windows[key]!.msUntilFree(amount, limit: limit, now: nowMs) ?? Int64(key.windowSeconds) * 1000
                    let reset = Int((Double(s.windows[key]!.nextExpiry(now: nowMs) - nowMs) / 1000).rounded(.up))
                    return .rateLimited(
                        Status(source: .window(key), limit: limit, remaining: max(0, limit - used), resetSeconds: max(0, reset)),
                        retryAfterSeconds: max(1, Int((Double(wait) / 1000).rounded(.up))))
                }
            }
            var budgetStatus: Status? = nil
            if let budget {
                let start: Date
                let end: Date?
                if s.budgetPeriod == budget.period, let cachedStart = s.budgetPeriodStart, now >= cachedStart,
                    s.budgetPeriodEnd.map({ now < $0 }) ?? true
                {
                    (start, end) = (cachedStart, s.budgetPeriodEnd)
                } else {
                    (start, end) = budget.period.bounds(containing: now)
                    s.budgetPeriod = budget.period
                    s.budgetPeriodEnd = end
                }
                if s.budgetPeriodStart != start {
                    s.budgetPeriodStart = start
                    s.spentMicros = 0
                }
                let limitMicros = Int64((budget.limitUSD * 1_000_000).rounded())
                let used = s.spentMicros + s.pendingBudgetSum
                let resetSeconds = end.map { Int($0.timeIntervalSince(now).rounded(.up)) }
                if used + costMicros > limitMicros || (costMicros == 0 && used >= limitMicros) {
                    return .budgetExhausted(
                        Status(source: .budget(budget.period), limit: budget.limitUSD, remaining: Double(max(0, limitMicros - used)) / 1_000_000,
                               resetSeconds: resetSeconds ?? 0),
                        retryAfterSeconds: resetSeconds)
                }
                s.pendingBudget[id] = costMicros
                s.pendingBudgetSum += costMicros
                budgetStatus = Status(
                    source: .budget(budget.period), limit: budget.limitUSD,
                    remaining: Double(max(0, limitMicros - used - costMicros)) / 1_000_000, resetSeconds: resetSeconds ?? 0)
            }
            // Reserve.
            var tightest: Status? = nil
            var tightestRatio = Double.infinity
            var tightestWindow: (key: WindowKey, limit: Double, remaining: Double)? = nil
            for (key, limit, amount) in checks {
                if key.metric == .requests {
                    s.windows[key]!.add(amount, now: nowMs)  // a request counts once admitted, whatever happens next
                } else {
                    s.windows[key]!.reserve(id: id, amount: amount)
                }
                let remaining = max(0, limit - s.windows[key]!.total(now: nowMs))
                let ratio = remaining / limit
                if ratio < tightestRatio {
                    tightestRatio = ratio
                    tightestWindow = (key, limit, remaining)
                }
            }
            if let t = tightestWindow {
                let reset = Int((Double(s.windows[t.key]!.nextExpiry(now: nowMs) - nowMs) / 1000).rounded(.up))
                tightest = Status(source: .window(t.key), limit: t.limit, remaining: t.remaining, resetSeconds: max(0, reset))
            }
            if let b = budgetStatus, b.remaining / max(b.limit, 1e-12) < tightestRatio { tightest = b }
            return .admitted(
                Reservation(id: id, keyID: keyID, windows: checks.map(\.0), budgeted: budget != nil, estimate: estimate),
                tightest: tightest)
        }
    }

    /// Replaces a reservation with what the request actually used, and releases the rest.
    public func settle(_ reservation: Reservation, actual: Actual, now: Date = Date()) {
        let nowMs = Int64((now.timeIntervalSince1970 * 1000).rounded(.down))
        state.withLock { keys in
            guard var s = keys.removeValue(forKey: reservation.keyID) else { return }
            for key in reservation.windows where key.metric != .requests {
                let amount: Double =
                    if let policy = key.policy { Self.amount(policy, costMicros: actual.costMicros) }
                    else { Self.amount(key.metric, tokens: actual.tokens, costMicros: actual.costMicros) }
                s.windows[key]?.settle(id: reservation.id, actual: amount, now: nowMs)
            }
            if reservation.budgeted, let reserved = s.pendingBudget.removeValue(forKey: reservation.id) {
                s.pendingBudgetSum -= reserved
                s.spentMicros += actual.costMicros
            }
            keys[reservation.keyID] = s
        }
    }

    /// Spend of a key in the budget period containing `now`, in micro-dollars (settled only).
    public func spentMicros(keyID: String, budget: Budget, now: Date = Date()) -> Int64 {
        let (start, _) = budget.period.bounds(containing: now)
        return state.withLock { keys in
            guard let s = keys[keyID], s.budgetPeriodStart == start else { return 0 }
            return s.spentMicros
        }
    }

    /// One past request, for rebuilding state after a restart.
    public struct HistoryEntry: Sendable, Equatable {
        public var time: Date
        public var tokens: Int
        public var costMicros: Int64
        public init(time: Date, tokens: Int, costMicros: Int64) {
            self.time = time
            self.tokens = tokens
            self.costMicros = costMicros
        }
    }

    /// Rebuilds a key's windows and budget from the durable request log (oldest first).
    /// Client policy windows (`Helicone-RateLimit-Policy`) are not rebuilt.
    public func restore(keyID: String, limits: [RateLimit], budget: Budget?, spentMicros: Int64, history: [HistoryEntry], now: Date = Date()) {
        let nowMs = Int64((now.timeIntervalSince1970 * 1000).rounded(.down))
        state.withLock { keys in
            let previous = keys[keyID]
            var s = KeyState()
            // Requests in flight keep their reservations; they settle into the rebuilt state.
            if let previous {
                s.pendingBudget = previous.pendingBudget
                s.pendingBudgetSum = previous.pendingBudgetSum
                for (key, window) in previous.windows where key.policy != nil { s.windows[key] = window }
            }
            for limit in limits {
                let key = WindowKey(metric: limit.metric, windowSeconds: limit.windowSeconds)
                var window = SlidingWindowLog(windowSeconds: limit.windowSeconds)
                if let old = previous?.windows[key] { window.adoptPending(from: old) }
                for entry in history {
                    let t = Int64((entry.time.timeIntervalSince1970 * 1000).rounded(.down))
                    guard t > nowMs - window.windowMs else { continue }
                    window.add(Self.amount(limit.metric, tokens: entry.tokens, costMicros: entry.costMicros), now: t)
                }
                s.windows[key] = window
            }
            if let budget {
                let (start, end) = budget.period.bounds(containing: now)
                s.budgetPeriodStart = start
                s.budgetPeriodEnd = end
                s.budgetPeriod = budget.period
                s.spentMicros = spentMicros
            }
            keys[keyID] = s
        }
    }

    /// Forgets keys that are no longer configured (revoked or deleted).
    public func retain(keyIDs: Set<String>) {
        state.withLock { keys in
            keys = keys.filter { keyIDs.contains($0.key) }
        }
    }
}
