import Benchmark
import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore
import Logging
import NIOCore

/// The per-request building blocks of the gateway, measured alone: what each costs in time and
/// allocations (`swift package benchmark` prints both).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        maxDuration: .seconds(3), maxIterations: 1_000_000)

    // Key verification: format + checksum, then the constant-time HMAC compare.
    let (orgKeys, _) = try! Vault(keyring: .generate()).newDataKey(orgID: "org_bench")
    let key = GatehouseKey.generate(kind: .proxy)
    let stored = orgKeys.keyHash(key.text)
    Benchmark("key verification (parse + HMAC compare)") { benchmark in
        for _ in benchmark.scaledIterations {
            let parsed = try! GatehouseKey.parse(key.text)
            blackHole(orgKeys.verifyKey(parsed.text, storedHash: stored))
        }
    }

    // Vault: opening a provider key sealed under the org DEK (uncached path).
    let sealed = try! orgKeys.sealProviderKey("sk-" + String(repeating: "x", count: 48), rowID: "pk_bench", provider: "openai")
    Benchmark("vault decrypt provider key (AES-256-GCM open)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! orgKeys.openProviderKey(sealed, rowID: "pk_bench", provider: "openai"))
        }
    }

    // Vault, cached: what the gateway does per request once a provider key was opened (the
    // decrypted secret is kept for at most 60 s).
    let cache = ProviderSecretCache()
    let providerRecord = ProviderKeyRecord(
        id: "pk_bench", orgID: "org_bench", name: "bench", provider: .openai, baseURL: nil, ciphertext: sealed, last4: "", createdAt: Date())
    cache.store(try! orgKeys.openProviderKey(sealed, rowID: "pk_bench", provider: "openai"), for: providerRecord)
    Benchmark("vault decrypt provider key (cached)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(cache.secret(for: providerRecord))
        }
    }

    // Request log: the gateway's only logging cost per request is this enqueue (a lock and an
    // append); the batched writer runs elsewhere. Drained between samples, outside the measurement.
    let writer = RequestLogWriter(store: NullLogStore(), keyTable: KeyTable(), capacity: 10_000_000, logger: Logger(label: "bench"))
    let record = RequestLogRecord(
        id: "req_0123456789abcdef", orgID: "org_bench", proxyKeyID: "gk_bench", providerKeyID: "pk_bench", provider: "openai",
        model: "gpt-4o-mini", method: "POST", path: "/v1/chat/completions", status: 200, streamed: false, userHash: nil,
        userSealed: nil, propertiesSealed: nil, clientIP: "127.0.0.1", startedAt: Date(), latencyMs: 1.2, timeToFirstTokenMs: nil,
        overheadMs: 0.1, promptTokens: 12, completionTokens: 30, cachedTokens: nil, costMicros: 42, error: nil,
        requestBodySealed: nil, responseBodySealed: nil)
    let entry = PendingRequestLog(
        record: record, userID: nil, properties: [:], requestBody: ByteBuffer(string: #"{"model":"gpt-4o-mini","messages":[]}"#),
        responseBody: Array(#"{"id":"c","choices":[]}"#.utf8))
    Benchmark("request-log enqueue", configuration: .init(maxIterations: 1_000_000)) { benchmark in
        for _ in benchmark.scaledIterations {
            writer.enqueue(entry)
        }
    }

    // Limits: reserve the worst case and settle the actual, with a rate limit and a budget.
    let ledger = LimitLedger()
    let limits = [
        RateLimit(metric: .requests, limit: 1e12, windowSeconds: 60),
        RateLimit(metric: .tokens, limit: 1e15, windowSeconds: 60),
    ]
    let budget = Budget(limitUSD: 1e9, period: .month)
    Benchmark("limit reserve + settle (requests + tokens windows, budget)") { benchmark in
        for _ in benchmark.scaledIterations {
            if case .admitted(let reservation, _) = ledger.reserve(
                keyID: "k", limits: limits, budget: budget, policy: nil, user: nil,
                estimate: .init(tokens: 1100, costMicros: 900))
            {
                ledger.settle(reservation, actual: .init(tokens: 120, costMicros: 80))
            }
        }
    }

    // SSE: split one OpenAI stream chunk into events and read usage where present.
    let chunk = Array(#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],"usage":null}"#.utf8) + [10, 10]
    Benchmark("SSE split + usage scan per chunk") { benchmark in
        // What the gateway does for every chunk of a stream: split it into events, and look
        // for a usage object with a byte scan (only that one event is ever parsed as JSON).
        var splitter = SSEEventSplitter()
        for _ in benchmark.scaledIterations {
            for event in splitter.feed(chunk) {
                blackHole(UsageExtractor.mentionsUsageObject(event.data))
            }
        }
    }

    let usageChunk = Array(#"{"id":"c","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500}}"#.utf8)
    Benchmark("usage parse of the final usage chunk (JSON)") { benchmark in
        for _ in benchmark.scaledIterations {
            var extractor = UsageExtractor(dialect: .openai)
            extractor.observe(json: usageChunk)
            blackHole(extractor.usage)
        }
    }
}

/// The writer's store is never reached by `enqueue`; this one only satisfies the type.
struct NullLogStore: RequestLogStore {
    func insertRequestLogs(_ records: [RequestLogRecord]) async throws {}
    func requestLogs(_ query: RequestLogQuery) async throws -> [RequestLogRecord] { [] }
    func requestLog(orgID: String, id: String) async throws -> RequestLogRecord? { nil }
    func usage(orgID: String, groupBy: UsageGrouping, since: Date?, until: Date?) async throws -> [UsageRow] { [] }
}
