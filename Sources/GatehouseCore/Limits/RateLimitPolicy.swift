import Foundation

/// A client-chosen extra limit from `Helicone-RateLimit-Policy`:
/// `<quota>;w=<seconds>[;u=request|cents][;s=user]`.
///
/// It is applied *in addition to* the key's own limits, so it can only tighten them.
public struct RateLimitPolicy: Sendable, Equatable, Hashable {
    public enum Unit: String, Sendable, Hashable {
        case request
        case cents
    }

    public var quota: Double
    public var windowSeconds: Int
    public var unit: Unit
    /// `s=user`: a separate window per end-user id.
    public var perUser: Bool

    public init(quota: Double, windowSeconds: Int, unit: Unit = .request, perUser: Bool = false) {
        self.quota = quota
        self.windowSeconds = windowSeconds
        self.unit = unit
        self.perUser = perUser
    }

    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    /// Parses the header value. Strict: unknown parameters, repeated parameters, non-numeric
    /// or out-of-range values are refused (a typo must not silently disable a limit).
    public static func parse(_ text: some StringProtocol) throws(ParseError) -> RateLimitPolicy {
        guard text.utf8.count <= 200 else { throw ParseError(reason: "policy is too long") }
        let parts = text.split(separator: ";", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard let first = parts.first, let quota = Double(first), quota.isFinite, quota >= 0.01, quota <= 1e12,
            first.allSatisfy({ $0.isNumber || $0 == "." })
        else { throw ParseError(reason: "policy must start with a quota between 0.01 and 1e12, e.g. 1000;w=3600") }
        var window: Int? = nil
        var unit = Unit.request
        var perUser = false
        var seen: Set<String> = []
        for part in parts.dropFirst() {
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard kv.count == 2, !seen.contains(kv[0]) else {
                throw ParseError(reason: "policy parameters must be w=<seconds>, u=request|cents, s=user, each at most once")
            }
            seen.insert(kv[0])
            switch kv[0] {
            case "w":
                guard kv[1].allSatisfy(\.isNumber), let w = Int(kv[1]), w >= 1, w <= 366 * 24 * 3600 else {
                    throw ParseError(reason: "w must be a whole number of seconds from 1 to 31622400")
                }
                window = w
            case "u":
                guard let u = Unit(rawValue: kv[1]) else { throw ParseError(reason: "u must be request or cents") }
                unit = u
            case "s":
                guard kv[1] == "user" else { throw ParseError(reason: "s must be user") }
                perUser = true
            default:
                throw ParseError(reason: "unknown policy parameter")
            }
        }
        guard let window else { throw ParseError(reason: "policy needs a window, e.g. 1000;w=3600") }
        if unit == .request, quota.rounded() != quota {
            throw ParseError(reason: "a request quota must be a whole number")
        }
        return RateLimitPolicy(quota: quota, windowSeconds: window, unit: unit, perUser: perUser)
    }
}
