import Foundation

/// An organization (tenant). Every other row carries its id.
public struct Organization: Sendable, Equatable {
    public var id: String
    public var name: String
    public var createdAt: Date
    /// Its data key, wrapped by the master key.
    public var wrappedDataKey: Vault.WrappedDataKey

    public init(id: String, name: String, createdAt: Date, wrappedDataKey: Vault.WrappedDataKey) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.wrappedDataKey = wrappedDataKey
    }
}

/// A provider API key in the vault. `ciphertext` is an ``Envelope`` sealed by ``OrgKeys``.
public struct ProviderKeyRecord: Sendable, Equatable {
    public var id: String
    public var orgID: String
    public var name: String
    public var provider: Provider
    public var baseURL: String?
    public var ciphertext: Data
    /// The last four characters of the secret, the only part ever shown.
    public var last4: String
    public var createdAt: Date

    public init(
        id: String, orgID: String, name: String, provider: Provider, baseURL: String?, ciphertext: Data,
        last4: String, createdAt: Date
    ) {
        self.id = id
        self.orgID = orgID
        self.name = name
        self.provider = provider
        self.baseURL = baseURL
        self.ciphertext = ciphertext
        self.last4 = last4
        self.createdAt = createdAt
    }
}

/// One rate limit of a proxy key.
public struct RateLimit: Sendable, Equatable, Codable {
    public enum Metric: String, Sendable, Codable, CaseIterable {
        case requests
        case tokens
        case costUSD = "cost_usd"
    }

    public var metric: Metric
    public var limit: Double
    public var windowSeconds: Int

    public init(metric: Metric, limit: Double, windowSeconds: Int) {
        self.metric = metric
        self.limit = limit
        self.windowSeconds = windowSeconds
    }

    enum CodingKeys: String, CodingKey {
        case metric, limit
        case windowSeconds = "window_seconds"
    }
}

/// A spending budget of a proxy key.
public struct Budget: Sendable, Equatable, Codable {
    public enum Period: String, Sendable, Codable, CaseIterable {
        case day, week, month, total
    }

    public var limitUSD: Double
    public var period: Period

    public init(limitUSD: Double, period: Period) {
        self.limitUSD = limitUSD
        self.period = period
    }

    enum CodingKeys: String, CodingKey {
        case limitUSD = "limit_usd"
        case period
    }
}

/// A key handed out by Gatehouse (API, read-only or proxy). Only the HMAC of the key is stored.
public struct GateKeyRecord: Sendable, Equatable {
    /// The 12-character key id embedded in the key itself.
    public var id: String
    public var orgID: String
    public var kind: KeyKind
    public var name: String
    public var description: String?
    public var hash: Data
    /// Proxy keys only: the provider key they are bound to.
    public var providerKeyID: String?
    public var expiresAt: Date?
    public var allowedModels: [String]?
    public var allowedIPs: [String]?
    public var rateLimits: [RateLimit]?
    public var budget: Budget?
    public var createdAt: Date
    public var revokedAt: Date?

    public init(
        id: String, orgID: String, kind: KeyKind, name: String, description: String? = nil, hash: Data,
        providerKeyID: String? = nil, expiresAt: Date? = nil, allowedModels: [String]? = nil,
        allowedIPs: [String]? = nil, rateLimits: [RateLimit]? = nil, budget: Budget? = nil,
        createdAt: Date, revokedAt: Date? = nil
    ) {
        self.id = id
        self.orgID = orgID
        self.kind = kind
        self.name = name
        self.description = description
        self.hash = hash
        self.providerKeyID = providerKeyID
        self.expiresAt = expiresAt
        self.allowedModels = allowedModels
        self.allowedIPs = allowedIPs
        self.rateLimits = rateLimits
        self.budget = budget
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }

    public var isRevoked: Bool { revokedAt != nil }

    public func isExpired(at now: Date) -> Bool {
        if let expiresAt { return expiresAt <= now }
        return false
    }
}
