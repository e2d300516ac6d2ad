import Foundation
import GatehouseCore
import HTTPTypes
import Hummingbird

/// Authenticates `/api` callers — an API or read-only key (`Authorization: Bearer`), or a
/// session cookie — then applies the organization's network rules and the route's capability.
///
/// Every authentication failure answers the same `401` body, whatever the reason (malformed,
/// unknown, wrong secret, revoked, expired, unknown session), so a caller learns nothing about
/// which credentials exist. A key of the wrong kind is `403`.
public struct AdminAuthMiddleware: RouterMiddleware {
    public typealias Context = GatehouseRequestContext

    public static let sessionCookie = "gatehouse_session"

    let plane: ControlPlane
    let capability: Capability

    public init(plane: ControlPlane, capability: Capability) {
        self.plane = plane
        self.capability = capability
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var context = context
        let principal = try await authenticate(request, context: &context)
        guard principal.can(capability) else {
            throw GatehouseError.forbidden(
                principal.kind == .readKey ? "a read-only key cannot use this route" : "your role does not allow this")
        }
        context.principal = principal
        return try await next(request, context)
    }

    func authenticate(_ request: Request, context: inout Context) async throws -> Principal {
        let keyTable = plane.keyTable
        if let token = Self.bearerToken(request.headers[.authorization]) {
            guard case .success(let record) = keyTable.authenticate(token) else { throw GatehouseError.unauthenticated }
            guard record.kind != .proxy else {
                throw GatehouseError.forbidden("proxy keys can only be used on the gateway (/v1); use an API key for /api")
            }
            let address = try checkNetwork(orgID: record.orgID, request: request, context: &context)
            if let ips = record.allowedIPs, !ips.isEmpty {
                guard IPAllowlist(ips.compactMap { CIDR($0) }).permits(address) else {
                    throw GatehouseError.forbidden("this key may not be used from your IP address")
                }
            }
            return Principal(kind: record.kind == .api ? .apiKey : .readKey, id: record.id, orgID: record.orgID, clientIP: context.clientIP)
        }
        if let token = request.cookies[Self.sessionCookie]?.value, !token.isEmpty {
            guard var principal = try await plane.principal(sessionToken: token, clientIP: context.clientIP) else {
                throw GatehouseError.unauthenticated
            }
            _ = try checkNetwork(orgID: principal.orgID, request: request, context: &context)
            principal.clientIP = context.clientIP
            // CSRF: a browser always sends Origin on cross-site writes; require it to be us.
            if ![.get, .head, .options].contains(request.method), !Self.isSameOrigin(request) {
                throw GatehouseError.forbidden("cookie-authenticated changes need a same-origin Origin header")
            }
            return principal
        }
        throw GatehouseError.unauthenticated
    }

    /// Resolves the client address with the org's trusted proxies and applies its `/api` allowlist.
    func checkNetwork(orgID: String, request: Request, context: inout Context) throws -> IPAddress? {
        let policy = plane.keyTable.networkPolicy(orgID)
        let address = policy.clientAddress(peer: context.peerAddress, headers: request.headers)
        context.resolvedClientAddress = address
        guard policy.apiAllowlist.permits(address) else {
            throw GatehouseError.forbidden("your IP address is not allowed to use the admin API of this organization")
        }
        return address
    }

    static func isSameOrigin(_ request: Request) -> Bool {
        guard let origin = request.headers[.origin], let authority = request.head.authority else { return false }
        return origin == "https://" + authority || origin == "http://" + authority
    }

    /// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
    static func bearerToken(_ header: String?) -> Substring? {
        guard let header else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].drop(while: { $0 == " " })
        return token.isEmpty ? nil : token
    }
}

extension GatehouseRequestContext {
    /// The authenticated caller; routes behind ``AdminAuthMiddleware`` always have one.
    func requirePrincipal() throws -> Principal {
        guard let principal else { throw GatehouseError.unauthenticated }
        return principal
    }
}
