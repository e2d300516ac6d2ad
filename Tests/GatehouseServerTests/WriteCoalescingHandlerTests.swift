import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import GatehouseServer

/// What TLS receives from the coalescer: the writes made between two flushes as one buffer, in
/// order, with every promise kept.
@Suite("Write coalescing before TLS")
struct WriteCoalescingHandlerTests {
    private func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(WriteCoalescingHandler())
        return channel
    }

    private func outbound(_ channel: EmbeddedChannel) throws -> [String] {
        var out: [String] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { out.append(String(buffer: buffer)) }
        return out
    }

    @Test func writesBetweenFlushesLeaveAsOneBuffer() throws {
        let channel = try channel()
        let promises = (0..<3).map { _ in channel.eventLoop.makePromise(of: Void.self) }
        for (i, part) in ["HTTP/1.1 200 OK\r\n\r\n", "5\r\n", "hello"].enumerated() {
            channel.write(ByteBuffer(string: part), promise: promises[i])
        }
        #expect(try outbound(channel).isEmpty, "nothing passes before the flush")
        channel.write(ByteBuffer(string: "\r\n"), promise: nil)
        channel.flush()
        #expect(try outbound(channel) == ["HTTP/1.1 200 OK\r\n\r\n5\r\nhello\r\n"])
        // The next flush starts afresh.
        channel.writeAndFlush(ByteBuffer(string: "0\r\n\r\n"), promise: nil)
        #expect(try outbound(channel) == ["0\r\n\r\n"])
        _ = try channel.finish()
    }

    @Test func aLoneWritePassesUncopied() throws {
        let channel = try channel()
        let buffer = ByteBuffer(string: "only one")
        channel.writeAndFlush(buffer, promise: nil)
        let out = try channel.readOutbound(as: ByteBuffer.self)
        #expect(out == buffer)
        _ = try channel.finish()
    }

    @Test func nothingPassesTheRecordLimitAndOrderIsKept() throws {
        let channel = try channel()
        let limit = WriteCoalescingHandler.limit
        let small = String(repeating: "a", count: 100)
        let big = String(repeating: "b", count: limit)  // at the limit: passes alone
        let middle = String(repeating: "c", count: limit - 50)
        channel.write(ByteBuffer(string: small), promise: nil)
        channel.write(ByteBuffer(string: big), promise: nil)
        channel.write(ByteBuffer(string: middle), promise: nil)
        channel.write(ByteBuffer(string: small), promise: nil)  // would pass the limit with `middle`
        channel.flush()
        let out = try outbound(channel)
        #expect(out == [small, big, middle, small])
        #expect(out.allSatisfy { $0.utf8.count <= limit })
        _ = try channel.finish()
    }

    @Test func closeSendsWhatIsGatheredFirst() throws {
        // A recorder behind the coalescer sees the gathered write before the close.
        let channel = EmbeddedChannel()
        let events = EventRecorder()
        try channel.pipeline.syncOperations.addHandler(events)
        try channel.pipeline.syncOperations.addHandler(WriteCoalescingHandler())
        channel.write(ByteBuffer(string: "a"), promise: nil)
        channel.write(ByteBuffer(string: "b"), promise: nil)
        #expect(events.seen.isEmpty)
        channel.close(promise: nil)
        #expect(events.seen == ["write ab", "close"])
    }

    @Test func promisesOfGatheredWritesCompleteTogether() throws {
        let channel = try channel()
        let completed = Mutex(0)
        for part in ["x", "y", "z"] {
            let promise = channel.eventLoop.makePromise(of: Void.self)
            promise.futureResult.whenSuccess { completed.withLock { $0 += 1 } }
            channel.write(ByteBuffer(string: part), promise: promise)
        }
        #expect(completed.withLock { $0 } == 0)
        channel.flush()
        channel.embeddedEventLoop.run()
        #expect(completed.withLock { $0 } == 3)
        #expect(try outbound(channel) == ["xyz"])
        _ = try channel.finish()
    }
}

/// Records the outbound events that reach it.
private final class EventRecorder: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var seen: [String] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        seen.append("write " + String(buffer: unwrapOutboundIn(data)))
        context.write(data, promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        seen.append("close")
        context.close(mode: mode, promise: promise)
    }
}
