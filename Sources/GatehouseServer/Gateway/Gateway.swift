import Foundation
import GatehouseCore
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The data plane: `ANY /v1/*`, one request top to bottom.
///
/// authenticate (memory) → authorize (IP, model) → read the body once → swap in the provider
/// key → forward → stream the response back while reading usage → enqueue the log entry.
/// Nothing here waits on the database.
public struct Gateway<Client: UpstreamClient>: RouterMiddleware {
    public typealias Context = GatehouseRequestContext

    let keyTable: KeyTable
    let plane: ControlPlane
    let upstream: Client
    let pricing: PricingTable
    let logWriter: RequestLogWriter
    let ledger: LimitLedger
    let failures: AuthFailureRecorder?
    let headTimeout: Duration
    let maxBodyBytes: Int
    let maxJSONDepth: Int
    let logger: Logger

    public init(
        plane: ControlPlane, upstream: Client, pricing: PricingTable, logWriter: RequestLogWriter, ledger: LimitLedger,
        failures: AuthFailureRecorder? = nil, headTimeout: Duration = .seconds(600),
        maxBodyBytes: Int = GatewayLimits.maxBodyBytes, maxJSONDepth: Int = GatewayLimits.maxJSONDepth, logger: Logger
    ) {
        self.maxBodyBytes = maxBodyBytes
        self.maxJSONDepth = maxJSONDepth
        self.failures = failures
        self.ledger = ledger
        self.keyTable = plane.keyTable
        self.plane = plane
        self.upstream = upstream
        self.pricing = pricing
        self.logWriter = logWriter
        self.headTimeout = headTimeout
        self.logger = logger
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let path = request.uri.path
        guard path.hasPrefix("/v1/") else { return try await next(request, context) }
        let started = ContinuousClock.now
        do {
            return try await forward(request, path: path, context: context, started: started)
        } catch {
            // Everything before a gateway error was Gatehouse's own time (upstream failures
            // report their own overhead, below).
            var response = error.response(requestID: context.requestID)
            response.headers[.gatehouseOverheadMs] = GatewayHTTP.msText(ContinuousClock.now - started)
            return response
        }
    }

