import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore
import Testing

/// The in-memory key table every request is checked against.
@Suite("Key table")
struct KeyTableTests {
    /// `key` with one character of its secret changed; the checksum is recomputed when asked,
    /// so the result still passes the format check.
    static func tamper(_ key: String, keepChecksumValid: Bool) -> String {
        let prefix = key.prefix { $0 != "_" }.count + 1
        let kindEnd = key.dropFirst(prefix).prefix { $0 != "_" }.count + prefix + 1
        var chars = Array(key)
        let i = kindEnd + GatehouseKey.idLength + 5
        chars[i] = chars[i] == "A" ? "B" : "A"
        let changed = String(chars)
        guard keepChecksumValid else { return changed }
        return withChecksum(String(changed.dropLast(GatehouseKey.checksumLength)))
    }

    static func withChecksum(_ body: String) -> String {
        body + Base62.encode(UInt64(CRC32.checksum(body.utf8)), width: GatehouseKey.checksumLength)
    }

    static func failure(_ result: Result<GateKeyRecord, KeyTable.Failure>) -> KeyTable.Failure? {
        if case .failure(let f) = result { return f }
        return nil
    }

    @Test func ownerKeyAuthenticates() async throws {
        try await withGatehouse { g in
            guard case .success(let record) = g.plane.keyTable.authenticate(g.ownerKey) else {
                Issue.record("the owner key does not authenticate")
                return
            }
            #expect(record.kind == .api)
            #expect(record.orgID.hasPrefix("org_"))
            let parsed = try GatehouseKey.parse(g.ownerKey)
            #expect(record.id == parsed.id)
            #expect(record.hash != Data(g.ownerKey.utf8))
        }
    }

    @Test func everyFailureReasonIsReported() async throws {
        try await withGatehouse { g in
            let table = g.plane.keyTable
            let owner = g.ownerKey
            #expect(Self.failure(table.authenticate("garbage")) == .malformed)
            #expect(Self.failure(table.authenticate("")) == .malformed)
            #expect(Self.failure(table.authenticate(owner + "x")) == .malformed)
            #expect(Self.failure(table.authenticate(Self.tamper(owner, keepChecksumValid: false))) == .badChecksum)
            #expect(Self.failure(table.authenticate(GatehouseKey.generate(kind: .api).text)) == .unknownKey)
            #expect(Self.failure(table.authenticate(Self.tamper(owner, keepChecksumValid: true))) == .hashMismatch)
            // The genuine secret presented as another kind of key.
            let asProxy = Self.withChecksum("gate_proxy_" + owner.dropFirst("gate_api_".count).dropLast(GatehouseKey.checksumLength))
            #expect(Self.failure(table.authenticate(asProxy)) == .hashMismatch)
        }
    }

    @Test func revokedAndExpiredKeysAreRefused() async throws {
        try await withGatehouse { g in
            let plane = g.plane
            let now = Date()
            let (revoked, revokedKey) = try await plane.createGateKey(GateKeyInput(kind: .read, name: "r"), by: g.ownerPrincipal)
            _ = try await plane.revokeGateKey(id: revoked.id, kinds: [.read], by: g.ownerPrincipal)
            #expect(Self.failure(plane.keyTable.authenticate(revokedKey)) == .revoked)

            let (_, expiringKey) = try await plane.createGateKey(
                GateKeyInput(kind: .api, name: "e", expiresAt: now.addingTimeInterval(3600)), by: g.ownerPrincipal)
            #expect(plane.keyTable.authenticate(expiringKey, now: now).isSuccess)
            #expect(Self.failure(plane.keyTable.authenticate(expiringKey, now: now.addingTimeInterval(3600.5))) == .expired)
            #expect(Self.failure(plane.keyTable.authenticate(expiringKey, now: now.addingTimeInterval(86400))) == .expired)
        }
    }

