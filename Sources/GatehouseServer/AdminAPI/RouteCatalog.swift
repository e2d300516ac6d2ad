import HTTPTypes
import Synchronization

/// The admin routes as registered, so that a known path with the wrong method is answered
/// `405 Method Not Allowed` with an `Allow` header instead of `404`.
final class RouteCatalog: Sendable {
    private let routes = Mutex<[(method: HTTPRequest.Method, segments: [Substring])]>([])

    func add(_ method: HTTPRequest.Method, _ path: String) {
        let segments = path.split(separator: "/")
        routes.withLock { $0.append((method, segments)) }
    }

    /// Methods registered for a route matching `path` (`:name` segments match anything).
    func methods(for path: String) -> [HTTPRequest.Method] {
        let parts = path.split(separator: "/")
        return routes.withLock { all in
            all.filter { route in
                route.segments.count == parts.count
                    && zip(route.segments, parts).allSatisfy { $0.first == ":" || $0 == $1 }
            }.map(\.method)
        }
    }
}

extension RouterGroupRegistration {
    /// Registers `path` under `/api/` in the catalog.
    static func record(_ catalog: RouteCatalog?, _ method: HTTPRequest.Method, _ path: String) {
        catalog?.add(method, "/api/" + path)
    }
}

enum RouterGroupRegistration {}
