import Crypto
import Foundation
import GatehouseCore
import Testing

/// `AuditVerifier` names the first damaged sequence and a diagnosis for each way an attacker
/// with write access to the database can tamper with the trail; `AuditCheckpoint` pins the
/// trail's end with an Ed25519 signature derived from the master key.
@Suite("Audit verifier and checkpoints")
struct AuditVerifierTests {
    /// A correctly chained trail of `count` entries numbered from 1.
    static func chain(_ count: Int = 10) -> [AuditEntry] {
        var entries: [AuditEntry] = []
        var prev = AuditChain.genesis
        for i in 1...count {
            var entry = AuditEntry(
                sequence: Int64(i), time: Date(timeIntervalSince1970: 1_700_000_000 + Double(i) * 2.25),
                orgID: "org_\(i % 3)", actorKind: i % 2 == 0 ? "api_key" : "user", actorID: "actor\(i)",
                clientIP: "192.0.2.\(i)", action: "proxy_key.update", target: "pxk_\(i)", outcome: .success,
                details: "{\"before\":{\"name\":\"a\(i)\"},\"after\":{\"name\":\"b\(i)\"}}", prevHash: prev)
            entry.hash = AuditChain.hash(entry)
            prev = entry.hash
            entries.append(entry)
        }
        return entries
    }

    /// Recomputes `entry`'s own hash (what an attacker who knows the scheme would do).
    static func resealed(_ entry: AuditEntry) -> AuditEntry {
        var e = entry
        e.hash = AuditChain.hash(e)
        return e
    }

    static func expectBroken(
        _ report: AuditVerifier.Report, at sequence: Int64, _ damage: AuditVerifier.Damage,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(!report.intact, "expected damage \(damage) at \(sequence), got an intact report", sourceLocation: sourceLocation)
        #expect(report.firstBrokenSequence == sequence, "first broken sequence", sourceLocation: sourceLocation)
        #expect(report.damage == damage, "damage kind", sourceLocation: sourceLocation)
    }

    // MARK: Intact

    @Test func validChainIsIntact() {
        let entries = Self.chain()
        let report = AuditVerifier.verify(entries)
        #expect(report.intact)
        #expect(report.firstBrokenSequence == nil)
        #expect(report.damage == nil)
        #expect(report.entries == 10)
        #expect(report.lastSequence == 10)
        // Agrees with the plain chain check.
        #expect(AuditChain.firstBroken(entries) == nil)
    }

    @Test func emptyTrailIsIntact() {
        let report = AuditVerifier.verify([])
        #expect(report.intact)
        #expect(report.entries == 0)
        #expect(report.lastSequence == 0)
    }

    @Test func validChainWithACheckpointOfItsEndIsIntact() throws {
        let entries = Self.chain()
        let keyring = MasterKeyring.generate()
        let cp = try AuditCheckpoint.sign(sequence: 10, hash: entries[9].hash, keyring: keyring)
        #expect(AuditVerifier.verify(entries, checkpoint: cp).intact)
        // A checkpoint of an earlier point of a trail that grew since is fine too.
        let earlier = try AuditCheckpoint.sign(sequence: 4, hash: entries[3].hash, keyring: keyring)
        #expect(AuditVerifier.verify(entries, checkpoint: earlier).intact)
    }

    // MARK: Edits

    @Test(arguments: 1...10)
    func editingAFieldWithoutUpdatingTheHashIsEditedAtThatSequence(seq: Int) {
        var entries = Self.chain()
        entries[seq - 1].details = "{\"before\":{\"name\":\"forged\"}}"
        Self.expectBroken(AuditVerifier.verify(entries), at: Int64(seq), .edited)
    }

