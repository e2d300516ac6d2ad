import GatehouseCore
import HTTPTypes
import NIOHTTP1
import Testing

@testable import GatehouseServer

/// Which credential a gateway request presents, read from its headers.
@Suite("Gateway credential")
struct GatewayCredentialTests {
    private func fields(_ pairs: [(String, String)]) -> ClientHeaders { ClientHeaders(HTTPHeaders(pairs)) }

    @Test(arguments: [
        ("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER abc", "abc"), ("  Bearer   abc", "abc"),
        ("Bearer a b", "a b"), ("Bearer ", nil), ("Bearer", nil), ("Basic abc", nil), ("Bearerabc", nil),
        ("", nil), ("   ", nil), ("Beare abc", nil), ("Bearer\tabc", nil), ("Bearér abc", nil),
    ] as [(String, String?)])
    func bearerToken(header: String, expected: String?) {
        #expect(AdminAuthMiddleware.bearerToken(header).map(String.init) == expected)
    }

    /// A field's value as `HTTPFields`' subscript gives it (the gateway read `HTTPFields` before
    /// it read NIO's headers): names without case, a repeated field joined with `, `.
    @Test func aFieldValueIsWhatTheHTTPFieldsSubscriptGives() {
        let cases: [[(String, String)]] = [
            [], [("Content-Type", "application/json")], [("Accept", "*/*"), ("content-type", "text/plain")],
            [("Content-Type", "a"), ("Accept", "b"), ("CONTENT-TYPE", "c")], [("Content-Type", "")],
            [("Content-Type", ""), ("Content-Type", "x")], [("Content-Typ", "a"), ("Content-Types", "b")],
            [("Content-Length", "5"), ("content-length", "5")], [("Helicone-RateLimit-Policy", "10;w=60")],
        ]
        for pairs in cases {
            var f = HTTPFields()
            for (name, value) in pairs { f.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
            let headers = ClientHeaders(HTTPHeaders(pairs))
            #expect(headers.contentType == f[.contentType], "\(pairs)")
            #expect(headers.contentLength == f[.contentLength], "\(pairs)")
            #expect(headers.rateLimitPolicy == f[HTTPField.Name("Helicone-RateLimit-Policy")!], "\(pairs)")
        }
        #expect(GatewayHTTP.lowercasedName("X-API-Key") == "x-api-key" && GatewayHTTP.lowercasedName("x-api-key") == "x-api-key")
        #expect(GatewayHTTP.lowercasedName("OpenAI-Organization-Long-Name") == "openai-organization-long-name")
    }

    /// What goes on to the provider: the client's fields in order and as written, without
    /// hop-by-hop fields, what `Connection` lists, credentials, `Helicone-*`, `Gatehouse-*`,
    /// `Proxy-*`, cookies, forwarding and compression fields (any case); then the provider's
    /// defaults the client left out; then the provider credential.
    @Test func forwardedFieldsLeaveOutWhatIsNotTheProvidersBusiness() {
        let client = ClientHeaders(HTTPHeaders([
            ("Host", "gw"), ("Content-Type", "application/json"), ("Authorization", "Bearer gate_x"), ("X-API-Key", "k"),
            ("Connection", "keep-alive, X-Hop"), ("x-hop", "1"), ("Keep-Alive", "5"), ("TE", "trailers"), ("Upgrade", "h2c"),
            ("Transfer-Encoding", "chunked"), ("Content-Length", "2"), ("Cookie", "a=1"), ("X-Forwarded-For", "1.2.3.4"),
            ("Forwarded", "for=x"), ("X-Real-IP", "1.2.3.4"), ("Accept-Encoding", "gzip"), ("Expect", "100-continue"),
            ("Helicone-User-Id", "u1"), ("Helicone-Property-Team", "red"), ("Gatehouse-Anything", "x"), ("Proxy-Authorization", "p"),
            ("OpenAI-Organization", "org-1"), ("User-Agent", "ua"), ("Anthropic-Version", "2024-01-01"),
        ]))
        let openai = client.forwardHeaders(adapter: ProviderAdapter(provider: .openai), secret: "sk-1")
        #expect(openai.map { "\($0.0): \($0.1)" } == [
            "Content-Type: application/json", "OpenAI-Organization: org-1", "User-Agent: ua", "Anthropic-Version: 2024-01-01",
            "Authorization: Bearer sk-1",
        ])
        #expect(client.metadata.userID == "u1" && client.metadata.properties == ["team": "red"])
        #expect(client.forwardedFor == ["1.2.3.4"])
        // Anthropic's version is added only when the client did not send one (in any case).
        let anthropic = client.forwardHeaders(adapter: ProviderAdapter(provider: .anthropic), secret: "sk-2")
        #expect(anthropic.suffix(1).map(\.0) == ["x-api-key"] && !anthropic.contains { $0.0 == "anthropic-version" })
        let bare = ClientHeaders(HTTPHeaders([("Content-Type", "application/json")]))
            .forwardHeaders(adapter: ProviderAdapter(provider: .anthropic), secret: "sk-2")
        #expect(bare.map(\.0) == ["Content-Type", "anthropic-version", "x-api-key"])
    }

    @Test func aGatehouseBearerComesFirstThenXAPIKeyThenHelicone() {
        #expect(fields([("x-api-key", "k1"), ("Authorization", "Bearer gate_proxy_x")]).credential == "gate_proxy_x")
        #expect(fields([("Authorization", "Bearer sk-other"), ("x-api-key", "k1")]).credential == "k1")
        #expect(fields([("Authorization", "Bearer sk-other"), ("Helicone-Auth", "Bearer h1")]).credential == "h1")
        #expect(fields([("Authorization", "Bearer sk-other")]).credential == "sk-other")
        #expect(fields([("x-api-key", "")]).credential == nil)
        #expect(fields([("Content-Type", "application/json")]).credential == nil)
    }

    /// Two `Authorization` headers are one joined value, never either credential alone.
    @Test func aRepeatedHeaderIsJoinedNotPicked() {
        let twice = fields([("Authorization", "Bearer gate_proxy_a"), ("Authorization", "Bearer gate_proxy_b")])
        #expect(twice.credential == "gate_proxy_a, Bearer gate_proxy_b")
        let keys = fields([("x-api-key", "k1"), ("X-API-Key", "k2")])
        #expect(keys.credential == "k1, k2")
    }
}

