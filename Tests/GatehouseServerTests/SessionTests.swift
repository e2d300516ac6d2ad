import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore
import HTTPTypes
import Testing

/// Sessions, CSRF, login throttling, roles and their escalation rules, and password handling
/// (DESIGN §3 "Access control"), through the in-process router.
@Suite("Sessions and team")
struct SessionTests {
    // MARK: - Login and the cookie

    @Test func loginSetsAHardenedSessionCookie() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            let user = try await g.createUser("Cookie@Example.com", .member, password: password)
            try await withWeb(g) { web in
                let (reply, token) = try await web.login("cookie@example.com", password)
                #expect(reply.status == 201, "\(reply.text)")
                let cookie = try #require(reply.sessionCookie, "no gatehouse_session cookie")
                #expect(cookie.attributes["httponly"] != nil, "HttpOnly missing")
                #expect(cookie.attributes["secure"] != nil, "Secure missing")
                #expect(cookie.attributes["samesite"]?.lowercased() == "strict", "SameSite=Strict missing")
                #expect(cookie.attributes["path"] == "/", "Path=/ missing")
                #expect(cookie.attributes["domain"] == nil, "a Domain attribute widens the cookie to subdomains")
                if let maxAge = cookie.attributes["max-age"].flatMap(Int.init) {
                    #expect(maxAge > 0 && maxAge <= 12 * 3600, "Max-Age \(maxAge) beyond the 12 h absolute lifetime")
                }
                let tokenValue = try #require(token)
                #expect(tokenValue.count >= 32 && tokenValue.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) })
                #expect(!reply.text.contains(tokenValue), "the token is in the body")
                #expect(reply["user"]?["id"]?.string == user.id)
                #expect(reply["user"]?["email"] == "cookie@example.com")
                #expect(reply["user"]?["role"] == "member")
                #expect(Set(reply["user"]?.object?.keys.map { $0 } ?? []) == ["id", "email", "role", "created_at"])
                let expires = try #require(reply["expires_at"]?.string.flatMap(JSONValue.parseDate))
                #expect(abs(expires.timeIntervalSinceNow - 12 * 3600) < 120)
                // The cookie authenticates.
                #expect(try await web.send(.get, "/api/usage", as: .session(tokenValue), origin: .absent).status == 200)
            }
        }
    }

    @Test func wrongPasswordAndUnknownEmailGetIdenticalAnswers() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            try await g.createUser("known@example.com", .admin, password: password)
            try await withWeb(g) { web in
                let attempts: [(String, String)] = [
                    ("known@example.com", password + "x"),
                    ("known@example.com", String(password.dropLast())),
                    ("nobody@example.com", password),
                    ("nobody@example.com", "whatever-password"),
                    ("not an email", password),
                ]
                var shapes: Set<String> = []
                for (email, pw) in attempts {
                    let (reply, token) = try await web.login(email, pw)
                    #expect(reply.status == 401, "\(email): \(reply.status) \(reply.text)")
                    #expect(token == nil, "\(email): a failed login set a session cookie")
                    #expect(reply.headers[.setCookie] == nil)
                    shapes.insert("\(reply.status) \(reply["error"]?["type"]?.string ?? "") \(reply["error"]?["message"]?.string ?? "")")
                }
                #expect(shapes.count == 1, "failed logins differ: \(shapes.sorted())")
            }
        }
    }

    @Test func sessionCookieWithGarbageOrAForeignTokenIs401() async throws {
        try await withGatehouse { g in
            try await withWeb(g) { web in
                for token in ["x", Base62.random(count: 43), String(repeating: "A", count: 5000), "%00", "a;b"] {
                    let reply = try await web.send(.get, "/api/usage", as: .session(token))
                    #expect(reply.status == 401, "token \(token.prefix(10)): \(reply.status)")
                }
            }
        }
    }

    // MARK: - Logout and expiry

    @Test func logoutInvalidatesTheCookie() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            try await g.createUser("leaver@example.com", .viewer, password: password)
            try await withWeb(g) { web in
                let token = try await web.loginToken("leaver@example.com", password)
                let other = try await web.loginToken("leaver@example.com", password)
                #expect(try await web.send(.get, "/api/usage", as: .session(token)).status == 200)

                let out = try await web.send(.delete, "/api/sessions", as: .session(token))
                #expect(out.status == 204, "\(out.text)")
                let cleared = try #require(out.sessionCookie, "logout does not clear the cookie")
                #expect(cleared.value.isEmpty)
                #expect(cleared.attributes["max-age"] == "0" || cleared.attributes["expires"] != nil)

                expectError(try await web.send(.get, "/api/usage", as: .session(token)), 401, "authentication_error")
                expectError(try await web.send(.delete, "/api/sessions", as: .session(token)), 401, "authentication_error")
                #expect(try await g.accessStore.session(id: sessionHash(token)) == nil, "the session row survived logout")
                // Only that session ended.
                #expect(try await web.send(.get, "/api/usage", as: .session(other)).status == 200)
            }
        }
    }

    /// A session row with the given times, for a token only this test knows.
    static func insertSession(
        _ g: Gatehouse, user: UserRecord, created: TimeInterval, lastSeen: TimeInterval, expires: TimeInterval
    ) async throws -> String {
        let token = Base62.random(count: 43)
        let now = Date()
        try await g.accessStore.insertSession(
            SessionRecord(
                id: sessionHash(token), userID: user.id, orgID: user.orgID, createdAt: now.addingTimeInterval(created),
                lastSeenAt: now.addingTimeInterval(lastSeen), expiresAt: now.addingTimeInterval(expires)),
            audit: AuditDraft(orgID: user.orgID, actorKind: "user", actorID: user.id, action: "session.login"))
        return token
    }

    @Test func sessionIdleLongerThanTheTimeoutIsRefused() async throws {
        try await withGatehouse { g in
            let user = try await g.createUser("idle@example.com", .admin, password: newPassword())
            let idle = ControlPlane.sessionIdleTimeout
            // Last seen just over 2 h ago, 10 h of lifetime left.
            let token = try await Self.insertSession(g, user: user, created: -idle - 120, lastSeen: -idle - 60, expires: 10 * 3600)
            try await withWeb(g) { web in
                let store = try g.accessStore
                expectError(try await web.send(.get, "/api/usage", as: .session(token)), 401, "authentication_error")
                #expect(try await store.session(id: sessionHash(token)) == nil, "an idle-expired session is not removed")
                expectError(try await web.send(.get, "/api/settings", as: .session(token)), 401, "authentication_error")
            }
            // The store only ever moves lastSeenAt forward: touching cannot revive or age a session.
            let fresh = try await Self.insertSession(g, user: user, created: -60, lastSeen: -10, expires: 3600)
            try await g.accessStore.touchSession(id: sessionHash(fresh), at: Date().addingTimeInterval(-idle - 60))
            let after = try #require(try await g.accessStore.session(id: sessionHash(fresh)))
            #expect(abs(after.lastSeenAt.timeIntervalSinceNow) < 30)
        }
    }

    @Test func sessionActiveWithinTheIdleTimeoutStaysAndIsRefreshed() async throws {
        try await withGatehouse { g in
            let user = try await g.createUser("busy@example.com", .admin, password: newPassword())
            let idle = ControlPlane.sessionIdleTimeout
            let token = try await Self.insertSession(g, user: user, created: -idle, lastSeen: -idle + 300, expires: 10 * 3600)
            try await withWeb(g) { web in
                #expect(try await web.send(.get, "/api/settings", as: .session(token)).status == 200)
                let session = try #require(try await g.accessStore.session(id: sessionHash(token)))
                #expect(abs(session.lastSeenAt.timeIntervalSinceNow) < 60, "activity does not refresh lastSeenAt")
                // Refreshed, so still alive after what would have been the original idle deadline.
                #expect(try await web.send(.get, "/api/settings", as: .session(token)).status == 200)
            }
        }
    }

    @Test func sessionPastItsAbsoluteExpiryIsRefusedEvenWhenActive() async throws {
        try await withGatehouse { g in
            let user = try await g.createUser("old@example.com", .owner, password: newPassword())
            let store = try g.accessStore
            let now = Date()
            let expired = Base62.random(count: 43)
            try await store.insertSession(
                SessionRecord(
                    id: sessionHash(expired), userID: user.id, orgID: g.orgID, createdAt: now.addingTimeInterval(-13 * 3600),
                    lastSeenAt: now.addingTimeInterval(-10), expiresAt: now.addingTimeInterval(-1)),
                audit: AuditDraft(orgID: g.orgID, actorKind: "user", actorID: user.id, action: "session.login"))
            let old = Base62.random(count: 43)
            try await store.insertSession(
                SessionRecord(
                    id: sessionHash(old), userID: user.id, orgID: g.orgID, createdAt: now.addingTimeInterval(-11 * 3600),
                    lastSeenAt: now.addingTimeInterval(-10), expiresAt: now.addingTimeInterval(3600)),
                audit: AuditDraft(orgID: g.orgID, actorKind: "user", actorID: user.id, action: "session.login"))
            try await withWeb(g) { web in
                expectError(try await web.send(.get, "/api/usage", as: .session(expired)), 401, "authentication_error")
                #expect(try await store.session(id: sessionHash(expired)) == nil)
                // 11 h old but within its lifetime and recently active: fine.
                #expect(try await web.send(.get, "/api/usage", as: .session(old)).status == 200)
                // The expiry never moves with activity.
                let after = try #require(try await store.session(id: sessionHash(old)))
                #expect(abs(after.expiresAt.timeIntervalSince(now.addingTimeInterval(3600))) < 1)
            }
        }
    }

    @Test func sessionsOfADeletedUserEndAndRoleChangesApplyAtOnce() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            let admin = try await g.createUser("demoted@example.com", .admin, password: password)
            let member = try await g.createUser("removed@example.com", .member, password: password)
            try await withWeb(g) { web in
                let adminToken = try await web.loginToken("demoted@example.com", password)
                let memberToken = try await web.loginToken("removed@example.com", password)
                #expect(try await web.send(.get, "/api/settings", as: .session(adminToken)).status == 200)
                #expect(try await web.send(.get, "/api/requests", as: .session(memberToken)).status == 200)

                #expect(try await web.send(.patch, "/api/users/\(admin.id)", as: .bearer(g.ownerKey), json: ["role": "viewer"]).status == 200)
                expectError(try await web.send(.get, "/api/settings", as: .session(adminToken)), 403, "permission_denied")
                expectError(try await web.send(.get, "/api/requests", as: .session(adminToken)), 403, "permission_denied")
                #expect(try await web.send(.get, "/api/usage", as: .session(adminToken)).status == 200)

                #expect(try await web.send(.delete, "/api/users/\(member.id)", as: .bearer(g.ownerKey)).status == 204)
                expectError(try await web.send(.get, "/api/requests", as: .session(memberToken)), 401, "authentication_error")
                #expect(try await g.accessStore.session(id: sessionHash(memberToken)) == nil)
                let (again, _) = try await web.login("removed@example.com", password)
                #expect(again.status == 401)
            }
        }
    }

    // MARK: - CSRF

    static let foreignOrigins: [OriginHeader] = [
        .absent, .value("https://evil.example"), .value("null"), .value("https://localhost.evil.example"),
        .value("https://evil.example/https://localhost"), .value("https://localhost:4443"), .value(""),
        .value("https://localhost, https://evil.example"),
    ]

    @Test func cookieWritesWithoutASameOriginOriginAre403() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            try await g.createUser("csrf@example.com", .owner, password: password)
            try await withWeb(g) { web in
                let token = try await web.loginToken("csrf@example.com", password)
                let api = Credential.session(token)
                let pk = try await web.send(
                    .post, "/api/provider-keys", as: .bearer(g.ownerKey), origin: .absent,
                    json: ["name": "csrf", "provider": "openai", "api_key": .string(newCanarySecret())])
                let pkID = try #require(pk["id"]?.string)
                let writes: [(HTTPRequest.Method, String, JSONValue?)] = [
                    (.post, "/api/api-keys", ["name": "csrf", "kind": "api"]),
                    (.post, "/api/users", ["email": "csrf-new@example.com", "role": "admin", "password": .string(newPassword())]),
                    (.patch, "/api/settings", ["retention_days": 7]),
                    (.delete, "/api/provider-keys/\(pkID)", nil),
                    (.delete, "/api/sessions", nil),
                ]
                for (method, path, body) in writes {
                    for origin in Self.foreignOrigins {
                        let reply = try await web.send(method, path, as: api, origin: origin, json: body)
                        #expect(reply.status == 403, "\(method) \(path) with Origin \(origin): \(reply.status) \(reply.text.prefix(200))")
                        #expect(reply["error"]?["type"] == "permission_denied")
                    }
                }
                // Nothing happened.
                let keys = try await web.send(.get, "/api/api-keys", as: .bearer(g.ownerKey), origin: .absent)
                #expect(keys.listedIDs.count == 1, "an API key was created cross-site")
                #expect(try await web.send(.get, "/api/settings", as: api, origin: .absent)["retention_days"] == 90)
                #expect(try await web.send(.get, "/api/provider-keys/\(pkID)", as: api, origin: .absent).status == 200)
                #expect(try await g.plane.users(orgID: g.orgID).count == 1)
                // Reads need no Origin; the same writes with our Origin work.
                #expect(try await web.send(.get, "/api/users", as: api, origin: .absent).status == 200)
                #expect(try await web.send(.post, "/api/api-keys", as: api, origin: .same, json: ["name": "ok", "kind": "read"]).status == 201)
                #expect(try await web.send(.patch, "/api/settings", as: api, origin: .same, json: ["retention_days": 7]).status == 200)
                #expect(try await web.send(.delete, "/api/provider-keys/\(pkID)", as: api, origin: .same).status == 204)
                #expect(try await web.send(.delete, "/api/sessions", as: api, origin: .same).status == 204)
            }
        }
    }

    @Test func bearerKeyWritesNeedNoOrigin() async throws {
        try await withGatehouse { g in
            try await withWeb(g) { web in
                for origin in [OriginHeader.absent, .value("https://evil.example")] {
                    let reply = try await web.send(.post, "/api/api-keys", as: .bearer(g.ownerKey), origin: origin, json: ["name": "automation", "kind": "read"])
                    #expect(reply.status == 201, "\(reply.text)")
                    let patched = try await web.send(.patch, "/api/settings", as: .bearer(g.ownerKey), origin: origin, json: ["retention_days": 30])
                    #expect(patched.status == 200, "\(patched.text)")
                }
            }
        }
    }

    // MARK: - Login throttling

    @Test func sixthLoginForAnAccountWithinTheWindowIs429() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            try await g.createUser("target@example.com", .admin, password: password)
            try await g.createUser("bystander@example.com", .viewer, password: password)
            try await withWeb(g) { web in
                // Spellings of the same account count together.
                for email in ["target@example.com", "TARGET@example.com", " target@example.com", "Target@Example.com", "target@example.com"] {
                    #expect(try await web.loginStatus(email, "wrong-password-123") == 401)
                }
                let (throttled, token) = try await web.login("target@example.com", password)
                expectError(throttled, 429, "rate_limited")
                #expect(token == nil, "a throttled login opened a session")
                let retry = try #require(throttled.headers[.retryAfter].flatMap(Int.init), "no Retry-After")
                #expect((1...900).contains(retry), "Retry-After \(retry)")
                // Another account is not affected.
                #expect(try await web.loginStatus("bystander@example.com", password) == 201)
            }
        }
    }

    @Test func aSuccessfulLoginResetsTheAccountsFailures() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            try await g.createUser("forgetful@example.com", .member, password: password)
            try await withWeb(g) { (web: Web) async throws in
                for _ in 0..<4 { #expect(try await web.loginStatus("forgetful@example.com", "not-the-password") == 401) }
                #expect(try await web.loginStatus("forgetful@example.com", password) == 201)
                for _ in 0..<4 { #expect(try await web.loginStatus("forgetful@example.com", "not-the-password") == 401) }
                #expect(try await web.loginStatus("forgetful@example.com", password) == 201)
            }
        }
    }

    @Test func twentyFailuresFromOneAddressThrottleEveryAccount() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            try await g.createUser("victim@example.com", .admin, password: password)
            try await withWeb(g) { web in
                for i in 0..<20 {
                    let (reply, _) = try await web.login("spray-\(i)@example.com", "spray-password-\(i)")
                    #expect(reply.status == 401, "attempt \(i): \(reply.status)")
                }
                let (throttled, token) = try await web.login("victim@example.com", password)
                expectError(throttled, 429, "rate_limited")
                #expect(token == nil)
                #expect(throttled.headers[.retryAfter].flatMap(Int.init).map { $0 >= 1 && $0 <= 900 } == true)
            }
        }
    }

    // MARK: - Roles: nobody grants above their own; only an owner touches owners

    @Test func adminCannotCreatePromoteDemoteOrDeleteAnOwner() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            let owner = try await g.createUser("owner@example.com", .owner, password: password)
            let admin = try await g.createUser("admin@example.com", .admin, password: password)
            let member = try await g.createUser("member@example.com", .member, password: password)
            try await withWeb(g) { web in
                let adminSession = Credential.session(try await web.loginToken("admin@example.com", password))
                for caller in [adminSession, .bearer(g.ownerKey)] {
                    let what = "\(caller)"
                    expectError(
                        try await web.send(.post, "/api/users", as: caller, json: ["email": "sneaky@example.com", "role": "owner", "password": .string(newPassword())]),
                        403, "permission_denied")
                    expectError(try await web.send(.patch, "/api/users/\(member.id)", as: caller, json: ["role": "owner"]), 403, "permission_denied")
                    expectError(try await web.send(.patch, "/api/users/\(admin.id)", as: caller, json: ["role": "owner"]), 403, "permission_denied")
                    expectError(try await web.send(.patch, "/api/users/\(owner.id)", as: caller, json: ["role": "admin"]), 403, "permission_denied")
                    expectError(try await web.send(.patch, "/api/users/\(owner.id)", as: caller, json: ["role": "viewer"]), 403, "permission_denied")
                    expectError(try await web.send(.delete, "/api/users/\(owner.id)", as: caller), 403, "permission_denied")
                    #expect(try await g.plane.user(orgID: g.orgID, id: owner.id).role == .owner, "\(what)")
                    #expect(try await g.plane.user(orgID: g.orgID, id: member.id).role == .member, "\(what)")
                    #expect(try await g.plane.user(orgID: g.orgID, id: admin.id).role == .admin, "\(what)")
                    #expect(try await g.accessStore.user(email: "sneaky@example.com") == nil, "\(what)")
                }
            }
        }
    }

    @Test func adminManagesRolesBelowOwner() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            try await g.createUser("admin@example.com", .admin, password: password)
            try await withWeb(g) { web in
                let admin = Credential.session(try await web.loginToken("admin@example.com", password))
                let created = try await web.send(
                    .post, "/api/users", as: admin, json: ["email": "New.Hire@Example.com", "role": "member", "password": .string(newPassword())])
                #expect(created.status == 201, "\(created.text)")
                #expect(created["email"] == "new.hire@example.com")
                #expect(created["role"] == "member")
                let id = try #require(created["id"]?.string)
                #expect(try await web.send(.patch, "/api/users/\(id)", as: admin, json: ["role": "admin"])["role"] == "admin")
                #expect(try await web.send(.patch, "/api/users/\(id)", as: admin, json: ["role": "viewer"])["role"] == "viewer")
                #expect(try await web.send(.get, "/api/users/\(id)", as: admin)["role"] == "viewer")
                #expect(try await web.send(.get, "/api/users", as: admin).listedIDs.contains(id))
                #expect(try await web.send(.delete, "/api/users/\(id)", as: admin).status == 204)
                expectError(try await web.send(.get, "/api/users/\(id)", as: admin), 404, "not_found")
            }
        }
    }

    @Test(arguments: [Role.member, .viewer])
    func memberAndViewerCannotManageTheTeam(_ role: Role) async throws {
        try await withGatehouse { g in
            let password = newPassword()
            let me = try await g.createUser("me@example.com", role, password: password)
            let peer = try await g.createUser("peer@example.com", .viewer, password: password)
            try await withWeb(g) { web in
                let session = Credential.session(try await web.loginToken("me@example.com", password))
                expectError(try await web.send(.get, "/api/users", as: session), 403, "permission_denied")
                expectError(try await web.send(.get, "/api/users/\(me.id)", as: session), 403, "permission_denied")
                expectError(
                    try await web.send(.post, "/api/users", as: session, json: ["email": "x@example.com", "role": "viewer", "password": .string(newPassword())]),
                    403, "permission_denied")
                for target in [me.id, peer.id] {
                    for newRole in ["owner", "admin", "member", "viewer"] {
                        expectError(try await web.send(.patch, "/api/users/\(target)", as: session, json: .object(["role": .string(newRole)])), 403, "permission_denied")
                    }
                    expectError(try await web.send(.delete, "/api/users/\(target)", as: session), 403, "permission_denied")
                }
                #expect(try await g.plane.user(orgID: g.orgID, id: me.id).role == role)
                #expect(try await g.plane.users(orgID: g.orgID).count == 2)
            }
        }
    }

    @Test func theLastOwnerCannotBeDemotedOrDeleted() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            let owner = try await g.createUser("solo@example.com", .owner, password: password)
            try await withWeb(g) { web in
                let session = Credential.session(try await web.loginToken("solo@example.com", password))
                for role in ["admin", "member", "viewer"] {
                    expectError(try await web.send(.patch, "/api/users/\(owner.id)", as: session, json: .object(["role": .string(role)])), 409, "conflict")
                }
                expectError(try await web.send(.delete, "/api/users/\(owner.id)", as: session), 409, "conflict")
                // Not even from the command line.
                await #expect(throws: GatehouseError.self) {
                    try await g.plane.changeRole(userID: owner.id, to: .admin, by: cliPrincipal(g.orgID))
                }
                await #expect(throws: GatehouseError.self) {
                    try await g.plane.deleteUser(userID: owner.id, by: cliPrincipal(g.orgID))
                }
                #expect(try await g.plane.user(orgID: g.orgID, id: owner.id).role == .owner)
                #expect(try await web.send(.get, "/api/settings", as: session).status == 200)
            }
        }
    }

    @Test func anOwnerCanCreateAnotherOwnerAndThenBeDemoted() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            let first = try await g.createUser("first@example.com", .owner, password: password)
            try await withWeb(g) { web in
                let firstSession = Credential.session(try await web.loginToken("first@example.com", password))
                let secondPassword = newPassword()
                let created = try await web.send(
                    .post, "/api/users", as: firstSession,
                    json: ["email": "second@example.com", "role": "owner", "password": .string(secondPassword)])
                #expect(created.status == 201, "\(created.text)")
                #expect(created["role"] == "owner")
                let secondID = try #require(created["id"]?.string)
                let secondSession = Credential.session(try await web.loginToken("second@example.com", secondPassword))

                let demoted = try await web.send(.patch, "/api/users/\(first.id)", as: secondSession, json: ["role": "admin"])
                #expect(demoted.status == 200, "\(demoted.text)")
                #expect(demoted["role"] == "admin")
                // The first one's open session now acts as an admin.
                expectError(
                    try await web.send(.patch, "/api/users/\(secondID)", as: firstSession, json: ["role": "admin"]), 403, "permission_denied")
                expectError(
                    try await web.send(.patch, "/api/users/\(first.id)", as: firstSession, json: ["role": "owner"]), 403, "permission_denied")
                #expect(try await web.send(.get, "/api/settings", as: firstSession).status == 200)
                // The second is now the last owner.
                expectError(try await web.send(.patch, "/api/users/\(secondID)", as: secondSession, json: ["role": "admin"]), 409, "conflict")
                // An owner may step down while another owner remains.
                #expect(try await web.send(.patch, "/api/users/\(first.id)", as: secondSession, json: ["role": "owner"]).status == 200)
                #expect(try await web.send(.patch, "/api/users/\(secondID)", as: secondSession, json: ["role": "member"]).status == 200)
                expectError(try await web.send(.get, "/api/users", as: secondSession), 403, "permission_denied")
            }
        }
    }

    // MARK: - Passwords and e-mails

    @Test func passwordAndEmailRules() async throws {
        try await withGatehouse { g in
            try await withWeb(g) { web in
                let owner = Credential.bearer(g.ownerKey)
                func create(_ email: String, _ password: String, role: String = "member") async throws -> Reply {
                    try await web.send(.post, "/api/users", as: owner, json: ["email": .string(email), "role": .string(role), "password": .string(password)])
                }
                let short = try await create("short@example.com", "elevenchars")
                expectError(short, 422, "validation_error")
                #expect(short["error"]?["message"]?.string?.contains("password") == true)
                #expect(try await create("twelve@example.com", "twelve-chars").status == 201)
                expectError(try await create("long@example.com", String(repeating: "é", count: 37)), 422, "validation_error")  // 74 bytes
                #expect(try await create("exact72@example.com", String(repeating: "p", count: 72)).status == 201)
                expectError(try await create("Twelve@Example.com", "another-password"), 409, "conflict")
                expectError(try await create(" twelve@example.com ", "another-password"), 409, "conflict")
                expectError(try await create("not-an-email", "another-password"), 422, "validation_error")
                expectError(try await create("x@example.com", "another-password", role: "superuser"), 422, "validation_error")
                // The same e-mail in another organization: logins are by e-mail alone.
                let (_, otherKey) = try await g.createOrganization(name: "other")
                let elsewhere = try await web.send(
                    .post, "/api/users", as: .bearer(otherKey), json: ["email": "twelve@example.com", "role": "member", "password": .string(newPassword())])
                expectError(elsewhere, 409, "conflict")
            }
        }
    }

    /// bcrypt reads at most 72 bytes and stops at a NUL byte: a password must never be
    /// accepted by the prefix bcrypt happened to read.
    @Test func loginNeverAcceptsAPasswordThatOnlySharesBcryptsPrefix() async throws {
        try await withGatehouse { g in
            let long = String(repeating: "q", count: 60) + Base62.random(count: 12)  // exactly 72 bytes
            try await g.createUser("long@example.com", .member, password: long)
            try await withWeb(g) { web in
                #expect(try await web.loginStatus("long@example.com", long) == 201)
                let (extended, token) = try await web.login("long@example.com", long + "-and-more")
                #expect(extended.status == 401, "a wrong (longer) password logged in: \(extended.status)")
                #expect(token == nil)
            }
        }
    }

    @Test func passwordWithANulByteIsRefusedOrKeptWhole() async throws {
        try await withGatehouse { g in
            try await withWeb(g) { web in
                let password = "abc\u{0}" + Base62.random(count: 16)
                let created = try await web.send(
                    .post, "/api/users", as: .bearer(g.ownerKey), json: ["email": "nul@example.com", "role": "admin", "password": .string(password)])
                if created.status == 201 {
                    let (prefixOnly, token) = try await web.login("nul@example.com", "abc")
                    #expect(prefixOnly.status == 401, "the 3 characters before the NUL byte are enough to log in")
                    #expect(token == nil)
                    let (other, _) = try await web.login("nul@example.com", "abc\u{0}something-else")
                    #expect(other.status == 401, "anything after the NUL byte is ignored")
                } else {
                    expectError(created, 422, "validation_error")
                }
            }
        }
    }

    @Test func noResponseNorTheDatabaseEverHoldsAPlaintextPassword() async throws {
        try await withGatehouse { g in
            let log = ResponseLog()
            let cliPassword = "cli-canary-" + Base62.random(count: 24)
            let apiPassword = "api-canary-" + Base62.random(count: 24)
            let wrongPassword = "wrong-canary-" + Base62.random(count: 24)
            let user = try await g.createUser("secret@example.com", .owner, password: cliPassword)
            let tokens = try await withWeb(g, log: log) { web in
                let token = try await web.loginToken("secret@example.com", cliPassword)
                let created = try await web.send(
                    .post, "/api/users", as: .session(token), json: ["email": "made@example.com", "role": "admin", "password": .string(apiPassword)])
                #expect(created.status == 201)
                _ = try await web.send(
                    .post, "/api/users", as: .session(token), json: ["email": "made@example.com", "role": "admin", "password": .string(apiPassword)])
                _ = try await web.send(
                    .post, "/api/users", as: .session(token), json: ["email": .string(apiPassword), "role": "admin", "password": .string(apiPassword)])
                _ = try await web.login("secret@example.com", wrongPassword)
                _ = try await web.login("nobody@example.com", wrongPassword)
                let second = try await web.loginToken("made@example.com", apiPassword)
                _ = try await web.send(.get, "/api/users", as: .session(second))
                _ = try await web.send(.get, "/api/users/\(user.id)", as: .session(second))
                return [token, second]
            }

            let secrets = [cliPassword, apiPassword, wrongPassword]
            for body in log.bodies {
                for secret in secrets {
                    for form in canaryForms(secret) {
                        #expect(Data(body.utf8).range(of: form) == nil, "a response contains a password: \(body.prefix(200))")
                    }
                }
            }
            let audit = try await g.plane.store.auditEntries(orgID: nil, after: 0, limit: 10_000)
            #expect(!audit.isEmpty)
            for entry in audit {
                for secret in secrets + tokens {
                    #expect(!entry.details.contains(secret) && !entry.target.contains(secret), "audit \(entry.action) holds a secret")
                }
            }
            let stored = try #require(try await g.accessStore.user(email: "secret@example.com"))
            #expect(stored.passwordHash.hasPrefix("$2"), "not a bcrypt hash")
            #expect(stored.passwordHash.hasPrefix("$2b$11$") || stored.passwordHash.hasPrefix("$2a$11$") || stored.passwordHash.hasPrefix("$2y$11$"))

            try await g.plane.store.close()
            let files = g.dataFiles()
            #expect(files.contains { $0.0 == "gatehouse.sqlite" })
            for (name, data) in files {
                for secret in secrets {
                    for form in canaryForms(secret) {
                        #expect(data.range(of: form) == nil, "\(name) contains a plaintext password")
                    }
                }
                for token in tokens {
                    #expect(data.range(of: Data(token.utf8)) == nil, "\(name) contains a session token (only its hash may be stored)")
                }
            }
        }
    }

    // MARK: - The admin allowlist and logins

    /// A login from an address outside the organization's `/api` allowlist must not tell a
    /// right password from a wrong one.
    @Test func loginFromOutsideTheAllowlistIsNoPasswordOracle() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            try await g.createUser("fenced@example.com", .admin, password: password)
            var settings = try await g.plane.settings(orgID: g.orgID)
            settings.apiIPAllowlist = ["10.0.0.0/8"]
            _ = try await g.plane.updateSettings(settings, by: cliPrincipal(g.orgID), peer: nil, headers: HTTPFieldsView(HTTPFields()))
            try await withWeb(g) { web in
                // The router test mode has no peer address: it is outside every allowlist.
                let (right, rightToken) = try await web.login("fenced@example.com", password)
                let (wrong, _) = try await web.login("fenced@example.com", password + "-nope")
                #expect(rightToken == nil, "a session cookie for a caller outside the allowlist")
                #expect(right.status == 403 || right.status == 401)
                #expect(
                    right.status == wrong.status && right["error"]?["type"] == wrong["error"]?["type"],
                    "outside the allowlist, right password → \(right.status), wrong password → \(wrong.status): the answer reveals the password")
                #expect(try await web.send(.get, "/api/usage", as: .bearer(g.ownerKey)).status == 403)
            }
        }
    }

    /// The throttle must not tell either: a right password refused for the allowlist may not
    /// reset the account's failures (otherwise the next attempt's 401-vs-429 confirms it).
    @Test func loginRefusedForTheAllowlistDoesNotResetTheThrottle() async throws {
        try await withGatehouse { g in
            let password = newPassword()
            try await g.createUser("fenced@example.com", .admin, password: password)
            var settings = try await g.plane.settings(orgID: g.orgID)
            settings.apiIPAllowlist = ["10.0.0.0/8"]
            _ = try await g.plane.updateSettings(settings, by: cliPrincipal(g.orgID), peer: nil, headers: HTTPFieldsView(HTTPFields()))
            try await withWeb(g) { web in
                for i in 0..<4 {
                    #expect(try await web.loginStatus("fenced@example.com", "wrong-password-\(i)") == 401)
                }
                // Candidate guess: the right password, refused because of the allowlist.
                #expect(try await web.loginStatus("fenced@example.com", password) == 401)
                // Five refused attempts: the sixth is throttled whatever the fifth was.
                let (sixth, _) = try await web.login("fenced@example.com", "wrong-password-x")
                #expect(
                    sixth.status == 429,
                    "after 4 wrong passwords and the right one refused by the allowlist the next attempt gets \(sixth.status), not 429: the throttle confirms the password")
            }
        }
    }
}
