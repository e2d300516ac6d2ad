import Crypto
import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

// Helpers for the access-control tests (PermissionMatrixTests, SessionTests): requests with
// session cookies, `Origin` headers and arbitrary extra headers, which ``API`` does not send.

/// In the router test mode every request's authority is `localhost` (HummingbirdTesting's
/// `RouterTestFramework`), so this is the only `Origin` the CSRF check accepts there.
let testAuthority = "localhost"
let sameOrigin = "https://" + testAuthority

/// How a request authenticates.
enum Credential: Sendable, CustomStringConvertible {
    case none
    /// `Authorization: Bearer <key>`.
    case bearer(String)
    /// `Cookie: gatehouse_session=<token>`.
    case session(String)

    var description: String {
        switch self {
        case .none: "no credentials"
        case .bearer: "bearer key"
        case .session: "session cookie"
        }
    }
}

/// The `Origin` header of a request.
enum OriginHeader: Sendable {
    case absent
    case same
    case value(String)
}

/// A thin in-process client, like ``API`` but with full control of the headers.
struct Web: Sendable {
    let client: any TestClientProtocol
    let log: ResponseLog

    @discardableResult
    func send(
        _ method: HTTPRequest.Method, _ path: String, as credential: Credential = .none, origin: OriginHeader = .same,
        json: JSONValue? = nil, headers extra: HTTPFields = [:], sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> Reply {
        var headers = extra
        switch credential {
        case .none: break
        case .bearer(let key): headers[.authorization] = "Bearer \(key)"
        case .session(let token): headers[.cookie] = "\(AdminAuthMiddleware.sessionCookie)=\(token)"
        }
        switch origin {
        case .absent: break
        case .same: headers[.origin] = sameOrigin
        case .value(let v): headers[.origin] = v
        }
        var body: ByteBuffer? = nil
        if let json {
            headers[.contentType] = "application/json"
            body = ByteBuffer(bytes: json.encoded())
        }
        let response = try await client.execute(uri: path, method: method, headers: headers, body: body)
        let text = String(buffer: response.body)
        let reply = Reply(
            method: method.rawValue, path: path, status: Int(response.status.code), headers: response.headers, text: text,
            json: try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)))
        log.record(text)
        if reply.requestID == nil {
            Issue.record("\(method) \(path) → \(reply.status): no Gatehouse-Request-Id header", sourceLocation: sourceLocation)
        }
        if reply.status >= 400 { expectErrorShape(reply, sourceLocation: sourceLocation) }
        return reply
    }

    /// `POST /api/sessions`; the session token from `Set-Cookie` when the login succeeded.
    func login(_ email: String, _ password: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> (Reply, String?) {
        let reply = try await send(
            .post, "/api/sessions", origin: .absent, json: ["email": .string(email), "password": .string(password)],
            sourceLocation: sourceLocation)
        return (reply, reply.sessionCookie.flatMap { $0.value.isEmpty ? nil : $0.value })
    }

    /// The status of a login attempt.
    func loginStatus(_ email: String, _ password: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> Int {
        try await login(email, password, sourceLocation: sourceLocation).0.status
    }

    /// Logs in and requires success; returns the session token.
    func loginToken(_ email: String, _ password: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> String {
        let (reply, token) = try await login(email, password, sourceLocation: sourceLocation)
        #expect(reply.status == 201, "login \(email): \(reply.text.prefix(300))", sourceLocation: sourceLocation)
        return try #require(token, "login \(email) set no session cookie", sourceLocation: sourceLocation)
    }
}

/// A parsed `Set-Cookie` header.
struct SetCookie: Sendable {
    let name: String
    let value: String
    /// Attribute names lower-cased → value (`""` for flags such as `HttpOnly`).
    let attributes: [String: String]

    init?(_ header: String) {
        let parts = header.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let first = parts.first, let eq = first.firstIndex(of: "=") else { return nil }
        name = String(first[..<eq])
        value = String(first[first.index(after: eq)...])
        var attributes: [String: String] = [:]
        for part in parts.dropFirst() {
            if let eq = part.firstIndex(of: "=") {
                attributes[part[..<eq].lowercased()] = String(part[part.index(after: eq)...])
            } else {
                attributes[part.lowercased()] = ""
            }
        }
        self.attributes = attributes
    }
}

extension Reply {
    /// The `gatehouse_session` cookie this response sets, if any.
    var sessionCookie: SetCookie? {
        headers[values: .setCookie].compactMap(SetCookie.init).first { $0.name == AdminAuthMiddleware.sessionCookie }
    }
}

/// Runs `body` with an in-process ``Web`` client for `gatehouse` (a fresh router, so a fresh
/// login throttle).
func withWeb<T: Sendable>(_ gatehouse: Gatehouse, log: ResponseLog = ResponseLog(), _ body: @Sendable (Web) async throws -> T)
    async throws -> T
{
    let app = Application(router: GatehouseApp.buildRouter(plane: gatehouse.plane), logger: quietLogger)
    return try await app.test(.router) { client in
        try await body(Web(client: client, log: log))
    }
}

/// The CLI acting in `orgID` (an owner-level principal, as `gatehouse users create` uses).
func cliPrincipal(_ orgID: String) -> Principal {
    Principal(kind: .cli, id: "tests", orgID: orgID)
}

/// Hex SHA-256 of a session token: the id the store keeps for it.
func sessionHash(_ token: String) -> String {
    SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
}

extension Gatehouse {
    var accessStore: any AccessStore {
        get throws { try #require(plane.store as? any AccessStore, "the store keeps users and sessions") }
    }

    /// Creates a user through the control plane, as the CLI does.
    @discardableResult
    func createUser(_ email: String, _ role: Role, password: String, orgID: String? = nil) async throws -> UserRecord {
        try await plane.createUser(email: email, role: role, password: password, by: cliPrincipal(orgID ?? self.orgID))
    }

    /// Every file in the data directory, with its bytes (the store should be closed first so the
    /// WAL is checkpointed; the WAL and SHM files are read too when present).
    func dataFiles() -> [(String, Data)] {
        let files = FileManager.default.enumerator(atPath: paths.dataDir)?.compactMap { $0 as? String } ?? []
        return files.compactMap { name in FileManager.default.contents(atPath: paths.dataDir + "/" + name).map { (name, $0) } }
    }
}

/// A 12+ character password unique to this run.
func newPassword(_ label: String = "pw") -> String { "\(label)-" + Base62.random(count: 20) }