    @Test func aProvenKeyIsCheckedForRevocationExpiryAndChangeOnEveryRequest() async throws {
        try await withGatehouse { g in
            let plane = g.plane
            let table = plane.keyTable
            let now = Date()
            let pk = try await plane.createProviderKey(
                ProviderKeyInput(name: "p", provider: .openai, baseURL: nil, apiKey: newCanarySecret()), by: g.ownerPrincipal)
            let (proxy, proxyKey) = try await plane.createGateKey(
                GateKeyInput(kind: .proxy, name: "px", providerKeyID: pk.id, expiresAt: now.addingTimeInterval(3600)),
                by: g.ownerPrincipal)
            var proven: KeyTable.ProvenKey?
            #expect(table.authenticateDetailed(proxyKey, now: now, proven: &proven).result.isSuccess)
            let remembered = try #require(proven)
            // Printing it never shows the key.
            #expect(!"\(remembered)".contains(proxyKey) && !String(reflecting: remembered).contains(proxyKey))
            #expect(table.authenticateDetailed(proxyKey, now: now, proven: &proven).result.isSuccess)

            // Other bytes take the full check (and do not replace what was proved).
            let forged = Self.tamper(proxyKey, keepChecksumValid: true)
            #expect(Self.failure(table.authenticateDetailed(forged, now: now, proven: &proven).result) == .hashMismatch)
            #expect(Self.failure(table.authenticateDetailed(String(proxyKey.dropLast()), now: now, proven: &proven).result) == .malformed)
            #expect(table.authenticateDetailed(proxyKey, now: now, proven: &proven).result.isSuccess)

            // Expiry is checked on the remembered key too.
            #expect(Self.failure(table.authenticateDetailed(proxyKey, now: now.addingTimeInterval(3600.5), proven: &proven).result) == .expired)

            // Revoked (through the API): refused on the very next request, and reported as such.
            _ = try await plane.revokeGateKey(id: proxy.id, kinds: [.proxy], by: g.ownerPrincipal)
            let revoked = table.authenticateDetailed(proxyKey, now: now, proven: &proven)
            #expect(Self.failure(revoked.result) == .revoked)
            #expect(revoked.key?.id == proxy.id)

            // A changed stored hash is not trusted: the full check refuses the old bytes.
            var changed = table.snapshot
            let storedHash = try #require(changed.gateKeys[proxy.id]?.hash)
            changed.sequence += 1
            changed.gateKeys[proxy.id]?.hash = Data(repeating: 7, count: 32)
            #expect(table.publish(changed))
            #expect(Self.failure(table.authenticateDetailed(proxyKey, now: now, proven: &proven).result) == .hashMismatch)
            #expect(proven == nil)
            changed.sequence += 1
            changed.gateKeys[proxy.id]?.hash = storedHash
            #expect(table.publish(changed))
            #expect(Self.failure(table.authenticateDetailed(proxyKey, now: now, proven: &proven).result) == .revoked)
            #expect(proven == nil)  // only a key that is let in is remembered

            // Deleted keys are refused on the very next request.
            var gone = table.snapshot
            gone.sequence += 1
            gone.gateKeys[proxy.id] = nil
            #expect(table.publish(gone))
            #expect(Self.failure(table.authenticateDetailed(proxyKey, now: now, proven: &proven).result) == .unknownKey)
        }
    }

    @Test func revokedIsReportedOnlyForTheGenuineKey() async throws {
        // A guess reusing a revoked key's id must not learn that the id exists and is revoked.
        try await withGatehouse { g in
            let (record, key) = try await g.plane.createGateKey(GateKeyInput(kind: .api, name: "r"), by: g.ownerPrincipal)
            _ = try await g.plane.revokeGateKey(id: record.id, kinds: [.api], by: g.ownerPrincipal)
            let guess = GatehouseKey.generate(kind: .api, id: record.id).text
            #expect(Self.failure(g.plane.keyTable.authenticate(guess)) == .hashMismatch)
            #expect(Self.failure(g.plane.keyTable.authenticate(Self.tamper(key, keepChecksumValid: true))) == .hashMismatch)
        }
    }

    @Test func revocationTakesEffectOnTheNextRequest() async throws {
        try await withGatehouse { g in
            let plane = g.plane
            let pk = try await plane.createProviderKey(
                ProviderKeyInput(name: "p", provider: .openai, baseURL: nil, apiKey: newCanarySecret()), by: g.ownerPrincipal)
            let (proxy, proxyKey) = try await plane.createGateKey(
                GateKeyInput(kind: .proxy, name: "px", providerKeyID: pk.id), by: g.ownerPrincipal)
            let (api, apiKey) = try await plane.createGateKey(GateKeyInput(kind: .api, name: "a"), by: g.ownerPrincipal)
            #expect(plane.keyTable.authenticate(proxyKey).isSuccess)
            #expect(plane.keyTable.authenticate(apiKey).isSuccess)

            let revokedProxy = try await plane.revokeGateKey(id: proxy.id, kinds: [.proxy], by: g.ownerPrincipal)
            #expect(revokedProxy.isRevoked)
            // No reload, no wait: the very next lookup refuses it.
            #expect(Self.failure(plane.keyTable.authenticate(proxyKey)) == .revoked)
            #expect(plane.keyTable.authenticate(apiKey).isSuccess)

            _ = try await plane.revokeGateKey(id: api.id, kinds: [.api, .read], by: g.ownerPrincipal)
            #expect(Self.failure(plane.keyTable.authenticate(apiKey)) == .revoked)
            #expect(plane.keyTable.authenticate(g.ownerKey).isSuccess)
        }
    }

