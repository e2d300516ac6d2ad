// The Swift floor: the least a TLS 1.3 reverse proxy built on Gatehouse's transport packages
// costs on this machine. SwiftNIO's event loops, NIOSSL (BoringSSL) for TLS, NIOHTTP1 (llhttp)
// on both sides, one kept-alive upstream connection per client connection on the client's own
// event loop, writes gathered into one TLS record per flush, and nothing else: no
// authentication, no limits, no usage parsing, no logging, no HTTPTypes conversion, no
// Hummingbird. Benchmarks/run measures it as the target `swift` next to nginx and Gatehouse, so
// the gap between nginx and Gatehouse splits into what the packages cost and what Gatehouse adds.
//
//   nio-floor --upstream 127.0.0.1:PORT --cert cert.pem --key key.pem [--port 0] [--threads N]
//             [--no-coalesce] [--http-types] [--hops N]
//
// `--http-types` puts NIOHTTPTypes' `HTTP1ToHTTPServerCodec` (what Hummingbird's HTTP/1 channel
// uses) in front of the proxy, which then works on `HTTPRequest`/`HTTPResponse` and converts
// to and from NIOHTTP1 for the upstream as Gatehouse does; `--hops N` adds N handlers that only
// pass every event on (Gatehouse has three between the codec and the gateway). Both exist to
// price those layers, not as a floor.
//
// Prints `nio-floor listening on https://127.0.0.1:PORT` once bound. Not a product: it forwards
// whatever it is sent, to one upstream, and keeps no bounds beyond NIOHTTP1's defaults.
import NIOCore
import HTTPTypes
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct Options {
    var port = 0
    var upstream: SocketAddress?
    var cert = ""
    var key = ""
    var threads = System.coreCount
    var coalesce = true
    var httpTypes = false
    var hops = 0

    static func parse(_ arguments: [String]) -> Options? {
        var options = Options()
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            switch flag {
            case "--no-coalesce": options.coalesce = false
            case "--http-types": options.httpTypes = true
            case "--port", "--upstream", "--cert", "--key", "--threads", "--hops":
                guard let value = rest.popFirst() else { return nil }
                switch flag {
                case "--port": guard let port = Int(value) else { return nil }; options.port = port
                case "--threads": guard let n = Int(value), n > 0 else { return nil }; options.threads = n
                case "--hops": guard let n = Int(value), n >= 0 else { return nil }; options.hops = n
                case "--cert": options.cert = value
                case "--key": options.key = value
                default:
                    let parts = value.split(separator: ":")
                    guard parts.count == 2, let port = Int(parts[1]),
                        let address = try? SocketAddress(ipAddress: String(parts[0]), port: port)
                    else { return nil }
                    options.upstream = address
                }
            default: return nil
            }
        }
        guard options.upstream != nil, !options.cert.isEmpty, !options.key.isEmpty else { return nil }
        return options
    }
}

/// Between the HTTP encoder and TLS: what is written between two flushes leaves as one buffer,
/// so one TLS record (up to 16 KiB), as Gatehouse's `WriteCoalescingHandler` does.
final class Coalescer: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    static let limit = 16 * 1024

    private var gathered: ByteBuffer?
    private var promise: EventLoopPromise<Void>?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        if var held = gathered, held.readableBytes + buffer.readableBytes <= Self.limit {
            gathered = nil  // `held` stays the only reference while it grows
            held.writeImmutableBuffer(buffer)
            gathered = held
        } else {
            release(context: context)
            gathered = buffer
        }
        if let promise {
            if let mine = self.promise { mine.futureResult.cascade(to: promise) } else { self.promise = promise }
        }
    }

    func flush(context: ChannelHandlerContext) {
        release(context: context)
        context.flush()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        release(context: context)
        context.close(mode: mode, promise: promise)
    }

    private func release(context: ChannelHandlerContext) {
        guard let held = gathered else { return }
        let promise = self.promise
        gathered = nil
        self.promise = nil
        context.write(wrapOutboundOut(held), promise: promise)
    }
}

/// How a proxy answers its client with what its upstream connection reads.
protocol UpstreamOwner: AnyObject {
    func received(_ part: HTTPClientResponsePart)
}

