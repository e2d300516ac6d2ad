import Hummingbird
import GatehouseCore
import HTTPTypes

/// What a route needs from its caller.
public enum AdminPermission: Sendable {
    /// API key (admin level): every management route.
    case manage
    /// Read-only key or API key: `GET` on request logs, usage, metrics and audit.
    case read
}

/// Authenticates `/api` callers from the in-memory key table and enforces the key kind.
///
/// Every authentication failure answers the same `401` body, whatever the reason (malformed,
/// unknown, wrong secret, revoked, expired), so a caller learns nothing about which keys exist.
public struct AdminAuthMiddleware: RouterMiddleware {
    public typealias Context = GatehouseRequestContext

    let keyTable: KeyTable
    let permission: AdminPermission

    public init(keyTable: KeyTable, permission: AdminPermission) {
        self.keyTable = keyTable
        self.permission = permission
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard let token = Self.bearerToken(request.headers[.authorization]) else {
            throw GatehouseError.unauthenticated
        }
        guard case .success(let record) = keyTable.authenticate(token) else {
            throw GatehouseError.unauthenticated
        }
        switch (record.kind, permission) {
        case (.proxy, _):
            throw GatehouseError.forbidden("proxy keys can only be used on the gateway (/v1); use an API key for /api")
        case (.read, .manage):
            throw GatehouseError.forbidden("a read-only key cannot use this route")
        case (.read, .read) where request.method != .get:
            throw GatehouseError.forbidden("a read-only key can only read")
        default:
            break
        }
        if let ips = record.allowedIPs, !ips.isEmpty {
            let list = IPAllowlist(ips.compactMap { CIDR($0) })
            guard list.permits(context.peerAddress) else {
                throw GatehouseError.forbidden("this key may not be used from your IP address")
            }
        }
        var context = context
        context.principal = Principal(
            kind: record.kind == .api ? .apiKey : .readKey, id: record.id, orgID: record.orgID, clientIP: context.clientIP)
        return try await next(request, context)
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
