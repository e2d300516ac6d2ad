import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOSSL
import Synchronization

/// Bounds on what one client can hold of the server: connections, time to send a request head,
/// idle keep-alive time, header and body sizes. Every value is a `gatehouse serve` option; the
/// defaults are safe for a gateway in front of LLM APIs (see `docs/transport.md`).
public struct TransportLimits: Sendable, Equatable {
    /// Open connections at once; connections over the cap are closed as soon as they are accepted.
    public var maxConnections = 4096
    /// From the first byte of a request to the end of its head. A slow sender is answered
    /// `408` and disconnected.
    public var headerTimeout: Duration = .seconds(10)
    /// A connection with no request in progress is closed after this long (keep-alive idle,
    /// and a connection that never sends a complete head).
    public var idleTimeout: Duration = .seconds(60)
    /// The request line and all headers together; a single header field has the same bound.
    public var maxHeaderBytes = 32 * 1024
    /// At most this many header fields.
    public var maxHeaderCount = 200
    /// The body of a gateway request (`/v1/*`); admin API bodies have their own fixed 64 KiB.
    public var maxBodyBytes = GatewayLimits.maxBodyBytes
    /// Nesting depth of a gateway JSON body (deeper: `400` before any parser runs).
    public var maxJSONDepth = GatewayLimits.maxJSONDepth

    public init() {}
}

/// The TLS context used for new connections, replaceable at run time (`SIGHUP`): connections
/// already open keep the context they were accepted with, so a reload drops nobody.
public final class TLSContextSource: Sendable {
    public let certificatePath: String
    public let privateKeyPath: String
    private let current: Mutex<NIOSSLContext>

    public init(certificatePath: String, privateKeyPath: String) throws {
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
        self.current = Mutex(try Self.load(certificatePath: certificatePath, privateKeyPath: privateKeyPath))
    }

    /// The context for a connection accepted now.
    public var context: NIOSSLContext { current.withLock { $0 } }

    /// Re-reads the certificate and key. On any error the current context stays in use.
    public func reload() throws {
        let fresh = try Self.load(certificatePath: certificatePath, privateKeyPath: privateKeyPath)
        current.withLock { $0 = fresh }
    }

    static func load(certificatePath: String, privateKeyPath: String) throws -> NIOSSLContext {
        let config = try GatehouseApp.tlsConfiguration(certificatePath: certificatePath, privateKeyPath: privateKeyPath)
        do {
            return try NIOSSLContext(configuration: config)
        } catch {
            throw GatehouseError.startup("the TLS certificate and key cannot be used together")
        }
    }
}

/// Counts open connections against ``TransportLimits/maxConnections``.
final class ConnectionGate: Sendable {
    let limit: Int
    private let open = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    /// `true` if the connection may stay; every `true` must be paired with ``release()``.
    func admit() -> Bool {
        if open.add(1, ordering: .relaxed).newValue <= limit { return true }
        open.subtract(1, ordering: .relaxed)
        return false
    }

    func release() { open.subtract(1, ordering: .relaxed) }
}

/// Every accepted connection goes through here: the connection cap, then (with TLS) the
/// plaintext refusal and the TLS handler, then the header deadline, then Hummingbird's HTTP/1
/// pipeline with its header size limits, with the gateway (``GatewayHandler``) in front of
/// the router.
public struct GatehouseChannel: ServerChildChannel, HTTPChannelHandler {
    public typealias Value = HTTP1Channel.Value

    let base: HTTP1Channel
    let tls: TLSContextSource?
    let limits: TransportLimits
    let gate: ConnectionGate
    let gateway: GatewayEngine?

    public init(
        responder: @escaping HTTPChannelHandler.Responder, tls: TLSContextSource?, limits: TransportLimits, gateway: GatewayEngine?
    ) {
        // With the gateway, its handler keeps the idle timeout for every request (Hummingbird's
        // state handler never sees the gateway's requests).
        let configuration = HTTP1Channel.Configuration(
            additionalChannelHandlers: [RequestBoundaryHandler(hsts: tls != nil)],  // an autoclosure: one per connection
            idleTimeout: gateway == nil ? TimeAmount(limits.idleTimeout) : nil,
            httpDecoderConfiguration: .init(
                maxHeaderFieldSize: limits.maxHeaderBytes, maxHeaderListSize: limits.maxHeaderBytes,
                maxHeaderFieldCount: limits.maxHeaderCount))
        self.base = HTTP1Channel(responder: responder, configuration: configuration)
        self.tls = tls
        self.limits = limits
        self.gate = ConnectionGate(limit: limits.maxConnections)
        self.gateway = gateway
    }

