import Foundation
import GatehouseCore
import Testing

/// `Helicone-RateLimit-Policy: <quota>;w=<seconds>[;u=request|cents][;s=user]`, parsed strictly:
/// a typo must be refused, never silently turned into "no limit".
@Suite("Rate limit policy header")
struct RateLimitPolicyTests {
    struct Accepted: Sendable, CustomTestStringConvertible {
        var text: String
        var policy: RateLimitPolicy
        var testDescription: String { text.debugDescription }
    }

    static let accepted: [Accepted] = [
        .init(text: "100;w=60", policy: .init(quota: 100, windowSeconds: 60)),
        .init(text: "1;w=1", policy: .init(quota: 1, windowSeconds: 1)),
        .init(text: "100;w=60;u=request", policy: .init(quota: 100, windowSeconds: 60, unit: .request)),
        .init(text: "500;w=3600;u=cents", policy: .init(quota: 500, windowSeconds: 3600, unit: .cents)),
        .init(text: "2.5;w=60;u=cents", policy: .init(quota: 2.5, windowSeconds: 60, unit: .cents)),
        .init(text: "10;w=60;s=user", policy: .init(quota: 10, windowSeconds: 60, perUser: true)),
        .init(text: "10;w=60;u=cents;s=user", policy: .init(quota: 10, windowSeconds: 60, unit: .cents, perUser: true)),
        .init(text: "10;s=user;u=request;w=60", policy: .init(quota: 10, windowSeconds: 60, perUser: true)),
        .init(text: " 100 ; w=60 ; s=user ", policy: .init(quota: 100, windowSeconds: 60, perUser: true)),
        .init(text: "2.0;w=60", policy: .init(quota: 2, windowSeconds: 60)),
        .init(text: "1000000000000;w=31622400", policy: .init(quota: 1e12, windowSeconds: 31_622_400)),
    ]

    @Test(arguments: accepted)
    func acceptsDocumentedForms(_ c: Accepted) throws {
        #expect(try RateLimitPolicy.parse(c.text) == c.policy)
    }

    @Test func acceptsASubstring() throws {
        let header = "x: 3;w=5"
        #expect(try RateLimitPolicy.parse(header.dropFirst(3)) == .init(quota: 3, windowSeconds: 5))
    }

    static let rejected: [String] = [
        "",  // empty
        " ",
        ";w=60",  // no quota
        "-5;w=60",  // negative
        "0;w=60",  // zero
        "+5;w=60",
        "abc;w=60",
        "1e3;w=60",
        "inf;w=60",
        "nan;w=60",
        "0x10;w=60",
        "1000000000001;w=60",  // quota above 1e12
        "100",  // w missing
        "100;",
        "100;u=request",
        "100;s=user",
        "100;w=0",  // w zero
        "100;w=-1",
        "100;w=",
        "100;w",
        "100;w=1.5",  // w not an integer
        "100;w=60s",
        "100;w=abc",
        "100;w=1e3",
        "100;w=31622401",  // longer than 366 days
        "100;w=99999999999999999999",
        "100;w=60;x=1",  // unknown parameter
        "100;W=60",
        "100;w=60;window=60",
        "100;w=60;w=30",  // duplicate
        "100;w=60;u=cents;u=cents",
        "100;w=60;s=user;s=user",
        "100;w=60;u=dollars",  // unknown unit
        "100;w=60;u=usd",
        "100;w=60;u=",
        "100;w=60;s=team",  // unknown scope
        "100;w=60;s=",
        "0.001;w=60;u=cents",  // below the smallest quota (would print in exponent form)
        "100;=w=60",  // empty parameter name before '=' (found by Fuzz/PolicyHeader)
        "100;==w=60",
        "100;w=60;=u=cents",
        "1.5;w=60",  // fractional request quota
        "1.5;w=60;u=request",
        "100;w=60;",  // trailing separator
        "100;;w=60",
        "100,w=60",
        "100;w=60" + String(repeating: " ", count: 200),  // overlong (though valid once trimmed)
    ]

    @Test(arguments: rejected)
    func rejectsMalformed(_ text: String) {
        #expect(throws: RateLimitPolicy.ParseError.self) { try RateLimitPolicy.parse(text) }
    }

    @Test func lengthLimitIsTwoHundredBytes() throws {
        // Padding that the parser trims: valid up to 200 bytes, refused above.
        let base = "1;w=60"
        let at200 = base + String(repeating: " ", count: 200 - base.utf8.count)
        #expect(at200.utf8.count == 200)
        #expect(try RateLimitPolicy.parse(at200) == .init(quota: 1, windowSeconds: 60))
        #expect(throws: RateLimitPolicy.ParseError.self) { try RateLimitPolicy.parse(at200 + " ") }
    }

    @Test func errorsHaveAReasonWithoutEchoingTheInput() {
        let secretish = "100;w=60;token=sk-secret-value"
        do {
            _ = try RateLimitPolicy.parse(secretish)
            Issue.record("accepted")
        } catch {
            #expect(!error.reason.isEmpty)
            #expect(!error.reason.contains("sk-secret-value"))
        }
    }
}
