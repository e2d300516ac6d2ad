import Foundation
import GatehouseCore
import Testing

/// Budget periods are UTC calendar periods, `[start, end)`; weeks start on Monday.
@Suite("Budget periods")
struct BudgetPeriodTests {
    static func utc(_ y: Int, _ m: Int, _ d: Int, _ h: Int = 0, _ min: Int = 0, _ s: Int = 0, ms: Int = 0) -> Date {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        return cal.date(from: DateComponents(year: y, month: m, day: d, hour: h, minute: min, second: s))!
            .addingTimeInterval(Double(ms) / 1000)
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var period: Budget.Period
        var date: Date
        var start: Date
        var end: Date?
        var testDescription: String { "\(period) containing \(date)" }
    }

    static let cases: [Case] = [
        // Days.
        .init(period: .day, date: utc(2024, 3, 10, 12), start: utc(2024, 3, 10), end: utc(2024, 3, 11)),
        .init(period: .day, date: utc(2024, 3, 10), start: utc(2024, 3, 10), end: utc(2024, 3, 11)),
        .init(period: .day, date: utc(2024, 3, 10, 23, 59, 59, ms: 999), start: utc(2024, 3, 10), end: utc(2024, 3, 11)),
        .init(period: .day, date: utc(2024, 2, 29, 6), start: utc(2024, 2, 29), end: utc(2024, 3, 1)),
        .init(period: .day, date: utc(2024, 12, 31, 23), start: utc(2024, 12, 31), end: utc(2025, 1, 1)),
        // ISO weeks, Monday to Monday. 2024-03-04 and 2024-03-11 are Mondays.
        .init(period: .week, date: utc(2024, 3, 4), start: utc(2024, 3, 4), end: utc(2024, 3, 11)),
        .init(period: .week, date: utc(2024, 3, 6, 15), start: utc(2024, 3, 4), end: utc(2024, 3, 11)),
        .init(period: .week, date: utc(2024, 3, 10, 23, 59, 59, ms: 999), start: utc(2024, 3, 4), end: utc(2024, 3, 11)),
        .init(period: .week, date: utc(2024, 3, 11), start: utc(2024, 3, 11), end: utc(2024, 3, 18)),
        // Across a year: Wed 2025-01-01 is in the week starting Mon 2024-12-30.
        .init(period: .week, date: utc(2025, 1, 1, 9), start: utc(2024, 12, 30), end: utc(2025, 1, 6)),
        // Fri 2021-01-01 belongs to ISO week 53 of 2020, starting Mon 2020-12-28.
        .init(period: .week, date: utc(2021, 1, 1), start: utc(2020, 12, 28), end: utc(2021, 1, 4)),
        .init(period: .week, date: utc(2021, 1, 3, 23), start: utc(2020, 12, 28), end: utc(2021, 1, 4)),
        // Sun 2023-01-01: the week started Mon 2022-12-26.
        .init(period: .week, date: utc(2023, 1, 1, 12), start: utc(2022, 12, 26), end: utc(2023, 1, 2)),
        // Months.
        .init(period: .month, date: utc(2024, 2, 15), start: utc(2024, 2, 1), end: utc(2024, 3, 1)),
        .init(period: .month, date: utc(2024, 2, 29, 23, 59, 59), start: utc(2024, 2, 1), end: utc(2024, 3, 1)),
        .init(period: .month, date: utc(2023, 2, 28, 12), start: utc(2023, 2, 1), end: utc(2023, 3, 1)),
        .init(period: .month, date: utc(2024, 12, 31, 23), start: utc(2024, 12, 1), end: utc(2025, 1, 1)),
        .init(period: .month, date: utc(2025, 1, 1), start: utc(2025, 1, 1), end: utc(2025, 2, 1)),
        // Total: from the epoch, no end.
        .init(period: .total, date: utc(2024, 3, 10), start: Date(timeIntervalSince1970: 0), end: nil),
    ]

    @Test(arguments: cases)
    func bounds(_ c: Case) {
        let (start, end) = c.period.bounds(containing: c.date)
        #expect(start == c.start)
        #expect(end == c.end)
        #expect(start <= c.date)
        if let end { #expect(c.date < end) }
    }

    @Test func weekStartsOnMondayForEveryDayOfAYear() {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        for day in 0..<400 {
            let date = Self.utc(2024, 1, 1).addingTimeInterval(Double(day) * 86_400 + 3_600 * 13)
            let (start, end) = Budget.Period.week.bounds(containing: date)
            #expect(cal.component(.weekday, from: start) == 2, "week of \(date) starts \(start)")  // 2 = Monday
            #expect(cal.component(.hour, from: start) == 0)
            #expect(end == start.addingTimeInterval(7 * 86_400))
            #expect(start <= date && date < end!)
        }
    }

    @Test func boundsDoNotDependOnTheProcessTimeZone() {
        // The UTC calendar is explicit; the host zone must not matter. (Checked with a date
        // that is a different calendar day in most zones east or west of UTC.)
        let date = Self.utc(2024, 3, 10, 23, 30)
        #expect(Budget.Period.day.bounds(containing: date).start == Self.utc(2024, 3, 10))
        let early = Self.utc(2024, 3, 11, 0, 30)
        #expect(Budget.Period.day.bounds(containing: early).start == Self.utc(2024, 3, 11))
    }
}
