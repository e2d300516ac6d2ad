import Foundation
import GatehouseCore
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// The data plane's decisions for `ANY /v1/*`, free of I/O: who is calling and from where
/// (at the request head), what they may send and what it may cost (once the body is read),
/// and what is recorded of the answer. ``GatewayHandler`` does the I/O on the connection's
/// event loop; nothing here waits on the database or on another thread.
public final class GatewayEngine: Sendable {
    let keyTable: KeyTable
    let plane: ControlPlane
    let pricing: PricingTable
    let logWriter: RequestLogWriter
    let ledger: LimitLedger
    let failures: AuthFailureRecorder?
    let timeouts: UpstreamTimeouts
    let maxBodyBytes: Int
    let maxJSONDepth: Int
    let logger: Logger
    let connector: UpstreamConnector
    private let targets = Mutex<[String: UpstreamTarget]>([:])

    public init(
        plane: ControlPlane, pricing: PricingTable, logWriter: RequestLogWriter, failures: AuthFailureRecorder? = nil,
        timeouts: UpstreamTimeouts = UpstreamTimeouts(), maxBodyBytes: Int = GatewayLimits.maxBodyBytes,
        maxJSONDepth: Int = GatewayLimits.maxJSONDepth, upstreamRoots: [NIOSSLCertificate] = [], logger: Logger
    ) throws {
        self.keyTable = plane.keyTable
        self.plane = plane
        self.pricing = pricing
        self.logWriter = logWriter
        self.ledger = plane.ledger
        self.failures = failures
        self.timeouts = timeouts
        self.maxBodyBytes = maxBodyBytes
        self.maxJSONDepth = maxJSONDepth
        self.logger = logger
        self.connector = try UpstreamConnector(timeouts: timeouts, extraRoots: upstreamRoots)
    }

    static func isGatewayPath(_ path: String) -> Bool { path.utf8.starts(with: "/v1/".utf8) }

    /// What is known once a request head is accepted.
    struct Admission {
        let key: GateKeyRecord
        let providerKey: ProviderKeyRecord
        let clientIP: String
        let path: String
        let query: Substring?
        let headers: ClientHeaders
    }

    /// Stage 1, at the request head: a live proxy key (in memory), the org's and the key's IP
    /// allowlists on the client address (`X-Forwarded-For` believed only from the org's trusted
    /// proxies), a safe path, and a declared body length within bounds.
    /// `peerText` is `peer`'s text when the caller already has it (once per connection).
    /// `proven` is the key the connection last proved (``KeyTable/ProvenKey``), updated here.
    func admit(
        _ head: HTTPRequestHead, peer: IPAddress?, peerText: String? = nil, now: Date, proven: inout KeyTable.ProvenKey?
    ) throws(GatewayError) -> Admission {
        let headers = ClientHeaders(head.headers)
        guard let token = headers.credential else {
            failures?.record(plane: "gateway", reason: .missing, key: nil, clientIP: peer?.description ?? "")
            throw .unauthenticated
        }
        let (result, genuine) = keyTable.authenticateDetailed(token, now: now, proven: &proven)
        guard case .success(let key) = result, key.kind == .proxy else {
            if case .failure(let reason) = result {
                failures?.record(plane: "gateway", reason: reason, key: genuine, clientIP: peer?.description ?? "")
            } else {
                failures?.record(plane: "gateway", reason: .unknownKey, key: nil, clientIP: peer?.description ?? "")
            }
            throw .unauthenticated
        }
        let snapshot = keyTable.snapshot
        guard let providerKeyID = key.providerKeyID, let providerKey = snapshot.providerKeys[providerKeyID] else {
            throw .unauthenticated
        }
        let network = snapshot.networkPolicies[key.orgID] ?? NetworkPolicy()
        let client = network.clientAddress(peer: peer, forwardedFor: headers.forwardedFor)
        guard network.gatewayAllowlist.permits(client) else { throw .forbiddenIP }
        guard snapshot.keyAllowlists[key.id]?.permits(client) ?? true else { throw .forbiddenIP }
        let target = head.uri
        let path: String
        let query: Substring?
        if let mark = target.utf8.firstIndex(of: UInt8(ascii: "?")) {
            path = String(target[..<mark])
            query = target[target.index(after: mark)...]
        } else {
            path = target
            query = nil
        }
        guard GatewayHTTP.isSafePath(path) else { throw .badPath }
        if let declared = headers.contentLength.flatMap(Int.init), declared > maxBodyBytes {
            throw .payloadTooLarge(limit: maxBodyBytes)
        }
        let clientIP = if let peerText, client == peer { peerText } else { client?.description ?? "" }
        return Admission(key: key, providerKey: providerKey, clientIP: clientIP, path: path, query: query, headers: headers)
    }

