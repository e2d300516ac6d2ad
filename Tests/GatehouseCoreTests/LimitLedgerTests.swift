import Foundation
import GatehouseCore
import Testing

/// The in-memory ledger of rate limits and budgets: exact sliding windows, worst-case
/// reservations settled to actual usage, budgets per UTC calendar period, client policies,
/// restore from the request log. Every time is injected (`now:`); nothing sleeps.
@Suite("Limit ledger")
struct LimitLedgerTests {
    /// 2023-11-14T22:13:20Z, a whole second (exactly representable, so `t0 + n` is exact).
    static let t0 = Date(timeIntervalSince1970: 1_700_000_000)
    static func at(_ seconds: Double) -> Date { t0.addingTimeInterval(seconds) }

    static func requests(_ limit: Double, per window: Int) -> RateLimit {
        RateLimit(metric: .requests, limit: limit, windowSeconds: window)
    }
    static func tokens(_ limit: Double, per window: Int) -> RateLimit {
        RateLimit(metric: .tokens, limit: limit, windowSeconds: window)
    }
    static func usd(_ limit: Double, per window: Int) -> RateLimit {
        RateLimit(metric: .costUSD, limit: limit, windowSeconds: window)
    }

    /// The `RateLimit-Policy` text of a key limit: `requests;w=60` today, or the
    /// `<limit>;w=<seconds>` form of the RateLimit header draft.
    static func isPolicy(_ text: String?, _ metric: String, _ limit: Double, w: Int) -> Bool {
        guard let text else { return false }
        return text == "\(metric);w=\(w)" || text.hasPrefix("\(LimitLedger.formatNumber(limit));w=\(w)")
    }

    /// Reserves with the usual defaults.
    @discardableResult
    static func reserve(
        _ ledger: LimitLedger, key: String = "k1", limits: [RateLimit] = [], budget: Budget? = nil,
        policy: RateLimitPolicy? = nil, user: String? = nil, tokens: Int = 10, cost: Int64? = 0, at now: Date
    ) -> LimitLedger.Decision {
        ledger.reserve(
            keyID: key, limits: limits, budget: budget, policy: policy, user: user,
            estimate: .init(tokens: tokens, costMicros: cost), now: now)
    }

    // MARK: Exact sliding window

