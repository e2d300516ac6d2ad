import Foundation
import GatehouseCore

/// A change to an optional field: leave it, clear it, or set it.
public enum FieldPatch<Value: Sendable & Equatable>: Sendable, Equatable {
    case unchanged
    case clear
    case set(Value)

    func apply(to current: Value?) -> Value? {
        switch self {
        case .unchanged: current
        case .clear: nil
        case .set(let v): v
        }
    }
}

/// What it takes to store a provider key.
public struct ProviderKeyInput: Sendable {
    public var name: String
    public var provider: Provider
    public var baseURL: String?
    /// The provider's secret. Never logged, never returned.
    public var apiKey: String

    public init(name: String, provider: Provider, baseURL: String?, apiKey: String) {
        self.name = name
        self.provider = provider
        self.baseURL = baseURL
        self.apiKey = apiKey
    }
}

/// What it takes to create a Gatehouse key.
public struct GateKeyInput: Sendable {
    public var kind: KeyKind
    public var name: String
    public var description: String?
    public var providerKeyID: String?
    public var expiresAt: Date?
    public var allowedModels: [String]?
    public var allowedIPs: [String]?
    public var rateLimits: [RateLimit]?
    public var budget: Budget?

    public init(
        kind: KeyKind, name: String, description: String? = nil, providerKeyID: String? = nil,
        expiresAt: Date? = nil, allowedModels: [String]? = nil, allowedIPs: [String]? = nil,
        rateLimits: [RateLimit]? = nil, budget: Budget? = nil
    ) {
        self.kind = kind
        self.name = name
        self.description = description
        self.providerKeyID = providerKeyID
        self.expiresAt = expiresAt
        self.allowedModels = allowedModels
        self.allowedIPs = allowedIPs
        self.rateLimits = rateLimits
        self.budget = budget
    }
}

/// A change to a proxy key's mutable fields.
public struct GateKeyPatch: Sendable {
    public var name: String?
    public var description: FieldPatch<String> = .unchanged
    public var expiresAt: FieldPatch<Date> = .unchanged
    public var allowedModels: FieldPatch<[String]> = .unchanged
    public var allowedIPs: FieldPatch<[String]> = .unchanged
    public var rateLimits: FieldPatch<[RateLimit]> = .unchanged
    public var budget: FieldPatch<Budget> = .unchanged

    public init() {}
}

/// The validation rules shared by the admin API and the CLI, so both refuse the same input
/// with the same message.
public enum Validation {
    public static let maxNameLength = 200
    public static let maxDescriptionLength = 2000
    public static let maxListEntries = 1000
    public static let maxModelNameLength = 200
    public static let maxProviderSecretLength = 4096
    public static let maxRateLimits = 20
    public static let maxWindowSeconds = 366 * 24 * 3600

    static func fail(_ field: String, _ message: String) -> GatehouseError {
        .validation(field: field, message: message)
    }

