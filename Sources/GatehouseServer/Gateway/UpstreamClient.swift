import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// Timeout settings for upstream calls.
public struct UpstreamTimeouts: Sendable {
    public var connect: Duration = .seconds(5)
    /// Longest wait for the response head (a model may think for a while before answering).
    public var head: Duration = .seconds(600)
    /// Longest gap between two chunks of a streamed body.
    public var read: Duration = .seconds(300)
    public init() {}
}

/// Where a provider key's requests go: parsed once from its stored base URL (validated when
/// the key was stored: http(s), a host, an optional port and path, nothing else).
struct UpstreamTarget: Sendable, Hashable {
    let tls: Bool
    let host: String
    let port: Int
    /// The `Host` header: the host, with the port when it is not the scheme's default.
    let hostHeader: String
    /// The base URL's path (`""` or `/prefix`), put in front of the client's `/v1/...`.
    let pathPrefix: String

    init?(baseURL: String) {
        guard let components = URLComponents(string: baseURL), let scheme = components.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = Self.plainHost(of: components)
        else { return nil }
        self.tls = scheme == "https"
        let defaultPort = tls ? 443 : 80
        self.port = components.port ?? defaultPort
        guard (1...65535).contains(port) else { return nil }
        // URLComponents gives IPv6 literals without their brackets.
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        self.host = bare
        let named = bare.contains(":") ? "[\(bare)]" : bare
        self.hostHeader = port == defaultPort ? named : "\(named):\(port)"
        var prefix = components.percentEncodedPath
        while prefix.hasSuffix("/") { prefix.removeLast() }
        self.pathPrefix = prefix
    }

    /// The URL's host when it is written plainly: no percent-encoding (`URLComponents` decodes
    /// it, and the decoded text becomes the `Host` header and what the resolver is asked), and a
    /// DNS name (letters, digits, `-`, `_`, `.`) or a bracketed IPv6 literal (hex digits, `:`
    /// and `.`): nothing that could break a `Host` header or a resolver query. Checked when a
    /// base URL is stored and again when it is used (rows stored before the check).
    static func plainHost(of components: URLComponents) -> String? {
        guard let host = components.host, components.percentEncodedHost == host, isPlainHost(host) else { return nil }
        return host
    }

    private static func isPlainHost(_ host: String) -> Bool {
        let bytes = Array(host.utf8)
        guard !bytes.isEmpty, bytes.count <= 253 + 2 else { return false }
        func isAlnum(_ b: UInt8) -> Bool {
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
                || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
        }
        if bytes.first == UInt8(ascii: "[") {
            guard bytes.count > 2, bytes.last == UInt8(ascii: "]") else { return false }
            return bytes.dropFirst().dropLast().allSatisfy { b in
                b == UInt8(ascii: ":") || b == UInt8(ascii: ".") || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
                    || (b | 0x20 >= UInt8(ascii: "a") && b | 0x20 <= UInt8(ascii: "f"))
            }
        }
        return bytes.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") }
    }

    /// SNI only for names, never for address literals.
    var serverName: String? {
        if host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) { return nil }
        return host
    }
}

/// Opens and pools connections to providers. Each event loop has its own pool, and a client's
/// request is forwarded on a connection of the client's own event loop: no thread hop, no lock
/// on the way. Redirects are never followed (the upstream must not choose where the provider key
/// goes next) and bodies pass through as sent (no decompression).
public final class UpstreamConnector: Sendable {
    let timeouts: UpstreamTimeouts
    private let tlsContext: NIOSSLContext
    private let pools = Mutex<[ObjectIdentifier: UpstreamPool]>([:])

    /// `extraRoots`: CA certificates trusted for providers' HTTPS besides the system's own
    /// (`serve --upstream-ca-file`).
    init(timeouts: UpstreamTimeouts, extraRoots: [NIOSSLCertificate] = []) throws {
        self.timeouts = timeouts
        var config = TLSConfiguration.makeClientConfiguration()
        config.minimumTLSVersion = .tlsv12
        config.applicationProtocols = ["http/1.1"]
        if !extraRoots.isEmpty { config.additionalTrustRoots = [.certificates(extraRoots)] }
        do {
            self.tlsContext = try NIOSSLContext(configuration: config)
        } catch {
            throw GatehouseError.startup("cannot set up TLS for provider connections (trusted CA certificates)")
        }
    }