/// The client's response head from the provider's.
@Suite("Gateway response headers")
struct GatewayResponseHeaderTests {
    let upstream = HTTPHeaders([
        ("Content-Type", "application/json"), ("Content-Length", "42"), ("Connection", "keep-alive"),
        ("Set-Cookie", "a=b"), ("Gatehouse-Request-Id", "req_forged"), ("Gatehouse-Overhead-Ms", "0"),
        ("RateLimit-Limit", "7"), ("ratelimit-policy", "7;w=1"), ("x-request-id", "up-1"),
        ("Strict-Transport-Security", "max-age=0"), ("strict-transport-security", "max-age=1; includeSubDomains"),
    ])

    @Test func hopByHopAndOursAreLeftOutTheRestKept() {
        let fields = GatewayHTTP.responseHeaders(upstream, dropLength: false, replacingRateLimit: false)
        #expect(fields.map { "\($0.0)=\($0.1)" } == [
            "Content-Type=application/json", "RateLimit-Limit=7", "ratelimit-policy=7;w=1", "x-request-id=up-1", "Content-Length=42",
        ])
    }

    @Test func theProvidersRateLimitFieldsGoWhenGatehouseSetsItsOwn() {
        let fields = GatewayHTTP.responseHeaders(upstream, dropLength: true, replacingRateLimit: true)
        #expect(fields.map(\.0) == ["Content-Type", "x-request-id"])
    }
}

/// Where a stored base URL sends requests: only a host that can be written into `Host` and
/// asked of a resolver as it is (rows stored before the check are refused at use too).
@Suite("Upstream target")
struct UpstreamTargetTests {
    @Test(arguments: [
        "http://a%0d%0aX-Injected:%20yes%0d%0a.example/", "http://a%00b.example", "http://a%20b.example",
        "http://%C3%A4.example", "http://ex%61mple.com", "http://[::1%25eth0]:8080", "ftp://host",
    ])
    func aHostThatIsNotPlainIsRefused(_ url: String) {
        #expect(UpstreamTarget(baseURL: url) == nil, "\(url)")
    }

    @Test func plainHostsAreUsedAsWritten() throws {
        let named = try #require(UpstreamTarget(baseURL: "https://api.example.com/openai"))
        #expect(named.host == "api.example.com" && named.hostHeader == "api.example.com" && named.pathPrefix == "/openai")
        let v6 = try #require(UpstreamTarget(baseURL: "http://[::1]:8080"))
        #expect(v6.host == "::1" && v6.hostHeader == "[::1]:8080" && v6.port == 8080)
        let v4 = try #require(UpstreamTarget(baseURL: "http://127.0.0.1:9/"))
        #expect(v4.hostHeader == "127.0.0.1:9" && v4.serverName == nil)
        #expect(UpstreamTarget(baseURL: "http://my_host.internal") != nil)
    }
}
