import Foundation
import GatehouseCore
import GatehouseStore
import Logging
import ServiceLifecycle

/// Signs a checkpoint of the audit trail every `every` entries (checked each minute).
struct AuditCheckpointer: Service {
    let plane: ControlPlane
    let every: Int64 = 1000
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do { try await Task.sleep(for: .seconds(60)) } catch { return }
                do {
                    _ = try await plane.checkpointAudit(ifAtLeast: every)
                } catch {
                    logger.error("audit checkpoint failed", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}

extension ControlPlane {
    /// Signs and stores a checkpoint of the current tail, if at least `entries` were added since
    /// the last one (`0`: always). Returns the checkpoint made, if any.
    public func checkpointAudit(ifAtLeast entries: Int64 = 0) async throws -> AuditCheckpoint? {
        guard let audit = store as? any AuditStore, let tail = try await audit.auditTail() else { return nil }
        if let last = try await audit.latestCheckpoint() {
            if tail.sequence == last.sequence { return last }
            if tail.sequence - last.sequence < max(entries, 1) { return nil }
        }
        // Never vouch for a trail that is already damaged: a fresh signature over a rewritten
        // history would hide the rewrite.
        let report = try await verifyAudit(checkpoint: nil)
        guard report.intact else {
            throw GatehouseError.startup(
                "the audit trail is not intact (sequence \(report.firstBrokenSequence ?? 0), \(report.damage?.rawValue ?? "broken")); no checkpoint signed")
        }
        let checkpoint = try AuditCheckpoint.sign(sequence: tail.sequence, hash: tail.hash, keyring: vault.keyring)
        try await audit.insertCheckpoint(checkpoint)
        return checkpoint
    }

    /// Recomputes the whole chain (all organizations: it is one chain), checks every stored
    /// checkpoint's signature against the keyring and against the trail, and
    /// optionally an external checkpoint (e.g. from `gatehouse audit checkpoint --out`).
    public func verifyAudit(checkpoint external: AuditCheckpoint?) async throws -> AuditVerifier.Report {
        var entries: [AuditEntry] = []
        var after: Int64 = 0
        while true {
            let page = try await store.auditEntries(orgID: nil, after: after, limit: 5000)
            entries.append(contentsOf: page)
            guard page.count == 5000, let last = page.last else { break }
            after = last.sequence
        }
        let keyring = vault.keyring
        let stored = try await (store as? any AuditStore)?.checkpoints() ?? []
        let chain = AuditVerifier.verify(entries)
        if !chain.intact { return chain }
        // The chain links up; now every checkpoint must be genuine and still match the trail
        // (a missing sequence is truncation, a different hash a rewritten history).
        let hashes = Dictionary(entries.map { ($0.sequence, $0.hash) }, uniquingKeysWith: { a, _ in a })
        var report = chain
        for checkpoint in stored + [external].compactMap({ $0 }) {
            if !checkpoint.isValid(keyring: keyring) {
                report.firstBrokenSequence = checkpoint.sequence
                report.damage = .badCheckpoint
                return report
            }
            guard let hash = hashes[checkpoint.sequence] else {
                report.firstBrokenSequence = min(checkpoint.sequence, chain.lastSequence + 1)
                report.damage = .truncated
                return report
            }
            if hash != checkpoint.hash {
                report.firstBrokenSequence = checkpoint.sequence
                report.damage = .edited
                return report
            }
        }
        return chain
    }

    /// Records a data export in the audit trail before any data leaves.
    public func recordExport(what: String, format: String, by principal: Principal) async throws {
        try await store.appendAudit(draft(principal, action: "data.export", target: what, details: ["format": .string(format)]))
    }
}
