import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore
import HTTPTypes
import Testing

// The role matrix of DESIGN §3 "Access control", as one table: every admin route × every kind
// of caller → the expected outcome. One test case per cell.
//
//   DESIGN row                                  owner admin member viewer | API key = admin,
//   view usage and metrics dashboards             ✓     ✓     ✓      ✓    | read key = viewer
//   view request logs with bodies                 ✓     ✓     ✓           |   + request logs,
//   manage proxy keys, provider keys, API keys    ✓     ✓                 | proxy key: /v1 only,
//   manage settings                               ✓     ✓                 | another org's key:
//   manage team                                   ✓     ✓                 |   never sees this
//   grant or revoke owner                         ✓                       |   org's objects.

/// Who calls. The order is the column order of ``PermissionMatrix/routes``.
enum Caller: String, CaseIterable, Sendable {
    case ownerSession = "owner session"
    case adminSession = "admin session"
    case memberSession = "member session"
    case viewerSession = "viewer session"
    case apiKey = "API key"
    case readKey = "read key"
    case proxyKey = "proxy key"
    case anonymous = "no credentials"
    case otherOrgKey = "other org's API key"

    var role: Role? {
        switch self {
        case .ownerSession: .owner
        case .adminSession: .admin
        case .memberSession: .member
        case .viewerSession: .viewer
        default: nil
        }
    }
}

/// The outcome class of one cell.
enum Outcome: String, Sendable {
    /// Neither 401 nor 403 (a 2xx, or a 4xx caused by the test's ids or bodies — never a 404
    /// for this organization's own, existing ids), and no 5xx.
    case allowed
    /// 401 `authentication_error`.
    case unauthorized
    /// 403 `permission_denied`.
    case forbidden
    /// Another organization's caller: this org's object does not exist for it — 404 for an id
    /// in the path, 404/422 for an id in the body — and nothing changes.
    case hidden
}

struct MatrixRoute: Sendable, CustomStringConvertible {
    let method: HTTPRequest.Method
    /// The path, with `{provider_key}`, `{proxy_key}`, `{api_key}`, `{request}` or `{user}`.
    let template: String
    let outcomes: [Caller: Outcome]

    init(_ method: HTTPRequest.Method, _ template: String, _ row: [Outcome]) {
        precondition(row.count == Caller.allCases.count, "\(method) \(template): one outcome per caller")
        self.method = method
        self.template = template
        self.outcomes = Dictionary(uniqueKeysWithValues: zip(Caller.allCases, row))
    }

    var description: String { "\(method.rawValue) \(template)" }
    /// Deleting or revoking: such cells get their own fresh target object.
    var destroys: Bool { method == .delete || template.hasSuffix("/revoke") }
}

struct MatrixCell: Sendable, CustomTestStringConvertible {
    let route: MatrixRoute
    let caller: Caller
    var expected: Outcome { route.outcomes[caller]! }
    var testDescription: String { "\(route) as \(caller.rawValue) → \(expected.rawValue)" }
}

enum PermissionMatrix {
    private static let A = Outcome.allowed, U = Outcome.unauthorized, F = Outcome.forbidden, H = Outcome.hidden