    /// The pool of `loop`; call on `loop`.
    func pool(on loop: any EventLoop) -> UpstreamPool {
        pools.withLock { pools in
            let id = ObjectIdentifier(loop)
            if let pool = pools[id] { return pool }
            let pool = UpstreamPool(loop: loop, connector: self)
            pools[id] = pool
            return pool
        }
    }

    /// Closes every pooled connection (at shutdown).
    func closeAll() {
        for pool in pools.withLock({ Array($0.values) }) {
            pool.loop.execute { pool.closeAll() }
        }
    }

    fileprivate func connect(_ target: UpstreamTarget, on loop: any EventLoop) -> EventLoopFuture<any Channel> {
        let tls = target.tls ? tlsContext : nil
        return ClientBootstrap(group: loop)
            .connectTimeout(TimeAmount(timeouts.connect))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls {
                        try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: target.serverName))
                        // The request's head and body in one record, as on the client side.
                        try sync.addHandler(WriteCoalescingHandler())
                    }
                    // No second header validation on the way out (~13 k instructions a request):
                    // every field sent is valid by construction. Client fields come from
                    // `HTTPFields` (names are tokens; `HTTPField(name:value:)` turns bytes not
                    // allowed in a value, CR, LF and NUL among them, into spaces), the provider
                    // secret is printable ASCII without spaces (`Validation.providerSecret`,
                    // checked when stored), `Host` comes from a validated base URL, and the rest
                    // are Gatehouse's own constants. See docs/transport.md.
                    try sync.addHTTPClientHandlers(enableOutboundHeaderValidation: false)
                    try sync.addHandler(UpstreamConnection(target: target))
                }
            }
            .connect(host: target.host, port: target.port)
    }
}

enum UpstreamFailure: Error {
    case closedEarly
}

/// The idle upstream connections of one event loop, most recently used first out. Used only
/// on its loop.
final class UpstreamPool: @unchecked Sendable {
    let loop: any EventLoop
    unowned let connector: UpstreamConnector
    private var idle: [UpstreamTarget: [UpstreamConnection]] = [:]
    /// An idle connection older than this is closed rather than reused.
    static let idleTimeout: TimeAmount = .seconds(60)
    static let maxIdlePerTarget = 1024

    init(loop: any EventLoop, connector: UpstreamConnector) {
        self.loop = loop
        self.connector = connector
    }

    /// A connection to `target`: a pooled one (`reused`) or a new one. `done` runs on the loop.
    func acquire(
        _ target: UpstreamTarget, fresh: Bool, _ done: @escaping (Result<UpstreamConnection, any Error>, _ reused: Bool) -> Void
    ) {
        loop.preconditionInEventLoop()
        if !fresh {
            let now = NIODeadline.now()
            while let connection = idle[target]?.popLast() {
                if connection.isUsable && now - connection.idleSince < Self.idleTimeout {
                    done(.success(connection), true)
                    return
                }
                connection.close()
            }
        }
        connector.connect(target, on: loop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                do {
                    let connection = try channel.pipeline.syncOperations.handler(type: UpstreamConnection.self)
                    connection.pool = self
                    done(.success(connection), false)
                } catch {
                    channel.close(promise: nil)
                    done(.failure(error), false)
                }
            case .failure(let error):
                done(.failure(error), false)
            }
        }
    }

    /// A connection whose exchange completed cleanly goes back to the pool.
    func release(_ connection: UpstreamConnection) {
        guard connection.isUsable else {
            connection.close()
            return
        }
        connection.idleSince = .now()
        var list = idle[connection.target] ?? []
        // The oldest are at the front: close those that waited too long, and any over the cap.
        while let oldest = list.first, list.count >= Self.maxIdlePerTarget || connection.idleSince - oldest.idleSince >= Self.idleTimeout {
            list.removeFirst()
            oldest.close()
        }
        list.append(connection)
        idle[connection.target] = list
    }

    /// A pooled connection the provider closed.
    func remove(_ connection: UpstreamConnection) {
        guard var list = idle[connection.target], let index = list.firstIndex(where: { $0 === connection }) else { return }
        list.remove(at: index)
        idle[connection.target] = list.isEmpty ? nil : list
    }

    func closeAll() {
        let all = idle.values.flatMap { $0 }
        idle = [:]
        for connection in all { connection.close() }
    }
}