    /// Everything needed to forward one request and account for its answer. A class: the
    /// handler, the response processor and the connect callback share one copy (as a struct,
    /// each of them retained every string in it again).
    final class Prepared {
        let target: UpstreamTarget
        let method: String
        /// Path and query as sent upstream (the base URL's path prefix included).
        let uri: String
        let headers: [(String, String)]
        let body: ByteBuffer?
        let secret: String
        let dialect: UsageDialect
        let hideUsageChunk: Bool
        let captureResponse: Bool
        let requestedModel: String?
        /// The log entry, taken (once) when the exchange is recorded.
        var pending: PendingRequestLog?
        let reservation: LimitLedger.Reservation?
        let tightest: LimitLedger.Status?

        init(
            target: UpstreamTarget, method: String, uri: String, headers: [(String, String)], body: ByteBuffer?, secret: String,
            dialect: UsageDialect, hideUsageChunk: Bool, captureResponse: Bool, requestedModel: String?, pending: PendingRequestLog,
            reservation: LimitLedger.Reservation?, tightest: LimitLedger.Status?
        ) {
            self.target = target
            self.method = method
            self.uri = uri
            self.headers = headers
            self.body = body
            self.secret = secret
            self.dialect = dialect
            self.hideUsageChunk = hideUsageChunk
            self.captureResponse = captureResponse
            self.requestedModel = requestedModel
            self.pending = pending
            self.reservation = reservation
            self.tightest = tightest
        }
    }

    /// Stage 2, with the whole body: the JSON it claims to be, the key's model list, limits
    /// reserved at their worst case (or refused), the provider key from the vault cache.
    func prepare(
        _ admission: Admission, head: HTTPRequestHead, body original: ByteBuffer, requestID: String, startedAt: Date
    ) throws(GatewayError) -> Prepared {
        let key = admission.key
        let providerKey = admission.providerKey
        let headers = admission.headers
        var body = original
        let info = try RequestBodyInfo.parse(body, contentType: headers.contentType, maxDepth: maxJSONDepth)
        if let allowed = key.allowedModels, !allowed.isEmpty {
            guard let model = info?.model, allowed.contains(model) else { throw .modelNotAllowed }
        }
        let adapter = ProviderAdapter(provider: providerKey.provider)
        var hideUsageChunk = false
        if let info, adapter.wantsIncludeUsage(path: admission.path, info: info) {
            body = RequestBodyInfo.addingIncludeUsage(to: body)
            hideUsageChunk = true
        }
        guard let baseURL = providerKey.baseURL ?? providerKey.provider.defaultBaseURL, let target = self.target(baseURL) else {
            throw .internalError
        }

        let metadata = headers.metadata
        let userID = metadata.userID ?? info?.user
        let limits = try reserveLimits(
            key: key, info: info, bodyBytes: body.readableBytes, userID: userID, policyText: headers.rateLimitPolicy, now: startedAt)

        let secret: String
        do { secret = try plane.providerSecret(for: providerKey) } catch {
            logger.error("provider key failed to decrypt", metadata: ["provider_key_id": "\(providerKey.id)"])
            limits.reservation.map { ledger.settle($0, actual: .init(tokens: 0, costMicros: 0)) }
            throw .internalError
        }
        var uri = target.pathPrefix + admission.path
        if let query = admission.query, !query.isEmpty { uri += "?" + query }
        let method = head.method.rawValue
        let log = RequestLogRecord(
            id: requestID, orgID: key.orgID, proxyKeyID: key.id, providerKeyID: providerKey.id,
            provider: providerKey.provider.rawValue, model: info?.model, method: method, path: admission.path,
            status: 0, streamed: info?.stream ?? false, userHash: nil, userSealed: nil, propertiesSealed: nil,
            clientIP: admission.clientIP, startedAt: startedAt, latencyMs: 0, timeToFirstTokenMs: nil, overheadMs: 0,
            promptTokens: nil, completionTokens: nil, cachedTokens: nil, costMicros: nil, error: nil,
            requestBodySealed: nil, responseBodySealed: nil)
        var properties = metadata.properties
        if let session = metadata.sessionID { properties["session_id"] = session }
        let pending = PendingRequestLog(
            record: log, userID: userID, properties: properties,
            requestBody: metadata.omitRequest ? nil : body, responseBody: nil)
        return Prepared(
            target: target, method: method, uri: uri,
            headers: headers.forwardHeaders(adapter: adapter, secret: secret),
            body: body.readableBytes > 0 ? body : nil, secret: secret, dialect: adapter.dialect,
            hideUsageChunk: hideUsageChunk, captureResponse: !metadata.omitResponse, requestedModel: info?.model,
            pending: pending, reservation: limits.reservation, tightest: limits.tightest)
    }

