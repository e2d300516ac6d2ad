import HTTPTypes
import NIOHTTP1
import Testing

@testable import GatehouseServer

/// Which credential a gateway request presents, read from its headers.
@Suite("Gateway credential")
struct GatewayCredentialTests {
    private func fields(_ pairs: [(String, String)]) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in pairs { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return fields
    }

    @Test(arguments: [
        ("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER abc", "abc"), ("  Bearer   abc", "abc"),
        ("Bearer a b", "a b"), ("Bearer ", nil), ("Bearer", nil), ("Basic abc", nil), ("Bearerabc", nil),
        ("", nil), ("   ", nil), ("Beare abc", nil), ("Bearer\tabc", nil), ("Bearér abc", nil),
    ] as [(String, String?)])
    func bearerToken(header: String, expected: String?) {
        #expect(AdminAuthMiddleware.bearerToken(header).map(String.init) == expected)
    }

    @Test func aFieldValueIsWhatTheSubscriptGives() {
        let cases: [[(String, String)]] = [
            [], [("Content-Type", "application/json")], [("Accept", "*/*"), ("content-type", "text/plain")],
            [("Content-Type", "a"), ("Accept", "b"), ("Content-Type", "c")], [("Content-Type", "")],
            [("Content-Type", ""), ("Content-Type", "x")], [("Cookie", "a=1"), ("Cookie", "b=2")],
        ]
        for pairs in cases {
            let f = fields(pairs)
            for name in [HTTPField.Name.contentType, .cookie, .contentLength] {
                #expect(GatewayHTTP.value(f, name) == f[name], "\(pairs) \(name)")
            }
        }
    }

    @Test func aGatehouseBearerComesFirstThenXAPIKeyThenHelicone() {
        #expect(GatewayHTTP.credential(fields([("x-api-key", "k1"), ("Authorization", "Bearer gate_proxy_x")])) == "gate_proxy_x")
        #expect(GatewayHTTP.credential(fields([("Authorization", "Bearer sk-other"), ("x-api-key", "k1")])) == "k1")
        #expect(GatewayHTTP.credential(fields([("Authorization", "Bearer sk-other"), ("Helicone-Auth", "Bearer h1")])) == "h1")
        #expect(GatewayHTTP.credential(fields([("Authorization", "Bearer sk-other")])) == "sk-other")
        #expect(GatewayHTTP.credential(fields([("x-api-key", "")])) == nil)
        #expect(GatewayHTTP.credential(fields([("Content-Type", "application/json")])) == nil)
    }

    /// Two `Authorization` headers are one joined value, never either credential alone.
    @Test func aRepeatedHeaderIsJoinedNotPicked() {
        let twice = fields([("Authorization", "Bearer gate_proxy_a"), ("Authorization", "Bearer gate_proxy_b")])
        #expect(GatewayHTTP.credential(twice) == "gate_proxy_a, Bearer gate_proxy_b")
        let keys = fields([("x-api-key", "k1"), ("X-API-Key", "k2")])
        #expect(GatewayHTTP.credential(keys) == "k1, k2")
    }
}

/// The client's response head from the provider's.
@Suite("Gateway response headers")
struct GatewayResponseHeaderTests {
    let upstream = HTTPHeaders([
        ("Content-Type", "application/json"), ("Content-Length", "42"), ("Connection", "keep-alive"),
        ("Set-Cookie", "a=b"), ("Gatehouse-Request-Id", "req_forged"), ("Gatehouse-Overhead-Ms", "0"),
        ("RateLimit-Limit", "7"), ("ratelimit-policy", "7;w=1"), ("x-request-id", "up-1"),
    ])

    @Test func hopByHopAndOursAreLeftOutTheRestKept() {
        let fields = GatewayHTTP.responseHeaders(upstream, dropLength: false, replacingRateLimit: false)
        #expect(fields.map { "\($0.name.canonicalName)=\($0.value)" } == [
            "content-type=application/json", "ratelimit-limit=7", "ratelimit-policy=7;w=1", "x-request-id=up-1", "content-length=42",
        ])
    }

    @Test func theProvidersRateLimitFieldsGoWhenGatehouseSetsItsOwn() {
        let fields = GatewayHTTP.responseHeaders(upstream, dropLength: true, replacingRateLimit: true)
        #expect(fields.map(\.name.canonicalName) == ["content-type", "x-request-id"])
    }
}
