import Foundation
import GatehouseCore

/// The JSON shapes of the admin API and the CLI's `--json` output (one definition for both).
/// Secrets never appear here: provider keys show `last4`, Gatehouse keys show nothing of
/// their secret except in ``createdKey(_:key:)``, the one response that returns it.
public enum GatehouseJSON {
    public static func providerKey(_ r: ProviderKeyRecord) -> JSONValue {
        .object([
            "id": .string(r.id), "name": .string(r.name), "provider": .string(r.provider.rawValue),
            "base_url": .string(r.baseURL ?? r.provider.defaultBaseURL), "last4": .string(r.last4),
            "created_at": .date(r.createdAt),
        ])
    }

    public static func rateLimit(_ r: RateLimit) -> JSONValue {
        .object(["metric": .string(r.metric.rawValue), "limit": .number(r.limit), "window_seconds": .int(r.windowSeconds)])
    }

    public static func budget(_ b: Budget) -> JSONValue {
        .object(["limit_usd": .number(b.limitUSD), "period": .string(b.period.rawValue)])
    }

    public static func status(_ r: GateKeyRecord, now: Date = Date()) -> String {
        r.isRevoked ? "revoked" : (r.isExpired(at: now) ? "expired" : "active")
    }

    public static func gateKey(_ r: GateKeyRecord) -> JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(r.id), "kind": .string(r.kind.rawValue), "name": .string(r.name),
            "description": .string(r.description), "status": .string(status(r)),
            "expires_at": .date(r.expiresAt), "allowed_ips": .strings(r.allowedIPs),
            "created_at": .date(r.createdAt), "revoked_at": .date(r.revokedAt),
        ]
        if r.kind == .proxy {
            o["provider_key_id"] = .string(r.providerKeyID)
            o["allowed_models"] = .strings(r.allowedModels)
            o["rate_limits"] = .array((r.rateLimits ?? []).map(rateLimit))
            o["budget"] = r.budget.map(budget) ?? .null
        }
        return .object(o)
    }

    /// A proxy key with its current budget spend (from the in-memory ledger).
    public static func proxyKey(_ r: GateKeyRecord, ledger: LimitLedger, now: Date = Date()) -> JSONValue {
        guard case .object(var o) = gateKey(r) else { return .null }
        if let b = r.budget {
            let spent = ledger.spentMicros(keyID: r.id, budget: b, now: now)
            let limit = Int64((b.limitUSD * 1_000_000).rounded())
            o["spent_usd"] = .number(Double(spent) / 1_000_000)
            o["remaining_usd"] = .number(Double(max(0, limit - spent)) / 1_000_000)
            o["period_end"] = .date(b.period.bounds(containing: now).end)
        } else {
            o["spent_usd"] = .null
            o["remaining_usd"] = .null
            o["period_end"] = .null
        }
        return .object(o)
    }

    /// The creation response: the key object plus the full key, shown once.
    public static func createdKey(_ r: GateKeyRecord, key: String) -> JSONValue {
        guard case .object(var o) = gateKey(r) else { return .null }
        o["key"] = .string(key)
        return .object(o)
    }

    public static func list(_ items: [JSONValue]) -> JSONValue {
        .object(["data": .array(items)])
    }
}

extension GatehouseJSON {
    public static func user(_ u: UserRecord) -> JSONValue {
        .object(["id": .string(u.id), "email": .string(u.email), "role": .string(u.role.rawValue), "created_at": .date(u.createdAt)])
    }

    public static func settings(_ s: OrgSettings) -> JSONValue {
        .object([
            "api_ip_allowlist": .strings(s.apiIPAllowlist), "gateway_ip_allowlist": .strings(s.gatewayIPAllowlist),
            "trusted_proxies": .strings(s.trustedProxies), "retention_days": .int(s.retentionDays),
            "log_bodies": .bool(s.logBodies),
        ])
    }
}
