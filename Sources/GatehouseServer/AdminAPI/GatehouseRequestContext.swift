import Hummingbird
import GatehouseCore
import NIOCore

/// Per-request state: our request id, the socket peer, and who is calling once authenticated.
public struct GatehouseRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// `req_` + 20 base62 characters, returned in `Gatehouse-Request-Id` and error bodies.
    public let requestID: String
    /// The TCP peer. (Trusted-proxy handling of `X-Forwarded-For` builds on this.)
    public let peerAddress: IPAddress?
    public var principal: Principal?
    /// The client address after trusted-proxy resolution (set once the organization is known).
    public var resolvedClientAddress: IPAddress?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.requestID = "req_" + Base62.random(count: 20)
        self.peerAddress = source.channel.remoteAddress?.ipAddress.flatMap { IPAddress($0) }
    }

    /// Admin bodies are small JSON documents.
    public var maxUploadSize: Int { AdminLimits.maxBodyBytes }

    public var clientIP: String { (resolvedClientAddress ?? peerAddress)?.description ?? "" }
}

/// Bounds on admin API input.
public enum AdminLimits {
    public static let maxBodyBytes = 64 * 1024
    public static let maxJSONDepth = 16
}