    func forward(_ request: Request, path: String, context: Context, started: ContinuousClock.Instant) async throws(GatewayError) -> Response {
        let startedAt = Date()

        // 1. Who: a live proxy key, checked in memory.
        guard let token = GatewayHTTP.credential(request.headers) else {
            failures?.record(plane: "gateway", reason: .missing, key: nil, clientIP: context.clientIP)
            throw .unauthenticated
        }
        let (result, genuine) = keyTable.authenticateDetailed(token, now: startedAt)
        guard case .success(let key) = result, key.kind == .proxy else {
            if case .failure(let reason) = result {
                failures?.record(plane: "gateway", reason: reason, key: genuine, clientIP: context.clientIP)
            } else {
                failures?.record(plane: "gateway", reason: .unknownKey, key: nil, clientIP: context.clientIP)
            }
            throw .unauthenticated
        }
        let snapshot = keyTable.snapshot
        guard let providerKeyID = key.providerKeyID, let providerKey = snapshot.providerKeys[providerKeyID] else {
            throw .unauthenticated
        }

        // 2. From where: the org's gateway allowlist and the key's own, on the client address
        //    (X-Forwarded-For believed only from the org's trusted proxies).
        let network = snapshot.networkPolicies[key.orgID] ?? NetworkPolicy()
        let client = network.clientAddress(peer: context.peerAddress, headers: request.headers)
        guard network.gatewayAllowlist.permits(client) else { throw .forbiddenIP }
        guard snapshot.keyAllowlists[key.id]?.permits(client) ?? true else { throw .forbiddenIP }
        let clientIP = client?.description ?? ""
        guard GatewayHTTP.isSafePath(path) else { throw .badPath }

        // 3. What: the body, read once and bounded.
        var request = request
        var body: ByteBuffer
        do {
            body = try await request.collectBody(limit: maxBodyBytes)
        } catch .tooLarge {
            throw .payloadTooLarge(limit: maxBodyBytes)
        } catch {
            throw .malformedBody
        }
        let info = try RequestBodyInfo.parse(body, contentType: request.headers[.contentType], maxDepth: maxJSONDepth)
        if let allowed = key.allowedModels, !allowed.isEmpty {
            guard let model = info?.model, allowed.contains(model) else { throw .modelNotAllowed }
        }
        let adapter = ProviderAdapter(provider: providerKey.provider)
        var hideUsageChunk = false
        if let info, adapter.wantsIncludeUsage(path: path, info: info) {
            body = RequestBodyInfo.addingIncludeUsage(to: body)
            hideUsageChunk = true
        }

        guard let baseURL = providerKey.baseURL ?? providerKey.provider.defaultBaseURL else { throw .internalError }

        // 4. Limits: reserve the worst case, or refuse.
        let metadata = RequestMetadata(headers: request.headers)
        let userID = metadata.userID ?? info?.user
        let limits = try reserveLimits(key: key, info: info, bodyBytes: body.readableBytes, userID: userID, headers: request.headers, now: startedAt)

        // 5. The provider key, only in memory.
        let secret: String
        do { secret = try plane.providerSecret(for: providerKey) } catch {
            logger.error("provider key failed to decrypt", metadata: ["provider_key_id": "\(providerKey.id)"])
            limits.reservation.map { ledger.settle($0, actual: .init(tokens: 0, costMicros: 0)) }
            throw .internalError
        }
        var url = baseURL + path
        if let query = request.uri.query, !query.isEmpty { url += "?" + query }
        let upstreamRequest = UpstreamRequest(
            url: url, method: request.method.rawValue,
            headers: GatewayHTTP.forwardHeaders(request.headers, adapter: adapter, secret: secret),
            body: body.readableBytes > 0 ? body : nil, headTimeout: headTimeout)

        var log = RequestLogRecord(
            id: context.requestID, orgID: key.orgID, proxyKeyID: key.id, providerKeyID: providerKey.id,
            provider: providerKey.provider.rawValue, model: info?.model, method: request.method.rawValue, path: path,
            status: 0, streamed: info?.stream ?? false, userHash: nil, userSealed: nil, propertiesSealed: nil,
            clientIP: clientIP, startedAt: startedAt, latencyMs: 0, timeToFirstTokenMs: nil, overheadMs: 0,
            promptTokens: nil, completionTokens: nil, cachedTokens: nil, costMicros: nil, error: nil,
            requestBodySealed: nil, responseBodySealed: nil)
        var properties = metadata.properties
        if let session = metadata.sessionID { properties["session_id"] = session }
        let pending = PendingRequestLog(
            record: log, userID: userID, properties: properties,
            requestBody: metadata.omitRequest ? nil : body, responseBody: nil)

        // 6. Forward.
        let beforeUpstream = ContinuousClock.now
        let response: UpstreamResponse<Client.Body>
        do {
            response = try await upstream.execute(upstreamRequest)
        } catch {
            let timedOut = GatewayHTTP.isTimeout(error)
            log.status = timedOut ? 504 : 502
            log.error = timedOut ? "upstream_timeout" : "upstream_unreachable"
            log.latencyMs = GatewayHTTP.ms(ContinuousClock.now - started)
            log.overheadMs = GatewayHTTP.ms(beforeUpstream - started)
            var failed = pending
            failed.record = log
            logWriter.enqueue(failed)
            limits.reservation.map { ledger.settle($0, actual: .init(tokens: 0, costMicros: 0)) }
            let error: GatewayError = timedOut ? .upstreamTimeout : .upstreamUnreachable
            var response = error.response(requestID: context.requestID)
            response.headers[.gatehouseOverheadMs] = GatewayHTTP.msText(beforeUpstream - started)
            return response
        }
        let headReceived = ContinuousClock.now

        // 7. Stream the answer back, reading usage on the way.
        let isSSE = response.headers.contains { $0.0.lowercased() == "content-type" && $0.1.lowercased().hasPrefix("text/event-stream") }
        // An error body is checked for the provider key before the client sees it (a provider or
        // a hostile upstream may echo the credential it was sent).
        let scrub = response.status >= 400 && !isSSE ? Array(secret.utf8) : nil
        var headers = GatewayHTTP.responseHeaders(response.headers, dropLength: (hideUsageChunk && isSSE) || scrub != nil)
        headers[.gatehouseRequestID] = context.requestID
        limits.tightest?.apply(to: &headers)
        let preOverhead = beforeUpstream - started
        headers[.gatehouseOverheadMs] = GatewayHTTP.msText(preOverhead + (ContinuousClock.now - headReceived))
        let streamState = StreamContext(
            started: started, headReceived: headReceived, preOverhead: preOverhead, isSSE: isSSE,
            hideUsageChunk: hideUsageChunk, captureResponse: !metadata.omitResponse, dialect: adapter.dialect,
            requestedModel: info?.model, status: response.status, pending: pending, pricing: pricing, writer: logWriter,
            ledger: ledger, reservation: limits.reservation, scrubSecret: scrub)
        let upstreamBody = response.body
        return Response(
            status: .init(code: response.status), headers: headers,
            body: ResponseBody { writer in
                try await streamState.pump(upstreamBody, into: &writer)
            })
    }

