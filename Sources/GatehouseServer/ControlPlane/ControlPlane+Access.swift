import Crypto
import Foundation
import GatehouseCore
import GatehouseStore
import HummingbirdBcrypt
import NIOPosix
import HTTPTypes

/// Team, sessions and organization settings.
extension ControlPlane {
    public static let minPasswordLength = 12
    /// bcrypt reads at most 72 bytes; longer passwords are refused rather than silently cut.
    public static let maxPasswordBytes = 72
    public static let bcryptCost: UInt8 = 11
    public static let sessionIdleTimeout: TimeInterval = 2 * 3600
    public static let sessionLifetime: TimeInterval = 12 * 3600

    var accessStore: any AccessStore {
        get throws {
            guard let store = store as? any AccessStore else { throw GatehouseError.internalError }
            return store
        }
    }

    // MARK: Users

    static func validateEmail(_ email: String) throws -> String {
        let e = email.trimmingCharacters(in: .whitespaces).lowercased()
        let parts = e.split(separator: "@", omittingEmptySubsequences: false)
        guard e.count <= 254, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."),
            !parts[1].hasPrefix("."), !parts[1].hasSuffix("."),
            e.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
        else { throw GatehouseError.validation(field: "email", message: "must be an e-mail address") }
        return e
    }

    static func validatePassword(_ password: String) throws {
        guard password.count >= minPasswordLength else {
            throw GatehouseError.validation(field: "password", message: "must be at least \(minPasswordLength) characters")
        }
        guard password.utf8.count <= maxPasswordBytes else {
            throw GatehouseError.validation(field: "password", message: "must be at most \(maxPasswordBytes) bytes")
        }
        // bcrypt stops at a NUL byte: "abc\0xyz" would hash like "abc".
        guard !password.utf8.contains(0) else {
            throw GatehouseError.validation(field: "password", message: "must not contain NUL characters")
        }
    }

