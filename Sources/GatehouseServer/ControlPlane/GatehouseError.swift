import GatehouseCore

/// Errors that reach a user, through the admin API (as a status and JSON body) or the CLI (as
/// one line on stderr and an exit code). Messages are written for the user and never contain
/// secrets; they may contain ids, field names and non-secret values.
public enum GatehouseError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidRequest(String)
    case unauthenticated
    case forbidden(String)
    case notFound(String)
    case methodNotAllowed(String)
    case conflict(String)
    case payloadTooLarge(limit: Int)
    /// Broken body framing (invalid chunked encoding); the connection is closed after it.
    case malformedBody
    case tooManyRequests(String)
    case validation(field: String, message: String)
    case notInitialised(dataDir: String)
    case alreadyInitialised(dataDir: String)
    case vault(VaultError)
    case masterKeyMismatch(dataDir: String)
    case masterKeyInsideDataDir(path: String)
    case startup(String)
    case internalError

    public var description: String {
        switch self {
        case .invalidRequest(let m): m
        case .unauthenticated: "missing or invalid credentials"
        case .forbidden(let m): m
        case .notFound(let m): m
        case .methodNotAllowed(let m): m
        case .conflict(let m): m
        case .payloadTooLarge(let limit): "request body is larger than the limit of \(limit) bytes"
        case .malformedBody: "the request body's framing is invalid (bad chunked encoding)"
        case .tooManyRequests(let m): m
        case .validation(let field, let message): "\(field): \(message)"
        case .notInitialised(let dir): "\(dir) holds no Gatehouse installation; run `gatehouse init` or `gatehouse serve` first"
        case .alreadyInitialised(let dir): "\(dir) is already initialised"
        case .vault(let e): e.description
        case .masterKeyMismatch(let dir):
            "the master key does not match the data in \(dir) (a data key failed to unwrap); refusing to continue. Use the master key this installation was created with."
        case .masterKeyInsideDataDir(let path):
            "the master key file \(path) is inside the data directory; keep it elsewhere so a copy of the data alone cannot be decrypted"
        case .startup(let m): m
        case .internalError: "internal error"
        }
    }

    /// HTTP status for the admin API.
    public var status: Int {
        switch self {
        case .invalidRequest, .malformedBody: 400
        case .unauthenticated: 401
        case .forbidden: 403
        case .notFound: 404
        case .methodNotAllowed: 405
        case .conflict: 409
        case .payloadTooLarge: 413
        case .tooManyRequests: 429
        case .validation: 422
        default: 500
        }
    }

    /// The `type` of the JSON error body.
    public var type: String {
        switch self {
        case .invalidRequest, .malformedBody: "invalid_request"
        case .unauthenticated: "authentication_error"
        case .forbidden: "permission_denied"
        case .notFound: "not_found"
        case .methodNotAllowed: "method_not_allowed"
        case .conflict: "conflict"
        case .payloadTooLarge: "payload_too_large"
        case .tooManyRequests: "rate_limited"
        case .validation: "validation_error"
        default: "internal_error"
        }
    }

    /// Message safe to put in an HTTP response (internal details stay in the server log).
    public var publicMessage: String {
        status == 500 ? "internal error" : description
    }
}
