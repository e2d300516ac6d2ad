import Foundation
import GatehouseCore
import Hummingbird

/// `/api/provider-keys`, `/api/proxy-keys` and `/api/api-keys`.
struct KeyRoutes {
    let plane: ControlPlane

    func register(on group: RouterGroup<GatehouseRequestContext>, catalog: RouteCatalog? = nil) {
        group.post("provider-keys", use: createProviderKey)
        RouterGroupRegistration.record(catalog, .post, "provider-keys")
        group.get("provider-keys", use: listProviderKeys)
        RouterGroupRegistration.record(catalog, .get, "provider-keys")
        group.get("provider-keys/:id", use: getProviderKey)
        RouterGroupRegistration.record(catalog, .get, "provider-keys/:id")
        group.delete("provider-keys/:id", use: deleteProviderKey)
        RouterGroupRegistration.record(catalog, .delete, "provider-keys/:id")

        group.post("proxy-keys", use: createProxyKey)
        RouterGroupRegistration.record(catalog, .post, "proxy-keys")
        group.get("proxy-keys", use: listProxyKeys)
        RouterGroupRegistration.record(catalog, .get, "proxy-keys")
        group.get("proxy-keys/:id", use: getProxyKey)
        RouterGroupRegistration.record(catalog, .get, "proxy-keys/:id")
        group.patch("proxy-keys/:id", use: patchProxyKey)
        RouterGroupRegistration.record(catalog, .patch, "proxy-keys/:id")
        group.post("proxy-keys/:id/revoke", use: revokeProxyKey)
        RouterGroupRegistration.record(catalog, .post, "proxy-keys/:id/revoke")

        group.post("api-keys", use: createOrgKey)
        RouterGroupRegistration.record(catalog, .post, "api-keys")
        group.get("api-keys", use: listOrgKeys)
        RouterGroupRegistration.record(catalog, .get, "api-keys")
        group.post("api-keys/:id/revoke", use: revokeOrgKey)
        RouterGroupRegistration.record(catalog, .post, "api-keys/:id/revoke")
    }

    // MARK: Provider keys

    @Sendable func createProviderKey(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await JSONBody.read(request, allowed: ["name", "provider", "base_url", "api_key"])
        let name = try body.requiredString("name")
        guard let provider = try body.enumValue("provider", Provider.self) else {
            throw GatehouseError.validation(field: "provider", message: "is required")
        }
        let input = ProviderKeyInput(
            name: name, provider: provider, baseURL: try body.string("base_url"), apiKey: try body.requiredString("api_key"))
        let record = try await plane.createProviderKey(input, by: principal)
        return .json(GatehouseJSON.providerKey(record), status: .created)
    }

    @Sendable func listProviderKeys(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let records = try await plane.providerKeys(orgID: principal.orgID)
        return .json(GatehouseJSON.list(records.map(GatehouseJSON.providerKey)))
    }

    @Sendable func getProviderKey(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try context.parameters.require("id")
        return .json(GatehouseJSON.providerKey(try await plane.providerKey(orgID: principal.orgID, id: id)))
    }

    @Sendable func deleteProviderKey(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        try await plane.deleteProviderKey(id: try context.parameters.require("id"), by: principal)
        return Response(status: .noContent)
    }

    // MARK: Proxy keys

    static let proxyKeyFields: Set<String> = [
        "name", "description", "provider_key_id", "expires_at", "allowed_models", "allowed_ips", "rate_limits", "budget",
    ]

    @Sendable func createProxyKey(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await JSONBody.read(request, allowed: Self.proxyKeyFields)
        let input = GateKeyInput(
            kind: .proxy, name: try body.requiredString("name"), description: try body.string("description"),
            providerKeyID: try body.requiredString("provider_key_id"), expiresAt: try body.date("expires_at"),
            allowedModels: try body.stringArray("allowed_models"), allowedIPs: try body.stringArray("allowed_ips"),
            rateLimits: try body.rateLimits("rate_limits"), budget: try body.budget("budget"))
        let (record, key) = try await plane.createGateKey(input, by: principal)
        return .json(GatehouseJSON.createdKey(record, key: key), status: .created)
    }

    @Sendable func listProxyKeys(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let records = try await plane.gateKeys(orgID: principal.orgID, kind: .proxy)
        return .json(GatehouseJSON.list(records.map { GatehouseJSON.proxyKey($0, ledger: plane.ledger) }))
    }

    @Sendable func getProxyKey(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let record = try await plane.gateKey(orgID: principal.orgID, id: try context.parameters.require("id"), kinds: [.proxy])
        return .json(GatehouseJSON.proxyKey(record, ledger: plane.ledger))
    }

    @Sendable func patchProxyKey(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try context.parameters.require("id")
        let body = try await JSONBody.read(request, allowed: Self.proxyKeyFields.subtracting(["provider_key_id"]))
        var patch = GateKeyPatch()
        if body.has("name") { patch.name = try body.requiredString("name") }
        patch.description = try body.patch("description", body.string)
        patch.expiresAt = try body.patch("expires_at", body.date)
        patch.allowedModels = try body.patch("allowed_models", body.stringArray)
        patch.allowedIPs = try body.patch("allowed_ips", body.stringArray)
        patch.rateLimits = try body.patch("rate_limits", body.rateLimits)
        patch.budget = try body.patch("budget", body.budget)
        let record = try await plane.updateProxyKey(id: id, patch: patch, by: principal)
        return .json(GatehouseJSON.proxyKey(record, ledger: plane.ledger))
    }

    @Sendable func revokeProxyKey(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let record = try await plane.revokeGateKey(id: try context.parameters.require("id"), kinds: [.proxy], by: principal)
        return .json(GatehouseJSON.gateKey(record))
    }

    // MARK: Organization keys

    @Sendable func createOrgKey(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await JSONBody.read(request, allowed: ["name", "kind", "description", "expires_at", "allowed_ips"])
        guard let kind = try body.enumValue("kind", KeyKind.self) else {
            throw GatehouseError.validation(field: "kind", message: "is required")
        }
        guard kind != .proxy else {
            throw GatehouseError.validation(field: "kind", message: "must be api or read; create proxy keys with POST /api/proxy-keys")
        }
        let input = GateKeyInput(
            kind: kind, name: try body.requiredString("name"), description: try body.string("description"),
            expiresAt: try body.date("expires_at"), allowedIPs: try body.stringArray("allowed_ips"))
        let (record, key) = try await plane.createGateKey(input, by: principal)
        return .json(GatehouseJSON.createdKey(record, key: key), status: .created)
    }

    @Sendable func listOrgKeys(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let records = try await plane.gateKeys(orgID: principal.orgID, kind: nil).filter { $0.kind != .proxy }
        return .json(GatehouseJSON.list(records.map(GatehouseJSON.gateKey)))
    }

    @Sendable func revokeOrgKey(_ request: Request, context: GatehouseRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let record = try await plane.revokeGateKey(id: try context.parameters.require("id"), kinds: [.api, .read], by: principal)
        return .json(GatehouseJSON.gateKey(record))
    }
}