    @Test func deletingAProviderKeyRevokesItsProxyKeysOnTheNextRequest() async throws {
        try await withGatehouse { g in
            let plane = g.plane
            let pk = try await plane.createProviderKey(
                ProviderKeyInput(name: "p", provider: .anthropic, baseURL: nil, apiKey: newCanarySecret()), by: g.ownerPrincipal)
            let (_, proxyKey) = try await plane.createGateKey(GateKeyInput(kind: .proxy, name: "px", providerKeyID: pk.id), by: g.ownerPrincipal)
            try await plane.deleteProviderKey(id: pk.id, by: g.ownerPrincipal)
            #expect(Self.failure(plane.keyTable.authenticate(proxyKey)) == .revoked)
        }
    }

    @Test func changeByASecondProcessBecomesVisibleAfterReload() async throws {
        try await withGatehouse { g in
            // The CLI: its own installation handle, store connection and control plane on the same files.
            let cli = try await Installation.open(paths: g.paths, masterKey: g.masterKey, initialise: false, logger: quietLogger)
            #expect(cli.ownerKey == nil, "opening an existing installation creates no owner key")
            let other = cli.controlPlane
            do {
                let principal = Principal(kind: .cli, id: "operator", orgID: g.orgID)
                let (created, createdKey) = try await other.createGateKey(GateKeyInput(kind: .api, name: "from-cli"), by: principal)
                #expect(other.keyTable.authenticate(createdKey).isSuccess)
                // The server has not seen it yet…
                #expect(Self.failure(g.plane.keyTable.authenticate(createdKey)) == .unknownKey)
                // …but the change sequence it follows has moved.
                #expect(try await g.plane.store.changeSequence() > g.plane.keyTable.snapshot.sequence)
                try await g.plane.reload()
                #expect(g.plane.keyTable.authenticate(createdKey).isSuccess)
                #expect(try await g.plane.store.changeSequence() == g.plane.keyTable.snapshot.sequence)

                // A revocation made by the CLI applies to the server after reload.
                _ = try await other.revokeGateKey(id: created.id, kinds: [.api], by: principal)
                try await g.plane.reload()
                #expect(Self.failure(g.plane.keyTable.authenticate(createdKey)) == .revoked)

                // So does revoking the owner key itself.
                _ = try await other.revokeGateKey(id: g.ownerPrincipal.id, kinds: [.api], by: principal)
                try await g.plane.reload()
                #expect(Self.failure(g.plane.keyTable.authenticate(g.ownerKey)) == .revoked)
                try await other.store.close()
            } catch {
                try? await other.store.close()
                throw error
            }
        }
    }

    @Test func organizationCreatedByASecondProcessBecomesUsableAfterReload() async throws {
        try await withGatehouse { g in
            let cli = try await Installation.open(paths: g.paths, masterKey: g.masterKey, initialise: false, logger: quietLogger)
            do {
                let (org, ownerKey) = try await cli.controlPlane.createOrganization(
                    name: "tenant-b", by: Principal(kind: .cli, id: "operator", orgID: ""))
                try await g.plane.reload()
                guard case .success(let record) = g.plane.keyTable.authenticate(ownerKey) else {
                    Issue.record("the new organization's owner key does not authenticate after reload")
                    try await cli.controlPlane.store.close()
                    return
                }
                #expect(record.orgID == org.id)
                #expect(g.plane.keyTable.orgKeys(org.id) != nil)
                try await cli.controlPlane.store.close()
            } catch {
                try? await cli.controlPlane.store.close()
                throw error
            }
        }
    }

    @Test func reloadWithTheWrongMasterKeyFailsClosed() async throws {
        try await withGatehouse { g in
            let impostor = ControlPlane(store: g.plane.store, vault: Vault(keyring: .generate()), logger: quietLogger)
            await #expect(throws: GatehouseError.masterKeyMismatch(dataDir: "the data directory")) {
                try await impostor.reload()
            }
            #expect(impostor.keyTable.snapshot.gateKeys.isEmpty, "nothing was published")
            #expect(Self.failure(impostor.keyTable.authenticate(g.ownerKey)) == .unknownKey)
        }
    }

    @Test func anOlderSnapshotNeverReplacesANewerOne() {
        let table = KeyTable()
        var newer = KeyTable.Snapshot.empty
        newer.sequence = 5
        var older = KeyTable.Snapshot.empty
        older.sequence = 3
        #expect(table.publish(newer))
        #expect(!table.publish(older))
        #expect(table.snapshot.sequence == 5)
        #expect(table.publish(newer), "the same sequence may be republished (full resync)")
    }
}
