import Foundation

extension Budget.Period {
    /// The UTC calendar period containing `date`: `[start, end)`; `total` is `[0, ∞)`.
    /// Weeks start on Monday (ISO 8601).
    public func bounds(containing date: Date) -> (start: Date, end: Date?) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        calendar.firstWeekday = 2
        calendar.minimumDaysInFirstWeek = 4
        switch self {
        case .total:
            return (Date(timeIntervalSince1970: 0), nil)
        case .day:
            let start = calendar.startOfDay(for: date)
            return (start, calendar.date(byAdding: .day, value: 1, to: start)!)
        case .week:
            let start = calendar.dateInterval(of: .weekOfYear, for: date)!.start
            return (start, calendar.date(byAdding: .day, value: 7, to: start)!)
        case .month:
            let start = calendar.dateInterval(of: .month, for: date)!.start
            return (start, calendar.date(byAdding: .month, value: 1, to: start)!)
        }
    }
}
