import HTTPTypes
import Hummingbird

/// `Strict-Transport-Security` on every HTTPS response: browsers that reached Gatehouse once
/// over HTTPS never try plain HTTP to it again.
struct HSTSMiddleware: RouterMiddleware {
    typealias Context = GatehouseRequestContext

    static let value = "max-age=31536000"

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[.strictTransportSecurity] = Self.value
        return response
    }
}
