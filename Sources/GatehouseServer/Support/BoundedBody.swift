import Hummingbird
import NIOCore

/// Why a request body could not be read within its bound.
enum BodyReadFailure: Error {
    /// Declared or actual length over the limit.
    case tooLarge
    /// Broken framing (e.g. invalid chunked encoding).
    case malformed
}

extension Request {
    /// The whole body, at most `limit` bytes. A declared `Content-Length` over the limit is
    /// refused before any of the body is read; a framing error is told apart from size.
    /// Shared by the gateway and the admin API, which map the failure to their own errors.
    mutating func collectBody(limit: Int) async throws(BodyReadFailure) -> ByteBuffer {
        if let declared = headers[.contentLength].flatMap(Int.init), declared > limit { throw .tooLarge }
        do {
            return try await collectBody(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw .tooLarge
        } catch {
            throw .malformed
        }
    }
}