    // swift-format-ignore
    static let routes: [MatrixRoute] = [
        //                                                        owner admin member viewer api read proxy none other
        // manage proxy keys, provider keys, API keys: owner, admin (and an API key)
        MatrixRoute(.get,    "/api/provider-keys",                   [A,    A,    F,     F,     A,  F,   F,    U,   A]),
        MatrixRoute(.post,   "/api/provider-keys",                   [A,    A,    F,     F,     A,  F,   F,    U,   A]),
        MatrixRoute(.get,    "/api/provider-keys/{provider_key}",    [A,    A,    F,     F,     A,  F,   F,    U,   H]),
        MatrixRoute(.delete, "/api/provider-keys/{provider_key}",    [A,    A,    F,     F,     A,  F,   F,    U,   H]),
        MatrixRoute(.get,    "/api/proxy-keys",                      [A,    A,    F,     F,     A,  F,   F,    U,   A]),
        // (the body names this org's provider key, which another org cannot bind)
        MatrixRoute(.post,   "/api/proxy-keys",                      [A,    A,    F,     F,     A,  F,   F,    U,   H]),
        MatrixRoute(.get,    "/api/proxy-keys/{proxy_key}",          [A,    A,    F,     F,     A,  F,   F,    U,   H]),
        MatrixRoute(.patch,  "/api/proxy-keys/{proxy_key}",          [A,    A,    F,     F,     A,  F,   F,    U,   H]),
        MatrixRoute(.post,   "/api/proxy-keys/{proxy_key}/revoke",   [A,    A,    F,     F,     A,  F,   F,    U,   H]),
        MatrixRoute(.get,    "/api/api-keys",                        [A,    A,    F,     F,     A,  F,   F,    U,   A]),
        MatrixRoute(.post,   "/api/api-keys",                        [A,    A,    F,     F,     A,  F,   F,    U,   A]),
        MatrixRoute(.post,   "/api/api-keys/{api_key}/revoke",       [A,    A,    F,     F,     A,  F,   F,    U,   H]),
        // view request logs with bodies: owner, admin, member (and a read key)
        MatrixRoute(.get,    "/api/requests",                        [A,    A,    A,     F,     A,  A,   F,    U,   A]),
        MatrixRoute(.get,    "/api/requests/{request}",              [A,    A,    A,     F,     A,  A,   F,    U,   H]),
        // view usage and metrics dashboards: everyone
        MatrixRoute(.get,    "/api/usage",                           [A,    A,    A,     A,     A,  A,   F,    U,   A]),
        // manage team: owner, admin
        MatrixRoute(.get,    "/api/users",                           [A,    A,    F,     F,     A,  F,   F,    U,   A]),
        MatrixRoute(.post,   "/api/users",                           [A,    A,    F,     F,     A,  F,   F,    U,   A]),
        MatrixRoute(.get,    "/api/users/{user}",                    [A,    A,    F,     F,     A,  F,   F,    U,   H]),
        MatrixRoute(.patch,  "/api/users/{user}",                    [A,    A,    F,     F,     A,  F,   F,    U,   H]),
        MatrixRoute(.delete, "/api/users/{user}",                    [A,    A,    F,     F,     A,  F,   F,    U,   H]),
        // manage settings: owner, admin
        MatrixRoute(.get,    "/api/settings",                        [A,    A,    F,     F,     A,  F,   F,    U,   A]),
        MatrixRoute(.patch,  "/api/settings",                        [A,    A,    F,     F,     A,  F,   F,    U,   A]),
        // log out: any authenticated caller (a key gets a 400: it has no session)
        MatrixRoute(.delete, "/api/sessions",                        [A,    A,    A,     A,     A,  A,   F,    U,   A]),
    ]

    static let cells: [MatrixCell] = routes.flatMap { route in Caller.allCases.map { MatrixCell(route: route, caller: $0) } }
}

// MARK: - Fixture (one installation for the whole suite)

/// One installation shared by every cell: organization A with a user of each role (logged in),
/// a read key, a provider key, a proxy key and a request-log entry; organization B's owner key.
/// Destructive cells create their own targets, so cells can run in any order and in parallel.
struct MatrixFixture: Sendable {
    @TaskLocal static var current: MatrixFixture?

    let g: Gatehouse
    let otherOrgKey: String
    let sessions: [Role: String]
    let users: [Role: (email: String, password: String, id: String)]
    let readKey: String
    let readKeyID: String
    let proxyKey: String
    let providerKeyID: String
    let proxyKeyID: String
    let requestID: String
    let targetUserID: String
    /// Every id of organization A that another organization must never see.
    var orgAIDs: [String] {
        [providerKeyID, proxyKeyID, readKeyID, requestID, targetUserID, g.ownerPrincipal.id] + users.values.map(\.id)
    }

