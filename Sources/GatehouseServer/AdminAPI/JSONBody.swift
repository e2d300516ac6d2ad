import Foundation
import GatehouseCore
import Hummingbird
import NIOCore
import NIOFoundationCompat

/// Reads a JSON object request body field by field, with messages that name the field and
/// never echo a value (a value may be a secret pasted in the wrong place).
///
/// Malformed JSON or a non-object → `400`; a missing, mistyped, invalid or unknown field → `422`.
struct JSONBody {
    let fields: [String: JSONValue]
    /// Path of this object inside the request body (`budget.`, `rate_limits[0].`), for messages.
    var prefix = ""

    /// Collects at most ``AdminLimits/maxBodyBytes`` and parses it.
    static func read(_ request: Request, allowed: Set<String>) async throws -> JSONBody {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(limit: AdminLimits.maxBodyBytes)
        } catch .tooLarge {
            throw GatehouseError.payloadTooLarge(limit: AdminLimits.maxBodyBytes)
        } catch {
            throw GatehouseError.malformedBody
        }
        return try parse(Data(buffer: buffer), allowed: allowed)
    }

    static func parse(_ data: Data, allowed: Set<String>) throws -> JSONBody {
        guard !data.isEmpty else { throw GatehouseError.invalidRequest("request body must be a JSON object") }
        guard jsonNestingDepth(data) <= AdminLimits.maxJSONDepth else {
            throw GatehouseError.invalidRequest("JSON is nested too deeply (limit \(AdminLimits.maxJSONDepth))")
        }
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw GatehouseError.invalidRequest("request body is not valid JSON")
        }
        guard case .object(let fields) = value else {
            throw GatehouseError.invalidRequest("request body must be a JSON object")
        }
        if let unknown = fields.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw GatehouseError.validation(field: safeFieldName(unknown), message: "unknown field")
        }
        return JSONBody(fields: fields)
    }

    func has(_ key: String) -> Bool { fields[key] != nil }

    /// An unknown field name for a message: shown only when it looks like a field name
    /// (short, lower-case letters, digits, underscores), never something that could be a
    /// pasted secret.
    static func safeFieldName(_ name: String) -> String {
        let looksLikeField = name.count <= 32 && !name.contains("gate_")
            && name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
        return looksLikeField ? name : "(field name redacted)"
    }

    func typeError(_ key: String, _ expected: String) -> GatehouseError {
        .validation(field: prefix + key, message: "must be \(expected)")
    }

    // MARK: Typed accessors (absent and null read as nil)

    func string(_ key: String) throws -> String? {
        switch fields[key] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        default: throw typeError(key, "a string")
        }
    }

    func requiredString(_ key: String) throws -> String {
        guard let s = try string(key) else { throw GatehouseError.validation(field: prefix + key, message: "is required") }
        return s
    }

    func stringArray(_ key: String) throws -> [String]? {
        switch fields[key] {
        case nil, .null?: return nil
        case .array(let items)?:
            return try items.map {
                guard case .string(let s) = $0 else { throw typeError(key, "an array of strings") }
                return s
            }
        default: throw typeError(key, "an array of strings")
        }
    }

    func date(_ key: String) throws -> Date? {
        guard let text = try string(key) else { return nil }
        guard let date = JSONValue.parseDate(text) else { throw typeError(key, "an ISO 8601 timestamp") }
        return date
    }

    func enumValue<E: RawRepresentable & CaseIterable>(_ key: String, _: E.Type) throws -> E? where E.RawValue == String {
        guard let text = try string(key) else { return nil }
        guard let value = E(rawValue: text) else {
            throw typeError(key, "one of " + E.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return value
    }

    func rateLimits(_ key: String) throws -> [RateLimit]? {
        switch fields[key] {
        case nil, .null?: return nil
        case .array(let items)?:
            return try items.enumerated().map { i, item in
                let field = "\(key)[\(i)]"
                let body = try self.nested(item, field: field, allowed: ["metric", "limit", "window_seconds"])
                guard let metric = try body.enumValue("metric", RateLimit.Metric.self) else {
                    throw GatehouseError.validation(field: "\(field).metric", message: "is required")
                }
                guard let limit = try body.number("limit") else {
                    throw GatehouseError.validation(field: "\(field).limit", message: "is required")
                }
                guard let window = try body.integer("window_seconds") else {
                    throw GatehouseError.validation(field: "\(field).window_seconds", message: "is required")
                }
                return RateLimit(metric: metric, limit: limit, windowSeconds: window)
            }
        default: throw typeError(key, "an array of rate limit objects")
        }
    }

    func budget(_ key: String) throws -> Budget? {
        switch fields[key] {
        case nil, .null?: return nil
        case let item?:
            let body = try self.nested(item, field: key, allowed: ["limit_usd", "period"])
            guard let limit = try body.number("limit_usd") else {
                throw GatehouseError.validation(field: "\(key).limit_usd", message: "is required")
            }
            guard let period = try body.enumValue("period", Budget.Period.self) else {
                throw GatehouseError.validation(field: "\(key).period", message: "is required")
            }
            return Budget(limitUSD: limit, period: period)
        }
    }

    func number(_ key: String) throws -> Double? {
        switch fields[key] {
        case nil, .null?: return nil
        case .number(let n)?: return n
        default: throw typeError(key, "a number")
        }
    }

    func integer(_ key: String) throws -> Int? {
        guard let n = try number(key) else { return nil }
        guard n.rounded() == n, abs(n) < 1e15 else { throw typeError(key, "a whole number") }
        return Int(n)
    }

    /// A PATCH field: absent → unchanged, `null` → clear, otherwise the value.
    func patch<T>(_ key: String, _ read: (String) throws -> T?) throws -> FieldPatch<T> {
        switch fields[key] {
        case nil: return .unchanged
        case .null?: return .clear
        default:
            guard let v = try read(key) else { return .clear }
            return .set(v)
        }
    }

    private func nested(_ value: JSONValue, field: String, allowed: Set<String>) throws -> JSONBody {
        guard case .object(let fields) = value else { throw GatehouseError.validation(field: prefix + field, message: "must be an object") }
        if let unknown = fields.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw GatehouseError.validation(field: "\(prefix)\(field).\(Self.safeFieldName(unknown))", message: "unknown field")
        }
        return JSONBody(fields: fields, prefix: "\(prefix)\(field).")
    }
}
