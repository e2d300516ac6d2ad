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
public final class RequestLogWriter: Service, Sendable {
    let store: any RequestLogStore
    let keyTable: KeyTable
    let capacity: Int
    let flushInterval: Duration
    let logger: Logger
    private let queue = Mutex<[PendingRequestLog]>([])
    private let droppedCount = Atomic<Int>(0)
    private let writtenCount = Atomic<Int>(0)

    public init(store: any RequestLogStore, keyTable: KeyTable, capacity: Int = 10_000, flushInterval: Duration = .milliseconds(200), logger: Logger) {
        self.store = store
        self.keyTable = keyTable
        self.capacity = capacity
        self.flushInterval = flushInterval
        self.logger = logger
    }

    /// Entries dropped because the queue was full.
    public var dropped: Int { droppedCount.load(ordering: .relaxed) }
    public var written: Int { writtenCount.load(ordering: .relaxed) }
    public var pending: Int { queue.withLock { $0.count } }

    /// What the gateway calls at the end of every request (public for the microbenchmark).
    public func enqueue(_ entry: PendingRequestLog) {
        let accepted = queue.withLock { q -> Bool in
            guard q.count < capacity else { return false }
            q.append(entry)
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
            let batch = queue.withLock { q -> [PendingRequestLog] in
                let n = min(q.count, 500)
                let head = Array(q.prefix(n))
                q.removeFirst(n)
                return head
            }
            guard !batch.isEmpty else { return }
            let records = batch.map(seal)
            do {
                try await store.insertRequestLogs(records)
                writtenCount.add(records.count, ordering: .relaxed)
            } catch {
                if !(error is CancellationError) {
                    logger.error("writing request log batch failed; will retry", metadata: ["error": "\(error)"])
                }
                queue.withLock { q in
                    let room = max(0, capacity - q.count)
                    q.insert(contentsOf: batch.prefix(room), at: 0)
                }
                return
            }
        }
    }

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
            record.userSealed = try? keys.seal(Data(user.utf8), context: "\(id)|user")
        }
        if !entry.properties.isEmpty {
            let json = JSONValue.object(entry.properties.mapValues { .string($0) }).encoded()
            record.propertiesSealed = try? keys.seal(json, context: "\(id)|properties")
        }
        if let body = entry.requestBody {
            record.requestBodySealed = try? keys.seal(Data(body.readableBytesView), context: "\(id)|request")
        }
        if let body = entry.responseBody {
            record.responseBodySealed = try? keys.seal(body, context: "\(id)|response")
        }
        return record
    }
}
