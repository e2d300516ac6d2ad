import Foundation
import GatehouseCore
@testable import GatehouseStore
import Testing

// MARK: - Fixtures

/// A date that survives the store's millisecond storage exactly.
private func date(ms: Int64) -> Date { Date(timeIntervalSince1970: Double(ms) / 1000) }

private func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }

/// 2023-11-15T00:00:00Z, a UTC midnight.
private let midnight: Int64 = 1_700_006_400_000
private let day: Int64 = 86_400_000

private func makeOrg(_ id: String) -> Organization {
    Organization(
        id: id, name: "Org \(id)", createdAt: date(ms: midnight),
        wrappedDataKey: Vault.WrappedDataKey(envelope: Data("wrapped-\(id)".utf8)))
}

private func makeOwnerKey(org: String) -> GateKeyRecord {
    GateKeyRecord(
        id: "\(org)-owner", orgID: org, kind: .api, name: "owner", hash: Data(repeating: 0xAB, count: 32),
        createdAt: date(ms: midnight))
}

/// A log entry with every optional field set; tests override what they need.
private func makeLog(
    _ id: String, org: String = "o1", at ms: Int64 = midnight, proxyKey: String = "p1", model: String? = "gpt-4o",
    status: Int = 200, userHash: String? = "u1", promptTokens: Int? = 10, completionTokens: Int? = 20,
    cachedTokens: Int? = 5, costMicros: Int64? = 1_234
) -> RequestLogRecord {
    RequestLogRecord(
        id: id, orgID: org, proxyKeyID: proxyKey, providerKeyID: "pk1", provider: "openai", model: model,
        method: "POST", path: "/v1/chat/completions", status: status, streamed: true, userHash: userHash,
        userSealed: userHash.map { Data("sealed-\($0)-\(id)".utf8) }, propertiesSealed: Data([0x00, 0xFF, 0x10]),
        clientIP: "203.0.113.7", startedAt: date(ms: ms), latencyMs: 123.456, timeToFirstTokenMs: 45.5,
        overheadMs: 0.731, promptTokens: promptTokens, completionTokens: completionTokens, cachedTokens: cachedTokens,
        costMicros: costMicros, error: nil, requestBodySealed: Data("request-\(id)".utf8),
        responseBodySealed: Data("response-\(id)".utf8))
}

private func draft(_ org: String, _ action: String) -> AuditDraft {
    AuditDraft(orgID: org, actorKind: "user", actorID: "u-1", clientIP: "127.0.0.1", action: action)
}

