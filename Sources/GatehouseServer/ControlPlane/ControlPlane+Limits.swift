import Foundation
import GatehouseCore
import GatehouseStore

extension ControlPlane {
    /// Rebuilds every proxy key's rate-limit windows and budget spend from the request log,
    /// the durable ledger of what was used. Called at start-up before the port opens.
    ///
    /// What can be lost in a crash is what had not reached the log yet: at most one flush
    /// interval of the request-log writer.
    public func restoreLimits(from logs: any RequestLogStore, now: Date = Date()) async throws {
        for key in keyTable.snapshot.gateKeys.values where key.kind == .proxy && !key.isRevoked {
            try await restoreLimits(for: key, from: logs, now: now)
        }
    }

    /// Rebuilds one key's windows and spend from the request log.
    func restoreLimits(for key: GateKeyRecord, from logs: any RequestLogStore, now: Date = Date()) async throws {
        do {
            let limits = key.rateLimits ?? []
            guard !limits.isEmpty || key.budget != nil else { return }
            let longestWindow = limits.map(\.windowSeconds).max() ?? 0
            var since = now.addingTimeInterval(-Double(longestWindow))
            let periodStart = key.budget?.period.bounds(containing: now).start
            if let periodStart, periodStart < since { since = periodStart }
            let history = try await logs.usageHistory(orgID: key.orgID, proxyKeyID: key.id, since: since)
            let spent = periodStart.map { start in history.filter { $0.time >= start }.reduce(Int64(0)) { $0 + $1.costMicros } } ?? 0
            ledger.restore(keyID: key.id, limits: limits, budget: key.budget, spentMicros: spent, history: history, now: now)
        }
    }
}

extension RequestLogStore {
    /// Every logged call of one proxy key since `since`, oldest first, as ledger history.
    public func usageHistory(orgID: String, proxyKeyID: String, since: Date) async throws -> [LimitLedger.HistoryEntry] {
        var entries: [LimitLedger.HistoryEntry] = []
        var query = RequestLogQuery(orgID: orgID, proxyKeyID: proxyKeyID, since: since, limit: 1000)
        while true {
            let page = try await requestLogs(query)
            for r in page {
                entries.append(
                    .init(time: r.startedAt, tokens: (r.promptTokens ?? 0) + (r.completionTokens ?? 0), costMicros: r.costMicros ?? 0))
            }
            guard page.count == query.limit, let last = page.last else { break }
            query.before = RequestLogCursor(after: last)
        }
        return entries.reversed()
    }
}
