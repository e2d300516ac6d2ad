#if canImport(GatehouseCore)
import GatehouseCore
#endif

/// Oracles for `RateLimitPolicy.parse` (the `Helicone-RateLimit-Policy` header):
///
/// - over 200 bytes is always refused; an accepted policy has a finite quota in [0.01, 1e12], a
///   window in 1...31622400 s, and a whole quota when counting requests;
/// - an accepted policy re-formats canonically and re-parses to the same value, also with
///   blanks around its parts; adding a repeated, unknown or empty parameter is refused;
/// - on ASCII input the parser agrees exactly with an independent reference of the grammar
///   `<quota>;w=<seconds>[;u=request|cents][;s=user]` (any order after the quota, each at most
///   once, spaces/tabs around parts ignored).
enum PolicyHeaderOracle {
    static let name = "PolicyHeader"
    static let maxWindow = 366 * 24 * 3600

    static func parse(_ text: some StringProtocol) -> RateLimitPolicy? {
        do throws(RateLimitPolicy.ParseError) {
            return try RateLimitPolicy.parse(text)
        } catch {
            return nil
        }
    }

    /// Reference parser for ASCII input; `nil` = refused.
    static func reference(_ utf8: [UInt8]) -> RateLimitPolicy? {
        guard utf8.count <= 200 else { return nil }
        func trim(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
            var s = s
            while let f = s.first, f == 32 || f == 9 { s.removeFirst() }
            while let l = s.last, l == 32 || l == 9 { s.removeLast() }
            return s
        }
        let parts = utf8.split(separator: 59, omittingEmptySubsequences: false).map(trim)  // ';'
        let first = parts[0]
        guard !first.isEmpty, first.allSatisfy({ ($0 >= 48 && $0 <= 57) || $0 == 46 }),
            let quota = Double(String(decoding: first, as: UTF8.self)), quota >= 0.01, quota <= 1e12
        else { return nil }
        var window: Int? = nil
        var unit: RateLimitPolicy.Unit? = nil
        var perUser: Bool? = nil
        for part in parts.dropFirst() {
            guard let eq = part.firstIndex(of: 61) else { return nil }  // '='
            let key = String(decoding: part[..<eq], as: UTF8.self)
            let value = part[(eq + 1)...]
            let text = String(decoding: value, as: UTF8.self)
            switch key {
            case "w" where window == nil:
                guard !value.isEmpty, value.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
                let significant = value.drop(while: { $0 == 48 })
                guard significant.count <= 8, let w = Int(String(decoding: significant, as: UTF8.self)) ?? (significant.isEmpty ? 0 : nil),
                    w >= 1, w <= maxWindow
                else { return nil }
                window = w
            case "u" where unit == nil:
                guard text == "request" || text == "cents" else { return nil }
                unit = text == "cents" ? .cents : .request
            case "s" where perUser == nil:
                guard text == "user" else { return nil }
                perUser = true
            default:
                return nil
            }
        }
        guard let window else { return nil }
        let u = unit ?? .request
        if u == .request, quota.rounded() != quota { return nil }
        return RateLimitPolicy(quota: quota, windowSeconds: window, unit: u, perUser: perUser ?? false)
    }

    /// The shortest positional (no exponent) decimal that reads back as exactly `v` (v > 0,
    /// finite); below 1 without the leading `0` (`.25`), so that it is never longer than any
    /// accepted text for the same quota (a 200-byte `.000…1` must still fit).
    static func positional(_ v: Double) -> String {
        if v.rounded() == v, v < 1e15 { return String(Int64(v)) }
        let s = "\(v)"  // shortest round-trip digits, maybe with an exponent: 1e-05, 2.5e+15, 0.5
        var digits: String
        var pointAt: Int  // position of the decimal point within `digits`
        let exponentAt = s.firstIndex(where: { $0 == "e" || $0 == "E" }) ?? s.endIndex
        let mantissa = s[..<exponentAt]
        let exponent = exponentAt == s.endIndex ? 0 : Int(s[s.index(after: exponentAt)...])!
        digits = mantissa.filter { $0 != "." }
        pointAt = (mantissa.firstIndex(of: ".").map { mantissa[..<$0].count } ?? mantissa.count) + exponent
        if pointAt <= 0 {
            digits = String(repeating: "0", count: -pointAt) + digits
            pointAt = 0
        }
        if pointAt >= digits.count { digits += String(repeating: "0", count: pointAt - digits.count) }
        var integer = String(digits.prefix(pointAt))
        var fraction = String(digits.dropFirst(pointAt))
        while integer.hasPrefix("0") { integer.removeFirst() }
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return fraction.isEmpty ? integer : integer + "." + fraction
    }

    static func format(_ p: RateLimitPolicy) -> String {
        var t = "\(positional(p.quota));w=\(p.windowSeconds)"
        if p.unit == .cents { t += ";u=cents" }
        if p.perUser { t += ";s=user" }
        return t
    }

    static func run(_ bytes: [UInt8]) throws(FuzzOracleFailure) {
        let text = String(decoding: bytes, as: UTF8.self)
        let utf8 = Array(text.utf8)
        let policy = parse(text)
        // A Substring whose indices do not start at zero; NUL (a control character) never joins
        // a grapheme cluster with the text next to it.
        let viaSubstring = parse(("\u{0}" + text + "\u{0}").dropFirst().dropLast())
        try fuzzCheck(viaSubstring == policy, name, "Substring parse \(String(describing: viaSubstring)) != String parse \(String(describing: policy))")

        if utf8.allSatisfy({ $0 < 0x80 }) {
            let expected = reference(utf8)
            try fuzzCheck(policy == expected, name,
                          "parse(\(text.debugDescription)) = \(String(describing: policy)), reference says \(String(describing: expected))")
        }
        guard let p = policy else { return }

        try fuzzCheck(utf8.count <= 200, name, "accepted a \(utf8.count)-byte policy")
        try fuzzCheck(p.quota.isFinite && p.quota >= 0.01 && p.quota <= 1e12, name, "quota out of range: \(p)")
        try fuzzCheck(p.windowSeconds >= 1 && p.windowSeconds <= maxWindow, name, "window out of range: \(p)")
        try fuzzCheck(p.unit == .cents || p.quota.rounded() == p.quota, name, "fractional request quota: \(p)")

        let canonical = format(p)
        try fuzzCheck(parse(canonical) == p, name,
                      "\(text.debugDescription) parsed to \(p); its canonical form \(canonical.debugDescription) parses to \(String(describing: parse(canonical)))")
        let spaced = canonical.split(separator: ";").map { " \t\($0) " }.joined(separator: ";")
        if spaced.utf8.count <= 200 {
            try fuzzCheck(parse(spaced) == p, name, "blanks around the parts of \(canonical.debugDescription) changed the result")
        }
        for suffix in [";w=\(p.windowSeconds)", ";", ";x=1", ";w", ";u=dollars", ";s=team"] {
            try fuzzCheck(parse(canonical + suffix) == nil, name, "\((canonical + suffix).debugDescription) was accepted")
        }
        if utf8.count < 200 {
            // Anything appended to an accepted header makes it a different header or refused.
            try fuzzCheck(parse(text + ";") == nil, name, "a trailing ';' was accepted after \(text.debugDescription)")
        }
    }
}
