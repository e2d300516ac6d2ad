import Foundation
import GatehouseCore
import GatehouseStore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A finished gateway call waiting to be written. Holds personal data in plain form only in
/// memory; the writer seals it under the org DEK before it reaches the store.
public struct PendingRequestLog: Sendable {
    public var record: RequestLogRecord
    public var userID: String?
    public var properties: [String: String]
    public var requestBody: ByteBuffer?
    public var responseBody: [UInt8]?

    public init(record: RequestLogRecord, userID: String?, properties: [String: String], requestBody: ByteBuffer?, responseBody: [UInt8]?) {
        self.record = record
        self.userID = userID
        self.properties = properties
        self.requestBody = requestBody
        self.responseBody = responseBody
    }
}

/// The bounded background writer of the request log.
///
/// The gateway only appends to an in-memory queue (a lock and an array append); one task
/// drains it in batches. When the queue is full the entry is dropped and counted — the request
/// itself is never slowed down or failed by logging.
///
/// It flushes every 50 ms: smaller batches are shorter bursts of sealing and inserting on the
/// cores the event loops share, which measured a lower one-connection tail (p99 ~2.5 → ~1.6 ms
/// in seven interleaved runs against 200 ms) at the same 64-connection throughput
/// (`Benchmarks/README.md`). An idle queue costs a wake-up and no transaction.
public final class RequestLogWriter: Service, Sendable {
    let store: any RequestLogStore
    let keyTable: KeyTable
    let capacity: Int
    let flushInterval: Duration
    let logger: Logger
    /// Queued entries, and how many taken by the writer are not written yet: together at most
    /// `capacity` entries are held in memory.
    private struct Queue {
        var entries: [PendingRequestLog] = []
        var inFlight = 0
    }
    private let queue = Mutex(Queue())
    private let droppedCount = Atomic<Int>(0)
    private let writtenCount = Atomic<Int>(0)

    public init(store: any RequestLogStore, keyTable: KeyTable, capacity: Int = 10_000, flushInterval: Duration = .milliseconds(50), logger: Logger) {
        self.store = store
        self.keyTable = keyTable
        self.capacity = capacity
        self.flushInterval = flushInterval
        self.logger = logger
    }

    /// Entries dropped because the queue was full.
    public var dropped: Int { droppedCount.load(ordering: .relaxed) }
    public var written: Int { writtenCount.load(ordering: .relaxed) }
    /// Entries not written yet (queued or being written).
    public var pending: Int { queue.withLock { $0.entries.count + $0.inFlight } }

    /// What the gateway calls at the end of every request (public for the microbenchmark).
    public func enqueue(_ entry: consuming PendingRequestLog) {
        var entry = Optional(entry)  // moved into the queue, not copied field by field
        let accepted = queue.withLock { q -> Bool in
            guard q.entries.count + q.inFlight < capacity, let taken = entry.take() else { return false }
            q.entries.append(taken)
            return true
        }
        if !accepted {
            let n = droppedCount.add(1, ordering: .relaxed).newValue
            if n == 1 || n % 1000 == 0 {
                logger.warning("request log queue full; entries dropped", metadata: ["dropped_total": "\(n)"])
            }
        }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: self.flushInterval)
                await self.flush()
            }
        }
        await flush()  // whatever arrived before shutdown
    }

    /// Writes everything queued so far. A failed batch is put back (bounded by capacity).
    public func flush() async {
        while true {
            // Everything queued is taken at once (the array is handed over, not copied entry by
            // entry) and written in batches of at most `batchSize`.
            let taken = queue.withLock { q -> [PendingRequestLog] in
                var all: [PendingRequestLog] = []
                swap(&all, &q.entries)
                q.inFlight += all.count
                return all
            }
            guard !taken.isEmpty else { return }
            var start = 0
            while start < taken.count {
                let end = min(start + Self.batchSize, taken.count)
                let records = taken[start..<end].map(seal)
                do {
                    try await store.insertRequestLogs(records)
                    writtenCount.add(records.count, ordering: .relaxed)
                    queue.withLock { $0.inFlight -= records.count }
                } catch {
                    if !(error is CancellationError) {
                        logger.error("writing request log batch failed; will retry", metadata: ["error": "\(error)"])
                    }
                    // This batch and the ones after it go back to the front.
                    queue.withLock { q in
                        q.inFlight -= taken.count - start
                        let room = max(0, capacity - q.entries.count - q.inFlight)
                        q.entries.insert(contentsOf: taken[start...].prefix(room), at: 0)
                    }
                    return
                }
                start = end
            }
        }
    }

    /// Rows per store call (one transaction each).
    static let batchSize = 500

    func seal(_ entry: PendingRequestLog) -> RequestLogRecord {
        var record = entry.record
        guard let keys = keyTable.orgKeys(record.orgID) else {
            // Organization gone (crypto-shredded): keep the metrics, drop the personal data.
            record.userHash = nil
            return record
        }
        let id = record.id
        if let user = entry.userID {
            record.userHash = keys.userHash(user)
            record.userSealed = try? keys.seal(Data(user.utf8), rowID: id, field: "user")
        }
        if !entry.properties.isEmpty {
            let json = JSONValue.object(entry.properties.mapValues { .string($0) }).encoded()
            record.propertiesSealed = try? keys.seal(json, rowID: id, field: "properties")
        }
        if let body = entry.requestBody {
            record.requestBodySealed = try? keys.seal(body.readableBytesView, rowID: id, field: "request")
        }
        if let body = entry.responseBody {
            record.responseBodySealed = try? keys.seal(body, rowID: id, field: "response")
        }
        return record
    }
}