    @Test func windowBoundaryIsExactToTheMillisecond() throws {
        let ledger = LimitLedger()
        let limits = [Self.requests(5, per: 10)]
        for i in 0..<5 {
            #expect(Self.reserve(ledger, limits: limits, at: Self.t0).isAdmitted, "request \(i + 1) of 5")
        }
        // An entry at t counts while t > now − W: still counted 1 ms before t + W …
        let refused = Self.reserve(ledger, limits: limits, at: Self.at(9.999))
        let (status, retry) = try #require(refused.rateLimited)
        #expect(status.limit == 5)
        #expect(status.remaining == 0)
        #expect(Self.isPolicy(status.policy, "requests", 5, w: 10))
        #expect(retry == 1, "1 ms to wait, rounded up to a whole second")
        #expect(status.resetSeconds == 1)
        // … and gone at exactly t + W.
        #expect(Self.reserve(ledger, limits: limits, at: Self.at(10.000)).isAdmitted)
        // Only one slot came free (all five left together; one was taken again).
        for _ in 0..<4 { #expect(Self.reserve(ledger, limits: limits, at: Self.at(10.000)).isAdmitted) }
        #expect(Self.reserve(ledger, limits: limits, at: Self.at(10.000)).rateLimited != nil)
    }

    @Test func windowBoundaryWithAFractionalStart() throws {
        // First request at t0 + 0.5 s (exactly representable): refused at t0 + 10.499, free at t0 + 10.5.
        let ledger = LimitLedger()
        let limits = [Self.requests(1, per: 10)]
        #expect(Self.reserve(ledger, limits: limits, at: Self.at(0.5)).isAdmitted)
        #expect(Self.reserve(ledger, limits: limits, at: Self.at(10.499)).rateLimited != nil)
        #expect(Self.reserve(ledger, limits: limits, at: Self.at(10.5)).isAdmitted)
    }

    @Test func refusedRequestsDoNotCount() throws {
        // Hammering a full window must not push its opening back.
        let ledger = LimitLedger()
        let limits = [Self.requests(2, per: 10)]
        #expect(Self.reserve(ledger, limits: limits, at: Self.t0).isAdmitted)
        #expect(Self.reserve(ledger, limits: limits, at: Self.t0).isAdmitted)
        for s in stride(from: 1.0, to: 10.0, by: 0.5) {
            #expect(Self.reserve(ledger, limits: limits, at: Self.at(s)).rateLimited != nil)
        }
        #expect(Self.reserve(ledger, limits: limits, at: Self.at(10)).isAdmitted)
        #expect(Self.reserve(ledger, limits: limits, at: Self.at(10)).isAdmitted)
    }

    @Test func retryAfterIsTheTimeUntilTheOldestNeededEntryLeaves() throws {
        let ledger = LimitLedger()
        let limits = [Self.requests(3, per: 60)]
        for s in [0.0, 10, 20] { #expect(Self.reserve(ledger, limits: limits, at: Self.at(s)).isAdmitted) }
        let (status, retry) = try #require(Self.reserve(ledger, limits: limits, at: Self.at(30)).rateLimited)
        #expect(retry == 30, "the entry at t0 leaves at t0 + 60")
        #expect(status.resetSeconds == 30)
        #expect(status.remaining == 0)
        // Retry-After is honest: waiting exactly that long is enough.
        #expect(Self.reserve(ledger, limits: limits, at: Self.at(30 + Double(retry))).isAdmitted)
        // Now t0+10, t0+20, t0+60 are in: the next slot is at t0 + 70.
        let (_, retry2) = try #require(Self.reserve(ledger, limits: limits, at: Self.at(62.5)).rateLimited)
        #expect(retry2 == 8, "7.5 s rounded up")
    }

    @Test func retryAfterWhenSeveralEntriesMustLeave() throws {
        // A token window with 600 (settled at t0) + 300 (settled at t0 + 20): a request of 500
        // needs 400 to leave (900 + 500 − 1000), so only the first entry.
        let ledger = LimitLedger()
        let limits = [Self.tokens(1000, per: 60)]
        let r1 = try #require(Self.reserve(ledger, limits: limits, tokens: 600, at: Self.t0).reservation)
        ledger.settle(r1, actual: .init(tokens: 600, costMicros: 0), now: Self.t0)
        let r2 = try #require(Self.reserve(ledger, limits: limits, tokens: 300, at: Self.at(20)).reservation)
        ledger.settle(r2, actual: .init(tokens: 300, costMicros: 0), now: Self.at(20))
        let (_, retry) = try #require(Self.reserve(ledger, limits: limits, tokens: 500, at: Self.at(30)).rateLimited)
        #expect(retry == 30)
        // 800 needs both gone: 900 + 800 − 1000 = 700 > 600.
        let (_, retry2) = try #require(Self.reserve(ledger, limits: limits, tokens: 800, at: Self.at(30)).rateLimited)
        #expect(retry2 == 50)
    }

    @Test func aRequestRefusedByOneLimitReservesNothingAnywhere() throws {
        let ledger = LimitLedger()
        let limits = [Self.requests(10, per: 60), Self.tokens(100, per: 60)]
        // Refused by the token limit: must not take a request slot.
        for _ in 0..<20 { #expect(Self.reserve(ledger, limits: limits, tokens: 200, at: Self.t0).rateLimited != nil) }
        for i in 0..<10 {
            #expect(Self.reserve(ledger, limits: limits, tokens: 1, at: Self.t0).isAdmitted, "request \(i + 1)")
        }
        #expect(Self.isPolicy(Self.reserve(ledger, limits: limits, tokens: 1, at: Self.t0).rateLimited?.0.policy, "requests", 10, w: 60))
    }

    @Test func aRequestRefusedByTheBudgetTakesNoRequestSlot() throws {
        let ledger = LimitLedger()
        let limits = [Self.requests(2, per: 60)]
        let budget = Budget(limitUSD: 0.1, period: .total)
        let first = try #require(Self.reserve(ledger, limits: limits, budget: budget, cost: 100_000, at: Self.t0).reservation)
        #expect(Self.reserve(ledger, limits: limits, budget: budget, cost: 100_000, at: Self.t0).budgetExhausted != nil)
        ledger.settle(first, actual: .init(tokens: 0, costMicros: 0), now: Self.t0)
        #expect(Self.reserve(ledger, limits: limits, budget: budget, cost: 100_000, at: Self.t0).isAdmitted)
        #expect(Self.reserve(ledger, limits: limits, budget: budget, cost: 0, at: Self.t0).rateLimited != nil)
    }

    @Test func tightestLimitIsReportedOnAdmission() throws {
        let ledger = LimitLedger()
        let limits = [Self.requests(10, per: 60), Self.tokens(1000, per: 30)]
        guard case .admitted(_, let tightest) = Self.reserve(ledger, limits: limits, tokens: 900, at: Self.t0) else {
            Issue.record("not admitted")
            return
        }
        let s = try #require(tightest)
        #expect(Self.isPolicy(s.policy, "tokens", 1000, w: 30))
        #expect(s.limit == 1000)
        #expect(s.remaining == 100)
        // With a budget nearly used up, the budget is the tightest.
        let budget = Budget(limitUSD: 1, period: .total)
        guard case .admitted(_, let t2) = Self.reserve(ledger, key: "k2", limits: [Self.requests(10, per: 60)], budget: budget, cost: 950_000, at: Self.t0) else {
            Issue.record("not admitted")
            return
        }
        #expect(t2?.policy == "1;w=total;u=usd")
        #expect(abs((t2?.remaining ?? -1) - 0.05) < 1e-9)
    }

    // MARK: Reservations and settlement

    @Test func tokenReservationHoldsTheWorstCaseAndSettleReleasesTheDifference() throws {
        let ledger = LimitLedger()
        let limits = [Self.tokens(1000, per: 60)]
        let first = try #require(Self.reserve(ledger, limits: limits, tokens: 600, at: Self.t0).reservation)
        // 600 in flight + 600 > 1000. Only in-flight reservations block: no settled entry to wait for.
        let (status, retry) = try #require(Self.reserve(ledger, limits: limits, tokens: 600, at: Self.at(1)).rateLimited)
        #expect(status.remaining == 400)
        #expect(retry == 60, "blocked by in-flight reservations only: the whole window")
        // The first request used only 100: 500 released.
        ledger.settle(first, actual: .init(tokens: 100, costMicros: 0), now: Self.at(2))
        #expect(Self.reserve(ledger, limits: limits, tokens: 600, at: Self.at(3)).isAdmitted)  // 100 + 600
        #expect(Self.reserve(ledger, limits: limits, tokens: 300, at: Self.at(3)).isAdmitted)  // exactly 1000
        #expect(Self.reserve(ledger, limits: limits, tokens: 1, at: Self.at(3)).rateLimited != nil)
    }

    @Test func settledUsageCountsFromTheSettleTime() throws {
        // A long response: its usage enters the window when known, and leaves W after that.
        let ledger = LimitLedger()
        let limits = [Self.tokens(100, per: 10)]
        let r = try #require(Self.reserve(ledger, limits: limits, tokens: 100, at: Self.t0).reservation)
        ledger.settle(r, actual: .init(tokens: 100, costMicros: 0), now: Self.at(5))
        #expect(Self.reserve(ledger, limits: limits, tokens: 1, at: Self.at(14.999)).rateLimited != nil)
        #expect(Self.reserve(ledger, limits: limits, tokens: 100, at: Self.at(15)).isAdmitted)
    }

    @Test func costLimitRefundsWhenActualIsBelowTheReservation() throws {
        let ledger = LimitLedger()
        let limits = [Self.usd(1.0, per: 3600)]
        let a = try #require(Self.reserve(ledger, limits: limits, cost: 400_000, at: Self.t0).reservation)
        #expect(Self.reserve(ledger, limits: limits, cost: 400_000, at: Self.t0).isAdmitted)
        let (status, _) = try #require(Self.reserve(ledger, limits: limits, cost: 400_000, at: Self.t0).rateLimited)
        #expect(Self.isPolicy(status.policy, "usd", 1, w: 3600))
        #expect(abs(status.remaining - 0.2) < 1e-9)
        ledger.settle(a, actual: .init(tokens: 0, costMicros: 100_000), now: Self.t0)
        #expect(Self.reserve(ledger, limits: limits, cost: 400_000, at: Self.t0).isAdmitted)  // 0.1 + 0.4 + 0.4
        #expect(Self.reserve(ledger, limits: limits, cost: 100_001, at: Self.t0).rateLimited != nil)
        #expect(Self.reserve(ledger, limits: limits, cost: 100_000, at: Self.t0).isAdmitted)  // exactly 1.0
    }

    @Test func settleCanAlsoChargeMoreThanReserved() throws {
        // The worst case is an estimate; if the provider reports more, the window holds the truth.
        let ledger = LimitLedger()
        let limits = [Self.tokens(1000, per: 60)]
        let r = try #require(Self.reserve(ledger, limits: limits, tokens: 100, at: Self.t0).reservation)
        ledger.settle(r, actual: .init(tokens: 950, costMicros: 0), now: Self.t0)
        #expect(Self.reserve(ledger, limits: limits, tokens: 100, at: Self.t0).rateLimited != nil)
        #expect(Self.reserve(ledger, limits: limits, tokens: 50, at: Self.t0).isAdmitted)
    }

    @Test func requestsCountEvenWhenSettledWithZero() throws {
        let ledger = LimitLedger()
        let limits = [Self.requests(2, per: 60), Self.tokens(1000, per: 60)]
        for _ in 0..<2 {
            let r = try #require(Self.reserve(ledger, limits: limits, tokens: 500, at: Self.t0).reservation)
            ledger.settle(r, actual: .init(tokens: 0, costMicros: 0), now: Self.t0)  // e.g. the provider failed
        }
        let (status, _) = try #require(Self.reserve(ledger, limits: limits, tokens: 1, at: Self.at(1)).rateLimited)
        #expect(Self.isPolicy(status.policy, "requests", 2, w: 60))
        // The token window is empty again: a token-only limit sharing that window admits a full 1000.
        #expect(Self.reserve(ledger, limits: [Self.tokens(1000, per: 60)], tokens: 1000, at: Self.at(1)).isAdmitted)
    }

    @Test func settlingTwiceChangesNothing() throws {
        let ledger = LimitLedger()
        let budget = Budget(limitUSD: 1, period: .total)
        let r = try #require(Self.reserve(ledger, budget: budget, cost: 500_000, at: Self.t0).reservation)
        ledger.settle(r, actual: .init(tokens: 0, costMicros: 200_000), now: Self.t0)
        ledger.settle(r, actual: .init(tokens: 0, costMicros: 200_000), now: Self.t0)
        #expect(ledger.spentMicros(keyID: "k1", budget: budget, now: Self.t0) == 200_000)
    }

    @Test func aLimitAddedMidRequestIsNotReleasedByOlderReservations() throws {
        // r1 is reserved under a 1-minute token limit; the key is then edited to a 1-hour one.
        // Settling r1 must not release anything from the new window (r1 held nothing there).
        let ledger = LimitLedger()
        let before = [Self.tokens(1000, per: 60)]
        let after = [Self.tokens(700, per: 3600)]
        let r1 = try #require(Self.reserve(ledger, limits: before, tokens: 600, at: Self.t0).reservation)
        let r2 = try #require(Self.reserve(ledger, limits: after, tokens: 600, at: Self.t0).reservation)
        ledger.settle(r1, actual: .init(tokens: 10, costMicros: 0), now: Self.t0)
        #expect(Self.reserve(ledger, limits: after, tokens: 200, at: Self.t0).rateLimited != nil, "r2's 600 is still held")
        ledger.settle(r2, actual: .init(tokens: 50, costMicros: 0), now: Self.t0)
        #expect(Self.reserve(ledger, limits: after, tokens: 600, at: Self.t0).isAdmitted, "50 used + 600 ≤ 700")
    }

    @Test func aLimitKeptAcrossAnEditKeepsItsReservations() throws {
        // The same window survives an edit of another limit: its in-flight reservation still holds.
        let ledger = LimitLedger()
        let first = [Self.tokens(1000, per: 60)]
        let edited = [Self.requests(100, per: 10), Self.tokens(1000, per: 60)]
        let r1 = try #require(Self.reserve(ledger, limits: first, tokens: 900, at: Self.t0).reservation)
        #expect(Self.reserve(ledger, limits: edited, tokens: 200, at: Self.t0).rateLimited != nil)
        ledger.settle(r1, actual: .init(tokens: 100, costMicros: 0), now: Self.t0)
        #expect(Self.reserve(ledger, limits: edited, tokens: 900, at: Self.t0).isAdmitted)
    }

    // MARK: Budgets

    @Test func concurrentReservationsNeverExceedTheBudget() async throws {
        // 0.999 USD holds exactly 37 worst cases of 27,000 micro-dollars (37 × 27,000 = 999,000).
        let ledger = LimitLedger()
        let budget = Budget(limitUSD: 0.999, period: .total)
        let admitted = await withTaskGroup(of: Int64.self) { group in
            for _ in 0..<1000 {
                group.addTask {
                    if case .admitted = Self.reserve(ledger, budget: budget, cost: 27_000, at: Self.t0) { return 27_000 }
                    return 0
                }
            }
            var costs: [Int64] = []
            for await c in group where c > 0 { costs.append(c) }
            return costs
        }
        #expect(admitted.count == 37)
        #expect(admitted.reduce(0, +) <= 999_000)
    }

    @Test func concurrentReservationsNeverExceedARequestLimit() async throws {
        let ledger = LimitLedger()
        let limits = [Self.requests(100, per: 60), Self.tokens(1_000_000, per: 60)]
        let count = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<1000 {
                group.addTask { Self.reserve(ledger, limits: limits, tokens: 10, at: Self.at(Double(i % 7) / 1000)).isAdmitted }
            }
            var n = 0
            for await ok in group where ok { n += 1 }
            return n
        }
        #expect(count == 100)
    }

    @Test func concurrentReserveAndSettleKeepSpendWithinBudget() async throws {
        // Reservations are upper bounds, so actual spend can never pass the budget, however
        // reservations and settlements interleave.
        let ledger = LimitLedger()
        let budget = Budget(limitUSD: 1, period: .total)
        let admitted = await withTaskGroup(of: Int.self) { group in
            for i in 0..<1000 {
                group.addTask {
                    guard let r = Self.reserve(ledger, budget: budget, cost: 30_000, at: Self.t0).reservation else { return 0 }
                    ledger.settle(r, actual: .init(tokens: 0, costMicros: Int64(10_000 + (i % 3) * 10_000)), now: Self.t0)
                    return 1
                }
            }
            var n = 0
            for await x in group { n += x }
            return n
        }
        let spent = ledger.spentMicros(keyID: "k1", budget: budget, now: Self.t0)
        #expect(spent <= 1_000_000)
        // The first refusal needs spent + in flight > 970,000, i.e. at least 33 admitted worst cases.
        #expect(admitted >= 33)
    }

    @Test func budgetHoldsExactlyAWholeNumberOfRequestsAtCentAmounts() throws {
        // $4.10 holds exactly ten requests of $0.41. (4.10 × 1e6 in binary floating point is
        // 4,099,999.9999999995: rounding it down loses a micro-dollar and the tenth request.)
        let ledger = LimitLedger()
        let budget = Budget(limitUSD: 4.10, period: .total)
        for i in 0..<10 {
            #expect(Self.reserve(ledger, budget: budget, cost: 410_000, at: Self.t0).isAdmitted, "request \(i + 1) of 10")
        }
        #expect(Self.reserve(ledger, budget: budget, cost: 1, at: Self.t0).budgetExhausted != nil)
    }

    @Test func settleLowersSpendAndAdmitsMore() throws {
        let ledger = LimitLedger()
        let budget = Budget(limitUSD: 1, period: .total)
        let first = try #require(Self.reserve(ledger, budget: budget, cost: 600_000, at: Self.t0).reservation)
        let (status, retry) = try #require(Self.reserve(ledger, budget: budget, cost: 600_000, at: Self.t0).budgetExhausted)
        #expect(retry == nil, "a total budget never resets")
        #expect(status.policy == "1;w=total;u=usd")
        #expect(abs(status.remaining - 0.4) < 1e-9)
        #expect(ledger.spentMicros(keyID: "k1", budget: budget, now: Self.t0) == 0, "in flight is not spent")
        ledger.settle(first, actual: .init(tokens: 0, costMicros: 100_000), now: Self.t0)
        #expect(ledger.spentMicros(keyID: "k1", budget: budget, now: Self.t0) == 100_000)
        let second = try #require(Self.reserve(ledger, budget: budget, cost: 600_000, at: Self.t0).reservation)
        #expect(Self.reserve(ledger, budget: budget, cost: 300_001, at: Self.t0).budgetExhausted != nil)
        #expect(Self.reserve(ledger, budget: budget, cost: 300_000, at: Self.t0).isAdmitted)
        ledger.settle(second, actual: .init(tokens: 0, costMicros: 600_000), now: Self.t0)
        #expect(ledger.spentMicros(keyID: "k1", budget: budget, now: Self.t0) == 700_000)
    }

    @Test func exhaustedBudgetRefusesEvenZeroCostEstimates() throws {
        let ledger = LimitLedger()
        let budget = Budget(limitUSD: 0.5, period: .total)
        let r = try #require(Self.reserve(ledger, budget: budget, cost: 500_000, at: Self.t0).reservation)
        ledger.settle(r, actual: .init(tokens: 0, costMicros: 500_000), now: Self.t0)
        #expect(Self.reserve(ledger, budget: budget, cost: 0, at: Self.t0).budgetExhausted != nil)
    }

    @Test func zeroBudgetRefusesEverything() throws {
        let ledger = LimitLedger()
        let budget = Budget(limitUSD: 0, period: .month)
        #expect(Self.reserve(ledger, budget: budget, cost: 1, at: Self.t0).budgetExhausted != nil)
        #expect(Self.reserve(ledger, budget: budget, cost: 0, at: Self.t0).budgetExhausted != nil)
    }

    static func utc(_ y: Int, _ m: Int, _ d: Int, _ h: Int = 0, _ min: Int = 0, _ s: Double = 0) -> Date {
        let c = DateComponents(year: y, month: m, day: d, hour: h, minute: min, second: 0)
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        return cal.date(from: c)!.addingTimeInterval(s)
    }

    /// Spends the whole budget at `spendAt`, then checks it is refused at `stillRefused` and
    /// admitted again at `admitted`.
    func rollover(_ period: Budget.Period, spendAt: Date, stillRefused: Date, admitted: Date, retryAtRefusal: Int?) throws {
        let ledger = LimitLedger()
        let budget = Budget(limitUSD: 1, period: period)
        let r = try #require(Self.reserve(ledger, budget: budget, cost: 1_000_000, at: spendAt).reservation)
        ledger.settle(r, actual: .init(tokens: 0, costMicros: 1_000_000), now: spendAt)
        #expect(ledger.spentMicros(keyID: "k1", budget: budget, now: stillRefused) == 1_000_000)
        let refused = Self.reserve(ledger, budget: budget, cost: 1, at: stillRefused)
        #expect(refused.budgetExhausted?.1 == retryAtRefusal, "\(period) Retry-After at \(stillRefused)")
        #expect(ledger.spentMicros(keyID: "k1", budget: budget, now: admitted) == 0, "\(period): a new period starts at zero")
        #expect(Self.reserve(ledger, budget: budget, cost: 1_000_000, at: admitted).isAdmitted, "\(period) at \(admitted)")
    }

    @Test func dayBudgetRollsOverAtUTCMidnight() throws {
        try rollover(.day, spendAt: Self.utc(2024, 3, 10, 0, 0, 0), stillRefused: Self.utc(2024, 3, 10, 23, 59, 59.5),
                 admitted: Self.utc(2024, 3, 11), retryAtRefusal: 1)
        try rollover(.day, spendAt: Self.utc(2024, 3, 10, 12), stillRefused: Self.utc(2024, 3, 10, 18),
                 admitted: Self.utc(2024, 3, 11, 0, 0, 0.001), retryAtRefusal: 6 * 3600)
    }

    @Test func weekBudgetRollsOverOnMonday() throws {
        // 2024-03-04 is a Monday; the week runs to Sunday 2024-03-10 23:59:59.999 UTC.
        try rollover(.week, spendAt: Self.utc(2024, 3, 4), stillRefused: Self.utc(2024, 3, 10, 23, 59, 59),
                 admitted: Self.utc(2024, 3, 11), retryAtRefusal: 1)
        // Spent on a Sunday: the next day (Monday) is a new week.
        try rollover(.week, spendAt: Self.utc(2024, 3, 10, 12), stillRefused: Self.utc(2024, 3, 10, 23),
                 admitted: Self.utc(2024, 3, 11), retryAtRefusal: 3600)
    }

    @Test func monthBudgetRollsOverOnTheFirst() throws {
        try rollover(.month, spendAt: Self.utc(2024, 2, 1), stillRefused: Self.utc(2024, 2, 29, 23),
                 admitted: Self.utc(2024, 3, 1), retryAtRefusal: 3600)
        try rollover(.month, spendAt: Self.utc(2024, 12, 31, 12), stillRefused: Self.utc(2024, 12, 31, 23, 59, 59),
                 admitted: Self.utc(2025, 1, 1), retryAtRefusal: 1)
    }

    @Test func totalBudgetNeverResets() throws {
        let ledger = LimitLedger()
        let budget = Budget(limitUSD: 1, period: .total)
        let r = try #require(Self.reserve(ledger, budget: budget, cost: 1_000_000, at: Self.t0).reservation)
        ledger.settle(r, actual: .init(tokens: 0, costMicros: 1_000_000), now: Self.t0)
        for later in [Self.utc(2023, 11, 15), Self.utc(2024, 1, 1), Self.utc(2034, 6, 1), Self.utc(2100, 1, 1)] {
            let (status, retry) = try #require(Self.reserve(ledger, budget: budget, cost: 1, at: later).budgetExhausted)
            #expect(retry == nil)
            #expect(status.remaining == 0)
            #expect(ledger.spentMicros(keyID: "k1", budget: budget, now: later) == 1_000_000)
        }
    }

    // MARK: Client policies (Helicone-RateLimit-Policy)

    @Test func perUserPolicyWindowsAreIndependent() throws {
        let ledger = LimitLedger()
        let policy = try RateLimitPolicy.parse("2;w=60;s=user")
        for user in ["alice", "bob"] {
            #expect(Self.reserve(ledger, policy: policy, user: user, at: Self.t0).isAdmitted)
            #expect(Self.reserve(ledger, policy: policy, user: user, at: Self.t0).isAdmitted)
            let (status, retry) = try #require(Self.reserve(ledger, policy: policy, user: user, at: Self.at(1)).rateLimited)
            #expect(status.policy == "2;w=60;s=user")
            #expect(status.limit == 2)
            #expect(retry == 59)
        }
        // No user id: one shared anonymous window.
        #expect(Self.reserve(ledger, policy: policy, user: nil, at: Self.t0).isAdmitted)
        #expect(Self.reserve(ledger, policy: policy, user: nil, at: Self.t0).isAdmitted)
        #expect(Self.reserve(ledger, policy: policy, user: nil, at: Self.t0).rateLimited != nil)
        // Another key's users are separate.
        #expect(Self.reserve(ledger, key: "k2", policy: policy, user: "alice", at: Self.t0).isAdmitted)
    }

    @Test func policyWithoutUserScopeIsSharedByAllUsers() throws {
        let ledger = LimitLedger()
        let policy = try RateLimitPolicy.parse("2;w=60")
        #expect(Self.reserve(ledger, policy: policy, user: "alice", at: Self.t0).isAdmitted)
        #expect(Self.reserve(ledger, policy: policy, user: "bob", at: Self.t0).isAdmitted)
        #expect(Self.reserve(ledger, policy: policy, user: "carol", at: Self.t0).rateLimited != nil)
    }

    @Test func policyCannotLoosenTheKeyLimit() throws {
        let ledger = LimitLedger()
        let limits = [Self.requests(3, per: 60)]
        let loose = try RateLimitPolicy.parse("100;w=60")
        for _ in 0..<3 { #expect(Self.reserve(ledger, limits: limits, policy: loose, user: "u", at: Self.t0).isAdmitted) }
        let (status, _) = try #require(Self.reserve(ledger, limits: limits, policy: loose, user: "u", at: Self.t0).rateLimited)
        #expect(Self.isPolicy(status.policy, "requests", 3, w: 60))
        #expect(status.limit == 3)
        // A per-user policy with a huge quota doesn't open the key's window to other users either.
        let perUser = try RateLimitPolicy.parse("100;w=60;s=user")
        #expect(Self.reserve(ledger, limits: limits, policy: perUser, user: "someone-else", at: Self.t0).rateLimited != nil)
        // And without a policy header the key limit still holds.
        #expect(Self.reserve(ledger, limits: limits, at: Self.t0).rateLimited != nil)
    }

    @Test func policyTightensTheKeyLimit() throws {
        let ledger = LimitLedger()
        let limits = [Self.requests(100, per: 60)]
        let tight = try RateLimitPolicy.parse("1;w=10")
        #expect(Self.reserve(ledger, limits: limits, policy: tight, at: Self.t0).isAdmitted)
        let (status, retry) = try #require(Self.reserve(ledger, limits: limits, policy: tight, at: Self.at(4)).rateLimited)
        #expect(status.policy == "1;w=10")
        #expect(retry == 6)
        #expect(Self.reserve(ledger, limits: limits, policy: tight, at: Self.at(10)).isAdmitted)
    }

    @Test func centsPolicyReservesCostAndSettles() throws {
        let ledger = LimitLedger()
        let policy = try RateLimitPolicy.parse("5;w=60;u=cents")
        // 20,000 micro-dollars = 2 cents.
        let a = try #require(Self.reserve(ledger, policy: policy, cost: 20_000, at: Self.t0).reservation)
        #expect(Self.reserve(ledger, policy: policy, cost: 20_000, at: Self.t0).isAdmitted)
        let (status, _) = try #require(Self.reserve(ledger, policy: policy, cost: 20_000, at: Self.t0).rateLimited)
        #expect(status.policy == "5;w=60;u=cents")
        #expect(abs(status.remaining - 1) < 1e-9)
        ledger.settle(a, actual: .init(tokens: 0, costMicros: 0), now: Self.t0)
        #expect(Self.reserve(ledger, policy: policy, cost: 20_000, at: Self.t0).isAdmitted)
    }

    // MARK: Restore from the request log

    @Test func restoreRebuildsWindowsAndSpend() throws {
        let ledger = LimitLedger()
        let now = Self.at(3600)
        let limits = [Self.requests(5, per: 60), Self.tokens(1000, per: 60)]
        let budget = Budget(limitUSD: 1, period: .total)
        let history: [LimitLedger.HistoryEntry] = [
            .init(time: now.addingTimeInterval(-600), tokens: 5000, costMicros: 300_000),  // outside the windows
            .init(time: now.addingTimeInterval(-60), tokens: 5000, costMicros: 100_000),  // exactly W old: out
            .init(time: now.addingTimeInterval(-59.5), tokens: 300, costMicros: 100_000),
            .init(time: now.addingTimeInterval(-30), tokens: 300, costMicros: 100_000),
            .init(time: now.addingTimeInterval(-1), tokens: 300, costMicros: 100_000),
        ]
        ledger.restore(keyID: "k1", limits: limits, budget: budget, spentMicros: 700_000, history: history, now: now)
        #expect(ledger.spentMicros(keyID: "k1", budget: budget, now: now) == 700_000)
        // Tokens: 900 in the window.
        #expect(Self.isPolicy(Self.reserve(ledger, limits: limits, tokens: 101, at: now).rateLimited?.0.policy, "tokens", 1000, w: 60))
        // Requests: 3 in the window, so two more (each 1 token, 0 cost).
        #expect(Self.reserve(ledger, limits: limits, budget: budget, tokens: 1, cost: 0, at: now).isAdmitted)
        #expect(Self.reserve(ledger, limits: limits, budget: budget, tokens: 1, cost: 0, at: now).isAdmitted)
        #expect(Self.isPolicy(Self.reserve(ledger, limits: limits, tokens: 1, at: now).rateLimited?.0.policy, "requests", 5, w: 60))
        // The oldest in-window entry (t = now − 59.5) leaves at now + 0.5, not before.
        #expect(Self.reserve(ledger, limits: [Self.requests(5, per: 60)], at: now.addingTimeInterval(0.499)).rateLimited != nil)
        #expect(Self.reserve(ledger, limits: [Self.requests(5, per: 60)], at: now.addingTimeInterval(0.5)).isAdmitted)
        // Budget: 0.3 left.
        #expect(Self.reserve(ledger, budget: budget, cost: 300_001, at: now.addingTimeInterval(120)).budgetExhausted != nil)
        #expect(Self.reserve(ledger, budget: budget, cost: 300_000, at: now.addingTimeInterval(120)).isAdmitted)
    }

    @Test func restoreReplacesEarlierState() throws {
        let ledger = LimitLedger()
        let limits = [Self.requests(1, per: 60)]
        #expect(Self.reserve(ledger, limits: limits, at: Self.t0).isAdmitted)
        ledger.restore(keyID: "k1", limits: limits, budget: nil, spentMicros: 0, history: [], now: Self.at(1))
        #expect(Self.reserve(ledger, limits: limits, at: Self.at(1)).isAdmitted)
    }

    @Test func restoredBudgetOfAnEarlierPeriodDoesNotCount() throws {
        // spentMicros is the spend of the period containing `now`; a later period starts at 0.
        let ledger = LimitLedger()
        let budget = Budget(limitUSD: 1, period: .day)
        let now = Self.utc(2024, 3, 10, 23)
        ledger.restore(keyID: "k1", limits: [], budget: budget, spentMicros: 1_000_000, history: [], now: now)
        #expect(Self.reserve(ledger, budget: budget, cost: 1, at: now).budgetExhausted?.1 == 3600)
        #expect(Self.reserve(ledger, budget: budget, cost: 1_000_000, at: Self.utc(2024, 3, 11)).isAdmitted)
    }

    // MARK: Forgetting keys

    @Test func retainForgetsOtherKeys() throws {
        let ledger = LimitLedger()
        let limits = [Self.requests(1, per: 3600)]
        let budget = Budget(limitUSD: 1, period: .total)
        for key in ["a", "b"] {
            let r = try #require(Self.reserve(ledger, key: key, limits: limits, budget: budget, cost: 1_000_000, at: Self.t0).reservation)
            ledger.settle(r, actual: .init(tokens: 0, costMicros: 1_000_000), now: Self.t0)
            #expect(Self.reserve(ledger, key: key, limits: limits, at: Self.t0).rateLimited != nil)
        }
        ledger.retain(keyIDs: ["b"])
        #expect(ledger.spentMicros(keyID: "a", budget: budget, now: Self.t0) == 0)
        #expect(ledger.spentMicros(keyID: "b", budget: budget, now: Self.t0) == 1_000_000)
        #expect(Self.reserve(ledger, key: "a", limits: limits, at: Self.t0).isAdmitted)
        #expect(Self.reserve(ledger, key: "b", limits: limits, at: Self.t0).rateLimited != nil)
        ledger.retain(keyIDs: [])
        #expect(Self.reserve(ledger, key: "b", limits: limits, at: Self.t0).isAdmitted)
    }

    // MARK: Steady traffic

    @Test func steadyTrafficUnderATokenLimitIsNeverRefused() throws {
        // 100 tokens settled every 10 ms = 600,000 tokens per minute, under a limit of
        // 1,000,000 per minute: every request must be admitted, however long it goes on.
        // (Settles 10 ms apart are closer than the log's merge granularity of 15 ms.)
        let ledger = LimitLedger()
        let limits = [Self.tokens(1_000_000, per: 60)]
        var refusedAt: Double? = nil
        for i in 0..<18_000 {  // three minutes
            let now = Self.at(Double(i) / 100)
            guard let r = Self.reserve(ledger, limits: limits, tokens: 100, at: now).reservation else {
                refusedAt = Double(i) / 100
                break
            }
            ledger.settle(r, actual: .init(tokens: 100, costMicros: 0), now: now)
        }
        #expect(refusedAt == nil, "refused after \(refusedAt ?? 0) s of traffic at 60% of the limit")
    }
}

extension LimitLedger.Decision {
    var reservation: LimitLedger.Reservation? {
        if case .admitted(let r, _) = self { return r }
        return nil
    }
    var isAdmitted: Bool { reservation != nil }
    var rateLimited: (LimitLedger.Status, Int)? {
        if case .rateLimited(let s, let retry) = self { return (s, retry) }
        return nil
    }
    var budgetExhausted: (LimitLedger.Status, Int?)? {
        if case .budgetExhausted(let s, let retry) = self { return (s, retry) }
        return nil
    }
}
