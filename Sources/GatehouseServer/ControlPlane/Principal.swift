import GatehouseCore

/// Who is acting, for authorization and for the audit trail.
public struct Principal: Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// An organization API key (admin level).
        case apiKey = "api_key"
        /// A read-only organization key.
        case readKey = "read_key"
        /// The `gatehouse` command line, run by an OS user on the server machine.
        case cli
        /// Gatehouse itself (initialisation, background jobs).
        case system
        /// A team member logged in with a session.
        case user
    }

    public var kind: Kind
    /// Key id, OS user name, or `gatehouse`.
    public var id: String
    public var orgID: String
    public var clientIP: String
    /// For `.user`: their role.
    public var role: Role?
    /// For `.user`: the session (hash) the request came with.
    public var sessionID: String?
    /// A human name for the audit trail: the key's name, the user's e-mail, the OS user.
    public var name: String?

    public init(
        kind: Kind, id: String, orgID: String, clientIP: String = "", role: Role? = nil, sessionID: String? = nil,
        name: String? = nil
    ) {
        self.name = name
        self.kind = kind
        self.id = id
        self.orgID = orgID
        self.clientIP = clientIP
        self.role = role
        self.sessionID = sessionID
    }

    /// The role this principal acts with: users their own, an API key admin, a read-only key
    /// viewer (plus request logs), the CLI and Gatehouse itself owner.
    public var effectiveRole: Role {
        switch kind {
        case .user: role ?? .viewer
        case .apiKey: .admin
        case .readKey: .viewer
        case .cli, .system: .owner
        }
    }

    /// Whether this principal may do `capability` (DESIGN §3, the role matrix).
    public func can(_ capability: Capability) -> Bool {
        switch capability {
        case .viewUsage:
            return true
        case .viewRequestLogs:
            return kind == .readKey || effectiveRole >= .member
        case .viewAudit:
            return kind == .readKey || effectiveRole >= .admin
        case .manageKeys, .manageSettings, .manageTeam, .exportAndDelete:
            return kind != .readKey && effectiveRole >= .admin
        case .manageOwners:
            return effectiveRole == .owner
        }
    }
}

/// What a route needs; see ``Principal/can(_:)``.
public enum Capability: String, Sendable, CaseIterable {
    case viewUsage = "view_usage"
    case viewRequestLogs = "view_request_logs"
    case viewAudit = "view_audit"
    case manageKeys = "manage_keys"
    case manageSettings = "manage_settings"
    case manageTeam = "manage_team"
    case exportAndDelete = "export_and_delete"
    /// Grant or revoke owner, delete the organization.
    case manageOwners = "manage_owners"
}