/// A fresh, migrated store with organizations "o1" and "o2", in a temporary directory that is
/// removed afterwards; the store is always closed.
private func withTwoOrgs<T>(_ body: (SQLiteStore) async throws -> T) async throws -> T {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("gatehouse-request-log-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(
        at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    defer { try? FileManager.default.removeItem(at: dir) }

    let store = try await SQLiteStore.open(path: dir.path + "/gatehouse.db")
    do {
        try await store.migrate()
        for org in ["o1", "o2"] {
            try await store.createOrganization(makeOrg(org), firstKey: makeOwnerKey(org: org), audit: draft(org, "org.create"))
        }
        let result = try await body(store)
        try await store.close()
        return result
    } catch {
        try? await store.close()
        throw error
    }
}

private func rowCount(_ store: SQLiteStore) async throws -> Int {
    let rows = try await store.executeForTesting("SELECT count(*) AS n FROM request_logs")
    return Int(rows.first?["n"] ?? "") ?? -1
}

/// What `requestLogs(query)` must return, computed independently of SQL.
private func expected(_ rows: [RequestLogRecord], _ query: RequestLogQuery, limit: Int? = nil) -> [RequestLogRecord] {
    let matching = rows.filter { row in
        row.orgID == query.orgID
            && query.proxyKeyID.map { row.proxyKeyID == $0 } ?? true
            && query.userHash.map { row.userHash == $0 } ?? true
            && query.model.map { row.model == $0 } ?? true
            && query.status.map { row.status == $0 } ?? true
            && query.since.map { row.startedAt >= $0 } ?? true
            && query.until.map { row.startedAt < $0 } ?? true
            && query.before.map { cursor in
                let ms = milliseconds(row.startedAt)
                return ms < cursor.startedAtMs || (ms == cursor.startedAtMs && row.id < cursor.id)
            } ?? true
    }
    let sorted = matching.sorted { a, b in
        let (msA, msB) = (milliseconds(a.startedAt), milliseconds(b.startedAt))
        return msA != msB ? msA > msB : a.id > b.id
    }
    return Array(sorted.prefix(limit ?? min(max(query.limit, 1), 1000)))
}

/// 40 entries in "o1" and 10 in "o2" with overlapping attributes: start times tie in pairs,
/// and ids are a permutation so id order differs from insertion order.
private func filterDataset() -> [RequestLogRecord] {
    let o1 = (0..<40).map { i in
        makeLog(
            String(format: "r%02d", (i * 17) % 40), at: midnight + Int64(i / 2) * 1_000, proxyKey: "p\(i % 3)",
            model: i % 7 == 0 ? nil : "m\(i % 2)", status: i % 4 == 3 ? 500 : 200,
            userHash: i % 5 == 0 ? nil : "u\(i % 4)")
    }
    let o2 = (0..<10).map { i in
        makeLog(
            String(format: "x%02d", i), org: "o2", at: midnight + Int64(i) * 1_000, proxyKey: "p\(i % 3)",
            model: "m\(i % 2)", status: i % 4 == 3 ? 500 : 200, userHash: "u\(i % 4)")
    }
    return o1 + o2
}

// MARK: - Tests

@Suite("Request log store")
struct RequestLogStoreTests {
    @Test func insertedBatchReadsBackEqual() async throws {
        try await withTwoOrgs { store in
            let full = makeLog("full", at: midnight + 1)
            var sparse = makeLog(
                "sparse", at: midnight, model: nil, status: 502, userHash: nil, promptTokens: nil,
                completionTokens: nil, cachedTokens: nil, costMicros: nil)
            sparse.streamed = false
            sparse.propertiesSealed = nil
            sparse.timeToFirstTokenMs = nil
            sparse.error = "upstream timed out"
            sparse.requestBodySealed = nil
            sparse.responseBodySealed = nil
            sparse.latencyMs = 30_000.000_001
            sparse.overheadMs = 0
            var edges = makeLog("edges", at: midnight - 1, costMicros: Int64.max)
            edges.propertiesSealed = Data()  // empty, not NULL
            edges.promptTokens = 0
            edges.cachedTokens = Int(Int32.max) + 1
            edges.latencyMs = 1e-9
            edges.timeToFirstTokenMs = 0

            try await store.insertRequestLogs([full, sparse, edges])

            #expect(try await store.requestLog(orgID: "o1", id: "full") == full)
            #expect(try await store.requestLog(orgID: "o1", id: "sparse") == sparse)
            #expect(try await store.requestLog(orgID: "o1", id: "edges") == edges)
            #expect(try await store.requestLog(orgID: "o1", id: "missing") == nil)
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1")) == [full, sparse, edges])
            // Stored as integer milliseconds.
            let stored = try await store.executeForTesting("SELECT started_at_ms, streamed FROM request_logs WHERE id = 'full'")
            #expect(stored.first?["started_at_ms"] == String(midnight + 1))
            #expect(stored.first?["streamed"] == "1")
        }
    }

    @Test func startTimesAreRoundedToMilliseconds() async throws {
        try await withTwoOrgs { store in
            var log = makeLog("a")
            log.startedAt = Date(timeIntervalSince1970: Double(midnight) / 1000 + 0.000_6)
            try await store.insertRequestLogs([log])
            #expect(try await store.requestLog(orgID: "o1", id: "a")?.startedAt == date(ms: midnight + 1))
        }
    }

    @Test func duplicateIdsAreIgnored() async throws {
        try await withTwoOrgs { store in
            let batch = (0..<5).map { makeLog("d\($0)", at: midnight + Int64($0)) }
            try await store.insertRequestLogs(batch)
            try await store.insertRequestLogs(batch)  // a retried batch

            // A retry overlapping the first batch, with a repeat inside itself: only new ids land,
            // and existing rows keep their first content.
            var changed = batch[0]
            changed.status = 500
            let retry = [changed, makeLog("d5", at: midnight + 5), makeLog("d5", at: midnight + 6)]
            try await store.insertRequestLogs(retry)

            #expect(try await rowCount(store) == 6)
            #expect(try await store.requestLog(orgID: "o1", id: "d0") == batch[0])
            #expect(try await store.requestLog(orgID: "o1", id: "d5")?.startedAt == date(ms: midnight + 5))
            try await store.insertRequestLogs([])
            #expect(try await rowCount(store) == 6)
        }
    }

    @Test func failedBatchWritesNothing() async throws {
        try await withTwoOrgs { store in
            // Unknown organization in the middle of a batch.
            let unknownOrg = await #expect(throws: StoreError.self) {
                try await store.insertRequestLogs([makeLog("a"), makeLog("b", org: "ghost"), makeLog("c")])
            }
            guard case .conflict? = unknownOrg else {
                Issue.record("expected .conflict, got \(String(describing: unknownOrg))")
                return
            }
            // NaN would be stored as NULL.
            var nan = makeLog("n")
            nan.timeToFirstTokenMs = .nan
            let nanError = await #expect(throws: StoreError.self) {
                try await store.insertRequestLogs([makeLog("a"), nan])
            }
            guard case .conflict? = nanError else {
                Issue.record("expected .conflict, got \(String(describing: nanError))")
                return
            }
            #expect(try await rowCount(store) == 0)
            // Still usable.
            try await store.insertRequestLogs([makeLog("a")])
            #expect(try await rowCount(store) == 1)
        }
    }

    @Test func eachFilterAloneAndCombined() async throws {
        try await withTwoOrgs { store in
            let rows = filterDataset()
            try await store.insertRequestLogs(rows)

            let since = date(ms: midnight + 5_000)
            let until = date(ms: midnight + 15_000)
            let queries: [RequestLogQuery] = [
                RequestLogQuery(orgID: "o1", limit: 1000),
                RequestLogQuery(orgID: "o1", proxyKeyID: "p1", limit: 1000),
                RequestLogQuery(orgID: "o1", userHash: "u2", limit: 1000),
                RequestLogQuery(orgID: "o1", model: "m0", limit: 1000),
                RequestLogQuery(orgID: "o1", status: 500, limit: 1000),
                RequestLogQuery(orgID: "o1", since: since, limit: 1000),
                RequestLogQuery(orgID: "o1", until: until, limit: 1000),
                RequestLogQuery(orgID: "o1", before: RequestLogCursor(startedAtMs: midnight + 7_000, id: "r20"), limit: 1000),
                RequestLogQuery(orgID: "o1", limit: 3),
                RequestLogQuery(orgID: "o1", proxyKeyID: "p0", model: "m1", limit: 1000),
                RequestLogQuery(orgID: "o1", userHash: "u3", status: 500, since: since, limit: 1000),
                RequestLogQuery(orgID: "o1", proxyKeyID: "p2", since: since, until: until, limit: 1000),
                RequestLogQuery(
                    orgID: "o1", proxyKeyID: "p1", userHash: "u1", model: "m1", status: 200, since: date(ms: midnight),
                    until: date(ms: midnight + 20_000), before: RequestLogCursor(startedAtMs: midnight + 18_000, id: "r99"),
                    limit: 2),
                RequestLogQuery(orgID: "o1", model: "no-such-model", limit: 1000),
                RequestLogQuery(orgID: "o1", since: until, until: since, limit: 1000),  // empty window
            ]
            for query in queries {
                let got = try await store.requestLogs(query)
                #expect(got == expected(rows, query), "\(query)")
            }

            // Spot checks independent of the reference filter.
            let all = try await store.requestLogs(RequestLogQuery(orgID: "o1", limit: 1000))
            #expect(all.count == 40)
            #expect(Set(all.map(\.id)) == Set((0..<40).map { String(format: "r%02d", $0) }))
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1", status: 500, limit: 1000)).count == 10)
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1", proxyKeyID: "p1", limit: 1000)).allSatisfy {
                $0.proxyKeyID == "p1"
            })
            let window = try await store.requestLogs(RequestLogQuery(orgID: "o1", since: since, until: until, limit: 1000))
            #expect(window.count == 20)  // 10 distinct seconds × 2, [5 s, 15 s)
            #expect(window.first.map { milliseconds($0.startedAt) } == midnight + 14_000)
            #expect(window.last.map { milliseconds($0.startedAt) } == midnight + 5_000)
        }
    }

    @Test func limitIsClampedTo1Through1000() async throws {
        try await withTwoOrgs { store in
            try await store.insertRequestLogs((0..<3).map { makeLog("l\($0)", at: midnight + Int64($0)) })
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1", limit: 0)).map(\.id) == ["l2"])
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1", limit: -7)).map(\.id) == ["l2"])
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1", limit: Int.max)).count == 3)
        }
    }

    @Test func cursorPagingVisitsEveryRowOnceInOrder() async throws {
        try await withTwoOrgs { store in
            let rows = filterDataset()
            try await store.insertRequestLogs(rows)

            for base in [RequestLogQuery(orgID: "o1", limit: 7), RequestLogQuery(orgID: "o1", proxyKeyID: "p1", limit: 3)] {
                var seen: [RequestLogRecord] = []
                var query = base
                var pages = 0
                while true {
                    let page = try await store.requestLogs(query)
                    #expect(page.count <= base.limit)
                    guard let last = page.last else { break }
                    seen += page
                    query.before = RequestLogCursor(startedAtMs: milliseconds(last.startedAt), id: last.id)
                    pages += 1
                    try #require(pages <= 50, "paging does not terminate")
                }
                let all = expected(rows, base, limit: .max)
                #expect(seen == all)
                #expect(Set(seen.map(\.id)).count == seen.count)
            }

            // Ties on the start millisecond are broken by descending id, across a page boundary.
            let tied = try await store.requestLogs(RequestLogQuery(orgID: "o1", limit: 2))
            #expect(tied.count == 2 && tied[0].startedAt == tied[1].startedAt && tied[0].id > tied[1].id)
            let next = try await store.requestLogs(RequestLogQuery(
                orgID: "o1", before: RequestLogCursor(startedAtMs: milliseconds(tied[0].startedAt), id: tied[0].id), limit: 1))
            #expect(next == [tied[1]])
        }
    }

    @Test func otherOrganizationIsNeverVisible() async throws {
        try await withTwoOrgs { store in
            let mine = makeLog("mine", at: midnight)
            let theirs = makeLog("theirs", org: "o2", at: midnight + 1)
            try await store.insertRequestLogs([mine, theirs])

            #expect(try await store.requestLog(orgID: "o1", id: "theirs") == nil)
            #expect(try await store.requestLog(orgID: "o2", id: "theirs") == theirs)
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1")) == [mine])
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1", proxyKeyID: "p1", userHash: "u1", model: "gpt-4o")) == [mine])
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o2")) == [theirs])
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "ghost")).isEmpty)
            for grouping in UsageGrouping.allCases {
                let rows = try await store.usage(orgID: "o1", groupBy: grouping, since: nil, until: nil)
                #expect(rows.map(\.requests) == [1], "\(grouping)")
                #expect(rows.allSatisfy { $0.sampleRequestID != "theirs" })
                #expect(try await store.usage(orgID: "ghost", groupBy: grouping, since: nil, until: nil).isEmpty)
            }
        }
    }

    // MARK: Usage

    /// Five "o1" entries around the UTC midnights of 2023-11-15 and -16, plus one "o2" entry
    /// that must never be counted.
    private static let usageRows: [RequestLogRecord] = [
        makeLog("a1", at: midnight - 1, proxyKey: "p1", model: "gpt-4o", userHash: "u1",
                promptTokens: 10, completionTokens: 5, cachedTokens: 2, costMicros: 100),
        makeLog("a2", at: midnight, proxyKey: "p1", model: "gpt-4o", userHash: "u1",
                promptTokens: nil, completionTokens: 7, cachedTokens: nil, costMicros: nil),
        makeLog("a3", at: midnight + 1_000, proxyKey: "p2", model: nil, userHash: nil,
                promptTokens: 3, completionTokens: nil, cachedTokens: 1, costMicros: 50),
        {
            var log = makeLog("a4", at: midnight + day, proxyKey: "p2", model: "claude", userHash: "u2",
                              promptTokens: 1, completionTokens: 1, cachedTokens: 0, costMicros: nil)
            log.userSealed = nil
            return log
        }(),
        makeLog("a5", at: midnight + day - 1, proxyKey: "p1", model: "claude", userHash: "u1",
                promptTokens: 100, completionTokens: 200, cachedTokens: nil, costMicros: 1_000_000_000_000),
        makeLog("b1", org: "o2", at: midnight, proxyKey: "p1", model: "gpt-4o", userHash: "u1",
                promptTokens: 999, completionTokens: 999, cachedTokens: 999, costMicros: 999),
    ]

    private static func sealed(_ id: String) -> Data? {
        usageRows.first { $0.id == id }?.userSealed
    }

    @Test func usageByProxyKey() async throws {
        try await withTwoOrgs { store in
            try await store.insertRequestLogs(Self.usageRows)
            #expect(try await store.usage(orgID: "o1", groupBy: .proxyKey, since: nil, until: nil) == [
                UsageRow(group: "p1", requests: 3, promptTokens: 110, completionTokens: 212, cachedTokens: 2,
                         costMicros: 1_000_000_000_100, unpricedRequests: 1),
                UsageRow(group: "p2", requests: 2, promptTokens: 4, completionTokens: 1, cachedTokens: 1,
                         costMicros: 50, unpricedRequests: 1),
            ])
        }
    }

    @Test func usageByModelCountsMissingModelAsUnknown() async throws {
        try await withTwoOrgs { store in
            try await store.insertRequestLogs(Self.usageRows)
            #expect(try await store.usage(orgID: "o1", groupBy: .model, since: nil, until: nil) == [
                UsageRow(group: "claude", requests: 2, promptTokens: 101, completionTokens: 201, cachedTokens: 0,
                         costMicros: 1_000_000_000_000, unpricedRequests: 1),
                UsageRow(group: "gpt-4o", requests: 2, promptTokens: 10, completionTokens: 12, cachedTokens: 2,
                         costMicros: 100, unpricedRequests: 1),
                UsageRow(group: "unknown", requests: 1, promptTokens: 3, completionTokens: 0, cachedTokens: 1,
                         costMicros: 50, unpricedRequests: 0),
            ])
        }
    }

    @Test func usageByUserSkipsAnonymousAndReturnsASample() async throws {
        try await withTwoOrgs { store in
            try await store.insertRequestLogs(Self.usageRows)
            #expect(try await store.usage(orgID: "o1", groupBy: .user, since: nil, until: nil) == [
                UsageRow(group: "u1", sampleUserSealed: Self.sealed("a5"), sampleRequestID: "a5", requests: 3,
                         promptTokens: 110, completionTokens: 212, cachedTokens: 2, costMicros: 1_000_000_000_100,
                         unpricedRequests: 1),
                // No entry of u2 has a sealed user id, so there is no sample; all costs unknown.
                UsageRow(group: "u2", requests: 1, promptTokens: 1, completionTokens: 1, cachedTokens: 0,
                         costMicros: 0, unpricedRequests: 1),
            ])
            // The sample is taken from the window, and its blob belongs to its request id.
            let early = try await store.usage(
                orgID: "o1", groupBy: .user, since: date(ms: midnight), until: date(ms: midnight + day - 1))
            #expect(early == [
                UsageRow(group: "u1", sampleUserSealed: Self.sealed("a2"), sampleRequestID: "a2", requests: 1,
                         promptTokens: 0, completionTokens: 7, cachedTokens: 0, costMicros: 0, unpricedRequests: 1),
            ])
        }
    }

    @Test func usageByDayUsesUTCBoundariesAndTheWindow() async throws {
        try await withTwoOrgs { store in
            try await store.insertRequestLogs(Self.usageRows)
            #expect(try await store.usage(orgID: "o1", groupBy: .day, since: nil, until: nil) == [
                UsageRow(group: "2023-11-14", requests: 1, promptTokens: 10, completionTokens: 5, cachedTokens: 2,
                         costMicros: 100, unpricedRequests: 0),
                UsageRow(group: "2023-11-15", requests: 3, promptTokens: 103, completionTokens: 207, cachedTokens: 1,
                         costMicros: 1_000_000_000_050, unpricedRequests: 1),
                UsageRow(group: "2023-11-16", requests: 1, promptTokens: 1, completionTokens: 1, cachedTokens: 0,
                         costMicros: 0, unpricedRequests: 1),
            ])
            // since inclusive (a2 at exactly midnight), until exclusive (a4 at the next midnight).
            #expect(try await store.usage(
                orgID: "o1", groupBy: .day, since: date(ms: midnight), until: date(ms: midnight + day)
            ) == [
                UsageRow(group: "2023-11-15", requests: 3, promptTokens: 103, completionTokens: 207, cachedTokens: 1,
                         costMicros: 1_000_000_000_050, unpricedRequests: 1),
            ])
            #expect(try await store.usage(
                orgID: "o1", groupBy: .proxyKey, since: date(ms: midnight + day + 1), until: nil
            ).isEmpty)
        }
    }

    // MARK: Side effects, volume, concurrency

    @Test func insertWritesNoAuditEntryAndNoChange() async throws {
        try await withTwoOrgs { store in
            let sequence = try await store.changeSequence()
            let audit = try await store.auditEntries(orgID: nil, after: 0, limit: 10_000)
            try await store.insertRequestLogs(filterDataset())
            try await store.insertRequestLogs(filterDataset())
            #expect(try await store.changeSequence() == sequence)
            #expect(try await store.auditEntries(orgID: nil, after: 0, limit: 10_000) == audit)
        }
    }

    @Test func thousandRowBatch() async throws {
        try await withTwoOrgs { store in
            let batch = (0..<1000).map { i in
                makeLog(String(format: "big%04d", i), at: midnight + Int64(i % 250), proxyKey: "p\(i % 10)")
            }
            let clock = ContinuousClock()
            let elapsed = try await clock.measure {
                try await store.insertRequestLogs(batch)
            }
            _ = elapsed  // speed is measured in Benchmarks/, not asserted here
            #expect(try await rowCount(store) == 1000)
            let newest = try await store.requestLogs(RequestLogQuery(orgID: "o1", limit: 5000))
            #expect(newest.count == 1000)
            #expect(newest == expected(batch, RequestLogQuery(orgID: "o1", limit: 1000)))
            try await store.insertRequestLogs([makeLog("one-more", at: midnight - 1)])
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1", limit: 5000)).count == 1000)
            let perKey = try await store.usage(orgID: "o1", groupBy: .proxyKey, since: nil, until: nil)
            #expect(perKey.map(\.group) == (0..<10).map { "p\($0)" })
            #expect(perKey.map(\.requests) == [100, 101] + Array(repeating: 100, count: 8))
        }
    }

    @Test func concurrentBatchesAndReads() async throws {
        try await withTwoOrgs { store in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for batch in 0..<10 {
                    group.addTask {
                        let rows = (0..<50).map { i in
                            makeLog("c\(batch)-\(i)", org: batch % 2 == 0 ? "o1" : "o2", at: midnight + Int64(i))
                        }
                        try await store.insertRequestLogs(rows)
                    }
                    group.addTask {
                        // Reads never see another org's rows, whatever is committed so far.
                        let seen = try await store.requestLogs(RequestLogQuery(orgID: "o1", limit: 1000))
                        #expect(seen.allSatisfy { $0.orgID == "o1" })
                        #expect(seen.count % 50 == 0)  // whole batches only
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await rowCount(store) == 500)
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1", limit: 1000)).count == 250)
        }
    }

    @Test func upgradeFromVersion1CreatesTheTable() async throws {
        try await withTwoOrgs { store in
            // Turn the database back into a version-1 one, then migrate again.
            for statement in [
                "DROP TABLE request_logs", "DROP TABLE sessions", "DROP TABLE users", "DROP TABLE org_settings",
                "DROP TABLE audit_checkpoints", "DROP INDEX audit_log_action", "DELETE FROM schema_migrations WHERE version >= 2",
            ] {
                _ = try await store.executeForTesting(statement)
            }
            try await store.migrate()
            let versions = try await store.executeForTesting("SELECT version FROM schema_migrations ORDER BY version")
            #expect(versions.compactMap { $0["version"] } == (1...SQLiteMigrations.latestVersion).map(String.init))
            let indexes = try await store.executeForTesting(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'request_logs' AND sql IS NOT NULL ORDER BY name")
            #expect(indexes.compactMap { $0["name"] } == [
                "request_logs_org_model", "request_logs_org_proxy_key", "request_logs_org_time", "request_logs_org_user",
            ])
            try await store.insertRequestLogs([makeLog("after-upgrade")])
            #expect(try await store.requestLog(orgID: "o1", id: "after-upgrade") == makeLog("after-upgrade"))
            // Existing data survived.
            #expect(try await store.organizations().map(\.id) == ["o1", "o2"])
        }
    }

    @Test func upgradeToVersion5MakesTheUserIndexPartialAndKeepsEveryRow() async throws {
        try await withTwoOrgs { store in
            // A version-4 database (the per-user index over every row) holding entries with and
            // without a user.
            _ = try await store.executeForTesting("DROP INDEX request_logs_org_user")
            _ = try await store.executeForTesting(
                "CREATE INDEX request_logs_org_user ON request_logs(org_id, user_hash, started_at_ms DESC)")
            _ = try await store.executeForTesting("DELETE FROM schema_migrations WHERE version >= 5")
            let logs = (0..<30).map { i in makeLog("v4-\(i)", at: midnight + Int64(i), userHash: i % 3 == 0 ? nil : "u\(i % 2)") }
            try await store.insertRequestLogs(logs)

            try await store.migrate()
            let index = try await store.executeForTesting(
                "SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = 'request_logs_org_user'")
            #expect(index.first?["sql"]?.contains("WHERE user_hash IS NOT NULL") == true)
            #expect(try await rowCount(store) == 30)
            // The user filter and grouping answer as before, and the filter can use the index.
            for user in ["u0", "u1"] {
                let found = try await store.requestLogs(RequestLogQuery(orgID: "o1", userHash: user, limit: 1000))
                #expect(Set(found.map(\.id)) == Set(logs.filter { $0.userHash == user }.map(\.id)))
            }
            let byUser = try await store.usage(orgID: "o1", groupBy: .user, since: nil, until: nil)
            #expect(byUser.map(\.group) == ["u0", "u1"])
            #expect(byUser.map(\.requests).reduce(0, +) == 20)
            let plan = try await store.executeForTesting(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM request_logs WHERE org_id = 'o1' AND user_hash = 'u1'")
            #expect(plan.contains { $0["detail"]?.contains("request_logs_org_user") == true }, "\(plan)")
            // Entries without a user are still listed, and new ones are written.
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1", limit: 1000)).count == 30)
            try await store.insertRequestLogs([makeLog("after-v5", userHash: nil), makeLog("after-v5-u", userHash: "u1")])
            #expect(try await store.requestLogs(RequestLogQuery(orgID: "o1", userHash: "u1", limit: 1000)).count == 11)
        }
    }

}