    /// bcrypt off the event loops and the cooperative pool: it is deliberately slow.
    static func bcryptHash(_ password: String) async throws -> String {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: bcryptCost) }
    }

    static func bcryptVerify(_ password: String, hash: String) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash) }
    }

    /// A hash to verify against when the e-mail is unknown, so that the answer takes as long
    /// as for a real account (no user enumeration by timing).
    static let decoyHash: String = Bcrypt.hash(Base62.random(count: 24), cost: bcryptCost)

    /// Nobody grants a role above their own; only an owner grants or removes owner.
    func checkCanAssign(_ role: Role, by principal: Principal) throws {
        if role == .owner, !principal.can(.manageOwners) {
            throw GatehouseError.forbidden("only an owner can grant the owner role")
        }
        guard role <= principal.effectiveRole else {
            throw GatehouseError.forbidden("you cannot grant a role above your own")
        }
    }

    public func createUser(email: String, role: Role, password: String, by principal: Principal) async throws -> UserRecord {
        let email = try Self.validateEmail(email)
        try Self.validatePassword(password)
        try checkCanAssign(role, by: principal)
        let user = UserRecord(
            id: "usr_" + Base62.random(count: 16), orgID: principal.orgID, email: email, role: role,
            passwordHash: try await Self.bcryptHash(password), createdAt: Date())
        let audit = draft(principal, action: "user.create", target: user.id, details: ["email": .string(email), "role": .string(role.rawValue)])
        do {
            try await accessStore.insertUser(user, audit: audit)
        } catch StoreError.conflict {
            throw GatehouseError.conflict("a user with this e-mail already exists")
        }
        return user
    }

    public func users(orgID: String) async throws -> [UserRecord] {
        try await accessStore.users(orgID: orgID)
    }

    public func user(orgID: String, id: String) async throws -> UserRecord {
        guard let user = try await accessStore.user(orgID: orgID, id: id) else {
            throw GatehouseError.notFound("no user with id \(Self.safeID(id))")
        }
        return user
    }

    public func changeRole(userID: String, to role: Role, by principal: Principal) async throws -> UserRecord {
        let target = try await user(orgID: principal.orgID, id: userID)
        if target.role == .owner, !principal.can(.manageOwners) {
            throw GatehouseError.forbidden("only an owner can change an owner's role")
        }
        try checkCanAssign(role, by: principal)
        if target.role == role { return target }
        let audit = draft(
            principal, action: "user.role_change", target: userID,
            details: ["before": .object(["role": .string(target.role.rawValue)]), "after": .object(["role": .string(role.rawValue)])])
        switch try await accessStore.updateUserRole(orgID: principal.orgID, id: userID, role: role, audit: audit) {
        case .done: return try await user(orgID: principal.orgID, id: userID)
        case .notFound: throw GatehouseError.notFound("no user with id \(Self.safeID(userID))")
        case .lastOwner: throw GatehouseError.conflict("this is the organization's last owner; make someone else owner first")
        }
    }

    public func deleteUser(userID: String, by principal: Principal) async throws {
        let target = try await user(orgID: principal.orgID, id: userID)
        if target.role == .owner, !principal.can(.manageOwners) {
            throw GatehouseError.forbidden("only an owner can remove an owner")
        }
        if target.role > principal.effectiveRole {
            throw GatehouseError.forbidden("you cannot remove someone with a role above your own")
        }
        let audit = draft(principal, action: "user.delete", target: userID, details: ["email": .string(target.email), "role": .string(target.role.rawValue)])
        switch try await accessStore.deleteUser(orgID: principal.orgID, id: userID, audit: audit) {
        case .done: return
        case .notFound: throw GatehouseError.notFound("no user with id \(Self.safeID(userID))")
        case .lastOwner: throw GatehouseError.conflict("this is the organization's last owner; make someone else owner first")
        }
    }

    // MARK: Sessions

    /// Hex SHA-256 of a session token: what the store keeps.
    static func sessionID(token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).hexString
    }

    public struct Login: Sendable {
        public let token: String
        public let session: SessionRecord
        public let user: UserRecord
    }

    /// Checks a password and opens a session. Every failure is the same `unauthenticated`
    /// (audited with the reason); callers throttle.
    public func login(email: String, password: String, clientIP: String) async throws -> Login {
        try await openSession(for: try await verifyPassword(email: email, password: password, clientIP: clientIP), clientIP: clientIP)
    }

    /// Checks an e-mail and password; every failure is audited and answered `unauthenticated`.
    public func verifyPassword(email: String, password: String, clientIP: String) async throws -> UserRecord {
        let email = email.trimmingCharacters(in: .whitespaces).lowercased()
        let user = email.count <= 254 ? try await accessStore.user(email: email) : nil
        // bcrypt only reads 72 bytes and stops at NUL: a longer password or one with NUL would
        // match a stored one it merely starts like, so those never log in.
        let acceptable = password.utf8.count <= Self.maxPasswordBytes && !password.utf8.contains(0)
        let ok = try await Self.bcryptVerify(
            acceptable ? password : Base62.random(count: 24), hash: user?.passwordHash ?? Self.decoyHash)
        guard let user, ok, acceptable else {
            let audit = AuditDraft(
                orgID: user?.orgID ?? "", actorKind: "user", actorID: user?.id ?? "", clientIP: clientIP,
                action: "session.login", target: user?.id ?? "", outcome: .denied,
                details: JSONValue.object(["reason": .string(user == nil ? "unknown_email" : "wrong_password")]).encodedString())
            try? await store.appendAudit(audit)
            throw GatehouseError.unauthenticated
        }
        return user
    }

    /// Opens a session for a user whose password was checked.
    public func openSession(for user: UserRecord, clientIP: String) async throws -> Login {
        let token = Base62.random(count: 43)
        let now = Date()
        let session = SessionRecord(
            id: Self.sessionID(token: token), userID: user.id, orgID: user.orgID, createdAt: now, lastSeenAt: now,
            expiresAt: now.addingTimeInterval(Self.sessionLifetime))
        let audit = AuditDraft(
            orgID: user.orgID, actorKind: "user", actorID: user.id, clientIP: clientIP, action: "session.login", target: user.id,
            details: JSONValue.object(["session": .string(String(session.id.prefix(12))), "actor_name": .string(user.email)]).encodedString())
        try await accessStore.insertSession(session, audit: audit)
        return Login(token: token, session: session, user: user)
    }

    /// The principal of a session token, or `nil` if unknown, expired or idle too long.
    public func principal(sessionToken token: String, clientIP: String, now: Date = Date()) async throws -> Principal? {
        guard token.count <= 100 else { return nil }
        let id = Self.sessionID(token: token)
        guard let session = try await accessStore.session(id: id) else { return nil }
        if session.expiresAt <= now || now.timeIntervalSince(session.lastSeenAt) > Self.sessionIdleTimeout {
            try? await accessStore.deleteSession(id: id, audit: nil)
            return nil
        }
        guard let user = try await accessStore.user(orgID: session.orgID, id: session.userID) else { return nil }
        if now.timeIntervalSince(session.lastSeenAt) > 60 {
            try? await accessStore.touchSession(id: id, at: now)
        }
        return Principal(kind: .user, id: user.id, orgID: user.orgID, clientIP: clientIP, role: user.role, sessionID: id, name: user.email)
    }

    public func logout(_ principal: Principal) async throws {
        guard let id = principal.sessionID else {
            throw GatehouseError.invalidRequest("logging out applies to session cookies, not keys")
        }
        try await accessStore.deleteSession(id: id, audit: draft(principal, action: "session.logout", target: principal.id, details: [:]))
    }

    // MARK: Settings

    public func settings(orgID: String) async throws -> OrgSettings {
        try await accessStore.settings(orgID: orgID)
    }

    /// Applies new settings unless they would lock the caller out of the admin API.
    public func updateSettings(
        _ new: OrgSettings, by principal: Principal, peer: IPAddress?, headers: HTTPFieldsView
    ) async throws -> OrgSettings {
        var new = new
        new.apiIPAllowlist = try Validation.cidrs(new.apiIPAllowlist, field: "api_ip_allowlist") ?? []
        new.gatewayIPAllowlist = try Validation.cidrs(new.gatewayIPAllowlist, field: "gateway_ip_allowlist") ?? []
        new.trustedProxies = try Validation.cidrs(new.trustedProxies, field: "trusted_proxies") ?? []
        guard (1...730).contains(new.retentionDays) else {
            throw GatehouseError.validation(field: "retention_days", message: "must be between 1 and 730")
        }
        if principal.kind != .cli {
            let policy = NetworkPolicy(new)
            let address = policy.clientAddress(peer: peer, headers: headers.fields)
            guard policy.apiAllowlist.permits(address) else {
                throw GatehouseError.conflict(
                    "this change would lock you out of the admin API: your address \(address?.description ?? "(unknown)") is not in api_ip_allowlist")
            }
        }
        let before = try await settings(orgID: principal.orgID)
        let audit = draft(
            principal, action: "settings.update", target: principal.orgID,
            details: ["before": GatehouseJSON.settings(before), "after": GatehouseJSON.settings(new)])
        try await accessStore.updateSettings(orgID: principal.orgID, settings: new, audit: audit)
        await refreshAfterChange()
        return new
    }
}

/// Request headers passed into the control plane without depending on HTTP types there.
public struct HTTPFieldsView: Sendable {
    let fields: HTTPTypes.HTTPFields
    public init(_ fields: HTTPTypes.HTTPFields) { self.fields = fields }
}