    /// Checks and reserves the key's rate limits, budget and the client's
    /// `Helicone-RateLimit-Policy`. Keys without limits skip the ledger entirely.
    func reserveLimits(
        key: GateKeyRecord, info: RequestBodyInfo?, bodyBytes: Int, userID: String?, headers: HTTPFields, now: Date
    ) throws(GatewayError) -> (reservation: LimitLedger.Reservation?, tightest: LimitLedger.Status?) {
        var policy: RateLimitPolicy? = nil
        if let text = headers[.heliconeRateLimitPolicy] {
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

/// Header, path and timing helpers of the gateway.
enum GatewayHTTP {
    /// The proxy key from `Authorization: Bearer`, `x-api-key` or `Helicone-Auth: Bearer`.
    static func credential(_ headers: HTTPFields) -> Substring? {
        if let token = AdminAuthMiddleware.bearerToken(headers[.authorization]), token.hasPrefix("gate_") { return token }
        if let key = headers[.xAPIKey], !key.isEmpty { return Substring(key) }
        if let token = AdminAuthMiddleware.bearerToken(headers[.heliconeAuth]) { return token }
        return AdminAuthMiddleware.bearerToken(headers[.authorization])
    }

    // MARK: Headers

    /// Headers never forwarded to a provider: hop-by-hop, our own, client credentials, and
    /// anything that would change the bytes (compression) or leak the client's network.
    static let droppedRequestHeaders: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
        "transfer-encoding", "upgrade", "host", "content-length", "authorization", "x-api-key", "api-key",
        "accept-encoding", "cookie", "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
        "x-real-ip", "expect",
    ]

    static func forwardHeaders(_ fields: HTTPFields, adapter: ProviderAdapter, secret: String) -> [(String, String)] {
        var connectionListed: Set<String> = []
        for value in fields[values: .connection] {
            for token in value.split(separator: ",") { connectionListed.insert(token.trimmingCharacters(in: .whitespaces).lowercased()) }
        }
        var out: [(String, String)] = []
        out.reserveCapacity(fields.count + 2)
        var present: Set<String> = []
        for field in fields {
            let name = field.name.canonicalName
            if droppedRequestHeaders.contains(name) || connectionListed.contains(name) { continue }
            if name.hasPrefix("helicone-") || name.hasPrefix("gatehouse-") || name.hasPrefix("proxy-") { continue }
            out.append((field.name.rawName, field.value))
            present.insert(name)
        }
        out.append(contentsOf: adapter.defaultHeaders(present: { present.contains($0) }))
        out.append(contentsOf: adapter.authHeaders(secret: secret))
        return out
    }

    static let droppedResponseHeaders: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
        "transfer-encoding", "upgrade", "server", "date", "set-cookie", "alt-svc", "content-length",
    ]

    static func responseHeaders(_ upstream: [(String, String)], dropLength: Bool) -> HTTPFields {
        var fields = HTTPFields()
        var contentLength: String? = nil
        for (name, value) in upstream {
            let lower = name.lowercased()
            if lower == "content-length" { contentLength = value }
            if droppedResponseHeaders.contains(lower) { continue }
            if let field = HTTPField.Name(name) { fields.append(HTTPField(name: field, value: value)) }
        }
        if !dropLength, let contentLength { fields[.contentLength] = contentLength }
        return fields
    }

    /// Refuses dot segments and encoded slashes or dots, so the path stays under `/v1/` of the
    /// provider's base URL whatever the provider's router does with it.
    static func isSafePath(_ path: String) -> Bool {
        let lower = path.lowercased()
        if lower.contains("%2f") || lower.contains("%2e") || lower.contains("%5c") || lower.contains("\\") { return false }
        for segment in path.split(separator: "/", omittingEmptySubsequences: false).dropFirst() {
            if segment == "." || segment == ".." { return false }
        }
        return path.utf8.count <= 2048
    }

    static func isTimeout(_ error: any Error) -> Bool {
        let text = String(describing: error).lowercased()
        return text.contains("timeout") || text.contains("deadline")
    }

    static func ms(_ d: Duration) -> Double {
        let (s, atto) = d.components
        return Double(s) * 1000 + Double(atto) / 1e15
    }

    static func msText(_ d: Duration) -> String {
        String(format: "%.3f", ms(d))
    }
}

/// The state of one streamed response; consumes the upstream body, writes to the client,
/// and enqueues the log entry however the stream ends (completion, upstream error, or the
/// client going away).
struct StreamContext: Sendable {
    let started: ContinuousClock.Instant
    let headReceived: ContinuousClock.Instant
    let preOverhead: Duration
    let isSSE: Bool
    let hideUsageChunk: Bool
    let captureResponse: Bool
    let dialect: UsageDialect
    let requestedModel: String?
    let status: Int
    let pending: PendingRequestLog
    let pricing: PricingTable
    let writer: RequestLogWriter
    let ledger: LimitLedger
    let reservation: LimitLedger.Reservation?
    /// For error responses: the provider key, replaced wherever it appears in the body.
    var scrubSecret: [UInt8]? = nil

