import Foundation
import HTTPTypes
import GatehouseCore
import NIOCore
import NIOHTTP1

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
    func response(requestID: String) -> (head: HTTPResponseHead, body: ByteBuffer) {
        let body = JSONValue.object([
            "error": .object(["message": .string(Redactor.shared.redact(message)), "type": .string(type), "code": .string(code), "param": .null])
        ])
        let bytes = ByteBuffer(bytes: body.encoded())
        var headers: [(String, String)] = [
            ("Content-Type", "application/json"), ("Content-Length", String(bytes.readableBytes)), (GatewayHTTP.requestIDName, requestID),
        ]
        if self == .unauthenticated { headers.append(("WWW-Authenticate", "Bearer")) }
        switch self {
        case .rateLimited(let status, let retry):
            headers.append(("Retry-After", String(retry)))
            status.append(to: &headers)
        case .budgetExhausted(let status, let retry):
            if let retry { headers.append(("Retry-After", String(retry))) }
            status.append(to: &headers)
        case .payloadTooLarge, .malformedBody:
            headers.append(("Connection", "close"))  // the rest of the body is never read
        default: break
        }
        let head = HTTPResponseHead(
            version: .http1_1, status: HTTPResponseStatus(statusCode: status.code, reasonPhrase: status.reasonPhrase), headers: HTTPHeaders(headers))
        return (head, bytes)
    }

    /// The connection is closed after this answer (its `Connection: close`).
    var closesConnection: Bool {
        switch self {
        case .payloadTooLarge, .malformedBody: true
        default: false
        }
    }
}

extension LimitLedger.Status {
    static let limitName = "RateLimit-Limit"
    static let remainingName = "RateLimit-Remaining"
    static let resetName = "RateLimit-Reset"
    static let policyName = "RateLimit-Policy"
    static let fieldNames = [limitName, remainingName, resetName, policyName]

    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and `RateLimit-Policy`,
    /// appended: for a head that has none of them yet.
    func append(to headers: inout [(String, String)]) {
        headers.append((Self.limitName, LimitLedger.formatNumber(limit)))
        headers.append((Self.remainingName, LimitLedger.formatNumber((remaining * 1_000_000).rounded(.down) / 1_000_000)))
        headers.append((Self.resetName, String(resetSeconds)))
        headers.append((Self.policyName, policy))
    }
}
