import Foundation
import GatehouseCore
import GatehouseStore
import HTTPTypes
import Hummingbird
import NIOCore

/// `GET /api/audit` and `GET /api/audit/verify`.
struct AuditRoutes {
    let plane: ControlPlane
    let audit: any AuditStore

    func register(read group: RouterGroup<GatehouseRequestContext>, catalog: RouteCatalog? = nil) {
        group.get("audit", use: list)
        RouterGroupRegistration.record(catalog, .get, "audit")
        group.get("audit/verify", use: verify)
        RouterGroupRegistration.record(catalog, .get, "audit/verify")
    }

    static let parameters: Set<String> = ["action", "actor", "actor_kind", "target", "outcome", "since", "until", "cursor", "limit"]

    static func query(_ params: QueryParameters, orgID: String) throws -> AuditQuery {
        var q = AuditQuery(orgID: orgID)
        q.action = params["action"]
        q.actorID = params["actor"]
        q.actorKind = params["actor_kind"]
        q.target = params["target"]
        if let text = params["outcome"] {
            guard let outcome = AuditEntry.Outcome(rawValue: text) else {
                throw GatehouseError.validation(field: "outcome", message: "must be one of success, denied, failed")
            }
            q.outcome = outcome
        }
        q.since = try params.date("since")
        q.until = try params.date("until")
        if let cursor = params["cursor"] {
            guard let seq = Int64(cursor), seq > 0 else {
                throw GatehouseError.validation(field: "cursor", message: "is not a cursor returned by this API")
            }
            q.beforeSequence = seq
        }
        q.limit = try params.integer("limit", range: 1...1000) ?? 100
        return q
    }

    @Sendable func list(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let q = try Self.query(try QueryParameters(request, allowed: Self.parameters), orgID: principal.orgID)
        let entries = try await audit.auditEntries(q)
        let next: JSONValue = entries.count == q.limit ? .string(String(entries.last!.sequence)) : .null
        return .json(.object(["data": .array(entries.map(Self.json)), "next_cursor": next]))
    }

    @Sendable func verify(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        _ = try context.requirePrincipal()
        let report = try await plane.verifyAudit(checkpoint: nil)
        return .json(Self.json(report))
    }

    static func json(_ e: AuditEntry) -> JSONValue {
        let details = (try? JSONDecoder().decode(JSONValue.self, from: Data(e.details.utf8))) ?? .string(e.details)
        return .object([
            "sequence": .number(Double(e.sequence)), "time": .date(e.time), "actor_kind": .string(e.actorKind),
            "actor_id": .string(e.actorID), "client_ip": .string(e.clientIP), "action": .string(e.action),
            "target": .string(e.target), "outcome": .string(e.outcome.rawValue), "details": details,
            "prev_hash": .string(e.prevHash.hexString), "hash": .string(e.hash.hexString),
        ])
    }

    static func json(_ r: AuditVerifier.Report) -> JSONValue {
        .object([
            "intact": .bool(r.intact), "entries": .int(r.entries), "last_sequence": .number(Double(r.lastSequence)),
            "first_broken_sequence": r.firstBrokenSequence.map { .number(Double($0)) } ?? .null,
            "damage": .string(r.damage?.rawValue),
        ])
    }
}

/// `GET /api/export?what=requests|audit&format=jsonl|csv`, streamed page by page.
struct ExportRoutes {
    let plane: ControlPlane
    let audit: any AuditStore
    let logs: (any RequestLogStore)?

    func register(on group: RouterGroup<GatehouseRequestContext>, catalog: RouteCatalog? = nil) {
        group.get("export", use: export)
        RouterGroupRegistration.record(catalog, .get, "export")
    }

    @Sendable func export(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let params = try QueryParameters(request, allowed: ["what", "format", "since", "until"])
        guard let what = params["what"], what == "requests" || what == "audit" else {
            throw GatehouseError.validation(field: "what", message: "must be requests or audit")
        }
        let format = params["format"] ?? "jsonl"
        guard format == "jsonl" || format == "csv" else {
            throw GatehouseError.validation(field: "format", message: "must be jsonl or csv")
        }
        let since = try params.date("since")
        let until = try params.date("until")
        try await plane.recordExport(what: what, format: format, by: principal)
        let keys = try plane.orgKeys(principal.orgID)
        var headers = HTTPFields()
        headers[.contentType] = format == "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson"
        headers[.contentDisposition] = "attachment; filename=\"gatehouse-\(what).\(format)\""
        headers[.cacheControl] = "no-store"
        let audit = self.audit
        let logs = self.logs
        let orgID = principal.orgID
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                if what == "audit" {
                    let columns = ["sequence", "time", "actor_kind", "actor_id", "client_ip", "action", "target", "outcome", "details", "prev_hash", "hash"]
                    if format == "csv" { try await writer.write(ByteBuffer(string: columns.joined(separator: ",") + "\n")) }
                    var query = AuditQuery(orgID: orgID, since: since, until: until, limit: 500)
                    while true {
                        let page = try await audit.auditEntries(query)
                        var chunk = ""
                        for e in page {
                            let json = AuditRoutes.json(e)
                            chunk += format == "csv" ? Self.csvRow(json, columns: columns) : json.encodedString() + "\n"
                        }
                        if !chunk.isEmpty { try await writer.write(ByteBuffer(string: chunk)) }
                        guard page.count == query.limit, let last = page.last else { break }
                        query.beforeSequence = last.sequence
                    }
                } else if let logs {
                    let columns = [
                        "id", "started_at", "proxy_key_id", "provider", "model", "method", "path", "status", "user_id", "client_ip",
                        "latency_ms", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "error",
                    ]
                    if format == "csv" { try await writer.write(ByteBuffer(string: columns.joined(separator: ",") + "\n")) }
                    var query = RequestLogQuery(orgID: orgID, since: since, until: until, limit: 500)
                    while true {
                        let page = try await logs.requestLogs(query)
                        var chunk = ""
                        for r in page {
                            let json = RequestRoutes.json(r, keys: keys, bodies: false)
                            chunk += format == "csv" ? Self.csvRow(json, columns: columns) : json.encodedString() + "\n"
                        }
                        if !chunk.isEmpty { try await writer.write(ByteBuffer(string: chunk)) }
                        guard page.count == query.limit, let last = page.last else { break }
                        query.before = RequestLogCursor(after: last)
                    }
                }
                try await writer.finish(nil)
            })
    }

    /// One CSV line (RFC 4180 quoting). Cells starting with `=`, `+`, `-`, `@`, tab or CR get a leading
    /// apostrophe so a spreadsheet never evaluates exported text as a formula.
    static func csvRow(_ value: JSONValue, columns: [String]) -> String {
        guard case .object(let o) = value else { return "\n" }
        return columns.map { column -> String in
            var text: String
            switch o[column] ?? .null {
            case .null: text = ""
            case .string(let s): text = s
            case .bool(let b): text = b ? "true" : "false"
            case .number(let n): text = n.rounded() == n && abs(n) < 9e15 ? String(Int64(n)) : String(n)
            case let other: text = other.encodedString()
            }
            if let first = text.first, "=+-@\t\r".contains(first) { text = "'" + text }
            if text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) {
                text = "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            }
            return text
        }.joined(separator: ",") + "\n"
    }
}

extension HTTPField.Name {
    static let contentDisposition = Self("Content-Disposition")!
}