    @Test(arguments: ["time", "orgID", "actorKind", "actorID", "clientIP", "action", "target", "outcome"])
    func editingAnyOtherFieldIsEdited(field: String) {
        var entries = Self.chain()
        var e = entries[4]
        switch field {
        case "time": e.time = e.time.addingTimeInterval(-3600)
        case "orgID": e.orgID = "org_victim"
        case "actorKind": e.actorKind = "cli"
        case "actorID": e.actorID = "someone-else"
        case "clientIP": e.clientIP = "198.51.100.1"
        case "action": e.action = "api.access"
        case "target": e.target = "pxk_other"
        case "outcome": e.outcome = .denied
        default: Issue.record("unknown field \(field)")
        }
        entries[4] = e
        Self.expectBroken(AuditVerifier.verify(entries), at: 5, .edited)
    }

    /// The edited entry is self-consistent after its hash is recomputed; the damage shows at
    /// the next entry, whose `prev_hash` now points to a hash that is no longer in the trail.
    /// The verifier diagnoses this as `missing` (a chain link that points to nothing).
    @Test(arguments: 1...9)
    func editingAFieldAndRecomputingItsHashIsDetectedAtTheNextEntry(seq: Int) {
        var entries = Self.chain()
        entries[seq - 1].target = "pxk_forged"
        entries[seq - 1] = Self.resealed(entries[seq - 1])
        Self.expectBroken(AuditVerifier.verify(entries), at: Int64(seq + 1), .missing)
        #expect(AuditChain.firstBroken(entries) == Int64(seq + 1))
    }

    @Test func editingTheLastEntryAndRecomputingItsHashIsOnlyCaughtByACheckpoint() throws {
        let genuine = Self.chain()
        let cp = try AuditCheckpoint.sign(sequence: 10, hash: genuine[9].hash, keyring: .generate())
        var entries = genuine
        entries[9].details = "{}"
        entries[9] = Self.resealed(entries[9])
        #expect(AuditVerifier.verify(entries).intact)
        let report = AuditVerifier.verify(entries, checkpoint: cp)
        #expect(!report.intact)
        #expect(report.firstBrokenSequence == 10)
    }

    @Test func editingAStoredHashIsDetected() {
        var entries = Self.chain()
        entries[6].hash[3] ^= 0x01
        let report = AuditVerifier.verify(entries)
        #expect(!report.intact)
        #expect(report.firstBrokenSequence == 7)
    }

    // MARK: Deletions

    @Test(arguments: 2...9)
    func deletingAMiddleEntryIsMissingAtItsSequence(seq: Int) {
        var entries = Self.chain()
        entries.remove(at: seq - 1)
        Self.expectBroken(AuditVerifier.verify(entries), at: Int64(seq), .missing)
    }

    @Test func deletingTheFirstEntryIsMissingAtOne() {
        var entries = Self.chain()
        entries.removeFirst()
        Self.expectBroken(AuditVerifier.verify(entries), at: 1, .missing)
    }

    @Test func deletingSeveralConsecutiveEntriesIsMissingAtTheFirst() {
        var entries = Self.chain()
        entries.removeSubrange(3..<6)  // sequences 4, 5, 6
        Self.expectBroken(AuditVerifier.verify(entries), at: 4, .missing)
    }

    /// Deleting sequence 5 and renumbering 6…10 to 5…9 (a plain `UPDATE … SET seq = seq - 1`):
    /// no gap in the numbers any more, but entry "5" points to a hash that is gone.
    @Test(arguments: [3, 5, 8])
    func deletingAnEntryAndRenumberingTheRestIsMissing(seq: Int) {
        var entries = Self.chain()
        entries.remove(at: seq - 1)
        for i in (seq - 1)..<entries.count { entries[i].sequence -= 1 }
        Self.expectBroken(AuditVerifier.verify(entries), at: Int64(seq), .missing)
    }

    /// Same, by an attacker who also recomputes each renumbered entry's own hash.
    @Test func deletingAnEntryAndRenumberingAndResealingTheRestIsMissing() {
        var entries = Self.chain()
        entries.remove(at: 4)
        for i in 4..<entries.count {
            entries[i].sequence -= 1
            entries[i] = Self.resealed(entries[i])
        }
        Self.expectBroken(AuditVerifier.verify(entries), at: 5, .missing)
    }