    /// Error bodies up to this size are scrubbed whole; past it, chunk by chunk.
    static let maxScrubbedBodyBytes = 1024 * 1024

    func pump<Body: AsyncSequence>(_ body: Body, into out: inout any ResponseBodyWriter) async throws
    where Body.Element == ByteBuffer {
        var extractor = UsageExtractor(dialect: dialect)
        var splitter = SSEEventSplitter()
        var captured: [UInt8] = []
        var capturedAll = true
        var firstChunkAt: ContinuousClock.Instant? = nil
        var thrown: (any Error)? = nil

        func capture(_ bytes: some Collection<UInt8>) {
            guard capturedAll else { return }
            if captured.count + bytes.count <= GatewayLimits.maxCapturedResponseBytes {
                captured.append(contentsOf: bytes)
            } else {
                capturedAll = false
            }
        }

        var recorded = false
        func record(failure: String?) {
            recorded = true
            if !isSSE, capturedAll {
                extractor.observe(json: captured)
            }
            var record = pending.record
            let end = ContinuousClock.now
            record.status = status
            record.latencyMs = GatewayHTTP.ms(end - started)
            record.overheadMs = GatewayHTTP.ms(preOverhead)
            record.timeToFirstTokenMs = firstChunkAt.map { GatewayHTTP.ms($0 - started) }
            if let model = extractor.model ?? requestedModel { record.model = model }
            if let usage = extractor.usage {
                record.promptTokens = usage.promptTokens
                record.completionTokens = usage.completionTokens
                record.cachedTokens = usage.cachedTokens
                record.costMicros = pricing.costMicros(model: record.model, usage: usage)
            }
            if status >= 400 { record.error = failure ?? "upstream_status_\(status)" } else { record.error = failure }
            if let reservation {
                // Unknown usage on a success is settled at the reservation (never under-count spend);
                // a provider error costs nothing.
                let actual: LimitLedger.Actual =
                    if let usage = extractor.usage {
                        .init(tokens: usage.promptTokens + usage.completionTokens, costMicros: record.costMicros ?? 0)
                    } else if status >= 400 {
                        .init(tokens: 0, costMicros: 0)
                    } else {
                        .init(tokens: reservation.estimate.tokens, costMicros: reservation.estimate.costMicros ?? 0)
                    }
                ledger.settle(reservation, actual: actual)
                if extractor.usage == nil, status < 400 {
                    record.costMicros = record.costMicros ?? reservation.estimate.costMicros
                }
            }
            var entry = pending
            entry.record = record
            if captureResponse { entry.responseBody = captured }
            writer.enqueue(entry)
        }

        do {
            var held: [UInt8] = []
            for try await chunk in body {
                if firstChunkAt == nil { firstChunkAt = .now }
                let view = chunk.readableBytesView
                if let secret = scrubSecret {
                    // Held whole (up to a bound), so a secret split across chunks is still found;
                    // the log captures what the client got.
                    if held.count + view.count <= Self.maxScrubbedBodyBytes {
                        held.append(contentsOf: view)
                    } else {
                        let part = Redactor.removing(secret, from: held + Array(view))
                        held = []
                        capture(part)
                        try await out.write(ByteBuffer(bytes: part))
                    }
                } else if isSSE {
                    let events = splitter.feed(view)
                    if hideUsageChunk {
                        for event in events {
                            let usageOnly = observe(event, into: &extractor)
                            if usageOnly { continue }
                            capture(event.raw)
                            try await out.write(ByteBuffer(bytes: event.raw))
                        }
                    } else {
                        capture(view)
                        try await out.write(chunk)
                        for event in events { _ = observe(event, into: &extractor) }
                    }
                } else {
                    capture(view)
                    try await out.write(chunk)
                }
            }
            if let secret = scrubSecret, !held.isEmpty {
                let part = Redactor.removing(secret, from: held)
                capture(part)
                try await out.write(ByteBuffer(bytes: part))
            }
            if isSSE, let rest = splitter.finish() {
                let usageOnly = observe(rest, into: &extractor)
                if hideUsageChunk && !usageOnly {
                    capture(rest.raw)
                    try await out.write(ByteBuffer(bytes: rest.raw))
                }
            }
            // Settled and queued for the log before the client sees the end of the response:
            // whoever reads the spend (or stops the server) after a response has completed
            // finds it recorded.
            record(failure: nil)
            try await out.finish(nil)
        } catch {
            if !recorded { record(failure: "stream_interrupted") }
            thrown = error
        }
        if let thrown { throw thrown }
    }

    /// Feeds one SSE event to the usage extractor; returns `true` when it is the usage-only
    /// chunk the gateway asked for (`"choices":[]` with a `usage` object), which is hidden.
    func observe(_ event: SSEEvent, into extractor: inout UsageExtractor) -> Bool {
        guard !event.data.isEmpty, UsageExtractor.mentionsUsageObject(event.data) || dialect == .anthropic && event.name == "message_start" else {
            if dialect == .openai, extractor.model == nil, !event.data.isEmpty, event.data.first == UInt8(ascii: "{") {
                extractor.observe(json: event.data)  // first chunk carries the model
            }
            return false
        }
        guard let object = MiniJSON.parseObject(event.data) else { return false }
        extractor.observe(object: object)
        if hideUsageChunk, case .array(let choices)? = object["choices"], choices.isEmpty, case .object? = object["usage"] {
            return true
        }
        return false
    }
}

extension HTTPField.Name {
    static let xAPIKey = Self("x-api-key")!
    static let heliconeAuth = Self("Helicone-Auth")!
    static let gatehouseOverheadMs = Self("Gatehouse-Overhead-Ms")!
}