/// One client connection's own upstream connection: opened on the client's event loop at the
/// first request, kept while the client's connection is open (wrk keeps its connections, so
/// this is a pool with no lookups). Request parts sent before it is connected wait here; the
/// client is flushed after every upstream read, and closed when the upstream connection ends in
/// the middle of a response or cannot be opened (no 502 page: a benchmark sees the error).
final class UpstreamLink {
    let address: SocketAddress
    private let client: ChannelHandlerContext
    private unowned let owner: any UpstreamOwner
    private var upstream: UpstreamHandler?
    private var connecting = false
    private var closed = false
    private var waiting: [HTTPClientRequestPart] = []

    init(to address: SocketAddress, client: ChannelHandlerContext, owner: some UpstreamOwner) {
        self.address = address
        self.client = client
        self.owner = owner
    }

    func send(_ part: HTTPClientRequestPart) {
        if let upstream { return upstream.send(part) }
        waiting.append(part)
        guard !connecting else { return }
        connecting = true
        ClientBootstrap(group: client.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(to: address)
            .assumeIsolated()  // the connection belongs to this event loop
            .whenComplete { result in
                self.connecting = false
                guard !self.closed else {  // the client left meanwhile: leave its context alone
                    if case .success(let channel) = result { channel.close(promise: nil) }
                    return
                }
                guard case .success(let channel) = result else { return self.client.close(promise: nil) }
                do {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    let handler = UpstreamHandler(link: self)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    self.upstream = handler
                    for part in self.waiting { handler.send(part) }
                    self.waiting.removeAll()
                } catch {
                    channel.close(promise: nil)
                    self.client.close(promise: nil)
                }
            }
    }

    /// The client's connection is gone: so is the upstream one.
    func close() {
        closed = true
        upstream?.close()
        upstream = nil
    }

    // From the upstream connection (same event loop).

    func received(_ part: HTTPClientResponsePart) { owner.received(part) }

    func readComplete() { client.flush() }

    func upstreamClosed(_ handler: UpstreamHandler, midResponse: Bool) {
        guard upstream === handler else { return }
        upstream = nil
        if midResponse { client.close(promise: nil) }
    }
}

/// The floor's proxy: NIOHTTP1 parts in, the same parts out to the upstream and back.
final class ProxyHandler: ChannelInboundHandler, UpstreamOwner {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let upstreamAddress: SocketAddress
    private var context: ChannelHandlerContext?
    private var link: UpstreamLink?

    init(upstream: SocketAddress) { self.upstreamAddress = upstream }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        link = UpstreamLink(to: upstreamAddress, client: context, owner: self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        link?.close()
        link = nil
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(var head):
            head.headers.remove(name: "connection")  // hop by hop: the upstream connection is ours
            link?.send(.head(head))
        case .body(let buffer): link?.send(.body(.byteBuffer(buffer)))
        case .end(let trailers): link?.send(.end(trailers))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func received(_ part: HTTPClientResponsePart) {
        guard let context else { return }
        switch part {
        case .head(var head):
            head.headers.remove(name: "connection")
            head.headers.remove(name: "keep-alive")
            context.write(wrapOutboundOut(.head(head)), promise: nil)
        case .body(let buffer): context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        case .end(let trailers): context.write(wrapOutboundOut(.end(trailers)), promise: nil)
        }
    }
}

final class UpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    /// Weak: the client's side may be gone while this connection is still closing.
    private weak var link: UpstreamLink?
    private var context: ChannelHandlerContext?
    private var midResponse = false

    init(link: UpstreamLink) { self.link = link }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func send(_ part: HTTPClientRequestPart) {
        guard let context else { return }
        context.write(wrapOutboundOut(part), promise: nil)
        if case .end = part { context.flush() }
    }

    func close() { context?.close(promise: nil) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch part {
        case .head: midResponse = true
        case .end: midResponse = false
        case .body: break
        }
        link?.received(part)
    }

    func channelReadComplete(context: ChannelHandlerContext) { link?.readComplete() }

