import HummingbirdCore
import Logging
import NIOCore
import NIOSSL

/// A child channel that speaks TLS only and answers a plaintext HTTP request with a clear
/// `400` instead of letting the TLS handshake hang or fail with garbage.
///
/// A plaintext client on an HTTPS port otherwise sees either a reset or a binary alert, which
/// people misread as "server down". The first byte of a TLS connection is always a handshake
/// record (`0x16`), so one byte is enough to tell the two apart.
public struct HTTPSOnlyChannel<BaseChannel: ServerChildChannel>: ServerChildChannel {
    public typealias Value = BaseChannel.Value

    let baseChannel: BaseChannel
    let sslContext: NIOSSLContext

    public init(_ baseChannel: BaseChannel, sslContext: NIOSSLContext) {
        self.baseChannel = baseChannel
        self.sslContext = sslContext
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(PlaintextRefusalHandler())
            try sync.addHandler(NIOSSLServerHandler(context: self.sslContext))
        }.flatMap {
            self.baseChannel.setup(channel: channel, logger: logger)
        }
    }

    public func handle(value: BaseChannel.Value, logger: Logger) async {
        await self.baseChannel.handle(value: value, logger: logger)
    }
}

extension HTTPSOnlyChannel: HTTPChannelHandler where BaseChannel: HTTPChannelHandler {
    public var responder: HTTPChannelHandler.Responder { baseChannel.responder }
}

/// Looks at the first byte of a connection: a TLS handshake passes through untouched (and the
/// handler removes itself); anything else gets a plain `400` explaining that HTTPS is required.
final class PlaintextRefusalHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let tlsHandshakeRecord: UInt8 = 0x16
    static let refusal: String = {
        let body = #"{"error":{"type":"invalid_request","message":"This port speaks HTTPS only (TLS 1.3). Use https:// instead of http://.","request_id":null}}"#
        return "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
    }()

    private var decided = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if decided {
            context.fireChannelRead(data)
            return
        }
        let buffer = Self.unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else {
            return  // empty read; wait for the first real byte
        }
        decided = true
        if first == Self.tlsHandshakeRecord {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        let response = context.channel.allocator.buffer(string: Self.refusal)
        // Close once the refusal is written; the closure runs on this channel's event loop.
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(response)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
