import Crypto
import Foundation
@testable import GatehouseCore
import Testing

/// Envelope encryption: master keyring → per-org DEK → provider keys and data at rest.
@Suite("Vault")
struct VaultTests {
    static func rawBytes(_ key: SymmetricKey) -> Data { key.withUnsafeBytes { Data($0) } }

    static func randomKeyBase64() -> String { rawBytes(SymmetricKey(size: .bits256)).base64EncodedString() }

    static func flippingBit(_ bit: Int, of data: Data) -> Data {
        var bytes = [UInt8](data)
        bytes[bit / 8] ^= UInt8(1) << UInt8(bit % 8)
        return Data(bytes)
    }

    /// Runs `body` and returns the vault error it threw, or `nil` when it succeeded. Any other
    /// kind of error is recorded as a test failure.
    static func vaultError<T>(
        _ body: () throws -> T, sourceLocation: SourceLocation = #_sourceLocation
    ) -> VaultError? {
        do {
            _ = try body()
            return nil
        } catch let error as VaultError {
            return error
        } catch {
            Issue.record("expected a VaultError, got \(error)", sourceLocation: sourceLocation)
            return nil
        }
    }

    // MARK: Provider keys

    @Test func providerKeySealedForARowOpensForThatRow() throws {
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let secret = "sk-live-" + Base62.random(count: 40)
        let envelope = try keys.sealProviderKey(secret, rowID: "pk_1", provider: "openai")
        #expect(try keys.openProviderKey(envelope, rowID: "pk_1", provider: "openai") == secret)
    }

    @Test func providerKeyCiphertextDoesNotContainTheSecret() throws {
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let secret = "sk-canary-" + Base62.random(count: 32)
        let envelope = try keys.sealProviderKey(secret, rowID: "pk_1", provider: "openai")
        #expect(envelope.range(of: Data(secret.utf8)) == nil)
        #expect(envelope.range(of: Data(secret.suffix(8).utf8)) == nil)
        // Fresh nonce each time: the same secret never seals to the same bytes.
        #expect(try keys.sealProviderKey(secret, rowID: "pk_1", provider: "openai") != envelope)
    }

    @Test func providerKeyCiphertextMovedToAnotherRowFailsToDecrypt() throws {
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let envelope = try keys.sealProviderKey("sk-secret-1234567890", rowID: "pk_1", provider: "openai")
        #expect(Self.vaultError { try keys.openProviderKey(envelope, rowID: "pk_2", provider: "openai") } == .decryptionFailed)
        #expect(Self.vaultError { try keys.openProviderKey(envelope, rowID: "", provider: "openai") } == .decryptionFailed)
    }

    @Test func providerKeyCiphertextMovedToAnotherProviderFailsToDecrypt() throws {
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let envelope = try keys.sealProviderKey("sk-secret-1234567890", rowID: "pk_1", provider: "openai")
        for other in ["anthropic", "openai-compatible", "OpenAI", "openai "] {
            #expect(Self.vaultError { try keys.openProviderKey(envelope, rowID: "pk_1", provider: other) } == .decryptionFailed)
        }
    }

    @Test func providerKeyCiphertextMovedToAnotherOrganizationFailsToDecrypt() throws {
        let vault = Vault(keyring: .generate())
        let (keysA, _) = try vault.newDataKey(orgID: "org_A")
        let (keysB, _) = try vault.newDataKey(orgID: "org_B")
        let envelope = try keysA.sealProviderKey("sk-secret-1234567890", rowID: "pk_1", provider: "openai")
        #expect(Self.vaultError { try keysB.openProviderKey(envelope, rowID: "pk_1", provider: "openai") } == .decryptionFailed)
    }

