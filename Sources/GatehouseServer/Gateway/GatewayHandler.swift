import Foundation
import GatehouseCore
import NIOCore
import NIOHTTP1

/// The data plane on the connection's event loop: `ANY /v1/*` is answered here, without
/// leaving the loop — request parts in, provider connection from the loop's own pool, provider
/// answer streamed back — and every other request passes on to Hummingbird's router.
///
/// authenticate (memory) → authorize (IP, path, declared length) → read the body, bounded →
/// model, limits, provider key → forward → stream the answer back while reading usage →
/// settle and queue the log entry. Nothing here waits on the database.
///
/// It sits right after NIO's HTTP/1 decoder, below Hummingbird's `HTTPTypes` layer: a
/// gateway request is read and answered in NIO's own types (`HTTPRequestHead`,
/// `HTTPHeaders`), never converted to `HTTPTypes` and back, and never passes Hummingbird's
/// handlers. So this handler also keeps the connection's state for every request, the
/// router's included (Hummingbird's connection state handler runs without its idle timeout
/// and never sees the quiesce event): the idle timeout, graceful shutdown (a quiesce closes
/// the connection once no request is in progress), the header deadline's request
/// boundaries and `Connection: close` on the gateway's own answers (see `docs/transport.md`).
/// Requests on one connection are answered in order: while a `/v1` exchange runs, later
/// (pipelined) request parts wait here and reading stops; a `/v1` request waits for the
/// router's answer to an earlier request the same way.
final class GatewayHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    enum State {
        case idle
        /// Parts of a request for the router are passed on.
        case passthrough
        /// A gateway request was admitted; its body is being read.
        case collecting
        /// A gateway request was answered early (an error); the rest of its body is dropped.
        case discarding
        /// The request is complete and forwarded; the provider's answer is on its way.
        case exchanging
    }

    let engine: GatewayEngine
    /// Over TLS: the gateway's heads carry `Strict-Transport-Security` (the router's get it
    /// from ``RequestBoundaryHandler``).
    let hsts: Bool
    /// A connection with no request in progress is closed after this long without a read.
    let idleTimeout: TimeAmount?
    private var context: ChannelHandlerContext?
    private var deadline: HeaderDeadlineHandler?
    private var idleTask: Scheduled<Void>?
    private var lastActive = NIODeadline.now()
    /// A quiesce event arrived (graceful shutdown): closed as soon as no request is in progress.
    private var quiescing = false
    private var pool: UpstreamPool?
    private var peer: IPAddress?
    private var peerText: String?
    /// The proxy key this connection last proved, so a kept-alive client's same key is not
    /// HMAC-checked again (revocation and expiry are; see `KeyTable.ProvenKey`).
    private var provenKey: KeyTable.ProvenKey?
    private var state = State.idle
    /// Router requests whose response has not ended yet.
    private var routerResponsesOpen = 0
    private var queued = CircularBuffer<HTTPServerRequestPart>()
    private var readHeld = false

    // The current gateway request.
    private var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")
    private var admission: GatewayEngine.Admission?
    private var body: ByteBuffer?
    /// Bytes dropped of the body of a request answered early.
    private var discarded = 0
    private var requestID = ""
    private var started = ContinuousClock.now
    private var startedAt = Date()
    // The current exchange.
    private var prepared: GatewayEngine.Prepared?
    private var processor: ResponseProcessor?
    private var upstream: UpstreamConnection?
    private var retried = false
    /// The current provider connection came from the pool (it may have been closed under us).
    private var reused = false
    private var gotHead = false
    private var timer: Scheduled<Void>?
    /// When the request went to the provider, and when its answer was last read from.
    private var sentAt = NIODeadline.now()
    private var lastRead = NIODeadline.now()

    init(engine: GatewayEngine, hsts: Bool = false, idleTimeout: TimeAmount? = nil) {
        self.engine = engine
        self.hsts = hsts
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.pool = engine.connector.pool(on: context.eventLoop)
        self.peer = context.channel.remoteAddress?.ipAddress.flatMap { IPAddress($0) }
        self.peerText = peer?.description
        self.deadline = try? context.pipeline.syncOperations.handler(type: HeaderDeadlineHandler.self)
        if context.channel.isActive { scheduleIdleCheck(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        abandonExchange()
        idleTask?.cancel()
        idleTask = nil
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        scheduleIdleCheck(context: context)
        context.fireChannelActive()
    }

    // MARK: Connection state (idle timeout, graceful shutdown)

    /// A request's head has been read and its response has not ended, or its parts wait.
    private var requestInProgress: Bool { state != .idle || routerResponsesOpen > 0 || !queued.isEmpty }

    /// A request's parts are being read (a slow upload still counts as idle time).
    private var requestBeingRead: Bool { state == .passthrough || state == .collecting || state == .discarding }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // Not passed on: Hummingbird's state handler does not see the gateway's requests.
        quiescing = true
        if !requestInProgress { context.close(promise: nil) }
    }

    /// A response ended or a request was dropped: with nothing left in progress the connection
    /// closes if the server is shutting down, and otherwise starts its idle time.
    private func settle(context: ChannelHandlerContext) {
        guard !requestInProgress else { return }
        if quiescing {
            context.close(promise: nil)
            return
        }
        lastActive = .now()
        scheduleIdleCheck(context: context)
    }

    private func scheduleIdleCheck(context: ChannelHandlerContext) {
        guard let idleTimeout, idleTask == nil else { return }
        idleTask = context.eventLoop.assumeIsolated().scheduleTask(deadline: lastActive + idleTimeout) { [weak self] in
            self?.idleCheck()
        }
    }

    /// As Hummingbird's: nothing while a request waits for its response (its end starts the
    /// idle time again); otherwise closed once idle for the whole timeout.
    private func idleCheck() {
        idleTask = nil
        guard let context, let idleTimeout, context.channel.isActive else { return }
        if requestInProgress && !requestBeingRead { return }
        if NIODeadline.now() >= lastActive + idleTimeout {
            context.close(promise: nil)
        } else {
            scheduleIdleCheck(context: context)
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The handlers name their own type here, never `Self`: in a class `Self` is the
        // dynamic type, and `Self.unwrapInboundIn` compiles to NIO's unspecialised generic
        // (generic metadata at run time, ~1 000 instructions a call instead of ~250).
        let part = GatewayHandler.unwrapInboundIn(data)
        lastActive = .now()
        if !queued.isEmpty || !canHandle(part) {
            queued.append(part)
            return
        }
        handle(part, context: context)
    }

    /// Whether `part` can be handled now (otherwise it waits its turn).
    private func canHandle(_ part: HTTPServerRequestPart) -> Bool {
        switch state {
        case .exchanging: return false
        case .idle:
            if case .head(let head) = part, GatewayEngine.isGatewayPath(head.uri), routerResponsesOpen > 0 { return false }
            return true
        case .passthrough, .collecting, .discarding: return true
        }
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch state {
        case .idle:
            guard case .head(let head) = part, GatewayEngine.isGatewayPath(head.uri) else {
                if case .head = part {
                    routerResponsesOpen += 1
                    state = .passthrough
                }
                context.fireChannelRead(GatewayHandler.wrapInboundOut(part))
                return
            }
            begin(head, context: context)
        case .passthrough:
            if case .end = part { state = .idle }
            context.fireChannelRead(GatewayHandler.wrapInboundOut(part))
        case .collecting:
            switch part {
            case .head: break  // not possible: the decoder ends a request before the next head
            case .body(var chunk):
                if (body?.readableBytes ?? 0) + chunk.readableBytes > engine.maxBodyBytes {
                    answer(.payloadTooLarge(limit: engine.maxBodyBytes), context: context)
                    state = .discarding
                    body = nil
                } else if body == nil {
                    // Copied out of the read buffer: the body stays alive in the log queue, and a
                    // slice would keep the whole (up to 64 KiB) read buffer with it.
                    var copy = context.channel.allocator.buffer(capacity: chunk.readableBytes)
                    copy.writeBuffer(&chunk)
                    body = copy
                } else {
                    body!.writeBuffer(&chunk)
                }
            case .end:
                complete(context: context)
            }
        case .discarding:
            switch part {
            case .head: break
            case .body(let chunk):
                // The body of a request already answered is read and dropped, up to the body
                // limit; past it the connection is closed.
                discarded += chunk.readableBytes
                if discarded > engine.maxBodyBytes { context.close(promise: nil) }
            case .end:
                state = .idle
                drain(context: context)
                settle(context: context)
            }
        case .exchanging:
            queued.append(part)
        }
    }

    /// A gateway request head: admitted (then its body is read) or answered at once.
    private func begin(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        deadline?.headReceived()
        started = .now
        startedAt = Date()
        requestID = Base62.timeOrderedID(prefix: "req_", at: startedAt)
        self.head = head
        body = nil
        discarded = 0
        do {
            admission = try engine.admit(head, peer: peer, peerText: peerText, now: startedAt, proven: &provenKey)
            state = .collecting
        } catch {
            admission = nil
            answer(error, context: context)
            state = .discarding
        }
    }

    /// The whole request is here: prepare and forward it, or answer the error.
    private func complete(context: ChannelHandlerContext) {
        guard let admission else { return }
        self.admission = nil
        let body = self.body ?? ByteBuffer()
        self.body = nil
        do {
            let prepared = try engine.prepare(admission, head: head, body: body, requestID: requestID, startedAt: startedAt)
            self.prepared = prepared
            processor = ResponseProcessor(engine: engine, prepared: prepared, started: started)
            state = .exchanging
            retried = false
            gotHead = false
            processor?.sending()
            connect(fresh: false)
        } catch {
            answer(error, context: context)
            state = .idle
            drain(context: context)
            settle(context: context)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { upstream?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        abandonExchange()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state {
        case .collecting:
            // Broken framing inside a gateway request's body: answered, then closed (where the
            // next request would start is unknown).
            answer(.malformedBody, context: context)
            state = .discarding
            body = nil
        case .discarding, .exchanging:
            context.close(promise: nil)
        case .idle, .passthrough:
            context.fireErrorCaught(error)
        }
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // Only the router's responses come through here (this handler writes past itself).
        context.write(data, promise: promise)
        if case .end = GatewayHandler.unwrapOutboundIn(data) {
            routerResponsesOpen = max(0, routerResponsesOpen - 1)
            if routerResponsesOpen == 0, !queued.isEmpty { drain(context: context) }
            if quiescing { context.flush() }
            settle(context: context)
        }
    }

    func read(context: ChannelHandlerContext) {
        if queued.isEmpty {
            context.read()
        } else {
            readHeld = true
        }
    }

    /// Handles waiting parts while their turn has come, then reads again if reading waited.
    private func drain(context: ChannelHandlerContext) {
        var handled = false
        while let part = queued.first, canHandle(part) {
            queued.removeFirst()
            handle(part, context: context)
            handled = true
        }
        // Parts passed on to the router outside of a socket read: its async channel takes them
        // at the next `channelReadComplete`.
        if handled { context.fireChannelReadComplete() }
        if queued.isEmpty, readHeld {
            readHeld = false
            context.read()
        }
    }

    // MARK: Answers

    private func answer(_ error: GatewayError, context: ChannelHandlerContext, overhead: Duration? = nil) {
        var (head, body) = error.response(requestID: requestID)
        head.headers.add(name: GatewayHTTP.overheadName, value: GatewayHTTP.msText(overhead ?? (ContinuousClock.now - started)))
        if hsts { head.headers.add(name: RequestBoundaryHandler.hstsName, value: RequestBoundaryHandler.hstsValue) }
        context.write(GatewayHandler.wrapOutboundOut(.head(head)), promise: nil)
        context.write(GatewayHandler.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if error.closesConnection {
            // `Connection: close`: the rest of the body is never read; closed once the answer is out.
            let channel = context.channel
            context.writeAndFlush(GatewayHandler.wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.writeAndFlush(GatewayHandler.wrapOutboundOut(.end(nil)), promise: nil)
        }
        deadline?.responseEnded()
    }

    // MARK: The exchange

    private func connect(fresh: Bool) {
        guard let pool, let prepared else { return }
        pool.acquire(prepared.target, fresh: fresh) { [weak self] result, reused in
            guard let self, self.state == .exchanging, self.upstream == nil, let prepared = self.prepared else {
                if case .success(let connection) = result { connection.close() }  // the exchange is gone
                return
            }
            switch result {
            case .success(let connection):
                self.upstream = connection
                self.reused = reused
                connection.send(method: prepared.method, uri: prepared.uri, headers: prepared.headers, body: prepared.body, to: self)
                self.sentAt = .now()
                if self.timer == nil { self.armBeforeHead() }
            case .failure:
                // Refused, unresolvable, TLS failure or the connect deadline: not reachable.
                self.unreachable(timedOut: false)
            }
        }
    }

    /// The provider could not be reached (or did not answer in time): `502`/`504`.
    private func unreachable(timedOut: Bool) {
        guard let context, let processor else { return }
        processor.unreachable(timedOut: timedOut)
        answer(timedOut ? .upstreamTimeout : .upstreamUnreachable, context: context, overhead: processor.preOverhead)
        endExchange(context: context)
    }

    private func endExchange(context: ChannelHandlerContext) {
        // The timer stays pending (see "Timers" below).
        upstream = nil
        prepared = nil
        processor = nil
        state = .idle
        drain(context: context)
        settle(context: context)
    }

    /// Ends the exchange without an answer (the client went away, the handler is removed, or
    /// the stream broke): recorded as interrupted, the provider connection closed, nothing
    /// queued kept.
    private func abandonExchange() {
        cancelTimer()
        if state == .exchanging {
            processor?.record(failure: "stream_interrupted")
            upstream?.close()
            upstream = nil
            processor = nil
            prepared = nil
            state = .idle
        }
        queued.removeAll()
    }

    /// The stream broke after the head was sent: abandoned, and the client's connection closed
    /// (its response cannot be completed).
    private func interrupt() {
        abandonExchange()
        context?.close(promise: nil)
    }

    // MARK: Timers (head deadline, then the longest gap between chunks)
    //
    // One timer per connection, armed when a request is sent and none is pending, first for the
    // shorter of the two timeouts: it fires no later than the earliest moment either could
    // expire (the gap between chunks is counted from the head, which comes after the send).
    // When it fires it checks where the current exchange is and, if nothing has expired, arms
    // itself for the rest; with no exchange running it stops. An exchange that ends leaves it
    // pending: the next request on the connection is sent later, so its deadlines are later
    // than the ones the pending timer was armed for, and it fires early at worst, which only
    // re-arms it. Reads only note the time. So back-to-back requests on a keep-alive
    // connection schedule and cancel no timer each (NIO allocates a task, a promise and its
    // future for each, and fails the promise on cancel).

    /// Until the head arrives: the rest of the head timeout, at most one read timeout.
    private func armBeforeHead() {
        let left = TimeAmount(engine.timeouts.head) - (NIODeadline.now() - sentAt)
        arm(in: min(left, TimeAmount(engine.timeouts.read)))
    }

    private func arm(in amount: TimeAmount) {
        cancelTimer()
        guard let context else { return }
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: amount) { [weak self] in
            self?.timerFired()
        }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
    }

    private func timerFired() {
        timer = nil
        guard state == .exchanging else { return }
        if !gotHead {
            if NIODeadline.now() - sentAt < TimeAmount(engine.timeouts.head) {
                armBeforeHead()
                return
            }
            upstream?.close()
            upstream = nil
            unreachable(timedOut: true)
            return
        }
        let readTimeout = TimeAmount(engine.timeouts.read)
        let quiet = NIODeadline.now() - lastRead
        if quiet >= readTimeout {
            interrupt()
        } else {
            arm(in: readTimeout - quiet)
        }
    }
}

extension GatewayHandler: UpstreamDelegate {
    var clientWritable: Bool { context?.channel.isWritable ?? false }

    func upstreamHead(_ head: HTTPResponseHead, from connection: UpstreamConnection) {
        guard connection === upstream, let context, let processor, !gotHead else { return }
        gotHead = true
        lastRead = .now()
        let response = processor.head(status: Int(head.status.code), upstreamHeaders: head.headers, requestID: requestID, hsts: hsts)
        context.write(GatewayHandler.wrapOutboundOut(.head(response)), promise: nil)
    }

    func upstreamBody(_ buffer: ByteBuffer, from connection: UpstreamConnection) {
        guard connection === upstream, let context, let processor else { return }
        lastRead = .now()
        processor.body(buffer) { context.write(GatewayHandler.wrapOutboundOut(.body(.byteBuffer($0))), promise: nil) }
    }

    func upstreamReadComplete(from connection: UpstreamConnection) {
        guard connection === upstream else { return }
        context?.flush()
    }

    func upstreamEnd(from connection: UpstreamConnection) {
        guard connection === upstream, let context, let processor else { return }
        processor.end { context.write(GatewayHandler.wrapOutboundOut(.body(.byteBuffer($0))), promise: nil) }
        connection.finish()
        context.writeAndFlush(GatewayHandler.wrapOutboundOut(.end(nil)), promise: nil)
        deadline?.responseEnded()
        endExchange(context: context)
    }

    func upstreamFailed(_ error: (any Error)?, from connection: UpstreamConnection) {
        guard connection === upstream else { return }
        upstream = nil
        if gotHead {
            interrupt()
        } else if !retried && reused && !connection.receivedAny {
            // A pooled connection the provider had closed as it was reused: once more, fresh.
            retried = true
            connect(fresh: true)
        } else {
            cancelTimer()
            unreachable(timedOut: false)
        }
    }
}