    static func make(_ g: Gatehouse) async throws -> MatrixFixture {
        let (_, otherOrgKey) = try await g.createOrganization(name: "org-b")
        var created: [Role: (email: String, password: String, id: String)] = [:]
        for role in Role.allCases {
            let email = "\(role.rawValue)-\(Base62.random(count: 6))@matrix.example"
            let password = newPassword(role.rawValue)
            let user = try await g.createUser(email, role, password: password)
            created[role] = (email, password, user.id)
        }
        let users = created
        let target = try await g.createUser("target@matrix.example", .viewer, password: newPassword())
        return try await withAPI(g) { api in
            let (pk, _) = try await api.createProviderKey(name: "matrix-pk")
            let pkID = try #require(pk["id"]?.string)
            let proxy = try await api.createProxyKey(providerKeyID: pkID, name: "matrix-proxy")
            let read = try await api.createOrgKey(kind: "read", name: "matrix-read")
            let requestID = "req_matrix" + Base62.random(count: 10)
            let logs = try #require(g.plane.store as? any RequestLogStore)
            try await logs.insertRequestLogs([
                RequestLogRecord(
                    id: requestID, orgID: g.orgID, proxyKeyID: try #require(proxy["id"]?.string), providerKeyID: pkID,
                    provider: "openai", model: "gpt-4o-mini", method: "POST", path: "/v1/chat/completions", status: 200,
                    streamed: false, userHash: nil, userSealed: nil, propertiesSealed: nil, clientIP: "127.0.0.1",
                    startedAt: Date(), latencyMs: 10, timeToFirstTokenMs: nil, overheadMs: 1, promptTokens: 1,
                    completionTokens: 1, cachedTokens: 0, costMicros: 1, error: nil, requestBodySealed: nil,
                    responseBodySealed: nil)
            ])
            let sessions = try await withWeb(g) { web in
                var sessions: [Role: String] = [:]
                for (role, user) in users { sessions[role] = try await web.loginToken(user.email, user.password) }
                return sessions
            }
            return MatrixFixture(
                g: g, otherOrgKey: otherOrgKey, sessions: sessions, users: users,
                readKey: try #require(read["key"]?.string), readKeyID: try #require(read["id"]?.string),
                proxyKey: try #require(proxy["key"]?.string), providerKeyID: pkID, proxyKeyID: try #require(proxy["id"]?.string),
                requestID: requestID, targetUserID: target.id)
        }
    }

    /// The credential of `caller`; for the logout route a fresh session, since logging out ends it.
    func credential(_ caller: Caller, for route: MatrixRoute, web: Web) async throws -> Credential {
        switch caller {
        case .ownerSession, .adminSession, .memberSession, .viewerSession:
            let role = caller.role!
            if route.method == .delete, route.template == "/api/sessions" {
                return .session(try await web.loginToken(users[role]!.email, users[role]!.password))
            }
            return .session(sessions[role]!)
        case .apiKey: return .bearer(g.ownerKey)
        case .readKey: return .bearer(readKey)
        case .proxyKey: return .bearer(proxyKey)
        case .anonymous: return .none
        case .otherOrgKey: return .bearer(otherOrgKey)
        }
    }

    /// The id to put in place of `placeholder`: the shared object, or a fresh one for cells
    /// that delete or revoke it.
    func id(for placeholder: String, route: MatrixRoute, api: API) async throws -> String {
        switch placeholder {
        case "provider_key":
            guard route.destroys else { return providerKeyID }
            return try #require(try await api.createProviderKey(name: "matrix-doomed").0["id"]?.string)
        case "proxy_key":
            guard route.destroys else { return proxyKeyID }
            return try #require(try await api.createProxyKey(providerKeyID: providerKeyID, name: "matrix-doomed")["id"]?.string)
        case "api_key":
            return try #require(try await api.createOrgKey(kind: "read", name: "matrix-doomed")["id"]?.string)
        case "request":
            return requestID
        case "user":
            guard route.destroys else { return targetUserID }
            return try await disposableUser()
        default:
            Issue.record("unknown placeholder {\(placeholder)} in \(route)")
            return placeholder
        }
    }

