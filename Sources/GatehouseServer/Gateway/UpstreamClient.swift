import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle

/// A request to a provider, built by the gateway. The URL's host always comes from the
/// stored provider key, never from the client.
public struct UpstreamRequest: Sendable {
    public var url: String
    public var method: String
    public var headers: [(String, String)]
    public var body: ByteBuffer?
    /// Deadline for the response head.
    public var headTimeout: Duration
}

/// The head of a provider response and its streamed body.
public struct UpstreamResponse<Body: AsyncSequence & Sendable>: Sendable where Body.Element == ByteBuffer {
    public var status: Int
    public var headers: [(String, String)]
    public var body: Body
}

/// How the gateway talks to providers. Behind a protocol so that async-http-client can be
/// replaced by a leaner client if the benchmark says so.
public protocol UpstreamClient: Sendable {
    associatedtype Body: AsyncSequence & Sendable where Body.Element == ByteBuffer
    func execute(_ request: UpstreamRequest) async throws -> UpstreamResponse<Body>
}

/// Timeout settings for upstream calls.
public struct UpstreamTimeouts: Sendable {
    public var connect: Duration = .seconds(5)
    /// Longest wait for the response head (a model may think for a while before answering).
    public var head: Duration = .seconds(600)
    /// Longest gap between two chunks of a streamed body.
    public var read: Duration = .seconds(300)
    public init() {}
}

/// async-http-client with proxy-appropriate settings: no redirects (the upstream must not
/// choose where our provider key goes next), no decompression (bytes pass through as sent),
/// a large per-host pool, and read timeouts for gaps inside streams.
public final class AsyncHTTPUpstream: UpstreamClient {
    public let client: HTTPClient
    public let timeouts: UpstreamTimeouts

    /// `connectionsPerHost`: at most one request is in flight per client connection (HTTP/1.1),
    /// so the server's connection cap is the most a provider host can ever need; fewer would
    /// queue requests behind others (and fail them after the connect timeout).
    public init(timeouts: UpstreamTimeouts = UpstreamTimeouts(), connectionsPerHost: Int = TransportLimits().maxConnections) {
        var config = HTTPClient.Configuration()
        config.redirectConfiguration = .disallow
        config.decompression = .disabled
        config.timeout = .init(connect: .init(timeouts.connect), read: .init(timeouts.read))
        var pool = HTTPClient.Configuration.ConnectionPool(idleTimeout: .seconds(60))
        pool.concurrentHTTP1ConnectionsPerHostSoftLimit = max(1, connectionsPerHost)
        config.connectionPool = pool
        config.httpVersion = .http1Only
        config.tracing.tracer = nil  // no span per request (2 % of CPU under load, for a no-op tracer)
        self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        self.timeouts = timeouts
    }

    public func execute(_ request: UpstreamRequest) async throws -> UpstreamResponse<HTTPClientResponse.Body> {
        var r = HTTPClientRequest(url: request.url)
        r.method = HTTPMethod(rawValue: request.method)
        r.headers = HTTPHeaders(request.headers)
        if let body = request.body {
            r.body = .bytes(body)
        }
        let response = try await client.execute(r, timeout: .init(request.headTimeout))
        return UpstreamResponse(
            status: Int(response.status.code),
            headers: response.headers.map { ($0.name, $0.value) },
            body: response.body)
    }

    public func shutdown() async throws {
        try await client.shutdown()
    }
}

/// Shuts the shared upstream client down when the application stops.
struct UpstreamClientService: Service {
    let upstream: AsyncHTTPUpstream

    func run() async throws {
        try? await gracefulShutdown()
        try? await upstream.shutdown()
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