    /// A stored base URL, parsed once.
    func target(_ baseURL: String) -> UpstreamTarget? {
        if let known = targets.withLock({ $0[baseURL] }) { return known }
        guard let parsed = UpstreamTarget(baseURL: baseURL) else { return nil }
        targets.withLock {
            if $0.count >= 4096 { $0.removeAll() }
            $0[baseURL] = parsed
        }
        return parsed
    }

    /// Checks and reserves the key's rate limits, budget and the client's
    /// `Helicone-RateLimit-Policy`. Keys without limits skip the ledger entirely.
    func reserveLimits(
        key: GateKeyRecord, info: RequestBodyInfo?, bodyBytes: Int, userID: String?, policyText: String?, now: Date
    ) throws(GatewayError) -> (reservation: LimitLedger.Reservation?, tightest: LimitLedger.Status?) {
        var policy: RateLimitPolicy? = nil
        if let text = policyText {
            do { policy = try RateLimitPolicy.parse(text) } catch { throw .badPolicy(error.reason) }
        }
        let rateLimits = key.rateLimits ?? []
        guard !rateLimits.isEmpty || key.budget != nil || policy != nil else { return (nil, nil) }
        // A call without a body (GET /v1/models, DELETE …) generates no tokens.
        let worst = bodyBytes == 0 ? (tokens: 0, costMicros: Int64?(0)) : pricing.worstCase(model: info?.model, bodyBytes: bodyBytes, maxTokens: info?.maxTokens)
        let needsPrice = key.budget != nil || rateLimits.contains { $0.metric == .costUSD } || policy?.unit == .cents
        if needsPrice, worst.costMicros == nil { throw .modelNotPriced }
        switch ledger.reserve(
            keyID: key.id, limits: rateLimits, budget: key.budget, policy: policy, user: userID,
            estimate: .init(tokens: worst.tokens, costMicros: worst.costMicros), now: now)
        {
        case .admitted(let reservation, let tightest): return (reservation, tightest)
        case .rateLimited(let status, let retry): throw .rateLimited(status, retryAfterSeconds: retry)
        case .budgetExhausted(let status, let retry): throw .budgetExhausted(status, retryAfterSeconds: retry)
        }
    }
}

/// One provider answer on its way to the client: response headers, usage read from the body
/// (SSE events or the JSON document), the usage-only chunk the gateway asked for hidden, an
/// error body scrubbed of the provider key, and — however the exchange ends — the limits
/// settled and the log entry queued, exactly once. Used on one event loop, never shared.
final class ResponseProcessor {
    let engine: GatewayEngine
    let prepared: GatewayEngine.Prepared
    let started: ContinuousClock.Instant
    private(set) var preOverhead: Duration = .zero
    private(set) var status = 0
    private(set) var isSSE = false
    private var scrubSecret: [UInt8]? = nil
    private var extractor: UsageExtractor
    private var splitter = SSEEventSplitter()
    private var captured: [UInt8] = []
    private var capturedAll = true
    private var held: [UInt8] = []
    private var firstChunkAt: ContinuousClock.Instant? = nil

    /// Error bodies up to this size are scrubbed whole; past it, chunk by chunk.
    static let maxScrubbedBodyBytes = 1024 * 1024

