import Foundation
import GatehouseCore
import GatehouseStore
import Hummingbird

/// `/api/users`: the team and its roles.
struct UserRoutes {
    let plane: ControlPlane

    func register(on group: RouterGroup<GatehouseRequestContext>, catalog: RouteCatalog? = nil) {
        group.post("users", use: create)
        RouterGroupRegistration.record(catalog, .post, "users")
        group.get("users", use: list)
        RouterGroupRegistration.record(catalog, .get, "users")
        group.get("users/:id", use: get)
        RouterGroupRegistration.record(catalog, .get, "users/:id")
        group.patch("users/:id", use: patch)
        RouterGroupRegistration.record(catalog, .patch, "users/:id")
        group.delete("users/:id", use: delete)
        RouterGroupRegistration.record(catalog, .delete, "users/:id")
    }

    @Sendable func create(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await JSONBody.read(request, allowed: ["email", "role", "password"])
        let email = try body.requiredString("email")
        guard let role = try body.enumValue("role", Role.self) else {
            throw GatehouseError.validation(field: "role", message: "is required")
        }
        let password = try body.requiredString("password")
        let user = try await plane.createUser(email: email, role: role, password: password, by: principal)
        return .json(GatehouseJSON.user(user), status: .created)
    }

    @Sendable func list(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        return .json(GatehouseJSON.list(try await plane.users(orgID: principal.orgID).map(GatehouseJSON.user)))
    }

    @Sendable func get(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        return .json(GatehouseJSON.user(try await plane.user(orgID: principal.orgID, id: try context.parameters.require("id"))))
    }

    @Sendable func patch(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await JSONBody.read(request, allowed: ["role"])
        guard let role = try body.enumValue("role", Role.self) else {
            throw GatehouseError.validation(field: "role", message: "is required")
        }
        let user = try await plane.changeRole(userID: try context.parameters.require("id"), to: role, by: principal)
        return .json(GatehouseJSON.user(user))
    }

    @Sendable func delete(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        try await plane.deleteUser(userID: try context.parameters.require("id"), by: principal)
        return Response(status: .noContent)
    }
}

/// `GET/PATCH /api/settings`.
struct SettingsRoutes {
    let plane: ControlPlane

    func register(on group: RouterGroup<GatehouseRequestContext>, catalog: RouteCatalog? = nil) {
        group.get("settings", use: get)
        RouterGroupRegistration.record(catalog, .get, "settings")
        group.patch("settings", use: patch)
        RouterGroupRegistration.record(catalog, .patch, "settings")
    }

    @Sendable func get(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        return .json(GatehouseJSON.settings(try await plane.settings(orgID: principal.orgID)))
    }

    @Sendable func patch(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await JSONBody.read(
            request, allowed: ["api_ip_allowlist", "gateway_ip_allowlist", "trusted_proxies", "retention_days", "log_bodies"])
        var settings = try await plane.settings(orgID: principal.orgID)
        if body.has("api_ip_allowlist") { settings.apiIPAllowlist = try body.stringArray("api_ip_allowlist") ?? [] }
        if body.has("gateway_ip_allowlist") { settings.gatewayIPAllowlist = try body.stringArray("gateway_ip_allowlist") ?? [] }
        if body.has("trusted_proxies") { settings.trustedProxies = try body.stringArray("trusted_proxies") ?? [] }
        if body.has("retention_days") {
            guard let days = try body.integer("retention_days") else {
                throw GatehouseError.validation(field: "retention_days", message: "must be a whole number")
            }
            settings.retentionDays = days
        }
        if body.has("log_bodies") {
            guard case .bool(let flag)? = body.fields["log_bodies"] else {
                throw GatehouseError.validation(field: "log_bodies", message: "must be true or false")
            }
            settings.logBodies = flag
        }
        let updated = try await plane.updateSettings(
            settings, by: principal, peer: context.peerAddress, headers: HTTPFieldsView(request.headers))
        return .json(GatehouseJSON.settings(updated))
    }
}

/// `POST /api/sessions` (log in) and `DELETE /api/sessions` (log out).
struct SessionRoutes {
    let plane: ControlPlane
    let throttle: LoginThrottle

    func register(
        open: RouterGroup<GatehouseRequestContext>, authenticated: RouterGroup<GatehouseRequestContext>, catalog: RouteCatalog? = nil
    ) {
        open.post("sessions", use: login)
        RouterGroupRegistration.record(catalog, .post, "sessions")
        authenticated.delete("sessions", use: logout)
        RouterGroupRegistration.record(catalog, .delete, "sessions")
    }

    @Sendable func login(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let body = try await JSONBody.read(request, allowed: ["email", "password"])
        let email = try body.requiredString("email").trimmingCharacters(in: .whitespaces).lowercased()
        let password = try body.requiredString("password")
        let ip = context.clientIP
        if let wait = throttle.retryAfter(account: email, ip: ip) {
            var response = ErrorMiddleware.errorResponse(
                .tooManyRequests("too many failed logins; try again in \(wait) s"), requestID: context.requestID)
            response.headers[.retryAfter] = String(wait)
            return response
        }
        let user: UserRecord
        do {
            user = try await plane.verifyPassword(email: email, password: password, clientIP: ip)
        } catch GatehouseError.unauthenticated {
            throttle.recordFailure(account: email, ip: ip)
            throw GatehouseError.unauthenticated
        }
        // The organization's admin allowlist applies to logins too. A refusal answers exactly
        // like a wrong password and counts as a failure, so neither the answer nor the throttle
        // confirms the password to someone outside the allowlist.
        let policy = plane.keyTable.networkPolicy(user.orgID)
        guard policy.apiAllowlist.permits(policy.clientAddress(peer: context.peerAddress, headers: request.headers)) else {
            throttle.recordFailure(account: email, ip: ip)
            try? await plane.store.appendAudit(AuditDraft(
                orgID: user.orgID, actorKind: "user", actorID: user.id, clientIP: ip, action: "session.login",
                target: user.id, outcome: .denied, details: #"{"reason":"ip_not_allowed"}"#))
            throw GatehouseError.unauthenticated
        }
        let login = try await plane.openSession(for: user, clientIP: ip)
        throttle.recordSuccess(account: email)
        var response = Response.json(
            .object(["user": GatehouseJSON.user(login.user), "expires_at": .date(login.session.expiresAt)]), status: .created)
        response.setCookie(
            Cookie(
                name: AdminAuthMiddleware.sessionCookie, value: login.token, maxAge: Int(ControlPlane.sessionLifetime),
                path: "/", secure: true, httpOnly: true, sameSite: .strict))
        return response
    }

    @Sendable func logout(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        try await plane.logout(principal)
        var response = Response(status: .noContent)
        response.setCookie(
            Cookie(name: AdminAuthMiddleware.sessionCookie, value: "", maxAge: 0, path: "/", secure: true, httpOnly: true, sameSite: .strict))
        return response
    }
}