    // MARK: Insertions

    /// A forged entry chained onto entry 4 takes sequence 5; the genuine 5…10 are renumbered
    /// 6…11. Genuine entry 5 still points to entry 4: the forged one was slipped in between.
    @Test(arguments: [1, 2, 5, 9])
    func insertingAForgedEntryAndRenumberingIsInserted(at seq: Int) {
        var entries = Self.chain()
        var forged = AuditEntry(
            sequence: Int64(seq), time: entries[seq - 1].time, orgID: "org_1", actorKind: "user", actorID: "actor1",
            clientIP: "192.0.2.1", action: "provider_key.delete", target: "pk_forged", outcome: .success, details: "{}",
            prevHash: seq == 1 ? AuditChain.genesis : entries[seq - 2].hash)
        forged = Self.resealed(forged)
        entries.insert(forged, at: seq - 1)
        for i in seq..<entries.count { entries[i].sequence += 1 }
        Self.expectBroken(AuditVerifier.verify(entries), at: Int64(seq), .inserted)
    }

    @Test func insertingAForgedEntryWithADuplicateSequenceIsInserted() {
        // Not renumbered: two entries claim sequence 6 (what a store that allowed it would return).
        var entries = Self.chain()
        var forged = entries[5]
        forged.action = "user.delete"
        forged = Self.resealed(forged)
        entries.insert(forged, at: 6)
        let report = AuditVerifier.verify(entries)
        #expect(!report.intact)
        #expect(report.firstBrokenSequence == 6)
        #expect(report.damage == .inserted)
    }

    @Test func appendingAForgedEntryThatChainsIsNotDetectableWithoutMoreInformation() {
        // Documents the limit of a hash chain: a correctly chained addition at the end verifies.
        // (Checkpoints do not help either: they only pin the past.)
        var entries = Self.chain()
        var forged = AuditEntry(
            sequence: 11, time: Date(), orgID: "org_1", actorKind: "user", actorID: "x", clientIP: "", action: "a",
            target: "t", outcome: .success, details: "{}", prevHash: entries[9].hash)
        forged = Self.resealed(forged)
        entries.append(forged)
        #expect(AuditVerifier.verify(entries).intact)
    }

    // MARK: Reordering

    /// Two rows swap contents while their sequence numbers stay in place (the store returns
    /// rows by sequence). The first entry that does not chain is the first swapped one.
    @Test(arguments: [(2, 3), (5, 6), (4, 8), (1, 2), (1, 10)])
    func swappingTwoEntriesContentsIsReorderedAtTheFirstOfThem(a: Int, b: Int) {
        var entries = Self.chain()
        let ea = entries[a - 1]
        let eb = entries[b - 1]
        entries[a - 1] = eb
        entries[a - 1].sequence = Int64(a)
        entries[b - 1] = ea
        entries[b - 1].sequence = Int64(b)
        Self.expectBroken(AuditVerifier.verify(entries), at: Int64(a), .reordered)
    }

    /// The entries themselves (with their sequence numbers) in swapped positions.
    @Test(arguments: [(2, 3), (5, 6), (4, 8)])
    func swappingTwoEntriesPositionsIsReorderedAtTheFirstPosition(a: Int, b: Int) {
        var entries = Self.chain()
        entries.swapAt(a - 1, b - 1)
        Self.expectBroken(AuditVerifier.verify(entries), at: Int64(a), .reordered)
    }

    // MARK: Truncation

    @Test(arguments: [1, 3, 9])
    func truncatingTheTailIsInvisibleWithoutACheckpoint(removed: Int) {
        var entries = Self.chain()
        entries.removeLast(removed)
        let report = AuditVerifier.verify(entries)
        #expect(report.intact)
        #expect(report.lastSequence == Int64(10 - removed))
    }

