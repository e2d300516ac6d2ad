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
/// Every 50 ms it writes what is queued at that moment, in transactions of at most 500 rows, and
/// goes on at once only when a whole batch is waiting (it is behind). It shares the two cores
/// with the event loops, so how it spends its CPU shows in the gateway's latency
/// (`Benchmarks/README.md`, "The request-log writer"):
/// - one pass a tick, not a chain of small transactions for what trickles in meanwhile (each
///   pays a commit's WAL writes and `fsync`);
/// - 50 ms rather than 200: shorter bursts, a lower one-connection p99 (~2.5 → ~1.6 ms in seven
///   interleaved runs) at the same 64-connection throughput;
/// - while it keeps up (a pass of less than a batch) it calls `sched_yield()` every few rows it
///   seals, so that an event loop woken on its core does not wait for the rest of the burst.
///   Behind, it does not: yielding always starved it at 64 connections (the queue filled and
///   entries were dropped).
///
/// An idle queue costs a wake-up and no transaction.
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
            let clock = ContinuousClock()
            var tick = clock.now
            while !Task.isCancelled {
                // A tick every `flushInterval` from the previous one (at once if a pass took
                // longer), and one pass over what is queued at the tick. What arrives during the
                // pass waits for the next tick, unless a whole batch is already waiting: then the
                // writer is behind and goes on.
                tick = max(tick.advanced(by: self.flushInterval), clock.now)
                try? await Task.sleep(until: tick, clock: clock)
                while let taken = await self.writeQueued(), taken > 0, !Task.isCancelled,
                    self.queue.withLock({ $0.entries.count }) >= Self.batchSize {}
            }
        }
        await flush()  // whatever arrived before shutdown
    }

    /// Writes everything queued, including what arrives while it writes, until the queue is
    /// empty or a batch fails (that batch is put back, bounded by capacity).
    public func flush() async {
        while let taken = await writeQueued(), taken > 0 {}
    }

    /// One pass: takes everything queued at this moment (the array is handed over, not copied
    /// entry by entry) and writes it in batches of at most `batchSize`. Returns how many entries
    /// it took, or nil if a batch failed; the failed batch and the ones after it go back to the
    /// front of the queue.
    ///
    /// A pass does not go back for what arrived while it was writing. When it did, a queue
    /// filling at a low rate was written as a chain of small transactions right after each
    /// tick, each paying a commit's WAL writes and `fsync`: at one connection (~6 k requests/s)
    /// the SQLite thread spent ~77 µs a row instead of ~24, and the writer woke between most
    /// requests.
    func writeQueued() async -> Int? {
        let taken = queue.withLock { q -> [PendingRequestLog] in
            var all: [PendingRequestLog] = []
            swap(&all, &q.entries)
            q.inFlight += all.count
            return all
        }
        // Keeping up (less than a batch a tick), the sealing gives the cores back to the event
        // loops every few rows; behind, it keeps its fair share so that the queue drains.
        let yielding = taken.count < Self.batchSize
        var start = 0
        while start < taken.count {
            let end = min(start + Self.batchSize, taken.count)
            var records: [RequestLogRecord] = []
            records.reserveCapacity(end - start)
            for index in start..<end {
                records.append(seal(taken[index]))
                if yielding, (index - start) % Self.rowsBetweenYields == Self.rowsBetweenYields - 1 { sched_yield() }
            }
            do {
                try await store.insertRequestLogs(records)
                writtenCount.add(records.count, ordering: .relaxed)
                queue.withLock { $0.inFlight -= records.count }
            } catch {
                if !(error is CancellationError) {
                    logger.error("writing request log batch failed; will retry", metadata: ["error": "\(error)"])
                }
                queue.withLock { q in
                    q.inFlight -= taken.count - start
                    let room = max(0, capacity - q.entries.count - q.inFlight)
                    q.entries.insert(contentsOf: taken[start...].prefix(room), at: 0)
                }
                return nil
            }
            start = end
        }
        return taken.count
    }

    /// Rows per store call (one transaction each).
    static let batchSize = 500
    /// Rows sealed between two `sched_yield()`s.
    static let rowsBetweenYields = 8

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