    /// A viewer inserted straight into the store (no bcrypt: it never logs in).
    func disposableUser() async throws -> String {
        let id = "usr_" + Base62.random(count: 16)
        try await g.accessStore.insertUser(
            UserRecord(
                id: id, orgID: g.orgID, email: "doomed-\(Base62.random(count: 10))@matrix.example", role: .viewer,
                passwordHash: "$2b$11$" + String(repeating: "x", count: 53), createdAt: Date()),
            audit: AuditDraft(orgID: g.orgID, actorKind: "cli", actorID: "tests", action: "user.create"))
        return id
    }

    func body(for route: MatrixRoute) -> JSONValue? {
        switch (route.method, route.template) {
        case (.post, "/api/provider-keys"):
            return ["name": "matrix-new", "provider": "openai", "api_key": .string(newCanarySecret())]
        case (.post, "/api/proxy-keys"):
            return ["name": "matrix-new", "provider_key_id": .string(providerKeyID)]
        case (.patch, "/api/proxy-keys/{proxy_key}"):
            return ["description": .string("touched \(Base62.random(count: 6))")]
        case (.post, "/api/api-keys"):
            return ["name": "matrix-new", "kind": "read"]
        case (.post, "/api/users"):
            return ["email": .string("new-\(Base62.random(count: 10))@matrix.example"), "role": "viewer", "password": .string(newPassword())]
        case (.patch, "/api/users/{user}"):
            return ["role": "viewer"]
        case (.patch, "/api/settings"):
            return ["retention_days": 60]
        default:
            return nil
        }
    }

    /// Whether the object behind a refused destructive call is still there and intact.
    func expectUntouched(_ route: MatrixRoute, id: String, api: API, what: String) async throws {
        switch route.template {
        case "/api/provider-keys/{provider_key}":
            #expect(try await api.call(.get, "/api/provider-keys/\(id)").status == 200, "\(what): the provider key is gone")
        case "/api/proxy-keys/{proxy_key}/revoke":
            #expect(try await api.call(.get, "/api/proxy-keys/\(id)")["status"] == "active", "\(what): the proxy key was revoked")
        case "/api/api-keys/{api_key}/revoke":
            #expect(try await api.call(.get, "/api/api-keys").listed[id]?["status"] == "active", "\(what): the key was revoked")
        case "/api/users/{user}":
            let user = try await g.plane.user(orgID: g.orgID, id: id)
            #expect(user.role == .viewer, "\(what): the user was changed")
        default:
            break
        }
    }
}

/// Sets up ``MatrixFixture`` once for the suite and closes it afterwards.
struct MatrixFixtureTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        try await withGatehouse { g in
            let fixture = try await MatrixFixture.make(g)
            try await MatrixFixture.$current.withValue(fixture) { try await function() }
        }
    }
}

extension Trait where Self == MatrixFixtureTrait {
    static var matrixFixture: Self { Self() }
}

// MARK: - Tests