    @Test(arguments: [1, 3, 9])
    func truncatingTheTailIsTruncatedAgainstAnEarlierCheckpoint(removed: Int) throws {
        let genuine = Self.chain()
        let keyring = MasterKeyring.generate()
        let cp = try AuditCheckpoint.sign(sequence: 10, hash: genuine[9].hash, keyring: keyring)
        #expect(cp.isValid(keyring: keyring))
        var entries = genuine
        entries.removeLast(removed)
        // The first entry that is gone.
        Self.expectBroken(AuditVerifier.verify(entries, checkpoint: cp), at: Int64(10 - removed + 1), .truncated)
    }

    @Test func truncatingEverythingIsTruncatedAtOne() throws {
        let genuine = Self.chain()
        let cp = try AuditCheckpoint.sign(sequence: 10, hash: genuine[9].hash, keyring: .generate())
        Self.expectBroken(AuditVerifier.verify([], checkpoint: cp), at: 1, .truncated)
    }

    @Test func truncatingAndReappendingOtherEntriesIsCaughtByTheCheckpointHash() throws {
        // Roll back to 7, then append three new, correctly chained entries 8…10.
        let genuine = Self.chain()
        let cp = try AuditCheckpoint.sign(sequence: 10, hash: genuine[9].hash, keyring: .generate())
        var entries = Array(genuine.prefix(7))
        for i in 8...10 {
            var e = genuine[i - 1]
            e.details = "{\"rewritten\":true}"
            e.prevHash = entries.last!.hash
            entries.append(Self.resealed(e))
        }
        #expect(AuditVerifier.verify(entries).intact)
        let report = AuditVerifier.verify(entries, checkpoint: cp)
        #expect(!report.intact)
        #expect(report.firstBrokenSequence == 10)
    }

    // MARK: Checkpoint signatures

    @Test func checkpointIsValidWithItsKeyring() throws {
        let keyring = MasterKeyring.generate()
        let hash = Self.chain()[9].hash
        let cp = try AuditCheckpoint.sign(sequence: 10, hash: hash, keyring: keyring)
        #expect(cp.sequence == 10)
        #expect(cp.hash == hash)
        #expect(cp.masterKeyVersion == keyring.primaryVersion)
        #expect(cp.signature.count == 64)
        #expect(cp.isValid(keyring: keyring))
    }

    @Test func checkpointIsInvalidWithAnotherKeyring() throws {
        let cp = try AuditCheckpoint.sign(sequence: 10, hash: Self.chain()[9].hash, keyring: .generate())
        #expect(!cp.isValid(keyring: .generate()))
    }

    @Test func checkpointFromAnOlderVersionStaysValidAfterRotationAndNotAfterRetirement() throws {
        var keyring = MasterKeyring.generate()
        let cp = try AuditCheckpoint.sign(sequence: 10, hash: Self.chain()[9].hash, keyring: keyring)
        let old = keyring.primaryVersion
        keyring.addPrimary()
        #expect(cp.isValid(keyring: keyring))
        let newer = try AuditCheckpoint.sign(sequence: 10, hash: Self.chain()[9].hash, keyring: keyring)
        #expect(newer.masterKeyVersion == keyring.primaryVersion)
        #expect(newer.isValid(keyring: keyring))
        keyring.retire(version: old)
        #expect(!cp.isValid(keyring: keyring))
    }

    @Test func checkpointIsInvalidAfterAnyFieldChanges() throws {
        let keyring = MasterKeyring.generate()
        let entries = Self.chain()
        let cp = try AuditCheckpoint.sign(sequence: 10, hash: entries[9].hash, keyring: keyring)

        var c = cp
        c.sequence = 7
        #expect(!c.isValid(keyring: keyring), "sequence changed")
        c = cp
        c.sequence = 11
        #expect(!c.isValid(keyring: keyring), "sequence changed")
        c = cp
        c.hash = entries[6].hash
        #expect(!c.isValid(keyring: keyring), "hash changed")
        c = cp
        c.hash[0] ^= 0x01
        #expect(!c.isValid(keyring: keyring), "hash bit flipped")
        c = cp
        c.time = cp.time.addingTimeInterval(1)
        #expect(!c.isValid(keyring: keyring), "time changed")
        c = cp
        c.masterKeyVersion = 2
        #expect(!c.isValid(keyring: keyring), "unknown key version")
        c = cp
        c.signature[5] ^= 0x20
        #expect(!c.isValid(keyring: keyring), "signature bit flipped")
        c = cp
        c.signature = Data()
        #expect(!c.isValid(keyring: keyring), "empty signature")
        // Moving a checkpoint to a rolled-back point of the trail needs a new signature.
        c = cp
        c.sequence = 7
        c.hash = entries[6].hash
        #expect(!c.isValid(keyring: keyring), "moved to another point")
    }

