import Foundation

/// A team member's role. The permission matrix lives in `DESIGN.md` §3 and in
/// `Principal.can` (server); here only the ordering used for "nobody grants above their own".
public enum Role: String, Sendable, Codable, CaseIterable, Comparable {
    case owner, admin, member, viewer

    /// Higher is more powerful.
    public var rank: Int {
        switch self {
        case .owner: 4
        case .admin: 3
        case .member: 2
        case .viewer: 1
        }
    }

    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }
}

/// A person who logs in to the admin API and dashboard.
public struct UserRecord: Sendable, Equatable {
    public var id: String
    public var orgID: String
    /// Lower-cased; unique across the installation (login is by e-mail alone).
    public var email: String
    public var role: Role
    /// A bcrypt hash (`$2b$…`); never the password.
    public var passwordHash: String
    public var createdAt: Date

    public init(id: String, orgID: String, email: String, role: Role, passwordHash: String, createdAt: Date) {
        self.id = id
        self.orgID = orgID
        self.email = email
        self.role = role
        self.passwordHash = passwordHash
        self.createdAt = createdAt
    }
}

/// A login session. The cookie holds a random token; only its SHA-256 is stored (`id`).
public struct SessionRecord: Sendable, Equatable {
    /// Hex SHA-256 of the session token.
    public var id: String
    public var userID: String
    public var orgID: String
    public var createdAt: Date
    public var lastSeenAt: Date
    /// Absolute expiry, whatever the activity.
    public var expiresAt: Date

    public init(id: String, userID: String, orgID: String, createdAt: Date, lastSeenAt: Date, expiresAt: Date) {
        self.id = id
        self.userID = userID
        self.orgID = orgID
        self.createdAt = createdAt
        self.lastSeenAt = lastSeenAt
        self.expiresAt = expiresAt
    }
}

/// Organization settings changed through `PATCH /api/settings`.
public struct OrgSettings: Sendable, Equatable, Codable {
    /// CIDRs allowed to use `/api` (empty = anyone).
    public var apiIPAllowlist: [String] = []
    /// CIDRs allowed to use `/v1` (empty = anyone).
    public var gatewayIPAllowlist: [String] = []
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    public var trustedProxies: [String] = []
    /// Days request logs are kept (1–730).
    public var retentionDays: Int = 90
    /// Whether request and response bodies are stored in the request log.
    public var logBodies: Bool = true

    public init() {}

    enum CodingKeys: String, CodingKey {
        case apiIPAllowlist = "api_ip_allowlist"
        case gatewayIPAllowlist = "gateway_ip_allowlist"
        case trustedProxies = "trusted_proxies"
        case retentionDays = "retention_days"
        case logBodies = "log_bodies"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        apiIPAllowlist = try c.decodeIfPresent([String].self, forKey: .apiIPAllowlist) ?? []
        gatewayIPAllowlist = try c.decodeIfPresent([String].self, forKey: .gatewayIPAllowlist) ?? []
        trustedProxies = try c.decodeIfPresent([String].self, forKey: .trustedProxies) ?? []
        retentionDays = try c.decodeIfPresent(Int.self, forKey: .retentionDays) ?? 90
        logBodies = try c.decodeIfPresent(Bool.self, forKey: .logBodies) ?? true
    }
}
