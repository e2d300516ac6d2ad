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
    /// One counted window, as named in `RateLimit-Policy`: a key's own limit or a client policy.
    struct WindowKey: Hashable, Sendable {
        var metric: RateLimit.Metric
        var windowSeconds: Int
        var policy: RateLimitPolicy?
    }

    /// A client policy's window: per policy, and per user with `s=user`.
    struct PolicyKey: Hashable, Sendable {
        var policy: RateLimitPolicy
        var user: String?
    }

    /// A window and the reservation id it was created at: reservations made before it existed
    /// hold nothing in it, so settling them must not release anything there.
    struct Window: Sendable {
        var metric: RateLimit.Metric
        var windowSeconds: Int
        var createdAt: UInt64
        var log: SlidingWindowLog

        init(metric: RateLimit.Metric, windowSeconds: Int, createdAt: UInt64) {
            self.metric = metric
            self.windowSeconds = windowSeconds
            self.createdAt = createdAt
            self.log = SlidingWindowLog(windowSeconds: windowSeconds)
        }
    }

    /// Everything counted for one key. A reference type so that a reservation can settle
    /// straight into it and the hot path mutates windows in place (no dictionary copy-out):
    /// it is only ever read or written while the ledger's lock is held.
    final class KeyState: @unchecked Sendable {
        /// One per configured limit, in the order of the key's `limits`.
        var windows: [Window] = []
        var policyWindows: [PolicyKey: Window] = [:]
        var budgetPeriodStart: Date?
        /// The cached bounds of the current budget period (calendar math is slow).
        var budgetPeriodEnd: Date?
        var budgetPeriod: Budget.Period?
        var spentMicros: Int64 = 0
        var pendingBudgetSum: Int64 = 0
        var pendingBudgetCount = 0
        /// Reservations not yet settled: settling one twice changes nothing.
        var pendingIDs: Set<UInt64> = []

        /// Makes `windows` match `limits`, keeping the windows (and their reservations) of
        /// limits that stay. Cheap when nothing changed, which is every request but the first
        /// after an edit.
        func align(with limits: [RateLimit], createdAt: UInt64) {
            if windows.count == limits.count {
                var same = true
                for i in limits.indices where windows[i].metric != limits[i].metric || windows[i].windowSeconds != limits[i].windowSeconds {
                    same = false
                    break
                }
                if same { return }
            }
            var old = windows
            windows = limits.map { limit in
                if let i = old.firstIndex(where: { $0.metric == limit.metric && $0.windowSeconds == limit.windowSeconds }) {
                    return old.remove(at: i)
                }
                return Window(metric: limit.metric, windowSeconds: limit.windowSeconds, createdAt: createdAt)
            }
        }
    }

    struct State: Sendable {
        var keys: [String: KeyState] = [:]
        /// Reservation ids, issued under the lock so that "created before/after" is exact.
        var nextID: UInt64 = 1

        /// The key's state, created empty on first use.
        mutating func keyState(_ keyID: String) -> KeyState {
            if let existing = keys[keyID] { return existing }
            let created = KeyState()
            keys[keyID] = created
            return created
        }
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
        let state: KeyState
        let policyKey: PolicyKey?
        /// Micro-dollars held against the budget (0 when the key has none).
        let budgetMicros: Int64
        let budgeted: Bool
        public let estimate: Estimate
    }

    public enum Decision: Sendable {
        /// Admitted; `tightest` is the limit with the least headroom left (for headers).
        case admitted(Reservation, tightest: Status?)
        case rateLimited(Status, retryAfterSeconds: Int)
        case budgetExhausted(Status, retryAfterSeconds: Int?)
    }

    private let state = Mutex(State())

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

    static func milliseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
    }

    /// The refusal for a window without room for `amount`.
    static func refusal(_ window: inout Window, key: WindowKey, limit: Double, amount: Double, used: Double, nowMs: Int64) -> Decision {
        let wait = window.log.msUntilFree(amount, limit: limit, now: nowMs) ?? Int64(window.windowSeconds) * 1000
        let reset = Int((Double(window.log.nextExpiry(now: nowMs) - nowMs) / 1000).rounded(.up))
        return .rateLimited(
            Status(source: .window(key), limit: limit, remaining: max(0, limit - used), resetSeconds: max(0, reset)),
            retryAfterSeconds: max(1, Int((Double(wait) / 1000).rounded(.up))))
    }

    /// Checks every limit of a key and, if all have room, reserves the estimate in each.
    public func reserve(
        keyID: String, limits: [RateLimit], budget: Budget?, policy: RateLimitPolicy?, user: String?,
        estimate: Estimate, now: Date = Date()
    ) -> Decision {
        let nowMs = Self.milliseconds(now)
        let costMicros = estimate.costMicros ?? 0
        return state.withLock { ledger -> Decision in
            let id = ledger.nextID
            ledger.nextID &+= 1
            let s = ledger.keyState(keyID)
            s.align(with: limits, createdAt: id)

            // Check everything first: a request refused by one limit reserves nothing anywhere.
            for i in limits.indices {
                let amount = Self.amount(limits[i].metric, tokens: estimate.tokens, costMicros: costMicros)
                let used = s.windows[i].log.total(now: nowMs)
                if used + amount > limits[i].limit + 1e-9 {
                    let key = WindowKey(metric: limits[i].metric, windowSeconds: limits[i].windowSeconds)
                    return Self.refusal(&s.windows[i], key: key, limit: limits[i].limit, amount: amount, used: used, nowMs: nowMs)
                }
            }
            var policyKey: PolicyKey? = nil
            var policyIndex: Dictionary<PolicyKey, Window>.Index? = nil
            var policyAmount = 0.0
            if let policy {
                let pk = PolicyKey(policy: policy, user: policy.perUser ? (user ?? "") : nil)
                let index = s.policyWindows.index(forKey: pk) ?? {
                    s.policyWindows[pk] = Window(metric: policy.unit == .request ? .requests : .costUSD, windowSeconds: policy.windowSeconds, createdAt: id)
                    return s.policyWindows.index(forKey: pk)!
                }()
                policyAmount = Self.amount(policy, costMicros: costMicros)
                let used = s.policyWindows.values[index].log.total(now: nowMs)
                if used + policyAmount > policy.quota + 1e-9 {
                    let key = WindowKey(metric: s.policyWindows.values[index].metric, windowSeconds: policy.windowSeconds, policy: policy)
                    return Self.refusal(&s.policyWindows.values[index], key: key, limit: policy.quota, amount: policyAmount, used: used, nowMs: nowMs)
                }
                policyKey = pk
                policyIndex = index
            }
            var budgetStatus: Status? = nil
            var budgetMicros: Int64 = 0
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
                s.pendingBudgetSum += costMicros
                s.pendingBudgetCount += 1
                budgetMicros = costMicros
                budgetStatus = Status(
                    source: .budget(budget.period), limit: budget.limitUSD,
                    remaining: Double(max(0, limitMicros - used - costMicros)) / 1_000_000, resetSeconds: resetSeconds ?? 0)
            }

            // Reserve, and find the limit with the least headroom left.
            var tightest: Status? = nil
            var tightestRatio = Double.infinity
            func consider(_ window: inout Window, key: WindowKey, limit: Double) {
                let remaining = max(0, limit - window.log.total(now: nowMs))
                guard remaining / limit < tightestRatio else { return }
                tightestRatio = remaining / limit
                let reset = Int((Double(window.log.nextExpiry(now: nowMs) - nowMs) / 1000).rounded(.up))
                tightest = Status(source: .window(key), limit: limit, remaining: remaining, resetSeconds: max(0, reset))
            }
            for i in limits.indices {
                let amount = Self.amount(limits[i].metric, tokens: estimate.tokens, costMicros: costMicros)
                if limits[i].metric == .requests {
                    s.windows[i].log.add(amount, now: nowMs)  // a request counts once admitted, whatever happens next
                } else {
                    s.windows[i].log.reserve(amount: amount)
                }
                consider(&s.windows[i], key: WindowKey(metric: limits[i].metric, windowSeconds: limits[i].windowSeconds), limit: limits[i].limit)
            }
            if let policy, let index = policyIndex {
                if policy.unit == .request {
                    s.policyWindows.values[index].log.add(policyAmount, now: nowMs)
                } else {
                    s.policyWindows.values[index].log.reserve(amount: policyAmount)
                }
                let key = WindowKey(metric: s.policyWindows.values[index].metric, windowSeconds: policy.windowSeconds, policy: policy)
                consider(&s.policyWindows.values[index], key: key, limit: policy.quota)
            }
            s.pendingIDs.insert(id)
            if let b = budgetStatus, b.remaining / max(b.limit, 1e-12) < tightestRatio { tightest = b }
            return .admitted(
                Reservation(id: id, state: s, policyKey: policyKey, budgetMicros: budgetMicros, budgeted: budget != nil, estimate: estimate),
                tightest: tightest)
        }
    }

    /// Replaces a reservation with what the request actually used, and releases the rest.
    public func settle(_ reservation: Reservation, actual: Actual, now: Date = Date()) {
        let nowMs = Self.milliseconds(now)
        let estimate = reservation.estimate
        let reservedCost = estimate.costMicros ?? 0
        state.withLock { _ in
            let s = reservation.state
            guard s.pendingIDs.remove(reservation.id) != nil else { return }
            for i in s.windows.indices where s.windows[i].metric != .requests && s.windows[i].createdAt <= reservation.id {
                let metric = s.windows[i].metric
                s.windows[i].log.settle(
                    reserved: Self.amount(metric, tokens: estimate.tokens, costMicros: reservedCost),
                    actual: Self.amount(metric, tokens: actual.tokens, costMicros: actual.costMicros), now: nowMs)
            }
            if let pk = reservation.policyKey, pk.policy.unit != .request, let index = s.policyWindows.index(forKey: pk),
                s.policyWindows.values[index].createdAt <= reservation.id
            {
                s.policyWindows.values[index].log.settle(
                    reserved: Self.amount(pk.policy, costMicros: reservedCost),
                    actual: Self.amount(pk.policy, costMicros: actual.costMicros), now: nowMs)
            }
            if reservation.budgeted {
                if s.pendingBudgetCount > 0 {
                    s.pendingBudgetCount -= 1
                    s.pendingBudgetSum = s.pendingBudgetCount == 0 ? 0 : max(0, s.pendingBudgetSum - reservation.budgetMicros)
                }
                s.spentMicros += actual.costMicros
            }
        }
    }

    /// Spend of a key in the budget period containing `now`, in micro-dollars (settled only).
    public func spentMicros(keyID: String, budget: Budget, now: Date = Date()) -> Int64 {
        let (start, _) = budget.period.bounds(containing: now)
        return state.withLock { ledger in
            guard let s = ledger.keys[keyID], s.budgetPeriodStart == start else { return 0 }
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
    /// Client policy windows (`Helicone-RateLimit-Policy`) are not rebuilt. Requests in flight
    /// keep their reservations and settle into the rebuilt state.
    public func restore(keyID: String, limits: [RateLimit], budget: Budget?, spentMicros: Int64, history: [HistoryEntry], now: Date = Date()) {
        let nowMs = Self.milliseconds(now)
        state.withLock { ledger in
            let s = ledger.keyState(keyID)
            s.align(with: limits, createdAt: ledger.nextID)
            for i in limits.indices {
                s.windows[i].log.clearSettled()
                for entry in history {
                    let t = Self.milliseconds(entry.time)
                    guard t > nowMs - s.windows[i].log.windowMs else { continue }
                    s.windows[i].log.add(Self.amount(limits[i].metric, tokens: entry.tokens, costMicros: entry.costMicros), now: t)
                }
            }
            if let budget {
                let (start, end) = budget.period.bounds(containing: now)
                s.budgetPeriodStart = start
                s.budgetPeriodEnd = end
                s.budgetPeriod = budget.period
                s.spentMicros = spentMicros
            } else {
                s.budgetPeriodStart = nil
                s.budgetPeriodEnd = nil
                s.budgetPeriod = nil
                s.spentMicros = 0
            }
        }
    }

    /// Forgets keys that are no longer configured (revoked or deleted).
    public func retain(keyIDs: Set<String>) {
        state.withLock { ledger in
            ledger.keys = ledger.keys.filter { keyIDs.contains($0.key) }
        }
    }
}
