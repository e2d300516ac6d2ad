import Foundation
import GatehouseCore
import GatehouseStore
import Logging
import Synchronization
import Testing

@testable import GatehouseServer

/// A request-log store that records every batch, and fails while told to.
private final class RecordingLogStore: RequestLogStore {
    let batches = Mutex<[[String]]>([])
    let failing = Atomic<Bool>(false)
    /// Called inside each insert, with the number of batches written before it.
    let duringInsert = Mutex<(@Sendable (Int) -> Void)?>(nil)

    var ids: [String] { batches.withLock { $0.flatMap { $0 } } }

    func insertRequestLogs(_ records: [RequestLogRecord]) async throws {
        if failing.load(ordering: .relaxed) { throw StoreError.conflict("test: store down") }
        let before = batches.withLock { $0.count }
        duringInsert.withLock { $0 }?(before)
        batches.withLock { $0.append(records.map(\.id)) }
    }
    func requestLogs(_ query: RequestLogQuery) async throws -> [RequestLogRecord] { [] }
    func requestLog(orgID: String, id: String) async throws -> RequestLogRecord? { nil }
    func usage(orgID: String, groupBy: UsageGrouping, since: Date?, until: Date?) async throws -> [UsageRow] { [] }
}

private func entry(_ id: String) -> PendingRequestLog {
    let record = RequestLogRecord(
        id: id, orgID: "org_gone", proxyKeyID: "pk_1", providerKeyID: "prk_1", provider: "openai", model: "gpt-4o-mini",
        method: "POST", path: "/v1/chat/completions", status: 200, streamed: false, userHash: nil, userSealed: nil,
        propertiesSealed: nil, clientIP: "127.0.0.1", startedAt: Date(), latencyMs: 1, timeToFirstTokenMs: nil, overheadMs: 0.1,
        promptTokens: 1, completionTokens: 1, cachedTokens: nil, costMicros: 1, error: nil, requestBodySealed: nil,
        responseBodySealed: nil)
    return PendingRequestLog(record: record, userID: nil, properties: [:], requestBody: nil, responseBody: nil)
}

@Suite struct RequestLogWriterTests {
    @Test func writesEverythingQueuedInOrderInBatchesOfAtMost500() async {
        let store = RecordingLogStore()
        let writer = RequestLogWriter(store: store, keyTable: KeyTable(), capacity: 5000, logger: Logger(label: "test"))
        let ids = (0..<1203).map { "req_\($0)" }
        for id in ids { writer.enqueue(entry(id)) }
        #expect(writer.pending == 1203)
        await writer.flush()
        #expect(store.ids == ids)
        #expect(store.batches.withLock { $0.map(\.count) } == [500, 500, 203])
        #expect(writer.pending == 0)
        #expect(writer.written == 1203)
        #expect(writer.dropped == 0)
    }

    @Test func aFullQueueDropsAndCounts() async {
        let store = RecordingLogStore()
        let writer = RequestLogWriter(store: store, keyTable: KeyTable(), capacity: 10, logger: Logger(label: "test"))
        for i in 0..<15 { writer.enqueue(entry("req_\(i)")) }
        #expect(writer.pending == 10)
        #expect(writer.dropped == 5)
        await writer.flush()
        #expect(store.ids == (0..<10).map { "req_\($0)" })
    }

    @Test func aFailedBatchIsKeptAndWrittenLaterWithinCapacity() async {
        let store = RecordingLogStore()
        let writer = RequestLogWriter(store: store, keyTable: KeyTable(), capacity: 1000, logger: Logger(label: "test"))
        for i in 0..<700 { writer.enqueue(entry("req_a\(i)")) }
        store.failing.store(true, ordering: .relaxed)
        await writer.flush()
        #expect(store.ids.isEmpty)
        #expect(writer.pending == 700)  // nothing lost
        // Entries kept for a retry count against the capacity.
        for i in 0..<400 { writer.enqueue(entry("req_b\(i)")) }
        #expect(writer.pending == 1000)
        #expect(writer.dropped == 100)
        store.failing.store(false, ordering: .relaxed)
        await writer.flush()
        #expect(store.ids == (0..<700).map { "req_a\($0)" } + (0..<300).map { "req_b\($0)" })
        #expect(writer.pending == 0)
    }

    @Test func aPassWritesWhatWasQueuedWhenItStartedAndLeavesWhatArrivesMeanwhile() async {
        let store = RecordingLogStore()
        let writer = RequestLogWriter(store: store, keyTable: KeyTable(), capacity: 1000, logger: Logger(label: "test"))
        for i in 0..<10 { writer.enqueue(entry("req_a\(i)")) }
        store.duringInsert.withLock {
            $0 = { written in
                if written == 0 { for i in 0..<5 { writer.enqueue(entry("req_b\(i)")) } }
            }
        }
        // One transaction, not a chain of small ones for what trickles in while it is written.
        #expect(await writer.writeQueued() == 10)
        #expect(store.batches.withLock { $0.map(\.count) } == [10])
        #expect(writer.pending == 5)
        await writer.flush()
        #expect(store.ids == (0..<10).map { "req_a\($0)" } + (0..<5).map { "req_b\($0)" })
        #expect(writer.pending == 0)
    }

    @Test func theRunningWriterGoesOnAtOnceWhenAWholeBatchIsWaitingAndWritesTheRestAtShutdown() async throws {
        let store = RecordingLogStore()
        let writer = RequestLogWriter(
            store: store, keyTable: KeyTable(), capacity: 5000, flushInterval: .seconds(3), logger: Logger(label: "test"))
        for i in 0..<600 { writer.enqueue(entry("req_a\(i)")) }
        // While the first tick's first batch is written, a whole batch and more arrives.
        store.duringInsert.withLock {
            $0 = { written in
                if written == 0 { for i in 0..<700 { writer.enqueue(entry("req_b\(i)")) } }
            }
        }
        let running = Task { try await writer.run() }
        let clock = ContinuousClock()
        let start = clock.now
        while store.ids.count < 600, clock.now - start < .seconds(20) { try await Task.sleep(for: .milliseconds(5)) }
        let firstPass = clock.now
        // The 700 are written well before the next tick (3 s after the first).
        while store.ids.count < 1300, clock.now - firstPass < .seconds(20) { try await Task.sleep(for: .milliseconds(5)) }
        #expect(clock.now - firstPass < .milliseconds(1500))
        #expect(store.batches.withLock { $0.map(\.count) } == [500, 100, 500, 200])
        // A few entries below a batch wait for the next tick; shutdown writes them.
        for i in 0..<3 { writer.enqueue(entry("req_c\(i)")) }
        try await Task.sleep(for: .milliseconds(100))
        #expect(writer.pending == 3)
        running.cancel()
        try await running.value
        #expect(writer.pending == 0)
        #expect(store.ids.suffix(3) == ["req_c0", "req_c1", "req_c2"])
    }
}