    public static func name(_ value: String, field: String = "name") throws -> String {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { throw fail(field, "must not be empty") }
        // Code points, as the OpenAPI `maxLength` counts (not user-perceived characters).
        guard trimmed.unicodeScalars.count <= maxNameLength else { throw fail(field, "must be at most \(maxNameLength) characters") }
        guard !trimmed.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw fail(field, "must not contain control characters")
        }
        return trimmed
    }

    public static func description(_ value: String?) throws -> String? {
        guard let value else { return nil }
        guard value.unicodeScalars.count <= maxDescriptionLength else {
            throw fail("description", "must be at most \(maxDescriptionLength) characters")
        }
        return value
    }

    /// A base URL must be absolute http(s), with a host, and without credentials, query or
    /// fragment: the upstream is chosen by the operator here and never by a client.
    public static func baseURL(_ value: String?, provider: Provider) throws -> String? {
        guard let value else {
            if provider == .openaiCompatible { throw fail("base_url", "is required for provider openai-compatible") }
            return nil
        }
        // Printable ASCII only: whitespace and control characters are refused, never silently
        // percent-encoded (a header injection attempt must fail loudly).
        guard value.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }) else {
            throw fail("base_url", "must not contain spaces, control or non-ASCII characters")
        }
        guard value.count <= 2048, let components = URLComponents(string: value),
            let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https"
        else { throw fail("base_url", "must be an absolute http:// or https:// URL") }
        guard components.host?.isEmpty == false else { throw fail("base_url", "must name a host") }
        guard UpstreamTarget.plainHost(of: components) != nil else {
            throw fail("base_url", "host must be a DNS name or an IP address, without percent-encoding")
        }
        if let port = components.port, !(1...65535).contains(port) { throw fail("base_url", "port must be between 1 and 65535") }
        guard components.user == nil, components.password == nil else {
            throw fail("base_url", "must not contain credentials; store the secret as api_key")
        }
        guard components.query == nil, components.fragment == nil else {
            throw fail("base_url", "must not contain a query or fragment")
        }
        // Stored without a trailing slash or `/v1` path segment: the gateway appends the
        // client's `/v1/...` path itself.
        var path = components.percentEncodedPath
        while path.hasSuffix("/") { path.removeLast() }
        if path.lowercased().hasSuffix("/v1") { path.removeLast(3) }
        while path.hasSuffix("/") { path.removeLast() }
        var normalized = components
        normalized.percentEncodedPath = path
        guard let text = normalized.string else { throw fail("base_url", "must be an absolute http:// or https:// URL") }
        return text
    }

    public static func providerSecret(_ value: String) throws -> String {
        guard !value.isEmpty else { throw fail("api_key", "must not be empty") }
        guard value.utf8.count <= maxProviderSecretLength else {
            throw fail("api_key", "must be at most \(maxProviderSecretLength) bytes")
        }
        guard value.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }) else {
            throw fail("api_key", "must be printable ASCII without spaces")
        }
        return value
    }

    public static func models(_ value: [String]?) throws -> [String]? {
        guard let value else { return nil }
        guard value.count <= maxListEntries else { throw fail("allowed_models", "at most \(maxListEntries) entries") }
        for m in value where m.isEmpty || m.unicodeScalars.count > maxModelNameLength {
            throw fail("allowed_models", "each entry must be 1 to \(maxModelNameLength) characters")
        }
        return value
    }

    public static func cidrs(_ value: [String]?, field: String = "allowed_ips") throws -> [String]? {
        guard let value else { return nil }
        guard value.count <= maxListEntries else { throw fail(field, "at most \(maxListEntries) entries") }
        // Name the bad entry by position, never by value: a secret pasted into the wrong field
        // must not come back in the error.
        for (i, entry) in value.enumerated() where CIDR(entry.trimmingCharacters(in: .whitespaces)) == nil {
            throw fail("\(field)[\(i)]", "must be an IPv4/IPv6 address or CIDR such as 10.0.0.0/8")
        }
        switch IPAllowlist.parse(value) {
        case .success(let list): return list.networks.map(\.description)
        case .failure: throw fail(field, "must be IPv4/IPv6 addresses or CIDRs")
        }
    }

    public static func expiry(_ value: Date?, now: Date) throws -> Date? {
        guard let value else { return nil }
        guard value > now else { throw fail("expires_at", "must be in the future") }
        return value
    }

    public static func rateLimits(_ value: [RateLimit]?) throws -> [RateLimit]? {
        guard let value else { return nil }
        guard value.count <= maxRateLimits else { throw fail("rate_limits", "at most \(maxRateLimits) limits") }
        var seen: Set<String> = []
        for (i, r) in value.enumerated() {
            guard seen.insert("\(r.metric.rawValue)/\(r.windowSeconds)").inserted else {
                throw fail("rate_limits[\(i)]", "duplicates another limit with the same metric and window")
            }
            guard r.limit.isFinite, r.limit > 0 else { throw fail("rate_limits[\(i)].limit", "must be a positive number") }
            guard r.windowSeconds >= 1, r.windowSeconds <= maxWindowSeconds else {
                throw fail("rate_limits[\(i)].window_seconds", "must be between 1 and \(maxWindowSeconds)")
            }
            if r.metric != .costUSD, r.limit.rounded() != r.limit {
                throw fail("rate_limits[\(i)].limit", "must be a whole number for metric \(r.metric.rawValue)")
            }
        }
        return value
    }

    public static func budget(_ value: Budget?) throws -> Budget? {
        guard let value else { return nil }
        guard value.limitUSD.isFinite, value.limitUSD >= 0, value.limitUSD <= 1e9 else {
            throw fail("budget.limit_usd", "must be a number between 0 and 1000000000")
        }
        return value
    }
}
