import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore
import HTTPTypes
import Testing

/// The admin API (`/api`) over the in-process router: every route, its validation, and the
/// authentication / authorisation rules. Every response is also checked by ``API`` for a
/// request id, the error shape, and the absence of any provider secret.
@Suite("Admin API")
struct AdminAPITests {
    static let providerFields: Set<String> = ["id", "name", "provider", "base_url", "last4", "created_at"]
    static let proxyFields: Set<String> = [
        "id", "kind", "name", "description", "provider_key_id", "expires_at", "allowed_models", "allowed_ips",
        "rate_limits", "budget", "status", "created_at", "revoked_at",
    ]
    static let orgKeyFields: Set<String> = ["id", "kind", "name", "status", "created_at", "revoked_at"]

    /// The contract's proxy-key fields (the server may add informational ones, such as spend).
    static func contractView(_ object: JSONValue?) -> [String: JSONValue] {
        Dictionary(uniqueKeysWithValues: proxyFields.map { ($0, object?[$0] ?? .null) })
    }

    /// No listed or fetched key carries key text, hashes or ciphertext.
    static func expectNoSecretFields(_ object: JSONValue?, sourceLocation: SourceLocation = #_sourceLocation) {
        guard let keys = object?.object?.keys else {
            Issue.record("not an object", sourceLocation: sourceLocation)
            return
        }
        #expect(!keys.contains("key"), "key text outside creation", sourceLocation: sourceLocation)
        for field in keys {
            #expect(
                field.range(of: #"hash|secret|api_key|ciphertext|pepper"#, options: [.regularExpression, .caseInsensitive]) == nil,
                "suspicious field \(field)", sourceLocation: sourceLocation)
        }
    }

    // MARK: - Unauthenticated routes

