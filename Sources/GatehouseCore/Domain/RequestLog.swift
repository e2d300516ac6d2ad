import Foundation

/// One gateway call, as recorded in the request log.
///
/// Personal data is never stored in plain text: bodies, the end-user id and custom properties
/// are sealed under the org DEK with the request id as context (``OrgKeys/seal(_:context:)``);
/// `userHash` is a keyed HMAC of the user id so logs can be filtered and grouped by user
/// without storing who the user is.
public struct RequestLogRecord: Sendable, Equatable {
    public var id: String
    public var orgID: String
    public var proxyKeyID: String
    public var providerKeyID: String
    public var provider: String
    public var model: String?
    public var method: String
    public var path: String
    public var status: Int
    public var streamed: Bool
    /// HMAC of the end-user id (`Helicone-User-Id` or the body's `user`), hex; nil when none.
    public var userHash: String?
    /// Sealed end-user id (context `"<id>|user"`).
    public var userSealed: Data?
    /// Sealed JSON object of `Helicone-Property-*` and `Helicone-Session-Id` (context `"<id>|properties"`).
    public var propertiesSealed: Data?
    public var clientIP: String
    public var startedAt: Date
    public var latencyMs: Double
    public var timeToFirstTokenMs: Double?
    public var overheadMs: Double
    public var promptTokens: Int?
    public var completionTokens: Int?
    public var cachedTokens: Int?
    /// Integer micro-dollars; nil when the model has no known price.
    public var costMicros: Int64?
    /// A short, secret-free error description (gateway errors and upstream failures).
    public var error: String?
    /// Sealed request body (context `"<id>|request"`), nil when omitted.
    public var requestBodySealed: Data?
    /// Sealed response body (context `"<id>|response"`), nil when omitted.
    public var responseBodySealed: Data?

    public init(
        id: String, orgID: String, proxyKeyID: String, providerKeyID: String, provider: String, model: String?,
        method: String, path: String, status: Int, streamed: Bool, userHash: String?, userSealed: Data?,
        propertiesSealed: Data?, clientIP: String, startedAt: Date, latencyMs: Double, timeToFirstTokenMs: Double?,
        overheadMs: Double, promptTokens: Int?, completionTokens: Int?, cachedTokens: Int?, costMicros: Int64?,
        error: String?, requestBodySealed: Data?, responseBodySealed: Data?
    ) {
        self.id = id
        self.orgID = orgID
        self.proxyKeyID = proxyKeyID
        self.providerKeyID = providerKeyID
        self.provider = provider
        self.model = model
        self.method = method
        self.path = path
        self.status = status
        self.streamed = streamed
        self.userHash = userHash
        self.userSealed = userSealed
        self.propertiesSealed = propertiesSealed
        self.clientIP = clientIP
        self.startedAt = startedAt
        self.latencyMs = latencyMs
        self.timeToFirstTokenMs = timeToFirstTokenMs
        self.overheadMs = overheadMs
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
        self.costMicros = costMicros
        self.error = error
        self.requestBodySealed = requestBodySealed
        self.responseBodySealed = responseBodySealed
    }
}

/// Filters and paging for the request log. Results are newest first.
public struct RequestLogQuery: Sendable, Equatable {
    public var orgID: String
    public var proxyKeyID: String?
    public var userHash: String?
    public var model: String?
    public var status: Int?
    /// Inclusive lower bound on `startedAt`.
    public var since: Date?
    /// Exclusive upper bound on `startedAt`.
    public var until: Date?
    /// Paging: return entries strictly older than this (startedAt, id) position.
    public var before: RequestLogCursor?
    public var limit: Int

    public init(
        orgID: String, proxyKeyID: String? = nil, userHash: String? = nil, model: String? = nil, status: Int? = nil,
        since: Date? = nil, until: Date? = nil, before: RequestLogCursor? = nil, limit: Int = 50
    ) {
        self.orgID = orgID
        self.proxyKeyID = proxyKeyID
        self.userHash = userHash
        self.model = model
        self.status = status
        self.since = since
        self.until = until
        self.before = before
        self.limit = limit
    }
}

/// A position in the request log: (start time in ms, id), ordered descending.
public struct RequestLogCursor: Sendable, Equatable {
    public var startedAtMs: Int64
    public var id: String
    public init(startedAtMs: Int64, id: String) {
        self.startedAtMs = startedAtMs
        self.id = id
    }

    /// The position just past `record`, for the next page.
    public init(after record: RequestLogRecord) {
        self.init(startedAtMs: record.startedAt.unixMilliseconds, id: record.id)
    }
}

/// How usage is grouped.
public enum UsageGrouping: String, Sendable, CaseIterable {
    case proxyKey = "proxy_key"
    case model
    case user
    case day
}

/// One group of usage totals.
public struct UsageRow: Sendable, Equatable {
    /// The group: proxy key id, model, user hash, or `YYYY-MM-DD` (UTC).
    public var group: String
    /// For `user` grouping: one sealed user id of the group (with the request id that is its
    /// context), so the API can show who the user is.
    public var sampleUserSealed: Data?
    public var sampleRequestID: String?
    public var requests: Int
    public var promptTokens: Int
    public var completionTokens: Int
    public var cachedTokens: Int
    /// Sum over priced requests, micro-dollars.
    public var costMicros: Int64
    /// Requests whose cost is unknown (model not in the pricing table).
    public var unpricedRequests: Int

    public init(
        group: String, sampleUserSealed: Data? = nil, sampleRequestID: String? = nil, requests: Int, promptTokens: Int,
        completionTokens: Int, cachedTokens: Int, costMicros: Int64, unpricedRequests: Int
    ) {
        self.group = group
        self.sampleUserSealed = sampleUserSealed
        self.sampleRequestID = sampleRequestID
        self.requests = requests
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
        self.costMicros = costMicros
        self.unpricedRequests = unpricedRequests
    }
}