    init(engine: GatewayEngine, prepared: GatewayEngine.Prepared, started: ContinuousClock.Instant) {
        self.engine = engine
        self.prepared = prepared
        self.started = started
        self.extractor = UsageExtractor(dialect: prepared.dialect)
    }

    /// The request is about to leave for the provider: everything until now was Gatehouse's time.
    func sending() { preOverhead = ContinuousClock.now - started }

    /// The client's response head for the provider's.
    func head(status: Int, upstreamHeaders: HTTPHeaders, requestID: String, hsts: Bool) -> HTTPResponseHead {
        let headReceived = ContinuousClock.now
        self.status = status
        isSSE = upstreamHeaders.first(name: "content-type").map { $0.utf8.count >= 17 && $0.prefix(17).lowercased() == "text/event-stream" } ?? false
        // An error body is checked for the provider key before the client sees it (a provider or
        // a hostile upstream may echo the credential it was sent).
        if status >= 400 && !isSSE { scrubSecret = Array(prepared.secret.utf8) }
        var headers = GatewayHTTP.responseHeaders(
            upstreamHeaders, dropLength: (prepared.hideUsageChunk && isSSE) || scrubSecret != nil,
            replacingRateLimit: prepared.tightest != nil)
        // The provider's own copies of these were left out above: plain appends.
        headers.append((GatewayHTTP.requestIDName, requestID))
        prepared.tightest?.append(to: &headers)
        headers.append((GatewayHTTP.overheadName, GatewayHTTP.msText(preOverhead + (ContinuousClock.now - headReceived))))
        if hsts { headers.append((RequestBoundaryHandler.hstsName, RequestBoundaryHandler.hstsValue)) }
        // Built from the list: `HTTPHeaders.add` checks every name for non-ASCII bytes again
        // (~500 instructions a field); these names are llhttp's tokens and our constants.
        return HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: HTTPHeaders(headers))
    }

    /// One chunk of the provider's body; `emit` receives what the client gets.
    func body(_ chunk: ByteBuffer, emit: (ByteBuffer) -> Void) {
        if firstChunkAt == nil { firstChunkAt = .now }
        let view = chunk.readableBytesView
        if let secret = scrubSecret {
            // Held whole (up to a bound), so a secret split across chunks is still found; the
            // log captures what the client got.
            if held.count + view.count <= Self.maxScrubbedBodyBytes {
                held.append(contentsOf: view)
            } else {
                let part = Redactor.removing(secret, from: held + Array(view))
                held = []
                capture(part)
                emit(ByteBuffer(bytes: part))
            }
        } else if isSSE {
            let events = splitter.feed(view)
            if prepared.hideUsageChunk {
                // The events that stay go out as one buffer: one body part, one chunk, one TLS
                // record per provider read, not one per event.
                var kept: [UInt8] = []
                for event in events where !observe(event) {
                    kept.append(contentsOf: event.raw)
                }
                if !kept.isEmpty {
                    capture(kept)
                    emit(ByteBuffer(bytes: kept))
                }
            } else {
                capture(view)
                emit(chunk)
                for event in events { _ = observe(event) }
            }
        } else {
            capture(view)
            emit(chunk)
        }
    }

    /// The provider's body ended: the rest is emitted, then the exchange is recorded (before
    /// the client sees the end of the response: whoever reads the spend, or stops the server,
    /// after a response has completed finds it recorded).
    func end(emit: (ByteBuffer) -> Void) {
        if let secret = scrubSecret, !held.isEmpty {
            let part = Redactor.removing(secret, from: held)
            held = []
            capture(part)
            emit(ByteBuffer(bytes: part))
        }
        if isSSE, let rest = splitter.finish() {
            let usageOnly = observe(rest)
            if prepared.hideUsageChunk && !usageOnly {
                capture(rest.raw)
                emit(ByteBuffer(bytes: rest.raw))
            }
        }
        record(failure: nil)
    }

    /// The provider could not be reached or did not answer in time: nothing was spent.
    func unreachable(timedOut: Bool) {
        guard var entry = prepared.pending.take() else { return }  // already recorded
        entry.record.status = timedOut ? 504 : 502
        entry.record.error = timedOut ? "upstream_timeout" : "upstream_unreachable"
        entry.record.latencyMs = GatewayHTTP.ms(ContinuousClock.now - started)
        entry.record.overheadMs = GatewayHTTP.ms(preOverhead)
        engine.logWriter.enqueue(entry)
        prepared.reservation.map { engine.ledger.settle($0, actual: .init(tokens: 0, costMicros: 0)) }
    }

    /// Settles the reservation and queues the log entry, once. Unknown usage on a success is
    /// settled at the reservation (never under-count spend); a provider error costs nothing.
    func record(failure: String?) {
        guard var entry = prepared.pending.take() else { return }  // already recorded
        if !isSSE, capturedAll { extractor.observe(json: captured) }
        entry.record.status = status
        entry.record.latencyMs = GatewayHTTP.ms(ContinuousClock.now - started)
        entry.record.overheadMs = GatewayHTTP.ms(preOverhead)
        entry.record.timeToFirstTokenMs = firstChunkAt.map { GatewayHTTP.ms($0 - started) }
        if let model = extractor.model ?? prepared.requestedModel { entry.record.model = model }
        if let usage = extractor.usage {
            entry.record.promptTokens = usage.promptTokens
            entry.record.completionTokens = usage.completionTokens
            entry.record.cachedTokens = usage.cachedTokens
            entry.record.costMicros = engine.pricing.costMicros(model: entry.record.model, usage: usage)
        }
        entry.record.error = status >= 400 ? failure ?? "upstream_status_\(status)" : failure
        if let reservation = prepared.reservation {
            let actual: LimitLedger.Actual =
                if let usage = extractor.usage {
                    .init(tokens: usage.promptTokens + usage.completionTokens, costMicros: entry.record.costMicros ?? 0)
                } else if status >= 400 {
                    .init(tokens: 0, costMicros: 0)
                } else {
                    .init(tokens: reservation.estimate.tokens, costMicros: reservation.estimate.costMicros ?? 0)
                }
            engine.ledger.settle(reservation, actual: actual)
            if extractor.usage == nil, status < 400 {
                entry.record.costMicros = entry.record.costMicros ?? reservation.estimate.costMicros
            }
        }
        if prepared.captureResponse { entry.responseBody = captured }
        engine.logWriter.enqueue(entry)
    }

    private func capture(_ bytes: some Collection<UInt8>) {
        guard capturedAll else { return }
        if captured.count + bytes.count <= GatewayLimits.maxCapturedResponseBytes {
            captured.append(contentsOf: bytes)
        } else {
            capturedAll = false
        }
    }

    /// Feeds one SSE event to the usage extractor; returns `true` when it is the usage-only
    /// chunk the gateway asked for (`"choices":[]` with a `usage` object), which is hidden.
    private func observe(_ event: SSEEvent) -> Bool {
        let dialect = prepared.dialect
        guard !event.data.isEmpty, UsageExtractor.mentionsUsageObject(event.data) || dialect == .anthropic && event.name == "message_start" else {
            if dialect == .openai, extractor.model == nil, !event.data.isEmpty, event.data.first == UInt8(ascii: "{") {
                extractor.observe(json: event.data)  // first chunk carries the model
            }
            return false
        }
        let seen = extractor.observe(json: event.data)
        return prepared.hideUsageChunk && seen.valid && seen.choicesCount == 0 && seen.hasUsageObject
    }
}

