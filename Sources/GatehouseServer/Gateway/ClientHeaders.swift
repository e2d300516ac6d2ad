import Foundation
import NIOHTTP1

/// What the gateway reads of a request's header fields, in one pass over them at the head:
/// the credential, the declared length and type, the client's rate-limit policy, Helicone
/// metadata, `X-Forwarded-For`, and the fields that may go on to the provider. A field given
/// more than once is one value joined with `, ` (as `HTTPFields` joins it), so two
/// `Authorization` headers never authenticate as either one.
struct ClientHeaders {
    private(set) var authorization: String?
    private(set) var apiKey: String?
    private(set) var heliconeAuth: String?
    private(set) var contentLength: String?
    private(set) var contentType: String?
    private(set) var rateLimitPolicy: String?
    private(set) var forwardedFor: [String] = []
    private(set) var metadata = RequestMetadata()
    /// The fields that may be forwarded, in order: the name as the client wrote it, the value,
    /// and the name lowercased.
    private var forwardable: [(name: String, value: String, lower: String)] = []
    /// Names a `Connection` field lists (hop-by-hop for this request).
    private var connectionListed: [String] = []

    init(_ headers: HTTPHeaders) {
        forwardable.reserveCapacity(headers.count)
        for (name, value) in headers {
            let lower = GatewayHTTP.lowercasedName(name)
            switch lower {
            case "authorization": Self.join(value, into: &authorization)
            case "x-api-key": Self.join(value, into: &apiKey)
            case "helicone-auth": Self.join(value, into: &heliconeAuth)
            case "content-length": Self.join(value, into: &contentLength)
            case "content-type":
                Self.join(value, into: &contentType)
                forwardable.append((name, value, lower))
            case "helicone-ratelimit-policy": Self.join(value, into: &rateLimitPolicy)
            case "x-forwarded-for": forwardedFor.append(value)
            case "connection":
                for token in value.split(separator: ",") {
                    connectionListed.append(GatewayHTTP.lowercasedName(token.trimmingCharacters(in: .whitespaces)))
                }
            default:
                if lower.hasPrefix("helicone-") {
                    metadata.read(lowercasedName: lower, value: value)
                } else if !GatewayHTTP.droppedRequestHeaders.contains(lower), !lower.hasPrefix("gatehouse-"), !lower.hasPrefix("proxy-") {
                    forwardable.append((name, value, lower))
                }
            }
        }
    }

    /// The proxy key from `Authorization: Bearer`, `x-api-key` or `Helicone-Auth: Bearer`.
    var credential: Substring? {
        let bearer = AdminAuthMiddleware.bearerToken(authorization)
        if let bearer, bearer.utf8.starts(with: "gate_".utf8) { return bearer }
        if let apiKey, !apiKey.isEmpty { return Substring(apiKey) }
        if let token = AdminAuthMiddleware.bearerToken(heliconeAuth) { return token }
        return bearer
    }

    /// The client's fields as sent to the provider (hop-by-hop, credentials, `Helicone-*`,
    /// `Gatehouse-*`, `Proxy-*` and what `Connection` lists left out), then the provider's
    /// defaults the client did not send, then the provider credential. The values are as
    /// llhttp accepted them: it refuses a request whose field names are not tokens or whose
    /// values hold control characters (CR, LF, NUL…), so every field sent is valid.
    func forwardHeaders(adapter: ProviderAdapter, secret: String) -> [(String, String)] {
        var out: [(String, String)] = []
        out.reserveCapacity(forwardable.count + 2)
        var names: [String] = []
        for field in forwardable where !connectionListed.contains(field.lower) {
            out.append((field.name, field.value))
            names.append(field.lower)
        }
        out.append(contentsOf: adapter.defaultHeaders(present: { names.contains($0) }))
        out.append(contentsOf: adapter.authHeaders(secret: secret))
        return out
    }

    private static func join(_ value: String, into slot: inout String?) {
        slot = slot.map { $0 + ", " + value } ?? value
    }
}
