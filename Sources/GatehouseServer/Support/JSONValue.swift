import Foundation

/// A JSON document as a value. The admin API builds its responses from these (so `null`
/// fields are explicit and key order is stable) and reads request bodies into them (so every
/// field is checked by name with a message that names it, and unknown fields are refused).
public enum JSONValue: Sendable, Equatable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n):
            if n.rounded() == n, abs(n) < 9.0e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    public static func string(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
    public static func int(_ n: Int) -> JSONValue { .number(Double(n)) }
    public static func date(_ d: Date?) -> JSONValue { d.map { .string(JSONValue.formatDate($0)) } ?? .null }
    public static func strings(_ a: [String]?) -> JSONValue { a.map { .array($0.map(JSONValue.string)) } ?? .null }

    /// Compact, key-sorted UTF-8 JSON.
    public func encoded(pretty: Bool = false) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)) ?? Data("null".utf8)
    }

    public func encodedString(pretty: Bool = false) -> String {
        String(decoding: encoded(pretty: pretty), as: UTF8.self)
    }

    /// ISO 8601 UTC with milliseconds when they are not zero.
    public static func formatDate(_ date: Date) -> String {
        let ms = (date.timeIntervalSince1970 * 1000).rounded()
        let whole = Date(timeIntervalSince1970: (ms / 1000).rounded(.down))
        let base = whole.formatted(.iso8601)
        let frac = Int(ms.truncatingRemainder(dividingBy: 1000))
        if frac == 0 { return base }
        return String(base.dropLast()) + String(format: ".%03dZ", frac)
    }

    /// Parses ISO 8601 / RFC 3339 timestamps with or without fractional seconds.
    public static func parseDate(_ text: String) -> Date? {
        if let d = try? Date(text, strategy: .iso8601) { return d }
        let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        return try? withFraction.parse(text)
    }
}

/// Nesting depth of a JSON text, counted without parsing it (strings are skipped), so that a
/// deeply nested body is refused before any recursive decoder sees it.
public func jsonNestingDepth(_ bytes: some Sequence<UInt8>) -> Int {
    var depth = 0
    var maxDepth = 0
    var inString = false
    var escaped = false
    for b in bytes {
        if inString {
            if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
            continue
        }
        switch b {
        case UInt8(ascii: "\""): inString = true
        case UInt8(ascii: "["), UInt8(ascii: "{"):
            depth += 1
            maxDepth = max(maxDepth, depth)
        case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
        default: break
        }
    }
    return maxDepth
}