    @Test func healthAnswersWithoutAuthentication() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let reply = try await api.call(.get, "/api/health", auth: .none)
                #expect(reply.status == 200)
                #expect(reply.json == ["status": "ok"])
                let withGarbage = try await api.call(.get, "/api/health", auth: .key("garbage"))
                #expect(withGarbage.status == 200)
            }
        }
    }

    @Test func openAPIDocumentIsServedWithoutAuthentication() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let reply = try await api.call(.get, "/api/openapi.yaml", auth: .none)
                #expect(reply.status == 200)
                #expect(reply.headers[.contentType]?.hasPrefix("application/yaml") == true)
                #expect(reply.text.hasPrefix("openapi: 3."))
            }
        }
    }

    @Test func openAPIDocumentDescribesEveryKeyRoute() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let text = try await api.call(.get, "/api/openapi.yaml", auth: .none).text
                for path in ["/api/provider-keys", "/api/proxy-keys", "/api/api-keys"] {
                    #expect(text.contains("\(path):"), "\(path) missing from the OpenAPI paths")
                }
            }
        }
    }

    @Test func unknownRoutesAnswerAJSON404() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                for path in ["/api/does-not-exist", "/api/provider-keys/x/y/z", "/does-not-exist", "/"] {
                    expectError(try await api.call(.get, path), 404, "not_found")
                    expectError(try await api.call(.get, path, auth: .none), 404, "not_found")
                }
            }
        }
    }

    @Test func errorMessageForAnUnknownRouteNeverEchoesAKey() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let reply = try await api.call(.get, "/api/nothing/\(g.ownerKey)")
                #expect(reply.status == 404)
                #expect(!reply.text.contains(g.ownerKey))
                #expect(!reply.text.contains(String(g.ownerKey.dropFirst(9).prefix(20))))
            }
        }
    }

    // MARK: - Provider keys

    @Test func createdProviderKeyShowsOnlyLast4OfTheSecret() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let secret = newCanarySecret()
                let reply = try await api.call(
                    .post, "/api/provider-keys", json: ["name": "openai-main", "provider": "openai", "api_key": .string(secret)])
                #expect(reply.status == 201)
                #expect(reply.headers[.contentType]?.hasPrefix("application/json") == true)
                #expect(reply.headers[.cacheControl] == "no-store")
                let obj = try #require(reply.json)
                #expect(Set(obj.object?.keys ?? [:].keys) == Self.providerFields)
                #expect(obj["name"] == "openai-main")
                #expect(obj["provider"] == "openai")
                #expect(obj["last4"]?.string == String(secret.suffix(4)))
                #expect(obj["id"]?.string?.isEmpty == false)
                #expect(obj["created_at"]?.string.flatMap(JSONValue.parseDate) != nil)
                Self.expectNoSecretFields(obj)
                #expect(!reply.text.contains(secret))
                #expect(!reply.text.contains(String(secret.dropLast(4))))
            }
        }
    }

    @Test func shortProviderSecretShowsNoLast4() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let reply = try await api.call(.post, "/api/provider-keys", json: ["name": "tiny", "provider": "openai", "api_key": "sk-abc12"])
                #expect(reply.status == 201)
                #expect(reply["last4"] == "")
                #expect(!reply.text.contains("abc12"))
            }
        }
    }

    @Test func providerKeysOfEveryProviderCanBeCreated() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (anthropic, _) = try await api.createProviderKey(name: "a", provider: "anthropic")
                #expect(anthropic["provider"] == "anthropic")
                let (compat, _) = try await api.createProviderKey(name: "c", provider: "openai-compatible", baseURL: "http://127.0.0.1:9")
                #expect(compat["provider"] == "openai-compatible")
                #expect(compat["base_url"] == "http://127.0.0.1:9")
            }
        }
    }

    @Test func providerKeysAreListedAndFetchedWithoutTheirSecrets() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (a, secretA) = try await api.createProviderKey(name: "list-a")
                let (b, secretB) = try await api.createProviderKey(name: "list-b", provider: "anthropic")
                let list = try await api.call(.get, "/api/provider-keys")
                #expect(list.status == 200)
                let listed = list.listed
                let idA = try #require(a["id"]?.string)
                let idB = try #require(b["id"]?.string)
                #expect(Set(listed.keys) == [idA, idB])
                for obj in listed.values {
                    #expect(Set(obj.object?.keys ?? [:].keys) == Self.providerFields)
                    Self.expectNoSecretFields(obj)
                }
                #expect(listed[idA]?["last4"]?.string == String(secretA.suffix(4)))
                #expect(!list.text.contains(secretA) && !list.text.contains(secretB))

                let fetched = try await api.call(.get, "/api/provider-keys/\(idA)")
                #expect(fetched.status == 200)
                #expect(fetched.json == a)
            }
        }
    }

    @Test func unknownProviderKeyIs404() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                expectError(try await api.call(.get, "/api/provider-keys/pk_doesnotexist000"), 404, "not_found")
                expectError(try await api.call(.delete, "/api/provider-keys/pk_doesnotexist000"), 404, "not_found")
            }
        }
    }

    @Test func deletedProviderKeyIsGone() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (obj, _) = try await api.createProviderKey(name: "to-delete")
                let id = try #require(obj["id"]?.string)
                let reply = try await api.call(.delete, "/api/provider-keys/\(id)")
                #expect(reply.status == 204)
                #expect(reply.text.isEmpty)
                #expect(!(try await api.call(.get, "/api/provider-keys")).listedIDs.contains(id))
                expectError(try await api.call(.get, "/api/provider-keys/\(id)"), 404, "not_found")
                expectError(try await api.call(.delete, "/api/provider-keys/\(id)"), 404, "not_found")
            }
        }
    }

    @Test func deletingAProviderKeyRevokesItsProxyKeys() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey(name: "with-proxies")
                let (other, _) = try await api.createProviderKey(name: "unrelated")
                let pkID = try #require(pk["id"]?.string)
                let p1 = try await api.createProxyKey(providerKeyID: pkID, name: "dep-1")
                let p2 = try await api.createProxyKey(providerKeyID: pkID, name: "dep-2")
                let survivor = try await api.createProxyKey(providerKeyID: try #require(other["id"]?.string), name: "other")
                #expect(try await api.call(.delete, "/api/provider-keys/\(pkID)").status == 204)
                for p in [p1, p2] {
                    let fetched = try await api.call(.get, "/api/proxy-keys/\(try #require(p["id"]?.string))")
                    #expect(fetched.status == 200)
                    #expect(fetched["status"] == "revoked")
                    #expect(fetched["revoked_at"]?.string != nil)
                    // …and the gateway refuses it from the next request on.
                    #expect(g.plane.keyTable.authenticate(try #require(p["key"]?.string)) == .failure(.revoked))
                }
                let fetched = try await api.call(.get, "/api/proxy-keys/\(try #require(survivor["id"]?.string))")
                #expect(fetched["status"] == "active")
                #expect(g.plane.keyTable.authenticate(try #require(survivor["key"]?.string)).isSuccess)
            }
        }
    }

    @Test func openAICompatibleProviderRequiresABaseURL() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let reply = try await api.call(
                    .post, "/api/provider-keys", json: ["name": "compat", "provider": "openai-compatible", "api_key": .string(newCanarySecret())])
                expectError(reply, 422, "validation_error")
                #expect(reply["error"]?["message"]?.string?.contains("base_url") == true)
            }
        }
    }

    @Test(arguments: [
        "https://u:p@host.example", "https://user@host.example", "ftp://x", "ftp://host.example/v1", "file:///etc/passwd",
        "https://host.example/v1?api_key=1", "https://host.example/#frag", "https://host.example/?", "not a url", "/relative/path",
        "https://", "http:///nohost", "javascript:alert(1)", "",
    ])
    func unsafeBaseURLIsRefused(baseURL: String) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let reply = try await api.call(
                    .post, "/api/provider-keys",
                    json: ["name": "compat", "provider": "openai-compatible", "base_url": .string(baseURL), "api_key": .string(newCanarySecret())])
                expectError(reply, 422, "validation_error")
                #expect(try await api.call(.get, "/api/provider-keys").listedIDs.isEmpty)
            }
        }
    }

    /// The provider secret goes into a header of every provider request, and provider
    /// connections do not validate headers a second time (docs/transport.md): a secret that could
    /// end a header line or break one must never be stored.
    @Test(arguments: ["\r\nX-Injected: 1", "\nX-Injected: 1", "\r", "\u{0}", " ", "\t", "\u{7F}", "é", "\u{2028}"])
    func aProviderSecretThatCouldBreakAHeaderIsRefused(bad: String) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let secret = newCanarySecret()
                api.log.addCanary(secret)
                let reply = try await api.call(
                    .post, "/api/provider-keys", json: ["name": "x", "provider": "openai", "api_key": .string(secret + bad + "tail")])
                expectError(reply, 422, "validation_error")
                #expect(reply["error"]?["message"]?.string?.contains("api_key") == true)
                #expect(!reply.text.contains(secret))
                #expect(try await api.call(.get, "/api/provider-keys").listedIDs.isEmpty)
            }
        }
    }

    @Test func baseURLCredentialsAreNeverEchoed() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let secret = newCanarySecret()
                api.log.addCanary(secret)
                let reply = try await api.call(
                    .post, "/api/provider-keys",
                    json: ["name": "compat", "provider": "openai-compatible", "base_url": .string("https://user:\(secret)@llm.example"),
                           "api_key": .string(newCanarySecret())])
                expectError(reply, 422, "validation_error")
                #expect(!reply.text.contains(secret))
            }
        }
    }

    @Test func unknownProviderIs422() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                for provider in ["skynet", "OpenAI", "", "openai "] {
                    let reply = try await api.call(
                        .post, "/api/provider-keys", json: ["name": "x", "provider": .string(provider), "api_key": .string(newCanarySecret())])
                    expectError(reply, 422, "validation_error")
                }
            }
        }
    }

    @Test func unknownFieldIs422AndALongFieldNameIsNotEchoed() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let reply = try await api.call(
                    .post, "/api/provider-keys",
                    json: ["name": "x", "provider": "openai", "api_key": .string(newCanarySecret()), "secret": "y"])
                expectError(reply, 422, "validation_error")
                #expect(reply["error"]?["message"]?.string?.contains("secret") == true, "the message names a short unknown field")

                let pasted = newCanarySecret()
                api.log.addCanary(pasted)
                let leaked = try await api.call(
                    .post, "/api/provider-keys",
                    json: ["name": "x", "provider": "openai", "api_key": .string(newCanarySecret()), .init(stringLiteral: pasted): "oops"])
                expectError(leaked, 422, "validation_error")
                #expect(!leaked.text.contains(pasted))
            }
        }
    }

    @Test func unknownNestedFieldNameIsNotEchoedWhenItCouldBeASecret() async throws {
        // Top-level unknown field names longer than 40 characters are redacted; a nested one
        // (inside `budget` or a rate limit) must not leak most of a pasted secret either.
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let pasted = newCanarySecret()
                let randomPart = String(pasted.dropFirst("sk-canary-".count))
                for extra: [String: JSONValue] in [
                    ["budget": .object([pasted: 1, "limit_usd": 1, "period": "day"])],
                    ["rate_limits": [.object([pasted: 1, "metric": "requests", "limit": 1, "window_seconds": 60])]],
                ] {
                    var body: [String: JSONValue] = ["name": "x", "provider_key_id": pk["id"] ?? .null]
                    body.merge(extra) { _, new in new }
                    let reply = try await api.call(.post, "/api/proxy-keys", json: .object(body))
                    expectError(reply, 422, "validation_error")
                    #expect(!reply.text.contains(randomPart.prefix(16)), "\(reply.text)")
                }
            }
        }
    }

    @Test(arguments: ["{not json", "", "{\"name\": 'x'}", "nul", "{\"a\":1}}", "\u{FEFF}{}x"])
    func malformedJSONIs400(body: String) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                expectError(try await api.call(.post, "/api/provider-keys", raw: body), 400, "invalid_request")
            }
        }
    }

    @Test(arguments: ["[]", "\"string\"", "42", "null", "true"])
    func nonObjectJSONBodyIsRefused(body: String) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let reply = try await api.call(.post, "/api/provider-keys", raw: body)
                #expect([400, 422].contains(reply.status))
            }
        }
    }

    @Test func bodyLargerThan64KiBIs413() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let big = String(repeating: "a", count: 70 * 1024)
                let reply = try await api.call(.post, "/api/provider-keys", json: ["name": .string(big), "provider": "openai", "api_key": "sk-x"])
                expectError(reply, 413, "payload_too_large")
                #expect(try await api.call(.get, "/api/provider-keys").listedIDs.isEmpty)
                // Just under the limit is parsed (and then refused for the over-long name, not the size).
                let under = String(repeating: "a", count: 60 * 1024)
                let ok = try await api.call(.post, "/api/provider-keys", json: ["name": .string(under), "provider": "openai", "api_key": "sk-x"])
                expectError(ok, 422, "validation_error")
            }
        }
    }

    @Test func deeplyNestedJSONIs400() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let nested = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
                let reply = try await api.call(.post, "/api/provider-keys", raw: #"{"name":\#(nested),"provider":"openai","api_key":"sk-x"}"#)
                expectError(reply, 400, "invalid_request")
                let objects = String(repeating: #"{"a":"#, count: 100) + "1" + String(repeating: "}", count: 100)
                expectError(try await api.call(.post, "/api/proxy-keys", raw: objects), 400, "invalid_request")
                // Brackets inside strings do not count as nesting.
                let inString = #"{"name":"\#(String(repeating: "[", count: 100))","provider":"openai","api_key":"sk-canary-0123456789ab"}"#
                #expect(try await api.call(.post, "/api/provider-keys", raw: inString).status == 201)
            }
        }
    }

    @Test(arguments: [
        ["name": 123, "provider": "openai", "api_key": "sk-canary-0123456789ab"],
        ["name": "x", "provider": ["openai"], "api_key": "sk-canary-0123456789ab"],
        ["name": "x", "provider": "openai", "base_url": 5, "api_key": "sk-canary-0123456789ab"],
        ["name": "x", "provider": "openai", "api_key": 42],
        ["name": "x", "provider": "openai", "api_key": ["sk-canary-0123456789ab"]],
        ["name": true, "provider": "openai", "api_key": "sk-canary-0123456789ab"],
        ["name": ["nested": "x"], "provider": "openai", "api_key": "sk-canary-0123456789ab"],
    ] as [JSONValue])
    func wrongFieldTypeIs422(body: JSONValue) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                expectError(try await api.call(.post, "/api/provider-keys", json: body), 422, "validation_error")
            }
        }
    }

    @Test(arguments: ["name", "provider", "api_key"])
    func missingProviderKeyFieldIs422(missing: String) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                var body: [String: JSONValue] = ["name": "x", "provider": "openai", "api_key": .string(newCanarySecret())]
                body[missing] = nil
                expectError(try await api.call(.post, "/api/provider-keys", json: .object(body)), 422, "validation_error")
                body[missing] = .null
                expectError(try await api.call(.post, "/api/provider-keys", json: .object(body)), 422, "validation_error")
            }
        }
    }

    @Test(arguments: ["", "sk with space", "sk-\u{00E9}t\u{00E9}-1234567890", "sk-tab\t123456789", "sk-nl\n123456789"])
    func invalidProviderSecretIsRefusedWithoutEchoingIt(secret: String) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let reply = try await api.call(.post, "/api/provider-keys", json: ["name": "x", "provider": "openai", "api_key": .string(secret)])
                expectError(reply, 422, "validation_error")
                if !secret.isEmpty { #expect(!reply.text.contains(secret)) }
            }
        }
    }

    @Test func invalidNamesAreRefused() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                for name in ["", "   ", "bad\u{0007}bell", "line\nbreak", String(repeating: "n", count: 201), String(repeating: "e\u{0301}", count: 101)] {
                    let reply = try await api.call(.post, "/api/provider-keys", json: ["name": .string(name), "provider": "openai", "api_key": "sk-canary-0123456789ab"])
                    expectError(reply, 422, "validation_error")
                }
            }
        }
    }

    // MARK: - Proxy keys

    @Test func createdProxyKeyHasTheKeyFormatAndIsActive() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let pkID = try #require(pk["id"]?.string)
                let reply = try await api.call(.post, "/api/proxy-keys", json: ["name": "minimal", "provider_key_id": .string(pkID)])
                #expect(reply.status == 201)
                let obj = try #require(reply.json)
                let key = try #require(obj["key"]?.string)
                #expect(key.wholeMatch(of: #/gate_proxy_[0-9A-Za-z]{50}/#) != nil)
                #expect(Self.proxyFields.union(["key"]).isSubset(of: Set(obj.object?.keys ?? [:].keys)))
                #expect(obj["kind"] == "proxy")
                #expect(obj["name"] == "minimal")
                #expect(obj["provider_key_id"]?.string == pkID)
                #expect(obj["status"] == "active")
                #expect(obj["revoked_at"] == .null)
                #expect(obj["expires_at"] == .null)
                #expect(obj["budget"] == .null)
                #expect(obj["rate_limits"] == [])
                #expect(obj["id"]?.string == (try GatehouseKey.parse(key)).id)
                // The key works against the in-memory key table straight away.
                #expect(g.plane.keyTable.authenticate(key).isSuccess)
            }
        }
    }

    @Test func proxyKeyWithUnknownProviderKeyIs422() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let reply = try await api.call(.post, "/api/proxy-keys", json: ["name": "x", "provider_key_id": "pk_doesnotexist000"])
                expectError(reply, 422, "validation_error")
            }
        }
    }

    @Test func proxyKeyCannotBindAnotherOrganizationsProviderKey() async throws {
        try await withGatehouse { g in
            let (_, otherOwner) = try await g.createOrganization()
            try await withAPI(g) { api in
                let (foreign, _) = try await api.createProviderKey(auth: .key(otherOwner))
                let reply = try await api.call(.post, "/api/proxy-keys", json: ["name": "x", "provider_key_id": foreign["id"] ?? .null])
                expectError(reply, 422, "validation_error")
            }
        }
    }

    @Test(arguments: ["not-an-ip", "10.0.0.0/33", "300.1.1.1", "10.0.0.0/8/8", "", "::1/129", "10.0.0.0/", " /8", "1.2.3"])
    func proxyKeyWithABadCIDRIs422(bad: String) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let reply = try await api.call(
                    .post, "/api/proxy-keys", json: ["name": "x", "provider_key_id": pk["id"] ?? .null, "allowed_ips": ["10.0.0.0/8", .string(bad)]])
                expectError(reply, 422, "validation_error")
                #expect(try await api.call(.get, "/api/proxy-keys").listedIDs.isEmpty)
            }
        }
    }

    @Test func invalidAllowedIPEntryIsNotEchoed() async throws {
        // A value in the wrong field may be a pasted secret: messages name the field only.
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let pasted = newCanarySecret()
                for (path, body) in [
                    ("/api/proxy-keys", ["name": "x", "provider_key_id": pk["id"] ?? .null, "allowed_ips": [.string(pasted)]]),
                    ("/api/api-keys", ["name": "x", "kind": "read", "allowed_ips": [.string(pasted)]]),
                ] as [(String, JSONValue)] {
                    let reply = try await api.call(.post, path, json: body)
                    expectError(reply, 422, "validation_error")
                    #expect(reply["error"]?["message"]?.string?.contains("allowed_ips") == true)
                    #expect(!reply.text.contains(pasted.dropFirst(10).prefix(16)), "\(reply.text)")
                }
            }
        }
    }

    @Test func proxyKeyExpiringInThePastIs422() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                for expiry in [isoDate(in: -3600), "2001-01-01T00:00:00Z", "tomorrow", "2030-13-01T00:00:00Z"] {
                    let reply = try await api.call(
                        .post, "/api/proxy-keys", json: ["name": "x", "provider_key_id": pk["id"] ?? .null, "expires_at": .string(expiry)])
                    expectError(reply, 422, "validation_error")
                }
                let numeric = try await api.call(.post, "/api/proxy-keys", json: ["name": "x", "provider_key_id": pk["id"] ?? .null, "expires_at": 12])
                expectError(numeric, 422, "validation_error")
            }
        }
    }

    @Test func proxyKeyLimitsAndBudgetRoundTrip() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let expiry = isoDate(in: 30 * 86400)
                let rateLimits: JSONValue = [
                    ["metric": "requests", "limit": 60, "window_seconds": 60],
                    ["metric": "tokens", "limit": 100_000, "window_seconds": 3600],
                    ["metric": "cost_usd", "limit": 1.5, "window_seconds": 86400],
                ]
                let created = try await api.createProxyKey(
                    providerKeyID: try #require(pk["id"]?.string), name: "full",
                    extra: [
                        "description": "a key with everything", "expires_at": .string(expiry),
                        "allowed_models": ["gpt-4o-mini", "gpt-4o"], "allowed_ips": ["10.0.0.0/8", "192.168.1.5", "2001:db8::/32"],
                        "rate_limits": rateLimits, "budget": ["limit_usd": 10.25, "period": "month"],
                    ])
                let fetched = try await api.call(.get, "/api/proxy-keys/\(try #require(created["id"]?.string))")
                #expect(fetched.status == 200)
                for obj in [created, try #require(fetched.json)] {
                    #expect(obj["description"] == "a key with everything")
                    #expect(obj["expires_at"]?.string.flatMap(JSONValue.parseDate).map { Int($0.timeIntervalSince1970) }
                        == JSONValue.parseDate(expiry).map { Int($0.timeIntervalSince1970) })
                    #expect(obj["allowed_models"] == ["gpt-4o-mini", "gpt-4o"])
                    #expect(obj["allowed_ips"] == ["10.0.0.0/8", "192.168.1.5/32", "2001:db8::/32"])
                    #expect(obj["rate_limits"] == rateLimits)
                    #expect(obj["budget"] == ["limit_usd": 10.25, "period": "month"])
                    #expect(obj["status"] == "active")
                }
                #expect(Self.contractView(fetched.json) == Self.contractView(created))
            }
        }
    }

    @Test(arguments: [
        ["rate_limits": [["metric": "requests", "limit": -1, "window_seconds": 60]]],
        ["rate_limits": [["metric": "requests", "limit": 0, "window_seconds": 60]]],
        ["rate_limits": [["metric": "cost_usd", "limit": -0.5, "window_seconds": 60]]],
        ["rate_limits": [["metric": "requests", "limit": 10, "window_seconds": 0]]],
        ["rate_limits": [["metric": "requests", "limit": 10, "window_seconds": -60]]],
        ["rate_limits": [["metric": "requests", "limit": 10, "window_seconds": 1.5]]],
        ["rate_limits": [["metric": "requests", "limit": 1.5, "window_seconds": 60]]],
        ["rate_limits": [["metric": "bananas", "limit": 1, "window_seconds": 60]]],
        ["rate_limits": [["metric": "requests", "window_seconds": 60]]],
        ["rate_limits": [["metric": "requests", "limit": "many", "window_seconds": 60]]],
        ["rate_limits": ["metric": "requests"]],
        ["rate_limits": ["requests"]],
        ["budget": ["limit_usd": -5, "period": "day"]],
        ["budget": ["limit_usd": 5, "period": "fortnight"]],
        ["budget": ["limit_usd": 5]],
        ["budget": ["limit_usd": "ten", "period": "day"]],
        ["budget": ["limit_usd": 5, "period": "day", "extra": 1]],
        ["budget": 5],
        ["allowed_models": "gpt-4o"],
        ["allowed_models": [""]],
        ["allowed_models": [1]],
        ["allowed_ips": "10.0.0.0/8"],
        ["name": 7],
        ["description": 7],
        ["unknown": 1],
    ] as [JSONValue])
    func invalidProxyKeyFieldsAre422(extra: JSONValue) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                var body: [String: JSONValue] = ["name": "x", "provider_key_id": pk["id"] ?? .null]
                body.merge(extra.object ?? [:]) { _, new in new }
                expectError(try await api.call(.post, "/api/proxy-keys", json: .object(body)), 422, "validation_error")
                #expect(try await api.call(.get, "/api/proxy-keys").listedIDs.isEmpty)
            }
        }
    }

    @Test func proxyKeyMissingFieldsAreRefused() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                expectError(try await api.call(.post, "/api/proxy-keys", json: ["name": "x"]), 422, "validation_error")
                expectError(try await api.call(.post, "/api/proxy-keys", json: ["provider_key_id": pk["id"] ?? .null]), 422, "validation_error")
                expectError(try await api.call(.post, "/api/proxy-keys", raw: "{nope"), 400, "invalid_request")
            }
        }
    }

    @Test func listedAndFetchedProxyKeysNeverIncludeTheKey() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let created = try await api.createProxyKey(providerKeyID: try #require(pk["id"]?.string), name: "listed")
                let key = try #require(created["key"]?.string)
                let id = try #require(created["id"]?.string)
                let secretPart = String(key.suffix(GatehouseKey.secretLength + GatehouseKey.checksumLength))
                let list = try await api.call(.get, "/api/proxy-keys")
                #expect(list.status == 200)
                #expect(list.listedIDs == [id])
                for obj in list["data"]?.array ?? [] {
                    #expect(Self.proxyFields.isSubset(of: Set(obj.object?.keys ?? [:].keys)))
                    Self.expectNoSecretFields(obj)
                }
                #expect(!list.text.contains(secretPart))
                let fetched = try await api.call(.get, "/api/proxy-keys/\(id)")
                Self.expectNoSecretFields(fetched.json)
                #expect(!fetched.text.contains(secretPart))
                let patched = try await api.call(.patch, "/api/proxy-keys/\(id)", json: ["name": "renamed"])
                Self.expectNoSecretFields(patched.json)
                #expect(!patched.text.contains(secretPart))
                let revoked = try await api.call(.post, "/api/proxy-keys/\(id)/revoke")
                Self.expectNoSecretFields(revoked.json)
                #expect(!revoked.text.contains(secretPart))
            }
        }
    }

    @Test func unknownProxyKeyIs404() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                expectError(try await api.call(.get, "/api/proxy-keys/doesnotexist0"), 404, "not_found")
                expectError(try await api.call(.patch, "/api/proxy-keys/doesnotexist0", json: ["name": "x"]), 404, "not_found")
                expectError(try await api.call(.post, "/api/proxy-keys/doesnotexist0/revoke"), 404, "not_found")
            }
        }
    }

    @Test func apiKeysAreNotReachableThroughProxyKeyRoutes() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let ownerID = g.ownerPrincipal.id
                expectError(try await api.call(.get, "/api/proxy-keys/\(ownerID)"), 404, "not_found")
                expectError(try await api.call(.patch, "/api/proxy-keys/\(ownerID)", json: ["name": "x"]), 404, "not_found")
                expectError(try await api.call(.post, "/api/proxy-keys/\(ownerID)/revoke"), 404, "not_found")
                #expect(g.plane.keyTable.authenticate(g.ownerKey).isSuccess)
            }
        }
    }

    @Test func patchChangesOnlyTheGivenFields() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let created = try await api.createProxyKey(
                    providerKeyID: try #require(pk["id"]?.string), name: "before",
                    extra: ["description": "original", "allowed_models": ["gpt-4o"]])
                let id = try #require(created["id"]?.string)
                let renamed = try await api.call(.patch, "/api/proxy-keys/\(id)", json: ["name": "after"])
                #expect(renamed.status == 200)
                #expect(renamed["name"] == "after")
                #expect(renamed["description"] == "original")
                #expect(renamed["allowed_models"] == ["gpt-4o"])
                #expect(renamed["provider_key_id"] == pk["id"])
                #expect(renamed["status"] == "active")
                let fetched = try await api.call(.get, "/api/proxy-keys/\(id)")
                #expect(Self.contractView(fetched.json) == Self.contractView(renamed.json))
            }
        }
    }

    @Test func patchWithNullClearsTheDescription() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let created = try await api.createProxyKey(providerKeyID: try #require(pk["id"]?.string), extra: ["description": "temporary"])
                let id = try #require(created["id"]?.string)
                let cleared = try await api.call(.patch, "/api/proxy-keys/\(id)", json: ["description": .null])
                #expect(cleared.status == 200)
                #expect(cleared["description"] == .null)
                #expect(try await api.call(.get, "/api/proxy-keys/\(id)")["description"] == .null)
                let set = try await api.call(.patch, "/api/proxy-keys/\(id)", json: ["description": "again"])
                #expect(set["description"] == "again")
            }
        }
    }

    @Test func patchSetsAndClearsTheBudgetAndLimits() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let created = try await api.createProxyKey(providerKeyID: try #require(pk["id"]?.string))
                let id = try #require(created["id"]?.string)
                let set = try await api.call(
                    .patch, "/api/proxy-keys/\(id)",
                    json: ["budget": ["limit_usd": 3, "period": "day"], "rate_limits": [["metric": "requests", "limit": 5, "window_seconds": 1]]])
                #expect(set.status == 200)
                #expect(set["budget"] == ["limit_usd": 3, "period": "day"])
                #expect(set["rate_limits"] == [["metric": "requests", "limit": 5, "window_seconds": 1]])
                #expect(try await api.call(.get, "/api/proxy-keys/\(id)")["budget"] == ["limit_usd": 3, "period": "day"])
                // The in-memory key table (what the gateway enforces) follows at once.
                let record = try #require(g.plane.keyTable.snapshot.gateKeys[id])
                #expect(record.budget == Budget(limitUSD: 3, period: .day))

                let cleared = try await api.call(.patch, "/api/proxy-keys/\(id)", json: ["budget": .null, "rate_limits": .null])
                #expect(cleared.status == 200)
                #expect(cleared["budget"] == .null)
                #expect(cleared["rate_limits"] == [])
                #expect(try await api.call(.get, "/api/proxy-keys/\(id)")["budget"] == .null)
                #expect(g.plane.keyTable.snapshot.gateKeys[id]?.budget == nil)
            }
        }
    }

    @Test(arguments: [
        ["name": 5], ["name": ""], ["allowed_models": "gpt-4o"], ["allowed_ips": ["nope"]],
        ["rate_limits": [["metric": "requests", "limit": "many", "window_seconds": 1]]],
        ["budget": ["limit_usd": "ten", "period": "day"]], ["expires_at": 12], ["expires_at": "2001-01-01T00:00:00Z"],
        ["provider_key_id": "pk_other"], ["kind": "api"], ["status": "active"],
    ] as [JSONValue])
    func invalidPatchChangesNothing(patch: JSONValue) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let created = try await api.createProxyKey(providerKeyID: try #require(pk["id"]?.string), name: "patch-invalid")
                let id = try #require(created["id"]?.string)
                let reply = try await api.call(.patch, "/api/proxy-keys/\(id)", json: patch)
                expectError(reply, 422, "validation_error")
                let after = try await api.call(.get, "/api/proxy-keys/\(id)")
                #expect(Self.contractView(after.json) == Self.contractView(created))
            }
        }
    }

    @Test func malformedPatchIs400() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let created = try await api.createProxyKey(providerKeyID: try #require(pk["id"]?.string))
                expectError(try await api.call(.patch, "/api/proxy-keys/\(created["id"]?.string ?? "")", raw: "{"), 400, "invalid_request")
            }
        }
    }

    @Test func revokedProxyKeyReportsRevokedAndASecondRevokeIs409() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let created = try await api.createProxyKey(providerKeyID: try #require(pk["id"]?.string), name: "revoke-me")
                let id = try #require(created["id"]?.string)
                let key = try #require(created["key"]?.string)
                let reply = try await api.call(.post, "/api/proxy-keys/\(id)/revoke")
                #expect(reply.status == 200)
                #expect(reply["status"] == "revoked")
                #expect(reply["revoked_at"]?.string.flatMap(JSONValue.parseDate) != nil)
                #expect(try await api.call(.get, "/api/proxy-keys/\(id)")["status"] == "revoked")
                #expect(g.plane.keyTable.authenticate(key) == .failure(.revoked))
                expectError(try await api.call(.post, "/api/proxy-keys/\(id)/revoke"), 409, "conflict")
                #expect(try await api.call(.get, "/api/proxy-keys")["data"]?.array?.first?["status"] == "revoked")
            }
        }
    }

    @Test func patchingARevokedProxyKeyDoesNotRevive() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let created = try await api.createProxyKey(providerKeyID: try #require(pk["id"]?.string))
                let id = try #require(created["id"]?.string)
                _ = try await api.call(.post, "/api/proxy-keys/\(id)/revoke")
                let patched = try await api.call(.patch, "/api/proxy-keys/\(id)", json: ["name": "still-revoked", "expires_at": .null])
                if patched.status == 200 { #expect(patched["status"] == "revoked") }
                #expect(try await api.call(.get, "/api/proxy-keys/\(id)")["status"] == "revoked")
                #expect(g.plane.keyTable.authenticate(try #require(created["key"]?.string)) == .failure(.revoked))
            }
        }
    }

    // MARK: - Organization API keys

    @Test(arguments: ["api", "read"])
    func orgKeyOfEachKindCanBeCreated(kind: String) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let obj = try await api.createOrgKey(kind: kind, name: "\(kind)-key")
                let key = try #require(obj["key"]?.string)
                #expect(key.wholeMatch(of: #/gate_(api|read)_[0-9A-Za-z]{50}/#) != nil)
                #expect(key.hasPrefix("gate_\(kind)_"))
                #expect(Self.orgKeyFields.isSubset(of: Set(obj.object?.keys ?? [:].keys)))
                #expect(obj["kind"]?.string == kind)
                #expect(obj["status"] == "active")
                #expect(obj["revoked_at"] == .null)
                #expect(obj["provider_key_id"] == nil, "organization keys have no provider binding")
            }
        }
    }

    @Test(arguments: [
        ["name": "x", "kind": "proxy"], ["name": "x", "kind": "root"], ["name": "x"], ["kind": "api"], ["name": 1, "kind": "api"],
        ["name": "x", "kind": "api", "provider_key_id": "pk_x"], ["name": "x", "kind": "api", "budget": ["limit_usd": 1, "period": "day"]],
        ["name": "x", "kind": "api", "allowed_ips": ["10.0.0.0/33"]], ["name": "x", "kind": "api", "expires_at": "2001-01-01T00:00:00Z"],
    ] as [JSONValue])
    func invalidOrgKeyIs422(body: JSONValue) async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                expectError(try await api.call(.post, "/api/api-keys", json: body), 422, "validation_error")
                #expect(try await api.call(.get, "/api/api-keys").listedIDs.count == 1)
            }
        }
    }

    @Test func orgKeysAreListedWithoutKeysAndWithoutProxyKeys() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let proxy = try await api.createProxyKey(providerKeyID: try #require(pk["id"]?.string))
                let read = try await api.createOrgKey(kind: "read", name: "listed-read")
                let list = try await api.call(.get, "/api/api-keys")
                #expect(list.status == 200)
                let listed = list.listed
                #expect(Set(listed.keys) == [g.ownerPrincipal.id, try #require(read["id"]?.string)])
                #expect(listed[g.ownerPrincipal.id]?["kind"] == "api")
                #expect(!listed.keys.contains(proxy["id"]?.string ?? ""))
                for obj in listed.values {
                    #expect(Self.orgKeyFields.isSubset(of: Set(obj.object?.keys ?? [:].keys)))
                    Self.expectNoSecretFields(obj)
                }
                #expect(!list.text.contains(try #require(read["key"]?.string)))
                #expect(!list.text.contains(g.ownerKey))
            }
        }
    }

    @Test func newAPIKeyWorksAndOnceRevokedGets401() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let created = try await api.createOrgKey(kind: "api", name: "short-lived")
                let key = try #require(created["key"]?.string)
                let id = try #require(created["id"]?.string)
                #expect(try await api.call(.get, "/api/proxy-keys", auth: .key(key)).status == 200)
                let revoked = try await api.call(.post, "/api/api-keys/\(id)/revoke")
                #expect(revoked.status == 200)
                #expect(revoked["status"] == "revoked")
                #expect(revoked["revoked_at"]?.string != nil)
                expectError(try await api.call(.get, "/api/proxy-keys", auth: .key(key)), 401, "authentication_error")
                #expect(try await api.call(.get, "/api/api-keys").listed[id]?["status"] == "revoked")
                expectError(try await api.call(.post, "/api/api-keys/\(id)/revoke"), 409, "conflict")
            }
        }
    }

    @Test func aKeyThatRevokesItselfIsRefusedOnItsNextRequest() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let created = try await api.createOrgKey(kind: "api")
                let key = try #require(created["key"]?.string)
                let id = try #require(created["id"]?.string)
                #expect(try await api.call(.post, "/api/api-keys/\(id)/revoke", auth: .key(key)).status == 200)
                expectError(try await api.call(.get, "/api/api-keys", auth: .key(key)), 401, "authentication_error")
            }
        }
    }

    @Test func revokingAnUnknownOrProxyKeyThroughAPIKeysIs404() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                expectError(try await api.call(.post, "/api/api-keys/doesnotexist0/revoke"), 404, "not_found")
                let (pk, _) = try await api.createProviderKey()
                let proxy = try await api.createProxyKey(providerKeyID: try #require(pk["id"]?.string))
                expectError(try await api.call(.post, "/api/api-keys/\(proxy["id"]?.string ?? "")/revoke"), 404, "not_found")
                #expect(g.plane.keyTable.authenticate(try #require(proxy["key"]?.string)).isSuccess)
            }
        }
    }

    // MARK: - Authentication

    static let protectedRoutes: [(HTTPRequest.Method, String)] = [
        (.get, "/api/provider-keys"), (.post, "/api/provider-keys"), (.get, "/api/provider-keys/pk_x"),
        (.delete, "/api/provider-keys/pk_x"), (.get, "/api/proxy-keys"), (.post, "/api/proxy-keys"),
        (.get, "/api/proxy-keys/k"), (.patch, "/api/proxy-keys/k"), (.post, "/api/proxy-keys/k/revoke"),
        (.get, "/api/api-keys"), (.post, "/api/api-keys"), (.post, "/api/api-keys/k/revoke"),
    ]

    @Test func everyManagementRouteWithoutCredentialsIs401() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                for (method, path) in Self.protectedRoutes {
                    let reply = try await api.call(method, path, auth: .none, json: method == .post || method == .patch ? [:] : nil)
                    expectError(reply, 401, "authentication_error")
                }
            }
        }
    }

    @Test func everyBadCredentialGetsTheIdenticalError() async throws {
        try await withGatehouse { g in
            let owner = g.ownerKey
            // One character of the secret changed, checksum left alone (fails the checksum) and
            // recomputed (passes the format, fails the hash).
            let i = "gate_api_".count + GatehouseKey.idLength + 5
            var chars = Array(owner)
            chars[i] = chars[i] == "A" ? "B" : "A"
            let tampered = String(chars)
            let body = String(tampered.dropLast(GatehouseKey.checksumLength))
            let tamperedValid = body + Base62.encode(UInt64(CRC32.checksum(body.utf8)), width: GatehouseKey.checksumLength)
            let asRead = "gate_read_" + owner.dropFirst("gate_api_".count).dropLast(GatehouseKey.checksumLength)
            let asReadValid = asRead + Base62.encode(UInt64(CRC32.checksum(asRead.utf8)), width: GatehouseKey.checksumLength)
            #expect((try? GatehouseKey.parse(tamperedValid)) != nil)

            // A revoked key of the same organization.
            let (revokedRecord, revokedKey) = try await g.plane.createGateKey(GateKeyInput(kind: .api, name: "revoked"), by: g.ownerPrincipal)
            _ = try await g.plane.revokeGateKey(id: revokedRecord.id, kinds: [.api], by: g.ownerPrincipal)

            let variants: [(String, Auth)] = [
                ("missing", .none),
                ("garbage", .key("garbage")),
                ("empty-looking", .key("gate_api_")),
                ("wrong kind prefix", .key("gate_xyz_" + owner.dropFirst(9))),
                ("kind swapped, checksum recomputed", .key(asReadValid)),
                ("one char changed, bad checksum", .key(tampered)),
                ("one char changed, valid checksum", .key(tamperedValid)),
                ("truncated", .key(String(owner.dropLast()))),
                ("extended", .key(owner + "A")),
                ("unknown id", .key(GatehouseKey.generate(kind: .api).text)),
                ("revoked", .key(revokedKey)),
                ("basic scheme", .header("Basic Zm9vOmJhcg==")),
                ("bearer without token", .header("Bearer ")),
                ("token without scheme", .header(owner)),
                ("owner key with trailing junk", .header("Bearer \(owner) x")),
            ]
            try await withAPI(g) { api in
                var seen: [String: String] = [:]
                for (name, auth) in variants {
                    let reply = try await api.call(.get, "/api/provider-keys", auth: auth)
                    expectError(reply, 401, "authentication_error")
                    seen[name] = reply["error"]?["message"]?.string ?? "(none)"
                    #expect(!reply.text.contains(owner.dropFirst(9).prefix(20)), "\(name): the error echoes the key")
                    #expect(reply.headers[.wwwAuthenticate] == nil || reply.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
                }
                #expect(Set(seen.values).count == 1, "401 messages differ between failure kinds: \(seen)")
                // And the genuine key still works.
                #expect(try await api.call(.get, "/api/provider-keys").status == 200)
                #expect(try await api.call(.get, "/api/provider-keys", auth: .header("bearer \(owner)")).status == 200)
            }
        }
    }

    @Test func proxyKeyOnTheAdminAPIIs403() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let proxy = try await api.createProxyKey(providerKeyID: try #require(pk["id"]?.string), name: "not-admin")
                let key = try #require(proxy["key"]?.string)
                for (method, path) in Self.protectedRoutes {
                    let reply = try await api.call(method, path, auth: .key(key), json: method == .post || method == .patch ? [:] : nil)
                    expectError(reply, 403, "permission_denied")
                }
            }
        }
    }

    @Test func readKeyCannotUseManagementRoutes() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let pkID = try #require(pk["id"]?.string)
                let proxy = try await api.createProxyKey(providerKeyID: pkID)
                let proxyID = try #require(proxy["id"]?.string)
                let read = try #require(try await api.createOrgKey(kind: "read", name: "reader")["key"]?.string)
                let attempts: [(HTTPRequest.Method, String, JSONValue?)] = [
                    (.get, "/api/provider-keys", nil), (.get, "/api/provider-keys/\(pkID)", nil),
                    (.post, "/api/provider-keys", ["name": "x", "provider": "openai", "api_key": .string(newCanarySecret())]),
                    (.delete, "/api/provider-keys/\(pkID)", nil),
                    (.get, "/api/proxy-keys", nil), (.get, "/api/proxy-keys/\(proxyID)", nil),
                    (.post, "/api/proxy-keys", ["name": "x", "provider_key_id": .string(pkID)]),
                    (.patch, "/api/proxy-keys/\(proxyID)", ["name": "hijacked"]),
                    (.post, "/api/proxy-keys/\(proxyID)/revoke", nil),
                    (.get, "/api/api-keys", nil), (.post, "/api/api-keys", ["name": "x", "kind": "api"]),
                    (.post, "/api/api-keys/\(g.ownerPrincipal.id)/revoke", nil),
                ]
                for (method, path, body) in attempts {
                    expectError(try await api.call(method, path, auth: .key(read), json: body), 403, "permission_denied")
                }
                // Nothing changed.
                #expect(try await api.call(.get, "/api/provider-keys").listedIDs == [pkID])
                let fetched = try await api.call(.get, "/api/proxy-keys/\(proxyID)")
                #expect(fetched["name"] == "proxy")
                #expect(fetched["status"] == "active")
                #expect(try await api.call(.get, "/api/api-keys").listed.count == 2)
                #expect(g.plane.keyTable.authenticate(g.ownerKey).isSuccess)
            }
        }
    }

    @Test func anotherOrganizationsIdsAreNotFound() async throws {
        try await withGatehouse { g in
            let (_, otherOwner) = try await g.createOrganization(name: "tenant-b")
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey(name: "a-provider")
                let pkID = try #require(pk["id"]?.string)
                let proxy = try await api.createProxyKey(providerKeyID: pkID, name: "a-proxy")
                let proxyID = try #require(proxy["id"]?.string)
                let orgKey = try await api.createOrgKey(kind: "read", name: "a-reader")
                let orgKeyID = try #require(orgKey["id"]?.string)
                let b = Auth.key(otherOwner)

                expectError(try await api.call(.get, "/api/provider-keys/\(pkID)", auth: b), 404, "not_found")
                expectError(try await api.call(.delete, "/api/provider-keys/\(pkID)", auth: b), 404, "not_found")
                expectError(try await api.call(.get, "/api/proxy-keys/\(proxyID)", auth: b), 404, "not_found")
                expectError(try await api.call(.patch, "/api/proxy-keys/\(proxyID)", auth: b, json: ["name": "stolen"]), 404, "not_found")
                expectError(try await api.call(.post, "/api/proxy-keys/\(proxyID)/revoke", auth: b), 404, "not_found")
                expectError(try await api.call(.post, "/api/api-keys/\(orgKeyID)/revoke", auth: b), 404, "not_found")
                expectError(try await api.call(.post, "/api/api-keys/\(g.ownerPrincipal.id)/revoke", auth: b), 404, "not_found")

                // The 404 for a foreign id reads exactly like the 404 for an id that never existed.
                let foreign = try await api.call(.get, "/api/proxy-keys/\(proxyID)", auth: b)
                let missing = try await api.call(.get, "/api/proxy-keys/\(proxyID.dropLast())X", auth: b)
                #expect(foreign["error"]?["message"]?.string?.replacingOccurrences(of: proxyID, with: "ID")
                    == missing["error"]?["message"]?.string?.replacingOccurrences(of: "\(proxyID.dropLast())X", with: "ID"))

                // Lists are per organization.
                #expect(try await api.call(.get, "/api/provider-keys", auth: b).listedIDs.isEmpty)
                #expect(try await api.call(.get, "/api/proxy-keys", auth: b).listedIDs.isEmpty)
                #expect(!(try await api.call(.get, "/api/api-keys", auth: b).listedIDs.contains(orgKeyID)))
                #expect(!(try await api.call(.get, "/api/api-keys", auth: b).listedIDs.contains(g.ownerPrincipal.id)))

                // Organization A's keys are untouched.
                #expect(try await api.call(.get, "/api/provider-keys/\(pkID)").status == 200)
                let fetched = try await api.call(.get, "/api/proxy-keys/\(proxyID)")
                #expect(fetched["name"] == "a-proxy")
                #expect(fetched["status"] == "active")
                #expect(try await api.call(.get, "/api/api-keys").listed[orgKeyID]?["status"] == "active")
                #expect(g.plane.keyTable.authenticate(g.ownerKey).isSuccess)
            }
        }
    }

    // MARK: - Request ids and error shape

    @Test func everyResponseCarriesAUniqueRequestId() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                let (pk, _) = try await api.createProviderKey()
                let pkID = try #require(pk["id"]?.string)
                var replies: [Reply] = []
                replies.append(try await api.call(.get, "/api/health", auth: .none))
                replies.append(try await api.call(.get, "/api/openapi.yaml", auth: .none))
                replies.append(try await api.call(.get, "/api/provider-keys"))
                replies.append(try await api.call(.get, "/api/provider-keys", auth: .none))
                replies.append(try await api.call(.get, "/api/nope"))
                replies.append(try await api.call(.post, "/api/provider-keys", raw: "{"))
                replies.append(try await api.call(.post, "/api/provider-keys", json: ["name": "x"]))
                replies.append(try await api.call(.post, "/api/provider-keys", json: ["name": .string(String(repeating: "a", count: 70_000))]))
                replies.append(try await api.call(.delete, "/api/provider-keys/\(pkID)"))
                replies.append(try await api.call(.delete, "/api/provider-keys/\(pkID)"))
                #expect(Set(replies.map(\.status)) == [200, 401, 404, 400, 422, 413, 204])
                let ids = replies.compactMap(\.requestID)
                #expect(ids.count == replies.count)
                #expect(Set(ids).count == ids.count, "request ids are unique per request")
            }
        }
    }

    @Test func errorBodyRequestIdEqualsTheHeader() async throws {
        try await withGatehouse { g in
            try await withAPI(g) { api in
                for reply in [
                    try await api.call(.get, "/api/provider-keys", auth: .none),
                    try await api.call(.get, "/api/proxy-keys/none"),
                    try await api.call(.post, "/api/api-keys", json: ["name": "x", "kind": "proxy"]),
                ] {
                    let id = try #require(reply.requestID)
                    #expect(reply["error"]?["request_id"]?.string == id)
                }
            }
        }
    }

    // MARK: - Canary

    @Test func providerSecretNeverAppearsInAnyResponseOrOnDisk() async throws {
        try await withGatehouse { g in
            let log = ResponseLog()
            let secret = newCanarySecret()
            log.addCanary(secret)
            try await withAPI(g, log: log) { api in
                let created = try await api.call(.post, "/api/provider-keys", json: ["name": "canary", "provider": "openai", "api_key": .string(secret)])
                #expect(created.status == 201)
                let pkID = try #require(created["id"]?.string)
                // Use it in every way the API offers.
                _ = try await api.call(.get, "/api/provider-keys")
                _ = try await api.call(.get, "/api/provider-keys/\(pkID)")
                let proxy = try await api.createProxyKey(providerKeyID: pkID, extra: ["description": "bound to the canary"])
                let proxyID = try #require(proxy["id"]?.string)
                _ = try await api.call(.get, "/api/proxy-keys")
                _ = try await api.call(.patch, "/api/proxy-keys/\(proxyID)", json: ["name": "renamed"])
                _ = try await api.call(.post, "/api/proxy-keys/\(proxyID)/revoke")
                _ = try await api.call(.get, "/api/api-keys")
                // The secret pasted into every wrong place.
                _ = try await api.call(.post, "/api/provider-keys", json: ["name": .string(secret), "provider": "skynet", "api_key": .string(secret)])
                _ = try await api.call(.post, "/api/provider-keys", json: ["name": "x", "provider": "openai", "api_key": .string(secret + " ")])
                _ = try await api.call(.post, "/api/provider-keys", json: ["name": "x", "provider": "openai-compatible", "base_url": .string("https://u:\(secret)@h.example"), "api_key": "sk-other-0123456789"])
                _ = try await api.call(.post, "/api/provider-keys", json: ["name": "x", "provider": "openai-compatible", "base_url": .string("https://h.example/?key=\(secret)"), "api_key": "sk-other-0123456789"])
                _ = try await api.call(.post, "/api/provider-keys", json: ["name": "x", "provider": .string(secret), "api_key": "sk-other-0123456789"])
                _ = try await api.call(.post, "/api/proxy-keys", json: ["name": "x", "provider_key_id": .string(secret)])
                _ = try await api.call(.post, "/api/proxy-keys", json: ["name": "x", "provider_key_id": .string(pkID), "allowed_ips": [.string(secret)]])
                _ = try await api.call(.post, "/api/proxy-keys", json: ["name": "x", "provider_key_id": .string(pkID), "allowed_models": .string(secret)])
                _ = try await api.call(.post, "/api/proxy-keys", json: ["name": "x", "provider_key_id": .string(pkID), "expires_at": .string(secret)])
                _ = try await api.call(.post, "/api/api-keys", json: ["name": "x", "kind": .string(secret)])
                _ = try await api.call(.get, "/api/provider-keys/\(secret)")
                _ = try await api.call(.get, "/api/proxy-keys/\(secret)")
                _ = try await api.call(.get, "/api/provider-keys", auth: .key(secret))
                _ = try await api.call(.post, "/api/provider-keys", raw: #"{"api_key":"\#(secret)""#)
                _ = try await api.call(.delete, "/api/provider-keys/\(pkID)")
            }
            let bodies = log.bodies
            #expect(bodies.count >= 20)
            let forms = canaryForms(secret) + canaryForms(String(secret.dropFirst("sk-canary-".count)))
            for body in bodies {
                for form in forms {
                    #expect(Data(body.utf8).range(of: form) == nil, "a response contains the provider secret: \(body.prefix(200))")
                }
            }
            // The audit trail records the change with a fingerprint, never the secret.
            let audit = try await g.plane.store.auditEntries(orgID: nil, after: 0, limit: 10_000)
            #expect(audit.contains { $0.action == "provider_key.create" && $0.details.contains("hmac:") })
            for entry in audit {
                #expect(!entry.details.contains(secret) && !entry.target.contains(secret))
                #expect(!entry.details.contains(String(secret.suffix(20))))
            }
            // And nothing in the data directory holds it in any encoding.
            try await g.plane.store.close()
            let files = FileManager.default.enumerator(atPath: g.paths.dataDir)?.compactMap { $0 as? String } ?? []
            #expect(files.contains("gatehouse.sqlite"))
            for file in files {
                guard let data = FileManager.default.contents(atPath: g.paths.dataDir + "/" + file) else { continue }
                for form in forms {
                    #expect(data.range(of: form) == nil, "\(file) contains the provider secret")
                }
            }
        }
    }
}

extension Result {
    var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }
}
