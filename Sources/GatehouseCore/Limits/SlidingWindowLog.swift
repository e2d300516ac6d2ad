/// An exact sliding-window counter: the total of everything admitted in the last `window`
/// milliseconds, plus in-flight reservations.
///
/// Why a log and not GCRA or fixed buckets: a limit of *L per W* must hold for every window
/// of length W, with an entry leaving exactly W after it entered (GCRA allows up to 2L−1 in a
/// window after a burst; buckets expire entries up to a bucket late or early). Settled entries
/// that land within `granularity` of the previous one are merged, keeping the *later* time
/// (so a merged entry never leaves early), which bounds memory to about `window/granularity`
/// entries whatever the traffic.
///
/// In-flight reservations are held apart and always counted; when settled they enter the log
/// at the settle time with their actual amount (conservative: a long stream counts from when
/// its usage became known).
public struct SlidingWindowLog: Sendable {
    public let windowMs: Int64
    let granularityMs: Int64
    private var times: [Int64] = []
    private var amounts: [Double] = []
    private var head = 0
    /// When the newest entry's bucket began: merging stops `granularity` after it, so one
    /// entry can never absorb a steady stream and stay in the window forever.
    private var lastBucketStart: Int64 = .min
    private var settledSum: Double = 0
    /// In-flight reservations: their sum and how many there are. Each reservation is
    /// settled by the amount it reserved (the ledger recomputes it from the estimate), so no
    /// per-reservation map is kept on the hot path.
    private var pendingSum: Double = 0
    private var pendingCount = 0

    public init(windowSeconds: Int) {
        self.windowMs = Int64(windowSeconds) * 1000
        self.granularityMs = max(1, windowMs / 4000)
    }

    /// Drops entries that left the window at `now` (an entry at `t` counts while `t > now − W`).
    mutating func prune(now: Int64) {
        let cutoff = now - windowMs
        while head < times.count, times[head] <= cutoff {
            settledSum -= amounts[head]
            head += 1
        }
        if head > 1024, head * 2 > times.count {
            times.removeFirst(head)
            amounts.removeFirst(head)
            head = 0
        }
        if head == times.count { settledSum = 0 }  // no drift from float subtraction
    }

    /// Everything counted at `now`: settled entries in the window plus pending reservations.
    public mutating func total(now: Int64) -> Double {
        prune(now: now)
        return max(0, settledSum) + pendingSum
    }

    /// Adds a settled amount at `now`.
    public mutating func add(_ amount: Double, now: Int64) {
        guard amount > 0 else { return }
        prune(now: now)
        if let last = times.last, times.count > head, now - lastBucketStart < granularityMs, now >= last {
            times[times.count - 1] = now
            amounts[amounts.count - 1] += amount
        } else {
            times.append(max(now, times.last ?? now))
            amounts.append(amount)
            lastBucketStart = now
        }
        settledSum += amount
    }

    /// Holds `amount` for an in-flight request until it is settled.
    public mutating func reserve(amount: Double) {
        pendingSum += amount
        pendingCount += 1
    }

    /// Releases a reservation of `reserved` and counts the `actual` amount at `now`.
    public mutating func settle(reserved: Double, actual: Double, now: Int64) {
        if pendingCount > 0 {
            pendingCount -= 1
            pendingSum = pendingCount == 0 ? 0 : max(0, pendingSum - reserved)  // no float drift
        }
        add(actual, now: now)
    }

    /// Forgets every settled entry, keeping in-flight reservations (rebuilt from history).
    public mutating func clearSettled() {
        times.removeAll(keepingCapacity: true)
        amounts.removeAll(keepingCapacity: true)
        head = 0
        lastBucketStart = .min
        settledSum = 0
    }

    /// Milliseconds from `now` until at least `needed` has left the window, counting only
    /// settled entries; `nil` if in-flight reservations alone block it.
    public mutating func msUntilFree(_ needed: Double, limit: Double, now: Int64) -> Int64? {
        prune(now: now)
        var excess = settledSum + pendingSum + needed - limit
        if excess <= 0 { return 0 }
        var i = head
        while i < times.count {
            excess -= amounts[i]
            if excess <= 1e-9 { return max(1, times[i] + windowMs - now) }
            i += 1
        }
        return nil
    }

    /// When the oldest settled entry leaves the window (for `RateLimit-Reset`); `now` if empty.
    public mutating func nextExpiry(now: Int64) -> Int64 {
        prune(now: now)
        return head < times.count ? times[head] + windowMs : now
    }

    public var isIdle: Bool { head == times.count && pendingCount == 0 }
}