    public var responder: HTTPChannelHandler.Responder { base.responder }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let admitted = gate.admit()
        if admitted {
            let gate = self.gate
            channel.closeFuture.whenComplete { _ in gate.release() }
        }
        let headerTimeout = TimeAmount(limits.headerTimeout)
        return channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            if let tls {
                try sync.addHandler(PlaintextRefusalHandler())
                try sync.addHandler(NIOSSLServerHandler(context: tls.context))
                try sync.addHandler(WriteCoalescingHandler())
            }
            try sync.addHandler(HeaderDeadlineHandler(timeout: headerTimeout))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }.flatMapThrowing { [idleTimeout = TimeAmount(limits.idleTimeout)] value in
            // The gateway answers `/v1/*` on the event loop, right after NIO's HTTP/1 decoder
            // and before Hummingbird's `HTTPTypes` codec (see `GatewayHandler`).
            if let gateway {
                let sync = channel.pipeline.syncOperations
                let codec = try sync.handler(type: HTTP1ToHTTPServerCodec.self)
                try sync.addHandler(GatewayHandler(engine: gateway, hsts: tls != nil, idleTimeout: idleTimeout), position: .before(codec))
            }
            return value
        }.map { value in
            // Over the cap: closed at once. The pipeline is set up anyway so that Hummingbird
            // sees an ordinary (already closed) connection.
            if !admitted { channel.close(promise: nil) }
            return value
        }
    }

    public func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// Bytes level (after TLS, before the HTTP decoder): starts the header clock at the first byte
/// of a request and closes the connection with `408` when the head is not complete in time.
/// ``RequestBoundaryHandler`` (HTTP parts level) tells it when a head is complete and when a
/// response has ended. A head that arrives within one read never starts a timer.
final class HeaderDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State { case idle, readingHead, inRequest }

    static let timeoutResponse: String = {
        let body = #"{"error":{"type":"request_timeout","message":"The request head was not received in time.","request_id":null}}"#
        return "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
    }()

    let timeout: TimeAmount
    private var state = State.idle
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimer()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimer()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let startsHead = state == .idle && HeaderDeadlineHandler.unwrapInboundIn(data).readableBytes > 0
        if startsHead { state = .readingHead }
        context.fireChannelRead(data)
        // Still inside the head after the decoder saw these bytes: start the clock.
        if startsHead, state == .readingHead, timer == nil {
            timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
                self?.expired()
            }
        }
    }

    /// A complete request head was decoded.
    func headReceived() {
        cancelTimer()
        state = .inRequest
    }

    /// A response was written to the end: the next byte starts a new head.
    func responseEnded() {
        if state == .inRequest { state = .idle }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
    }

    private func expired() {
        timer = nil
        guard state == .readingHead, let context else { return }
        let channel = context.channel
        context.writeAndFlush(HeaderDeadlineHandler.wrapOutboundOut(channel.allocator.buffer(string: Self.timeoutResponse))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

/// HTTP parts level, for the router's requests (the gateway's never reach it: ``GatewayHandler``
/// does the same for its own): reports request heads and response ends to
/// ``HeaderDeadlineHandler``, closes the connection after a response that says
/// `Connection: close` (e.g. a `413` sent before the body was read: the rest of that body is
/// never read), and over TLS stamps `Strict-Transport-Security` on every response head that
/// passes (browsers that reached Gatehouse once over HTTPS never try plain HTTP to it again).
final class RequestBoundaryHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    static let hstsName = "Strict-Transport-Security"
    static let hstsValue = "max-age=31536000"

    private var deadline: HeaderDeadlineHandler?
    private var closeAfterResponse = false
    private let hsts: Bool

    init(hsts: Bool) { self.hsts = hsts }

    func handlerAdded(context: ChannelHandlerContext) {
        deadline = try? context.pipeline.syncOperations.handler(type: HeaderDeadlineHandler.self)
    }

    func handlerRemoved(context: ChannelHandlerContext) { deadline = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = RequestBoundaryHandler.unwrapInboundIn(data) { deadline?.headReceived() }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch RequestBoundaryHandler.unwrapOutboundIn(data) {
        case .head(var head):
            // One pass over the fields, no joined strings. A head that already carries our HSTS
            // value passes as it is: rewriting it would copy every field.
            var hstsFields = 0
            var hstsOurs = false
            for field in head.headerFields {
                if field.name == .connection {
                    if field.value.lowercased() == "close" { closeAfterResponse = true }
                } else if hsts, field.name == .strictTransportSecurity {
                    hstsFields += 1
                    hstsOurs = field.value == Self.hstsValue
                }
            }
            if !hsts || (hstsFields == 1 && hstsOurs) {
                context.write(data, promise: promise)
            } else {
                head.headerFields[.strictTransportSecurity] = Self.hstsValue
                context.write(RequestBoundaryHandler.wrapOutboundOut(.head(head)), promise: promise)
            }
        case .body:
            context.write(data, promise: promise)
        case .end:
            deadline?.responseEnded()
            if closeAfterResponse {
                let channel = context.channel
                context.writeAndFlush(data).whenComplete { result in
                    promise?.completeWith(result)
                    channel.close(promise: nil)
                }
            } else {
                context.write(data, promise: promise)
            }
        }
    }
}