    func channelInactive(context: ChannelHandlerContext) {
        link?.upstreamClosed(self, midResponse: midResponse)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

/// `--http-types`: the same proxy on `HTTPTypes` parts, converting as Gatehouse does (request
/// fields to `HTTPHeaders` for the upstream, the upstream's `HTTPHeaders` to `HTTPFields`).
final class TypedProxyHandler: ChannelInboundHandler, UpstreamOwner {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    let upstreamAddress: SocketAddress
    private var context: ChannelHandlerContext?
    private var link: UpstreamLink?

    init(upstream: SocketAddress) { self.upstreamAddress = upstream }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        link = UpstreamLink(to: upstreamAddress, client: context, owner: self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        link?.close()
        link = nil
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            var headers = HTTPHeaders()
            headers.reserveCapacity(request.headerFields.count + 1)
            if let authority = request.authority { headers.add(name: "Host", value: authority) }
            for field in request.headerFields where field.name != .connection {
                headers.add(name: field.name.rawName, value: field.value)
            }
            link?.send(.head(HTTPRequestHead(
                version: .http1_1, method: HTTPMethod(rawValue: request.method.rawValue), uri: request.path ?? "/",
                headers: headers)))
        case .body(let buffer): link?.send(.body(.byteBuffer(buffer)))
        case .end: link?.send(.end(nil))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func received(_ part: HTTPClientResponsePart) {
        guard let context else { return }
        switch part {
        case .head(let head):
            var fields = HTTPFields()
            fields.reserveCapacity(head.headers.count)
            for (name, value) in head.headers {
                guard let name = HTTPField.Name(name), name != .connection, name != .transferEncoding else { continue }
                fields.append(HTTPField(name: name, value: value))
            }
            context.write(wrapOutboundOut(.head(HTTPResponse(status: .init(code: Int(head.status.code)), headerFields: fields))), promise: nil)
        case .body(let buffer): context.write(wrapOutboundOut(.body(buffer)), promise: nil)
        case .end: context.write(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

/// `--hops N`: a handler that passes every event on, as any handler in a pipeline does at least.
final class PassThrough: ChannelDuplexHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart
}

guard let options = Options.parse(Array(CommandLine.arguments.dropFirst())) else {
    print("usage: nio-floor --upstream HOST:PORT --cert CERT.pem --key KEY.pem [--port N] [--threads N] [--no-coalesce] [--http-types] [--hops N]")
    exit(2)
}

// As Gatehouse: TLS 1.3 only, HTTP/1.1 over ALPN, the same certificate (Benchmarks/run).
var tls = TLSConfiguration.makeServerConfiguration(
    certificateChain: try NIOSSLCertificate.fromPEMFile(options.cert).map { .certificate($0) },
    privateKey: .privateKey(try NIOSSLPrivateKey(file: options.key, format: .pem)))
tls.minimumTLSVersion = .tlsv13
tls.applicationProtocols = ["http/1.1"]
let sslContext = try NIOSSLContext(configuration: tls)

let upstream = options.upstream!
let coalesce = options.coalesce
let httpTypes = options.httpTypes
let hops = options.hops
let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
let server = try await ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            // As Hummingbird's HTTP/1 channel configures NIO's server pipeline for Gatehouse.
            let ops = channel.pipeline.syncOperations
            try ops.addHandler(NIOSSLServerHandler(context: sslContext))
            if coalesce { try ops.addHandler(Coalescer()) }
            try ops.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
                withEncoderConfiguration: .init(), withDecoderLimitConfiguration: .init())
            if httpTypes {
                try ops.addHandler(HTTP1ToHTTPServerCodec(secure: true))
                for _ in 0..<hops { try ops.addHandler(PassThrough()) }
                try ops.addHandler(TypedProxyHandler(upstream: upstream))
            } else {
                try ops.addHandler(ProxyHandler(upstream: upstream))
            }
        }
    }
    .bind(host: "127.0.0.1", port: options.port)
    .get()
print("nio-floor listening on https://127.0.0.1:\(server.localAddress?.port ?? options.port)")
fflush(nil)  // every stream: the script waits for this line on a pipe
try await server.closeFuture.get()
