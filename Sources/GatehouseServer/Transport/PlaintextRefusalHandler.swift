import NIOCore
import NIOSSL

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
        let buffer = PlaintextRefusalHandler.unwrapInboundIn(data)
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
        context.writeAndFlush(PlaintextRefusalHandler.wrapOutboundOut(response)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
