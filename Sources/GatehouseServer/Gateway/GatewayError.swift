import Foundation
import HTTPTypes
import GatehouseCore
import NIOCore

/// Errors answered on `/v1/*`, in the OpenAI error shape
/// `{"error":{"message","type","code"}}` so that every OpenAI-compatible SDK raises the
/// matching exception. Messages never contain credentials.
public enum GatewayError: Error, Sendable, Equatable {
    case unauthenticated
    case forbiddenIP
    case modelNotAllowed
    case badJSON(String)
    case badPath
    case payloadTooLarge(limit: Int)
    /// The body's framing is broken (e.g. invalid chunked encoding): answered, then the
    /// connection is closed, since where the next request would start is unknown.
    case malformedBody
    case upstreamUnreachable
    case upstreamTimeout
    case internalError
    case badPolicy(String)
    case modelNotPriced
    case rateLimited(LimitLedger.Status, retryAfterSeconds: Int)
    case budgetExhausted(LimitLedger.Status, retryAfterSeconds: Int?)

    var status: HTTPResponse.Status {
        switch self {
        case .unauthenticated: .unauthorized
        case .forbiddenIP, .modelNotAllowed: .forbidden
        case .badJSON, .badPath, .badPolicy, .malformedBody: .badRequest
        case .modelNotPriced: .forbidden
        case .rateLimited, .budgetExhausted: .tooManyRequests
        case .payloadTooLarge: .contentTooLarge
        case .upstreamUnreachable: .badGateway
        case .upstreamTimeout: .gatewayTimeout
        case .internalError: .internalServerError
        }
    }

    var type: String {
        switch self {
        case .unauthenticated: "authentication_error"
        case .forbiddenIP, .modelNotAllowed: "permission_denied"
        case .badJSON, .badPath, .payloadTooLarge, .badPolicy, .malformedBody: "invalid_request_error"
        case .modelNotPriced: "permission_denied"
        case .rateLimited: "rate_limit_exceeded"
        case .budgetExhausted: "insufficient_quota"
        case .upstreamUnreachable, .upstreamTimeout: "upstream_error"
        case .internalError: "server_error"
        }
    }

    var code: String {
        switch self {
        case .unauthenticated: "invalid_api_key"
        case .forbiddenIP: "ip_not_allowed"
        case .modelNotAllowed: "model_not_allowed"
        case .badJSON: "invalid_json"
        case .badPath: "invalid_path"
        case .payloadTooLarge: "request_too_large"
        case .malformedBody: "malformed_body"
        case .upstreamUnreachable: "upstream_unreachable"
        case .upstreamTimeout: "upstream_timeout"
        case .internalError: "internal_error"
        case .badPolicy: "invalid_rate_limit_policy"
        case .modelNotPriced: "model_not_priced"
        case .rateLimited: "rate_limit_exceeded"
        case .budgetExhausted: "insufficient_quota"
        }
    }

    var message: String {
        switch self {
        case .unauthenticated: "Invalid Gatehouse proxy key. Pass a proxy key as a Bearer token or x-api-key."
        case .forbiddenIP: "This proxy key may not be used from your IP address."
        case .modelNotAllowed: "This proxy key may not use the requested model."
        case .badJSON(let why): "Request body is not valid JSON: \(why)."
        case .badPath: "Invalid request path."
        case .payloadTooLarge(let limit): "Request body is larger than the limit of \(limit) bytes."
        case .malformedBody: "The request body's framing is invalid (bad chunked encoding)."
        case .upstreamUnreachable: "The provider could not be reached."
        case .upstreamTimeout: "The provider did not answer in time."
        case .internalError: "Internal error."
        case .badPolicy(let why): "Invalid Helicone-RateLimit-Policy header: \(why)."
        case .modelNotPriced:
            "This proxy key has a budget or cost limit, and the request names no model with a known price, so its cost cannot be limited. Add the model to the pricing table (--pricing)."
        case .rateLimited(let status, let retry):
            "Rate limit exceeded (\(status.policy)). Retry after \(retry) s."
        case .budgetExhausted(let status, _):
            "Budget exhausted for this proxy key (\(status.policy))."
        }
    }

    /// The error answer: head (with `Content-Length`) and JSON body.
    func response(requestID: String) -> (head: HTTPResponse, body: ByteBuffer) {
        let body = JSONValue.object([
            "error": .object(["message": .string(Redactor.shared.redact(message)), "type": .string(type), "code": .string(code), "param": .null])
        ])
        let bytes = ByteBuffer(bytes: body.encoded())
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.contentLength] = String(bytes.readableBytes)
        headers[.gatehouseRequestID] = requestID
        if self == .unauthenticated { headers[.wwwAuthenticate] = "Bearer" }
        switch self {
        case .rateLimited(let status, let retry):
            headers[.retryAfter] = String(retry)
            status.apply(to: &headers)
        case .budgetExhausted(let status, let retry):
            if let retry { headers[.retryAfter] = String(retry) }
            status.apply(to: &headers)
        case .payloadTooLarge, .malformedBody:
            headers[.connection] = "close"  // the rest of the body is never read
        default: break
        }
        return (HTTPResponse(status: status, headerFields: headers), bytes)
    }
}

extension LimitLedger.Status {
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and `RateLimit-Policy`.
    var fields: [HTTPField] {
        [
            HTTPField(name: .rateLimitLimit, value: LimitLedger.formatNumber(limit)),
            HTTPField(name: .rateLimitRemaining, value: LimitLedger.formatNumber((remaining * 1_000_000).rounded(.down) / 1_000_000)),
            HTTPField(name: .rateLimitReset, value: String(resetSeconds)),
            HTTPField(name: .rateLimitPolicy, value: policy),
        ]
    }

    /// Sets the four fields, replacing any already there.
    func apply(to headers: inout HTTPFields) {
        for field in fields { headers[field.name] = field.value }
    }

    /// Appends the four fields: for a head that has none of them yet.
    func append(to headers: inout HTTPFields) {
        headers.append(contentsOf: fields)
    }
}

extension HTTPField.Name {
    static let rateLimitLimit = Self("RateLimit-Limit")!
    static let rateLimitRemaining = Self("RateLimit-Remaining")!
    static let rateLimitReset = Self("RateLimit-Reset")!
    static let rateLimitPolicy = Self("RateLimit-Policy")!
    static let heliconeRateLimitPolicy = Self("Helicone-RateLimit-Policy")!
}
