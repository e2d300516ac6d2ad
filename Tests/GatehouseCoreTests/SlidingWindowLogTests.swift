import Foundation
import GatehouseCore
import Testing

/// The exact sliding-window counter under the ledger: entries leave exactly W after they
/// entered, merging never lets one leave early, and memory stays bounded.
@Suite("Sliding window log")
struct SlidingWindowLogTests {
    static let t: Int64 = 1_700_000_000_000  // ms

    /// The log's internal entry count (live entries, and the array length including the
    /// dropped prefix not yet compacted), read by reflection: not part of the API.
    static func internals(_ log: SlidingWindowLog) -> (live: Int, stored: Int)? {
        let m = Mirror(reflecting: log)
        guard let times = m.children.first(where: { $0.label == "times" })?.value as? [Int64],
            let head = m.children.first(where: { $0.label == "head" })?.value as? Int
        else { return nil }
        return (times.count - head, times.count)
    }

    @Test func anEntryCountsUntilExactlyWindowAfterIt() {
        var log = SlidingWindowLog(windowSeconds: 10)
        log.add(3, now: Self.t)
        #expect(log.total(now: Self.t) == 3)
        #expect(log.total(now: Self.t + 9_999) == 3)
        #expect(log.total(now: Self.t + 10_000) == 0)
        #expect(log.isIdle)
    }

    @Test func mergedEntriesNeverLeaveEarly() {
        // W = 10 s: merge granularity 2 ms. Two adds 1 ms apart may merge (keeping the later
        // time), so the pair counts until the second one's expiry.
        var log = SlidingWindowLog(windowSeconds: 10)
        log.add(1, now: Self.t)
        log.add(1, now: Self.t + 1)
        #expect(log.total(now: Self.t + 9_999) == 2)
        #expect(log.total(now: Self.t + 10_000) <= 2)
        #expect(log.total(now: Self.t + 10_000) >= 1, "the second entry is still in")
        #expect(log.total(now: Self.t + 10_001) == 0)
    }

    @Test func zeroAndNegativeAmountsAreIgnored() {
        var log = SlidingWindowLog(windowSeconds: 10)
        log.add(0, now: Self.t)
        log.add(-5, now: Self.t)
        #expect(log.total(now: Self.t) == 0)
        #expect(log.isIdle)
    }

    @Test func pendingReservationsCountUntilSettled() {
        var log = SlidingWindowLog(windowSeconds: 10)
        log.reserve(amount: 50)
        log.reserve(amount: 30)
        #expect(log.total(now: Self.t) == 80)
        // Pending reservations never expire by time.
        #expect(log.total(now: Self.t + 3_600_000) == 80)
        log.settle(reserved: 50, actual: 10, now: Self.t + 3_600_000)
        #expect(log.total(now: Self.t + 3_600_000) == 40)
        // Blocked by the remaining reservation only: no time frees it.
        #expect(log.msUntilFree(80, limit: 100, now: Self.t + 3_600_000) == nil)
        // Blocked by the settled 10: free when it leaves.
        #expect(log.msUntilFree(61, limit: 100, now: Self.t + 3_600_000 + 4_000) == 6_000)
        #expect(log.msUntilFree(60, limit: 100, now: Self.t + 3_600_000) == 0)
        log.settle(reserved: 30, actual: 0, now: Self.t + 3_600_000)
        #expect(log.total(now: Self.t + 3_610_000) == 0)
        #expect(log.isIdle)
    }

    @Test func settlingWithNothingPendingOnlyAddsTheActual() {
        // A reservation made before this window existed (a limit added mid-request) settles
        // its actual usage without releasing anything it never held.
        var log = SlidingWindowLog(windowSeconds: 10)
        log.settle(reserved: 50, actual: 5, now: Self.t)
        #expect(log.total(now: Self.t) == 5)
        log.reserve(amount: 50)
        log.settle(reserved: 50, actual: 0, now: Self.t)
        log.settle(reserved: 50, actual: 0, now: Self.t)
        #expect(log.total(now: Self.t) == 5, "an extra release never goes below zero")
    }