@Suite("Permission matrix", .matrixFixture)
struct PermissionMatrixTests {
    @Test(arguments: PermissionMatrix.cells)
    func cell(_ cell: MatrixCell) async throws {
        let f = try #require(MatrixFixture.current, "the suite trait sets up the fixture")
        let route = cell.route
        let what = "\(route) as \(cell.caller.rawValue)"
        try await withAPI(f.g) { api in
            try await withWeb(f.g) { web in
                var path = route.template
                var ids: [String] = []
                while let open = path.firstIndex(of: "{"), let close = path[open...].firstIndex(of: "}") {
                    let id = try await f.id(for: String(path[path.index(after: open)..<close]), route: route, api: api)
                    ids.append(id)
                    path.replaceSubrange(open...close, with: id)
                }
                let credential = try await f.credential(cell.caller, for: route, web: web)
                let body = f.body(for: route)
                let sent = path + (body.map { String(decoding: $0.encoded(), as: UTF8.self) } ?? "")
                let reply = try await web.send(route.method, path, as: credential, json: body)
                let seen = "\(what) [\(route.method.rawValue) \(path)] → \(reply.status) \(reply.text.prefix(200))"

                switch cell.expected {
                case .allowed:
                    #expect(![401, 403].contains(reply.status), "expected allowed: \(seen)")
                    #expect(reply.status < 500, "\(seen)")
                    if !ids.isEmpty {
                        #expect(reply.status != 404, "this organization's own id was not found: \(seen)")
                    }
                    // This table's ids and bodies are all valid: only logging out with a key (no
                    // session to end) is a client error.
                    if case .bearer = credential, route.template == "/api/sessions" {
                        expectError(reply, 400, "invalid_request")
                    } else {
                        #expect((200..<300).contains(reply.status), "expected a 2xx: \(seen)")
                    }
                    if cell.caller == .otherOrgKey {
                        // Lists and creations of the other organization: never this org's objects.
                        for id in f.orgAIDs {
                            #expect(!reply.text.contains(id), "another organization sees \(id): \(seen)")
                        }
                    }
                case .unauthorized:
                    #expect(reply.status == 401, "expected 401: \(seen)")
                    #expect(reply["error"]?["type"] == "authentication_error", "\(seen)")
                case .forbidden:
                    #expect(reply.status == 403, "expected 403: \(seen)")
                    #expect(reply["error"]?["type"] == "permission_denied", "\(seen)")
                case .hidden:
                    if ids.isEmpty {
                        #expect([404, 422].contains(reply.status), "expected 404/422 for this org's id in the body: \(seen)")
                    } else {
                        #expect(reply.status == 404, "expected 404 for this org's id: \(seen)")
                        #expect(reply["error"]?["type"] == "not_found", "\(seen)")
                    }
                    for id in f.orgAIDs where !sent.contains(id) {
                        #expect(!reply.text.contains(id), "another organization sees \(id): \(seen)")
                    }
                }
                if cell.expected != .allowed, route.destroys, let id = ids.first {
                    try await f.expectUntouched(route, id: id, api: api, what: seen)
                }
            }
        }
    }

    /// The table is complete: for every path in it, the methods the router answers (the
    /// `Allow` header of a 405) are exactly the table's methods (plus the open login route).
    @Test func tableCoversEveryMethodOfEveryPath() async throws {
        let f = try #require(MatrixFixture.current)
        var byPath: [String: Set<String>] = [:]
        for route in PermissionMatrix.routes {
            let path = route.template.replacing(#/\{[a-z_]+\}/#, with: "x")
            byPath[path, default: []].insert(route.method.rawValue)
        }
        byPath["/api/sessions", default: []].insert("POST")
        let expected = byPath
        try await withWeb(f.g) { web in
            for (path, methods) in expected {
                let reply = try await web.send(.put, path, as: .bearer(f.g.ownerKey))
                #expect(reply.status == 405, "PUT \(path): \(reply.status)")
                let allowed = Set((reply.headers[.allow] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                #expect(allowed == methods, "\(path): router allows \(allowed.sorted()), table has \(methods.sorted())")
            }
        }
    }

    /// Every caller of the matrix exists as intended (the sessions act with their roles).
    @Test func fixtureSessionsActWithTheirRoles() async throws {
        let f = try #require(MatrixFixture.current)
        for role in Role.allCases {
            let principal = try #require(try await f.g.plane.principal(sessionToken: f.sessions[role]!, clientIP: ""))
            #expect(principal.kind == .user)
            #expect(principal.role == role)
            #expect(principal.orgID == f.g.orgID)
        }
    }
}
