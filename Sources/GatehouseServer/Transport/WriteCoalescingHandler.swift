import NIOCore

/// Between the HTTP encoder and TLS: the writes made between two flushes leave as one buffer.
///
/// NIO's HTTP/1 encoder writes a response head, each body part, and — for chunked bodies — each
/// chunk's size line and closing CRLF as separate buffers, and `NIOSSLHandler` turns every
/// buffer into its own TLS record: a streamed answer of six events became nineteen records, each
/// with its own AEAD seal, header and tag, and its own decrypt at the client. Gathered here, one
/// flush is one record (up to ``limit`` bytes per record).
///
/// Order is kept: a write that would pass the limit first sends what is gathered; `close` and
/// user outbound events send what is gathered before they pass. Promises of gathered writes
/// complete with the write that carries them.
final class WriteCoalescingHandler: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The largest TLS record's payload: past it, a record would be split anyway.
    static let limit = 16 * 1024

    private var pending: ByteBuffer? = nil
    /// True once `pending` is our own buffer (not the first write's, which may be shared).
    private var owned = false
    private var promise: EventLoopPromise<Void>? = nil

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        if var gathered = pending {
            if gathered.readableBytes + buffer.readableBytes > Self.limit {
                release(context: context)
                hold(buffer, promise: promise, context: context)
                return
            }
            if !owned {
                var own = context.channel.allocator.buffer(capacity: max(1024, gathered.readableBytes + buffer.readableBytes))
                own.writeImmutableBuffer(gathered)
                gathered = own
                owned = true
            }
            pending = nil  // keeps `gathered` uniquely referenced while it grows
            gathered.writeImmutableBuffer(buffer)
            pending = gathered
            chain(promise)
        } else {
            hold(buffer, promise: promise, context: context)
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

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        release(context: context)
        context.triggerUserOutboundEvent(event, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        release(context: context)
    }

    private func hold(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        if buffer.readableBytes >= Self.limit {
            context.write(wrapOutboundOut(buffer), promise: promise)
            return
        }
        pending = buffer
        owned = false
        chain(promise)
    }

    private func chain(_ promise: EventLoopPromise<Void>?) {
        guard let promise else { return }
        if let existing = self.promise {
            existing.futureResult.cascade(to: promise)
        } else {
            self.promise = promise
        }
    }

    /// Passes what is gathered on (without flushing).
    private func release(context: ChannelHandlerContext) {
        guard let buffer = pending else { return }
        let promise = self.promise
        pending = nil
        owned = false
        self.promise = nil
        context.write(wrapOutboundOut(buffer), promise: promise)
    }
}
