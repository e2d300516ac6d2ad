import Foundation
import GatehouseCore
import GatehouseStore
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
    let failures: AuthFailureRecorder?

    public init(plane: ControlPlane, capability: Capability, failures: AuthFailureRecorder? = nil) {
        self.plane = plane
        self.capability = capability
        self.failures = failures
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var context = context
        let principal: Principal
        do {
            principal = try await authenticate(request, context: &context)
        } catch let error as GatehouseError where error.status == 403 {
            // Authenticated but refused (wrong key kind, network): audited when the org is known.
            if let orgID = context.principal?.orgID {
                try await recordAccess(request, orgID: orgID, principal: context.principal, status: 403, reason: error.description)
            }
            throw error
        }
        guard principal.can(capability) else {
            let error = GatehouseError.forbidden(
                principal.kind == .readKey ? "a read-only key cannot use this route" : "your role does not allow this")
            try await recordAccess(request, orgID: principal.orgID, principal: principal, status: 403, reason: "capability \(capability.rawValue)")
            throw error
        }
        context.principal = principal
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            let status = (error as? GatehouseError)?.status ?? (error as? HTTPResponseError)?.status.code ?? 500
            try await recordAccess(request, orgID: principal.orgID, principal: principal, status: status, reason: nil)
            throw error
        }
        // Successful changes wrote their own entry in their transaction; reads are recorded here.
        if request.method == .get || request.method == .head || response.status.code >= 400 {
            try await recordAccess(request, orgID: principal.orgID, principal: principal, status: response.status.code, reason: nil)
        }
        return response
    }

    /// One `api.access` audit entry. If it cannot be written the request fails: nothing is
    /// served without its audit record.
    func recordAccess(_ request: Request, orgID: String, principal: Principal?, status: Int, reason: String?) async throws {
        var details: [String: JSONValue] = [
            "method": .string(request.method.rawValue), "path": .string(Self.auditPath(request.uri.path)), "status": .int(status),
        ]
        if let reason { details["reason"] = .string(reason) }
        if let name = principal?.name { details["actor_name"] = .string(name) }
        let draft = AuditDraft(
            orgID: orgID, actorKind: principal?.kind.rawValue ?? "anonymous", actorID: principal?.id ?? "",
            clientIP: principal?.clientIP ?? "", action: "api.access", target: Self.auditPath(request.uri.path),
            outcome: status == 401 || status == 403 ? .denied : (status >= 400 ? .failed : .success),
            details: JSONValue.object(details).encodedString())
        do {
            try await plane.store.appendAudit(draft)
        } catch {
            throw GatehouseError.internalError
        }
    }

    /// A path for the audit trail: no query string, and any key-shaped segment replaced.
    static func auditPath(_ path: String) -> String {
        String(path.prefix(300)).split(separator: "/", omittingEmptySubsequences: false)
            .map { isSafePathSegment($0) ? String($0) : "(redacted)" }
            .joined(separator: "/")
    }

    /// A route word (lower-case letters and `-`), a key id (12 base62) or one of our prefixed
    /// ids. Anything else could be a secret pasted into the URL and never reaches the trail.
    static func isSafePathSegment(_ segment: Substring) -> Bool {
        if segment.isEmpty { return true }
        if segment.count <= 20, segment.allSatisfy({ ("a"..."z").contains($0) || $0 == "-" || $0 == "." }) { return true }
        let base62 = { (s: Substring) in s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) } }
        if segment.count == 12, base62(segment) { return true }
        for prefix in ["pk_", "usr_", "req_", "org_"] where segment.hasPrefix(prefix) {
            let rest = segment.dropFirst(prefix.count)
            if (16...20).contains(rest.count), base62(rest) { return true }
        }
        return false
    }

    func authenticate(_ request: Request, context: inout Context) async throws -> Principal {
        let keyTable = plane.keyTable
        if let token = Self.bearerToken(request.headers[.authorization]) {
            let (result, genuine) = keyTable.authenticateDetailed(token)
            guard case .success(let record) = result else {
                if case .failure(let reason) = result {
                    failures?.record(plane: "api", reason: reason, key: genuine, clientIP: context.clientIP)
                }
                throw GatehouseError.unauthenticated
            }
            context.principal = Principal(
                kind: record.kind == .api ? .apiKey : .readKey, id: record.id, orgID: record.orgID, clientIP: context.clientIP,
                name: record.name)
            guard record.kind != .proxy else {
                throw GatehouseError.forbidden("proxy keys can only be used on the gateway (/v1); use an API key for /api")
            }
            let address = try checkNetwork(orgID: record.orgID, request: request, context: &context)
            guard keyTable.keyPermits(record, address) else {
                throw GatehouseError.forbidden("this key may not be used from your IP address")
            }
            return Principal(
                kind: record.kind == .api ? .apiKey : .readKey, id: record.id, orgID: record.orgID, clientIP: context.clientIP,
                name: record.name)
        }
        if let token = request.cookies[Self.sessionCookie]?.value, !token.isEmpty {
            guard var principal = try await plane.principal(sessionToken: token, clientIP: context.clientIP) else {
                failures?.record(plane: "api", reason: .invalidSession, key: nil, clientIP: context.clientIP)
                throw GatehouseError.unauthenticated
            }
            context.principal = principal
            _ = try checkNetwork(orgID: principal.orgID, request: request, context: &context)
            principal.clientIP = context.clientIP
            // CSRF: a browser always sends Origin on cross-site writes; require it to be us.
            if ![.get, .head, .options].contains(request.method), !Self.isSameOrigin(request) {
                throw GatehouseError.forbidden("cookie-authenticated changes need a same-origin Origin header")
            }
            return principal
        }
        failures?.record(plane: "api", reason: .missing, key: nil, clientIP: context.clientIP)
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
        // On UTF-8 bytes (spaces are ASCII): Character iteration costs grapheme breaking on
        // every request.
        let utf8 = header.utf8
        guard let start = utf8.firstIndex(where: { $0 != UInt8(ascii: " ") }),
            let space = utf8[start...].firstIndex(of: UInt8(ascii: " "))
        else { return nil }
        // The scheme, case-insensitively (ASCII letters only: `| 0x20` lowercases them).
        guard utf8[start..<space].elementsEqual("bearer".utf8, by: { $0 | 0x20 == $1 }) else { return nil }
        guard let token = utf8[space...].firstIndex(where: { $0 != UInt8(ascii: " ") }) else { return nil }
        return header[token...]
    }
}

extension GatehouseRequestContext {
    /// The authenticated caller; routes behind ``AdminAuthMiddleware`` always have one.
    func requirePrincipal() throws -> Principal {
        guard let principal else { throw GatehouseError.unauthenticated }
        return principal
    }
}
