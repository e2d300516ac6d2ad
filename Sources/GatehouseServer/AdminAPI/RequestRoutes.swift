import Foundation
import GatehouseCore
import GatehouseStore
import Hummingbird

/// `GET /api/requests`, `GET /api/requests/{id}` and `GET /api/usage`.
struct RequestRoutes {
    let plane: ControlPlane
    let logs: any RequestLogStore

    func register(
        logs group: RouterGroup<GatehouseRequestContext>, usage usageGroup: RouterGroup<GatehouseRequestContext>,
        catalog: RouteCatalog? = nil
    ) {
        group.get("requests", use: list)
        RouterGroupRegistration.record(catalog, .get, "requests")
        group.get("requests/:id", use: get)
        RouterGroupRegistration.record(catalog, .get, "requests/:id")
        usageGroup.get("usage", use: usage)
        RouterGroupRegistration.record(catalog, .get, "usage")
    }

    static let listParameters: Set<String> = ["proxy_key_id", "user", "model", "status", "since", "until", "cursor", "limit"]

    @Sendable func list(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let params = try QueryParameters(request, allowed: Self.listParameters)
        let keys = try plane.orgKeys(principal.orgID)
        var query = RequestLogQuery(orgID: principal.orgID)
        query.proxyKeyID = params["proxy_key_id"]
        query.userHash = params["user"].map(keys.userHash)
        query.model = params["model"]
        query.status = try params.integer("status", range: 100...599)
        query.since = try params.date("since")
        query.until = try params.date("until")
        query.limit = try params.integer("limit", range: 1...1000) ?? 50
        if let cursor = params["cursor"] {
            guard let parsed = Self.parseCursor(cursor) else {
                throw GatehouseError.validation(field: "cursor", message: "is not a cursor returned by this API")
            }
            query.before = parsed
        }
        let records = try await logs.requestLogs(query)
        var next: JSONValue = .null
        if records.count == query.limit, let last = records.last {
            next = .string("\(last.startedAt.unixMilliseconds).\(last.id)")
        }
        return .json(.object(["data": .array(records.map { Self.json($0, keys: keys, bodies: false) }), "next_cursor": next]))
    }

    @Sendable func get(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try context.parameters.require("id")
        guard let record = try await logs.requestLog(orgID: principal.orgID, id: id) else {
            throw GatehouseError.notFound("no request with id \(ControlPlane.safeID(id))")
        }
        return .json(Self.json(record, keys: try plane.orgKeys(principal.orgID), bodies: true))
    }

    @Sendable func usage(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let params = try QueryParameters(request, allowed: ["group_by", "since", "until"])
        let groupText = params["group_by"] ?? "proxy_key"
        guard let grouping = UsageGrouping(rawValue: groupText) else {
            throw GatehouseError.validation(field: "group_by", message: "must be one of proxy_key, model, user, day")
        }
        let rows = try await logs.usage(
            orgID: principal.orgID, groupBy: grouping, since: try params.date("since"), until: try params.date("until"))
        let keys = try plane.orgKeys(principal.orgID)
        let data: [JSONValue] = rows.map { row in
            var o: [String: JSONValue] = [
                "group": .string(row.group), "requests": .int(row.requests), "prompt_tokens": .int(row.promptTokens),
                "completion_tokens": .int(row.completionTokens), "cached_tokens": .int(row.cachedTokens),
                "cost_micros": .number(Double(row.costMicros)), "cost_usd": .number(Double(row.costMicros) / 1_000_000),
                "unpriced_requests": .int(row.unpricedRequests),
            ]
            if grouping == .user {
                o["user_id"] = .string(Self.open(row.sampleUserSealed, keys: keys, context: row.sampleRequestID.map { "\($0)|user" }))
            }
            return .object(o)
        }
        return .json(.object(["group_by": .string(grouping.rawValue), "data": .array(data)]))
    }

    static func parseCursor(_ text: String) -> RequestLogCursor? {
        let parts = text.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let ms = Int64(parts[0]), parts[1].count <= 64 else { return nil }
        return RequestLogCursor(startedAtMs: ms, id: String(parts[1]))
    }

    static func open(_ sealed: Data?, keys: OrgKeys, context: String?) -> String? {
        guard let sealed, let context, let plain = try? keys.open(sealed, context: context) else { return nil }
        return String(decoding: plain, as: UTF8.self)
    }

    static func json(_ r: RequestLogRecord, keys: OrgKeys, bodies: Bool) -> JSONValue {
        var properties: JSONValue = .object([:])
        if let text = open(r.propertiesSealed, keys: keys, context: "\(r.id)|properties"),
            let value = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        {
            properties = value
        }
        var o: [String: JSONValue] = [
            "id": .string(r.id), "proxy_key_id": .string(r.proxyKeyID), "provider_key_id": .string(r.providerKeyID),
            "provider": .string(r.provider), "model": .string(r.model), "method": .string(r.method), "path": .string(r.path),
            "status": .int(r.status), "streamed": .bool(r.streamed),
            "user_id": .string(open(r.userSealed, keys: keys, context: "\(r.id)|user")), "properties": properties,
            "client_ip": .string(r.clientIP), "started_at": .date(r.startedAt), "latency_ms": .number(r.latencyMs),
            "time_to_first_token_ms": r.timeToFirstTokenMs.map(JSONValue.number) ?? .null, "overhead_ms": .number(r.overheadMs),
            "prompt_tokens": r.promptTokens.map(JSONValue.int) ?? .null,
            "completion_tokens": r.completionTokens.map(JSONValue.int) ?? .null,
            "cached_tokens": r.cachedTokens.map(JSONValue.int) ?? .null,
            "cost_micros": r.costMicros.map { JSONValue.number(Double($0)) } ?? .null,
            "cost_usd": r.costMicros.map { JSONValue.number(Double($0) / 1_000_000) } ?? .null,
            "error": .string(r.error),
        ]
        if bodies {
            o["request_body"] = .string(open(r.requestBodySealed, keys: keys, context: "\(r.id)|request"))
            o["response_body"] = .string(open(r.responseBodySealed, keys: keys, context: "\(r.id)|response"))
        }
        return .object(o)
    }
}

/// Query-string parameters with the same refusal rules as JSON bodies: unknown names are
/// refused and every value is checked with a message that names the parameter.
struct QueryParameters {
    let values: [String: String]

    init(_ request: Request, allowed: Set<String>) throws {
        var values: [String: String] = [:]
        for (key, value) in request.uri.queryParameters {
            let name = String(key)
            guard allowed.contains(name) else {
                throw GatehouseError.validation(field: String(name.prefix(40)), message: "unknown query parameter")
            }
            values[name] = String(value)
        }
        self.values = values
    }

    subscript(_ name: String) -> String? { values[name].flatMap { $0.isEmpty ? nil : $0 } }

    func integer(_ name: String, range: ClosedRange<Int>) throws -> Int? {
        guard let text = self[name] else { return nil }
        guard let n = Int(text), range.contains(n) else {
            throw GatehouseError.validation(field: name, message: "must be an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return n
    }

    func date(_ name: String) throws -> Date? {
        guard let text = self[name] else { return nil }
        guard let d = JSONValue.parseDate(text) else {
            throw GatehouseError.validation(field: name, message: "must be an ISO 8601 timestamp")
        }
        return d
    }
}