    @Test func pendingSumHasNoFloatDrift() {
        var log = SlidingWindowLog(windowSeconds: 10)
        for _ in 0..<1000 { log.reserve(amount: 0.1) }
        for _ in 0..<1000 { log.settle(reserved: 0.1, actual: 0, now: Self.t) }
        #expect(log.total(now: Self.t) == 0)
        #expect(log.isIdle)
    }

    @Test func clearSettledKeepsReservations() {
        var log = SlidingWindowLog(windowSeconds: 10)
        log.add(7, now: Self.t)
        log.reserve(amount: 3)
        log.clearSettled()
        #expect(log.total(now: Self.t) == 3)
        log.add(2, now: Self.t + 1)
        #expect(log.total(now: Self.t + 1) == 5)
    }

    @Test func nextExpiryIsTheOldestEntryPlusTheWindow() {
        var log = SlidingWindowLog(windowSeconds: 60)
        #expect(log.nextExpiry(now: Self.t) == Self.t)
        log.add(1, now: Self.t)
        log.add(1, now: Self.t + 20_000)
        #expect(log.nextExpiry(now: Self.t + 30_000) == Self.t + 60_000)
        #expect(log.nextExpiry(now: Self.t + 60_000) == Self.t + 80_000)
    }

    @Test func totalOfSteadyAddsIsWhatEnteredInTheLastWindow() {
        // 1 added every 1 ms for 30 s, window 10 s: about 10,000 are in the window at the end
        // (merging may keep a few entries up to the 2 ms granularity longer, never shorter).
        var log = SlidingWindowLog(windowSeconds: 10)
        var now = Self.t
        for _ in 0..<30_000 {
            log.add(1, now: now)
            now += 1
        }
        let end = now - 1
        let total = log.total(now: end)
        #expect(total >= 10_000, "never leaves early")
        #expect(total <= 10_010, "entries older than the window still counted: total \(total)")
    }

    @Test func steadyAddsBelowTheGranularityStillExpire() {
        // Adds closer together than the granularity (15 ms for W = 60 s), forever: each one
        // must still leave about W after it entered.
        var log = SlidingWindowLog(windowSeconds: 60)
        var now = Self.t
        for _ in 0..<20_000 {  // 200 s, every 10 ms
            log.add(1, now: now)
            now += 10
        }
        // Stop, then wait one window (+ granularity): everything must be gone.
        #expect(log.total(now: now - 10 + 60_000 + 15) == 0)
        // And one window after the start only the last 60 s of adds are counted (about 6,000).
        var log2 = SlidingWindowLog(windowSeconds: 60)
        now = Self.t
        for _ in 0..<20_000 {
            log2.add(1, now: now)
            now += 10
        }
        let inWindow = log2.total(now: now - 10)
        #expect(inWindow <= 6_010, "total \(inWindow) of 20,000 adds spread over 200 s, window 60 s")
    }

    @Test func memoryStaysBoundedUnderAMillionAdds() throws {
        // 1,000,000 settled adds, 1 to 40 ms apart (about 5.7 hours), window 60 s: the log
        // must hold about window/granularity = 4,000 entries at most, whatever the traffic.
        var log = SlidingWindowLog(windowSeconds: 60)
        var now = Self.t
        var maxLive = 0
        var maxStored = 0
        for i in 0..<1_000_000 {
            log.add(1, now: now)
            now += Int64(1 + (i * 7919) % 40)
            if i % 1000 == 0, let (live, stored) = Self.internals(log) {
                maxLive = max(maxLive, live)
                maxStored = max(maxStored, stored)
            }
        }
        let (live, stored) = try #require(Self.internals(log), "SlidingWindowLog internals not reflectable")
        maxLive = max(maxLive, live)
        maxStored = max(maxStored, stored)
        #expect(maxLive <= 4_001, "live entries \(maxLive)")
        #expect(maxStored <= 2 * 4_001 + 1_025, "stored entries \(maxStored)")
    }
}