    @Test func checkpointSurvivesAJSONRoundTrip() throws {
        let keyring = MasterKeyring.generate()
        let cp = try AuditCheckpoint.sign(
            sequence: 10, hash: Self.chain()[9].hash, time: Date(timeIntervalSince1970: 1_712_345_678.9876), keyring: keyring)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = try encoder.encode(cp)
        let decoded = try JSONDecoder().decode(AuditCheckpoint.self, from: data)
        #expect(decoded == cp)
        #expect(decoded.isValid(keyring: keyring))

        // The documented wire form: hex hash, integer milliseconds, base64 signature.
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(Set(object.keys) == ["sequence", "hash", "time", "master_key_version", "signature"])
        #expect(object["sequence"] as? Int == 10)
        #expect(object["hash"] as? String == cp.hash.map { String(format: "%02x", $0) }.joined())
        #expect(object["time"] as? Int == 1_712_345_678_988 || object["time"] as? Int == 1_712_345_678_989)
        #expect(object["master_key_version"] as? Int == Int(keyring.primaryVersion))
        #expect(Data(base64Encoded: object["signature"] as? String ?? "") == cp.signature)
    }

    @Test func checkpointJSONEditedOnDiskNoLongerVerifies() throws {
        let keyring = MasterKeyring.generate()
        let entries = Self.chain()
        let cp = try AuditCheckpoint.sign(sequence: 10, hash: entries[9].hash, keyring: keyring)
        var object = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(cp)) as? [String: Any])
        object["sequence"] = 7
        object["hash"] = entries[6].hash.map { String(format: "%02x", $0) }.joined()
        let edited = try JSONDecoder().decode(AuditCheckpoint.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(!edited.isValid(keyring: keyring))
    }

    @Test func malformedCheckpointJSONIsRejected() {
        let bad = [
            #"{"sequence":1,"hash":"zz","time":1,"master_key_version":1,"signature":"AAAA"}"#,
            #"{"sequence":1,"hash":"abc","time":1,"master_key_version":1,"signature":"AAAA"}"#,
            #"{"sequence":1,"hash":"00","time":1,"master_key_version":1,"signature":"not base64!"}"#,
            #"{"sequence":1,"hash":"00","time":1,"master_key_version":1}"#,
        ]
        for text in bad {
            #expect(throws: (any Error).self, "\(text)") { try JSONDecoder().decode(AuditCheckpoint.self, from: Data(text.utf8)) }
        }
    }

    @Test func checkpointSignatureDependsOnTheMasterKeyOnly() throws {
        // Same master key bytes in two keyrings: both verify (the signing key is derived).
        let key = SymmetricKey(size: .bits256)
        let a = MasterKeyring(keys: [1: key], primaryVersion: 1)
        let b = MasterKeyring(keys: [1: key, 2: SymmetricKey(size: .bits256)], primaryVersion: 2)
        let cp = try AuditCheckpoint.sign(sequence: 3, hash: Self.chain()[2].hash, keyring: a)
        #expect(cp.isValid(keyring: b))
        // Deterministic Ed25519 is not required, but two signatures must both verify.
        let again = try AuditCheckpoint.sign(sequence: 3, hash: cp.hash, time: cp.time, keyring: a)
        #expect(again.isValid(keyring: a))
    }
}