/// What an upstream connection reports to the exchange using it (on the same event loop).
protocol UpstreamDelegate: AnyObject {
    func upstreamHead(_ head: HTTPResponseHead, from connection: UpstreamConnection)
    func upstreamBody(_ buffer: ByteBuffer, from connection: UpstreamConnection)
    func upstreamEnd(from connection: UpstreamConnection)
    func upstreamReadComplete(from connection: UpstreamConnection)
    /// Closed or failed before the end of the response.
    func upstreamFailed(_ error: (any Error)?, from connection: UpstreamConnection)
    /// Whether the client can take more bytes now (reading from the provider waits otherwise).
    var clientWritable: Bool { get }
}

/// One HTTP/1.1 connection to a provider, carrying one exchange at a time.
final class UpstreamConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let target: UpstreamTarget
    weak var pool: UpstreamPool?
    var idleSince = NIODeadline.now()
    private var context: ChannelHandlerContext?
    private var delegate: (any UpstreamDelegate)?
    private var keepAlive = true
    private var requestSent = false
    private var pendingRead = false
    private var informational = false
    /// Any byte of a response seen (a reused connection that closes before one may be retried).
    private(set) var receivedAny = false

    init(target: UpstreamTarget) { self.target = target }

    var isUsable: Bool { context?.channel.isActive ?? false && keepAlive }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// Sends one request; the answer goes to `delegate`.
    func send(method: String, uri: String, headers: [(String, String)], body: ByteBuffer?, to delegate: any UpstreamDelegate) {
        guard let context else {
            delegate.upstreamFailed(UpstreamFailure.closedEarly, from: self)
            return
        }
        self.delegate = delegate
        keepAlive = true
        requestSent = false
        receivedAny = false
        // Built from a list: `HTTPHeaders.add` checks every name for non-ASCII bytes again;
        // these are llhttp's tokens and our constants.
        var fields: [(String, String)] = []
        fields.reserveCapacity(headers.count + 2)
        fields.append(("Host", target.hostHeader))
        fields.append(contentsOf: headers)
        if let body {
            fields.append(("Content-Length", String(body.readableBytes)))
        } else if method != "GET" && method != "HEAD" {
            fields.append(("Content-Length", "0"))
        }
        let head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: uri, headers: HTTPHeaders(fields))
        context.write(UpstreamConnection.wrapOutboundOut(.head(head)), promise: nil)
        if let body { context.write(UpstreamConnection.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        let sent = context.eventLoop.makePromise(of: Void.self)
        sent.futureResult.assumeIsolated().whenSuccess { [weak self] in self?.requestSent = true }
        context.writeAndFlush(UpstreamConnection.wrapOutboundOut(.end(nil)), promise: sent)
    }

    /// The response ended: back to the pool if the request went out whole and the provider
    /// keeps the connection alive, else closed.
    func finish() {
        delegate = nil
        pendingRead = false
        if requestSent && keepAlive, let pool {
            pool.release(self)
            // Keep reading while idle, so that a provider's close is noticed.
            context?.read()
        } else {
            close()
        }
    }

    func close() {
        delegate = nil
        keepAlive = false
        context?.close(promise: nil)
    }

    /// The client can take bytes again.
    func resumeReading() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if let delegate, !delegate.clientWritable {
            pendingRead = true
        } else {
            context.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        receivedAny = true
        switch UpstreamConnection.unwrapInboundIn(data) {
        case .head(let head):
            if !head.isKeepAlive { keepAlive = false }
            if (100..<200).contains(head.status.code) && head.status.code != 101 {
                informational = true  // `100 Continue` and friends: not the answer
                return
            }
            delegate?.upstreamHead(head, from: self)
        case .body(let buffer):
            delegate?.upstreamBody(buffer, from: self)
        case .end:
            if informational {
                informational = false
                return
            }
            delegate?.upstreamEnd(from: self)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete(from: self)
    }

    func channelInactive(context: ChannelHandlerContext) {
        keepAlive = false
        pool?.remove(self)
        let delegate = self.delegate
        self.delegate = nil
        delegate?.upstreamFailed(nil, from: self)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        keepAlive = false
        let delegate = self.delegate
        self.delegate = nil
        delegate?.upstreamFailed(error, from: self)
        context.close(promise: nil)
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// Closes the pooled provider connections when the application stops.
struct UpstreamPoolService: Service {
    let connector: UpstreamConnector

    func run() async throws {
        try? await gracefulShutdown()
        connector.closeAll()
    }
}
