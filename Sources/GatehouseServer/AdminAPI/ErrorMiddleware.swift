import GatehouseCore
import Hummingbird
import HTTPTypes
import Logging
import NIOCore

/// Turns every error into the JSON error shape and stamps `Gatehouse-Request-Id` on every
/// response. Nothing else in the admin API formats errors.
///
/// Unknown errors become a bare `500 internal error`: their text may come from a library and
/// is only written to the server log, which never receives request bodies or credentials.
public struct ErrorMiddleware: RouterMiddleware {
    public typealias Context = GatehouseRequestContext

    let catalog: RouteCatalog?

    public init() { self.catalog = nil }

    init(catalog: RouteCatalog) { self.catalog = catalog }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as GatehouseError {
            if error.status == 500 {
                context.logger.error("request failed", metadata: ["request_id": "\(context.requestID)", "error": "\(error)"])
            }
            response = Self.errorResponse(error, requestID: context.requestID)
        } catch let error as HTTPResponseError where error.status == .notFound && !(catalog?.methods(for: request.uri.path).isEmpty ?? true) {
            let allowed = catalog!.methods(for: request.uri.path).map(\.rawValue)
            response = Self.errorResponse(
                .methodNotAllowed("method \(Self.safeMethod(request.method.rawValue)) is not allowed here; use \(allowed.joined(separator: ", "))"),
                requestID: context.requestID)
            response.headers[.allow] = allowed.joined(separator: ", ")
        } catch let error as HTTPResponseError {
            let status = error.status
            let mapped: GatehouseError =
                switch status.code {
                case 404: .notFound("no route for \(request.method.rawValue) \(Self.safePath(request.uri.path))")
                case 405: .methodNotAllowed("method \(Self.safeMethod(request.method.rawValue)) is not allowed here")
                case 413: .payloadTooLarge(limit: AdminLimits.maxBodyBytes)
                case 400..<500: .invalidRequest("bad request")
                default: .internalError
                }
            response = Self.errorResponse(mapped, requestID: context.requestID)
        } catch {
            context.logger.error(
                "request failed", metadata: ["request_id": "\(context.requestID)", "error_type": "\(type(of: error))"])
            response = Self.errorResponse(.internalError, requestID: context.requestID)
        }
        response.headers[.gatehouseRequestID] = context.requestID
        return response
    }

    static func errorResponse(_ error: GatehouseError, requestID: String) -> Response {
        let body = JSONValue.object([
            "error": .object([
                "type": .string(error.type), "message": .string(Redactor.shared.redact(error.publicMessage)), "request_id": .string(requestID),
            ])
        ])
        var response = Response.json(body, status: .init(code: error.status))
        // The rest of an oversized body is never read: close instead of draining it.
        if error.status == 413 || error == .malformedBody { response.headers[.connection] = "close" }
        return response
    }

    static func safeMethod(_ m: String) -> String {
        m.count <= 20 && m.allSatisfy({ $0.isLetter }) ? m : "(invalid)"
    }

    /// A path for an error message: any segment that is not a route word or one of our ids is
    /// redacted (it could be a pasted secret).
    static func safePath(_ path: String) -> String {
        String(AdminAuthMiddleware.auditPath(path).prefix(120))
    }
}

extension HTTPField.Name {
    static let gatehouseRequestID = Self("Gatehouse-Request-Id")!
}

extension Response {
    /// A JSON response with `Cache-Control: no-store` (admin data must not sit in caches).
    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        let data = value.encoded()
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