    @Test func providerKeyCiphertextMovedToAnotherOrganizationFailsEvenWithTheSameDataKey() throws {
        // The org id is bound through the key derivation and the associated data, not only
        // through which DEK happens to be used.
        let (keysA, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let impostor = OrgKeys(orgID: "org_B", dataKey: keysA.dataKey)
        let envelope = try keysA.sealProviderKey("sk-secret-1234567890", rowID: "pk_1", provider: "openai")
        #expect(Self.vaultError { try impostor.openProviderKey(envelope, rowID: "pk_1", provider: "openai") } == .decryptionFailed)
    }

    @Test func associatedDataFieldsCannotBeShiftedAcrossTheSeparator() throws {
        // ("pk_1|openai", "x") must not open as ("pk_1", "openai|x") or similar.
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let envelope = try keys.sealProviderKey("sk-secret-1234567890", rowID: "pk_1", provider: "openai")
        #expect(Self.vaultError { try keys.openProviderKey(envelope, rowID: "pk_1|openai", provider: "") } != nil)
    }

    @Test func everySingleBitFlipOfAProviderKeyEnvelopeFailsToOpen() throws {
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let envelope = try keys.sealProviderKey("sk-x", rowID: "pk_1", provider: "openai")
        var opened: [Int] = []
        for bit in 0..<(envelope.count * 8) {
            let tampered = Self.flippingBit(bit, of: envelope)
            if Self.vaultError({ try keys.openProviderKey(tampered, rowID: "pk_1", provider: "openai") }) == nil {
                opened.append(bit)
            }
        }
        #expect(opened.isEmpty, "tampered envelopes that still opened, by bit index: \(opened)")
    }

    @Test func everySingleBitFlipOfAWrappedDataKeyFailsToUnwrap() throws {
        let vault = Vault(keyring: .generate())
        let (_, wrapped) = try vault.newDataKey(orgID: "org_A")
        var unwrapped: [Int] = []
        for bit in 0..<(wrapped.envelope.count * 8) {
            let tampered = Vault.WrappedDataKey(envelope: Self.flippingBit(bit, of: wrapped.envelope))
            if Self.vaultError({ try vault.unwrap(tampered, orgID: "org_A") }) == nil { unwrapped.append(bit) }
        }
        #expect(unwrapped.isEmpty, "tampered wrapped keys that still unwrapped, by bit index: \(unwrapped)")
    }

    @Test func truncatedEnvelopeIsMalformed() throws {
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let envelope = try keys.sealProviderKey("sk-secret-1234567890", rowID: "pk_1", provider: "openai")
        let minimum = Envelope.headerLength + Envelope.nonceLength + Envelope.tagLength
        for length in 0..<minimum {
            let error = Self.vaultError { try keys.openProviderKey(envelope.prefix(length), rowID: "pk_1", provider: "openai") }
            #expect(error == .malformedEnvelope, "truncated to \(length): \(String(describing: error))")
        }
        for length in minimum..<envelope.count {
            let error = Self.vaultError { try keys.openProviderKey(envelope.prefix(length), rowID: "pk_1", provider: "openai") }
            #expect(error != nil, "truncated to \(length) still opened")
        }
    }

    @Test func envelopeWithUnknownFormatOrAlgorithmIsMalformed() throws {
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let envelope = try keys.sealProviderKey("sk-secret-1234567890", rowID: "pk_1", provider: "openai")
        for (index, value) in [(0, UInt8(0)), (0, UInt8(2)), (1, UInt8(0)), (1, UInt8(2)), (0, UInt8(0xFF))] {
            var bytes = [UInt8](envelope)
            bytes[index] = value
            #expect(Self.vaultError { try keys.openProviderKey(Data(bytes), rowID: "pk_1", provider: "openai") } == .malformedEnvelope)
        }
    }

    @Test func envelopeOpensFromANonZeroBasedDataSlice() throws {
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let envelope = try keys.sealProviderKey("sk-secret-1234567890", rowID: "pk_1", provider: "openai")
        let padded = Data([0xAA, 0xBB, 0xCC]) + envelope
        let slice = padded.dropFirst(3)
        #expect(slice.startIndex == 3)
        #expect(try keys.openProviderKey(slice, rowID: "pk_1", provider: "openai") == "sk-secret-1234567890")
    }

    @Test func dataSealedForAContextOpensOnlyForThatContext() throws {
        let vault = Vault(keyring: .generate())
        let (keys, _) = try vault.newDataKey(orgID: "org_A")
        let (other, _) = try vault.newDataKey(orgID: "org_B")
        let sealed = try keys.seal(Data("request body".utf8), context: "request_log|req_1|body")
        #expect(try keys.open(sealed, context: "request_log|req_1|body") == Data("request body".utf8))
        #expect(Self.vaultError { try keys.open(sealed, context: "request_log|req_2|body") } == .decryptionFailed)
        #expect(Self.vaultError { try other.open(sealed, context: "request_log|req_1|body") } == .decryptionFailed)
        // A provider-key envelope is not valid generic data and vice versa.
        let pk = try keys.sealProviderKey("sk-secret-1234567890", rowID: "pk_1", provider: "openai")
        #expect(Self.vaultError { try keys.open(pk, context: "pk_1|openai") } == .decryptionFailed)
    }

    @Test func aRowFieldSealIsTheContextSealOfRowAndField() throws {
        // The request-log writer seals with (rowID, field); the API opens with the context
        // string "<rowID>|<field>": both must build the same associated data.
        let vault = Vault(keyring: .generate())
        let (keys, _) = try vault.newDataKey(orgID: "org_A")
        let (other, _) = try vault.newDataKey(orgID: "org_B")
        let body = Data(#"{"model":"gpt-4o-mini","messages":[]}"#.utf8)
        let sealed = try keys.seal(body, rowID: "req_0ABCdef", field: "request")
        #expect(try keys.open(sealed, context: "req_0ABCdef|request") == body)
        #expect(try Envelope.keyVersion(of: sealed) == 1)
        #expect(sealed.count == 6 + 12 + body.count + 16)
        for context in ["req_0ABCdef|response", "req_0ABCdeg|request", "req_0ABCdef|request|", "req_0ABCdefrequest", "|req_0ABCdef|request"] {
            #expect(Self.vaultError { try keys.open(sealed, context: context) } == .decryptionFailed)
        }
        #expect(Self.vaultError { try other.open(sealed, context: "req_0ABCdef|request") } == .decryptionFailed)
        // Every single bit flip fails to open (header, nonce, ciphertext, tag).
        for bit in 0..<(sealed.count * 8) {
            let error = Self.vaultError { try keys.open(Self.flippingBit(bit, of: sealed), context: "req_0ABCdef|request") }
            #expect(error == .decryptionFailed || error == .malformedEnvelope)
        }
        // Two seals of the same body differ (a fresh nonce each time).
        #expect(try keys.seal(body, rowID: "req_0ABCdef", field: "request") != sealed)
        // And an empty body round-trips.
        #expect(try keys.open(keys.seal(Data(), rowID: "r", field: "user"), context: "r|user") == Data())
    }

    // MARK: Data keys and the master keyring

    @Test func dataKeyUnwrapsForItsOwnOrganization() throws {
        let vault = Vault(keyring: .generate())
        let (keys, wrapped) = try vault.newDataKey(orgID: "org_A")
        let unwrapped = try vault.unwrap(wrapped, orgID: "org_A")
        #expect(Self.rawBytes(unwrapped.dataKey) == Self.rawBytes(keys.dataKey))
        #expect(wrapped.masterKeyVersion == 1)
        #expect(wrapped.envelope.range(of: Self.rawBytes(keys.dataKey)) == nil)
    }

    @Test func dataKeyWrappedForOneOrganizationCannotBeUnwrappedAsAnother() throws {
        let vault = Vault(keyring: .generate())
        let (_, wrappedA) = try vault.newDataKey(orgID: "org_A")
        #expect(Self.vaultError { try vault.unwrap(wrappedA, orgID: "org_B") } == .decryptionFailed)
        #expect(Self.vaultError { try vault.unwrap(wrappedA, orgID: "") } == .decryptionFailed)
    }

    @Test func wrongMasterKeyFailsToUnwrap() throws {
        let (_, wrapped) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let other = Vault(keyring: .generate())
        #expect(Self.vaultError { try other.unwrap(wrapped, orgID: "org_A") } == .decryptionFailed)
    }

    @Test func keyringWithoutTheWrappingVersionReportsTheUnknownVersion() throws {
        let (_, wrapped) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let onlyV2 = Vault(keyring: MasterKeyring(keys: [2: SymmetricKey(size: .bits256)], primaryVersion: 2))
        #expect(Self.vaultError { try onlyV2.unwrap(wrapped, orgID: "org_A") } == .unknownMasterKeyVersion(1))
    }

    @Test func wrappedDataKeyNamingAnotherVersionFailsEvenIfThatVersionExists() throws {
        // Rewriting the version in the header points at another KEK and another associated data.
        var keyring = MasterKeyring.generate()
        keyring.addPrimary()
        let vault = Vault(keyring: keyring)
        let (_, wrapped) = try vault.newDataKey(orgID: "org_A")
        #expect(wrapped.masterKeyVersion == 2)
        var bytes = [UInt8](wrapped.envelope)
        bytes[5] = 1
        #expect(Self.vaultError { try vault.unwrap(.init(envelope: Data(bytes)), orgID: "org_A") } == .decryptionFailed)
    }

    @Test func rotationRewrapKeepsEveryDataKeyAndProviderKeyReadable() throws {
        var keyring = MasterKeyring.generate()
        let oldVault = Vault(keyring: keyring)
        var orgs: [(id: String, wrapped: Vault.WrappedDataKey, envelope: Data, secret: String, keyHash: Data)] = []
        for i in 0..<5 {
            let orgID = "org_\(i)"
            let (keys, wrapped) = try oldVault.newDataKey(orgID: orgID)
            let secret = "sk-\(i)-" + Base62.random(count: 24)
            orgs.append((orgID, wrapped, try keys.sealProviderKey(secret, rowID: "pk_\(i)", provider: "anthropic"), secret, keys.keyHash("gate_api_x\(i)")))
        }

        let newVersion = keyring.addPrimary()
        #expect(newVersion == 2)
        #expect(keyring.primaryVersion == 2)
        #expect(keyring.versions == [1, 2])
        let newVault = Vault(keyring: keyring)

        for (i, org) in orgs.enumerated() {
            let rewrapped = try newVault.rewrap(org.wrapped, orgID: org.id)
            #expect(rewrapped.masterKeyVersion == 2)
            #expect(rewrapped != org.wrapped)
            let keys = try newVault.unwrap(rewrapped, orgID: org.id)
            #expect(try keys.openProviderKey(org.envelope, rowID: "pk_\(i)", provider: "anthropic") == org.secret)
            #expect(keys.keyHash("gate_api_x\(i)") == org.keyHash)
            // The old version still unwraps envelopes made before the rotation.
            let viaOld = try newVault.unwrap(org.wrapped, orgID: org.id)
            #expect(Self.rawBytes(viaOld.dataKey) == Self.rawBytes(keys.dataKey))
            // The old-only vault cannot read the new wrapping.
            #expect(Self.vaultError { try oldVault.unwrap(rewrapped, orgID: org.id) } == .unknownMasterKeyVersion(2))
        }
        // New data keys are wrapped with the new primary.
        #expect(try newVault.newDataKey(orgID: "org_new").1.masterKeyVersion == 2)
    }

    @Test func retiringTheOldVersionAfterRewrapStillUnwraps() throws {
        var keyring = MasterKeyring.generate()
        let (keys, wrapped) = try Vault(keyring: keyring).newDataKey(orgID: "org_A")
        let envelope = try keys.sealProviderKey("sk-before-rotation-123", rowID: "pk_1", provider: "openai")
        keyring.addPrimary()
        let rewrapped = try Vault(keyring: keyring).rewrap(wrapped, orgID: "org_A")
        keyring.retire(version: 1)
        #expect(keyring.versions == [2])
        let retired = Vault(keyring: keyring)
        let reopened = try retired.unwrap(rewrapped, orgID: "org_A")
        #expect(try reopened.openProviderKey(envelope, rowID: "pk_1", provider: "openai") == "sk-before-rotation-123")
        #expect(Self.vaultError { try retired.unwrap(wrapped, orgID: "org_A") } == .unknownMasterKeyVersion(1))
    }

    @Test func thePrimaryVersionCannotBeRetired() {
        var keyring = MasterKeyring.generate()
        keyring.retire(version: 1)
        #expect(keyring.versions == [1])
        #expect(keyring.primaryVersion == 1)
    }

    @Test func rotationAfterRetirementNeverReusesAVersionNumber() {
        var keyring = MasterKeyring.generate()
        keyring.addPrimary()
        keyring.addPrimary()
        keyring.retire(version: 1)
        keyring.retire(version: 2)
        #expect(keyring.addPrimary() == 4)
    }

    // MARK: Keyring text form

    @Test func keyringParsesASingleBase64ValueAsVersionOne() throws {
        let b64 = Self.randomKeyBase64()
        for text in [b64, b64 + "\n", "  \(b64)  \n", "# my master key: keep it safe, ok\n\(b64)\n"] {
            let keyring = try MasterKeyring.parse(text, source: "test")
            #expect(keyring.versions == [1])
            #expect(keyring.primaryVersion == 1)
            #expect(Self.rawBytes(keyring.primaryKey).base64EncodedString() == b64)
        }
    }

    @Test func keyringParsesVersionedLinesWithTheHighestAsPrimary() throws {
        let k1 = Self.randomKeyBase64()
        let k2 = Self.randomKeyBase64()
        let keyring = try MasterKeyring.parse("1:\(k1)\n2:\(k2)", source: "test")
        #expect(keyring.versions == [1, 2])
        #expect(keyring.primaryVersion == 2)
        #expect(Self.rawBytes(try keyring.key(version: 1)).base64EncodedString() == k1)
        #expect(Self.rawBytes(try keyring.key(version: 2)).base64EncodedString() == k2)
        // Order in the text does not matter; commas separate too.
        let reordered = try MasterKeyring.parse("2:\(k2)\n1:\(k1)\n", source: "test")
        #expect(reordered.primaryVersion == 2)
        #expect(reordered.versions == [1, 2])
        let commas = try MasterKeyring.parse("1:\(k1), 7:\(k2)", source: "test")
        #expect(commas.versions == [1, 7])
        #expect(commas.primaryVersion == 7)
    }

    @Test func keyringAcceptsCRLFLineEndings() throws {
        // A key file edited on Windows (or pasted from one) must read the same.
        let k1 = Self.randomKeyBase64()
        let k2 = Self.randomKeyBase64()
        let versioned = try MasterKeyring.parse("# keyring, v2: current\r\n1:\(k1)\r\n2:\(k2)\r\n", source: "test")
        #expect(versioned.versions == [1, 2])
        #expect(versioned.primaryVersion == 2)
        let single = try MasterKeyring.parse("\(k1)\r\n", source: "test")
        #expect(single.versions == [1])
    }

    @Test func keyringIgnoresCommentLinesEvenWithCommasAndColons() throws {
        let k1 = Self.randomKeyBase64()
        let k2 = Self.randomKeyBase64()
        let text = """
            # Gatehouse master keyring, rotated 2025-01-01T00:00:00Z: keep it secret
            # format: <version>:<base64>, one per line
            1:\(k1)
              # indented comment, also: ignored
            #3:\(Self.randomKeyBase64())
            2:\(k2)

            """
        let keyring = try MasterKeyring.parse(text, source: "test")
        #expect(keyring.versions == [1, 2])
        #expect(keyring.primaryVersion == 2)
    }

    @Test func keyringRejectsMalformedText() {
        let good = Self.randomKeyBase64()
        let short = Data(repeating: 7, count: 16).base64EncodedString()
        let long = Data(repeating: 7, count: 33).base64EncodedString()
        let cases: [(String, String)] = [
            ("empty", ""),
            ("only comments", "# nothing here\n# still nothing\n"),
            ("16-byte key", short),
            ("33-byte key", long),
            ("not base64", "this is not base64!!"),
            ("url-safe base64", good.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_") + "-_"),
            ("versioned wrong length", "1:\(good)\n2:\(short)"),
            ("versioned not base64", "1:\(good)\n2:%%%%"),
            ("duplicate version", "1:\(good)\n1:\(Self.randomKeyBase64())"),
            ("duplicate version with commas", "2:\(good),2:\(Self.randomKeyBase64())"),
            ("version zero", "0:\(good)"),
            ("negative version", "-1:\(good)"),
            ("non-numeric version", "v1:\(good)"),
            ("two bare values", "\(good)\n\(Self.randomKeyBase64())"),
            ("bare value mixed with versioned", "\(good)\n2:\(Self.randomKeyBase64())"),
            ("missing value", "1:"),
        ]
        for (name, text) in cases {
            let error = Self.vaultError { try MasterKeyring.parse(text, source: "the test") }
            guard case .masterKeyMalformed(let source, _)? = error else {
                Issue.record("\(name): expected masterKeyMalformed, got \(String(describing: error))")
                continue
            }
            #expect(source == "the test")
        }
    }

    @Test func keyringErrorsNeverContainKeyMaterial() {
        let good = Self.randomKeyBase64()
        let short = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        for text in [short, "1:\(good)\n1:\(good)", "1:\(good)\n2:\(short)"] {
            let error = Self.vaultError { try MasterKeyring.parse(text, source: "test") }
            let message = error.map { "\($0)" } ?? ""
            #expect(!message.isEmpty)
            #expect(!message.contains(good) && !message.contains(short))
        }
    }

    @Test func keyringSerializationRoundTrips() throws {
        var keyring = MasterKeyring.generate()
        keyring.addPrimary()
        keyring.addPrimary()
        keyring.retire(version: 2)
        let parsed = try MasterKeyring.parse(keyring.serialized(), source: "test")
        #expect(parsed.versions == keyring.versions)
        #expect(parsed.primaryVersion == keyring.primaryVersion)
        for version in keyring.versions {
            #expect(Self.rawBytes(try parsed.key(version: version)) == Self.rawBytes(try keyring.key(version: version)))
        }
        // A single-version keyring round trips too.
        let single = MasterKeyring.generate()
        let reparsed = try MasterKeyring.parse(single.serialized(), source: "test")
        #expect(reparsed.versions == [1])
        #expect(Self.rawBytes(reparsed.primaryKey) == Self.rawBytes(single.primaryKey))
    }

    @Test func unknownKeyringVersionIsAnError() {
        let keyring = MasterKeyring.generate()
        #expect(Self.vaultError { try keyring.key(version: 9) } == .unknownMasterKeyVersion(9))
    }

    // MARK: Gatehouse key hashes and fingerprints

    @Test func keyHashVerifiesTheSameKeyAndNoOther() throws {
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let key = GatehouseKey.generate(kind: .proxy).text
        let hash = keys.keyHash(key)
        #expect(hash.count == 32)
        #expect(keys.keyHash(key) == hash)
        #expect(keys.verifyKey(key, storedHash: hash))
        #expect(!keys.verifyKey(GatehouseKey.generate(kind: .proxy).text, storedHash: hash))
        #expect(!keys.verifyKey(key + "x", storedHash: hash))
        #expect(!keys.verifyKey(key, storedHash: hash.dropLast()))
        #expect(!keys.verifyKey(key, storedHash: Data()))
        #expect(!keys.verifyKey(key, storedHash: Data(SHA256.hash(data: Data(key.utf8)))))
        var flipped = hash
        flipped[flipped.startIndex + 31] ^= 1
        #expect(!keys.verifyKey(key, storedHash: flipped))
    }

    /// The layout on disk is header ‖ nonce ‖ ciphertext ‖ tag, the header authenticated with
    /// the associated data: opened here by hand with AES-GCM, not through `Envelope.open`.
    @Test func envelopeLayoutOpensWithPlainAESGCM() throws {
        let key = SymmetricKey(size: .bits256)
        let plaintext = Data("a request body".utf8)
        let associated = Data("data|org_A|req_1|request".utf8)
        let envelope = try Envelope.seal(plaintext, key: key, keyVersion: 0x0102_0304, associatedData: associated)
        let bytes = [UInt8](envelope)
        #expect(bytes.count == 6 + 12 + plaintext.count + 16)
        #expect(Array(bytes[0..<6]) == [1, 1, 1, 2, 3, 4])
        let box = try AES.GCM.SealedBox(
            nonce: AES.GCM.Nonce(data: bytes[6..<18]), ciphertext: bytes[18..<(bytes.count - 16)], tag: bytes[(bytes.count - 16)...])
        #expect(try AES.GCM.open(box, using: key, authenticating: bytes[0..<6] + associated) == plaintext)
        #expect(throws: (any Error).self) { try AES.GCM.open(box, using: key, authenticating: associated) }
    }

    /// The keyed copy computes exactly HMAC-SHA256(pepper, ·): hashes stored before it existed
    /// still verify, and many uses of one copy do not disturb each other.
    @Test func keyHashIsPlainHMACOfThePepper() throws {
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        for text in ["", "gate_proxy_x", GatehouseKey.generate(kind: .proxy).text, String(repeating: "é", count: 200)] {
            let reference = Data(HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: keys.pepper))
            #expect(keys.keyHash(text) == reference)
            #expect(keys.verifyKey(text, storedHash: reference))
        }
        let reference = Data(HMAC<SHA256>.authenticationCode(for: Data("user|u-1".utf8), using: keys.pepper))
        #expect(keys.userHash("u-1") == reference.prefix(16).hexString)
        let fingerprint = Data(HMAC<SHA256>.authenticationCode(for: Data("fingerprint|sk-x".utf8), using: keys.pepper))
        #expect(keys.fingerprint("sk-x") == "hmac:" + fingerprint.prefix(12).hexString)
    }

    @Test func differentOrganizationsPepperHashesDifferently() throws {
        let vault = Vault(keyring: .generate())
        let (a, _) = try vault.newDataKey(orgID: "org_A")
        let (b, _) = try vault.newDataKey(orgID: "org_B")
        let key = GatehouseKey.generate(kind: .api).text
        #expect(a.keyHash(key) != b.keyHash(key))
        #expect(!b.verifyKey(key, storedHash: a.keyHash(key)))
        // Same DEK, different org id: still different peppers.
        let sameDEK = OrgKeys(orgID: "org_B", dataKey: a.dataKey)
        #expect(sameDEK.keyHash(key) != a.keyHash(key))
    }

    @Test func pepperAndEncryptionKeyAreDistinctFromTheDataKeyAndEachOther() throws {
        let (keys, _) = try Vault(keyring: .generate()).newDataKey(orgID: "org_A")
        let all = [keys.dataKey, keys.encryptionKey, keys.pepper].map(Self.rawBytes)
        #expect(Set(all).count == 3)
    }

    @Test func fingerprintDoesNotContainTheSecret() throws {
        let vault = Vault(keyring: .generate())
        let (keys, _) = try vault.newDataKey(orgID: "org_A")
        let (other, _) = try vault.newDataKey(orgID: "org_B")
        let secret = "sk-canary-" + Base62.random(count: 32)
        let fp = keys.fingerprint(secret)
        #expect(fp.hasPrefix("hmac:"))
        #expect(fp.wholeMatch(of: #/hmac:[0-9a-f]{24}/#) != nil)
        #expect(!fp.contains(secret))
        #expect(!fp.contains(String(secret.suffix(4))))
        #expect(keys.fingerprint(secret) == fp)
        #expect(keys.fingerprint(secret + "1") != fp)
        #expect(other.fingerprint(secret) != fp)
        // Not a plain hash anyone could compute from a guess.
        let plain = SHA256.hash(data: Data(("fingerprint|" + secret).utf8)).map { String(format: "%02x", $0) }.joined()
        #expect(!plain.hasPrefix(String(fp.dropFirst(5))))
    }
}