/// Header, path and timing helpers of the gateway.
enum GatewayHTTP {
    // MARK: Headers

    /// ASCII lowercase (header names are tokens: ASCII by the time llhttp has accepted them);
    /// the name itself when it has no capital letter.
    static func lowercasedName(_ name: String) -> String {
        var name = name
        let hasCapital = name.withUTF8 { bytes in bytes.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") } }
        guard hasCapital else { return name }
        return name.withUTF8 { bytes in
            String(unsafeUninitializedCapacity: bytes.count) { out in
                for i in 0..<bytes.count {
                    let byte = bytes[i]
                    out[i] = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
                }
                return bytes.count
            }
        }
    }

    static let requestIDName = "Gatehouse-Request-Id"
    static let overheadName = "Gatehouse-Overhead-Ms"

    /// Headers never forwarded to a provider: hop-by-hop, our own, client credentials, and
    /// anything that would change the bytes (compression) or leak the client's network.
    static let droppedRequestHeaders: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
        "transfer-encoding", "upgrade", "host", "content-length", "authorization", "x-api-key", "api-key",
        "accept-encoding", "cookie", "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
        "x-real-ip", "expect",
    ]

    static let droppedResponseHeaders: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
        "transfer-encoding", "upgrade", "server", "date", "set-cookie", "alt-svc", "content-length",
    ]

    /// What becomes of a provider's response header: dropped, or replaced by Gatehouse's own
    /// (always for ours, when a limit applies for the rate-limit ones). One lookup a header.
    enum ResponseHeaderRule { case drop, replaced, replacedWhenLimited }
    static let responseHeaderRules: [String: ResponseHeaderRule] = {
        var rules = Dictionary(uniqueKeysWithValues: droppedResponseHeaders.map { ($0, ResponseHeaderRule.drop) })
        // HSTS is Gatehouse's: its own over TLS, none over plain HTTP (a provider's never passes).
        for name in [requestIDName, overheadName, RequestBoundaryHandler.hstsName] { rules[name.lowercased()] = .replaced }
        for name in LimitLedger.Status.fieldNames { rules[name.lowercased()] = .replacedWhenLimited }
        return rules
    }()

    /// The provider's response headers the client gets (names as the provider spelled them;
    /// llhttp checked them as it parsed the answer), `Content-Length` last unless dropped.
    static func responseHeaders(_ upstream: HTTPHeaders, dropLength: Bool, replacingRateLimit: Bool) -> [(String, String)] {
        var headers: [(String, String)] = []
        headers.reserveCapacity(upstream.count + 8)
        var contentLength: String? = nil
        for (name, value) in upstream {
            let lower = lowercasedName(name)
            if lower == "content-length" { contentLength = value }
            switch responseHeaderRules[lower] {
            case .drop?, .replaced?: continue
            case .replacedWhenLimited? where replacingRateLimit: continue
            default: headers.append((name, value))
            }
        }
        if !dropLength, let contentLength { headers.append(("Content-Length", contentLength)) }
        return headers
    }

    /// Refuses dot segments and encoded slashes or dots, so the path stays under `/v1/` of the
    /// provider's base URL whatever the provider's router does with it.
    static func isSafePath(_ path: String) -> Bool {
        guard path.utf8.count <= 2048 else { return false }
        var path = path
        return path.withUTF8 { isSafePath($0) }
    }

    private static func isSafePath(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var segmentStart = 0
        for i in 0..<bytes.count {
            let byte = bytes[i]
            if byte == UInt8(ascii: "\\") { return false }
            if byte == UInt8(ascii: "%"), i + 2 < bytes.count {
                // %2f %2e %5c, either case
                let a = bytes[i + 1], b = bytes[i + 2] | 0x20
                if (a == UInt8(ascii: "2") && (b == UInt8(ascii: "f") || b == UInt8(ascii: "e"))) || (a == UInt8(ascii: "5") && b == UInt8(ascii: "c")) {
                    return false
                }
            }
            if byte == UInt8(ascii: "/") {
                if isDotSegment(bytes, from: segmentStart, to: i) { return false }
                segmentStart = i + 1
            }
        }
        return !isDotSegment(bytes, from: segmentStart, to: bytes.count)
    }

    private static func isDotSegment(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) -> Bool {
        let n = end - start
        guard n == 1 || n == 2, start > 0 else { return false }
        return bytes[start] == UInt8(ascii: ".") && (n == 1 || bytes[start + 1] == UInt8(ascii: "."))
    }

    static func ms(_ d: Duration) -> Double {
        let (s, atto) = d.components
        return Double(s) * 1000 + Double(atto) / 1e15
    }

    static func msText(_ d: Duration) -> String {
        // Milliseconds with three decimals, from whole microseconds (no Foundation formatter on
        // the hot path).
        let (seconds, atto) = d.components
        let micros = max(0, seconds * 1_000_000 + atto / 1_000_000_000_000)
        let fraction = String(micros % 1000)
        return String(micros / 1000) + "." + String(repeating: "0", count: 3 - fraction.utf8.count) + fraction
    }
}
