import Foundation
import Crypto

/// Envelope encryption: a master keyring wraps one data key (DEK) per organization; the DEK
/// seals provider keys and other data at rest.
///
/// Every ciphertext is bound to where it lives through AES-GCM associated data, so a value
/// copied to another row, organization or provider fails to decrypt instead of being used.
public struct Vault: Sendable {
    public private(set) var keyring: MasterKeyring

    public init(keyring: MasterKeyring) {
        self.keyring = keyring
    }

    /// A wrapped organization data key as stored in the database.
    public struct WrappedDataKey: Sendable, Equatable {
        public var envelope: Data
        public init(envelope: Data) { self.envelope = envelope }
        /// The master key version that wraps it.
        public var masterKeyVersion: UInt32 { (try? Envelope.keyVersion(of: envelope)) ?? 0 }
    }

    static func dekAssociatedData(orgID: String, version: UInt32) -> Data {
        Data("dek|\(orgID)|\(version)".utf8)
    }

    /// Creates a fresh random DEK for `orgID`, wrapped with the primary master key.
    public func newDataKey(orgID: String) throws -> (OrgKeys, WrappedDataKey) {
        let dek = SymmetricKey(size: .bits256)
        let wrapped = try wrap(dek: dek, orgID: orgID)
        return (OrgKeys(orgID: orgID, dataKey: dek), wrapped)
    }

    /// Unwraps an organization's DEK.
    public func unwrap(_ wrapped: WrappedDataKey, orgID: String) throws(VaultError) -> OrgKeys {
        let version = try Envelope.keyVersion(of: wrapped.envelope)
        let kek = try keyring.key(version: version)
        let raw = try Envelope.open(
            wrapped.envelope, key: kek, associatedData: Self.dekAssociatedData(orgID: orgID, version: version))
        guard raw.count == 32 else { throw .malformedEnvelope }
        return OrgKeys(orgID: orgID, dataKey: SymmetricKey(data: raw))
    }

    /// Re-wraps a DEK with the primary master key version without changing the DEK, so nothing
    /// sealed under it has to be decrypted.
    public func rewrap(_ wrapped: WrappedDataKey, orgID: String) throws -> WrappedDataKey {
        let keys = try unwrap(wrapped, orgID: orgID)
        return try wrap(dek: keys.dataKey, orgID: orgID)
    }

    func wrap(dek: SymmetricKey, orgID: String) throws -> WrappedDataKey {
        let version = keyring.primaryVersion
        let raw = dek.withUnsafeBytes { Data($0) }
        let envelope = try Envelope.seal(
            raw, key: keyring.primaryKey, keyVersion: version,
            associatedData: Self.dekAssociatedData(orgID: orgID, version: version))
        return WrappedDataKey(envelope: envelope)
    }
}

/// The keys of one organization, derived from its DEK. Lives only in process memory.
public struct OrgKeys: Sendable {
    public let orgID: String
    let dataKey: SymmetricKey
    /// AES-256-GCM key for data at rest (HKDF from the DEK, its own `info`).
    let encryptionKey: SymmetricKey
    /// HMAC key for Gatehouse key hashes (HKDF from the DEK, its own `info`). A database dump
    /// without the master key therefore cannot be used to test guesses.
    let pepper: SymmetricKey
    /// An HMAC already keyed with `pepper` (its inner and outer pads hashed once): each use
    /// copies it, so a key check costs two SHA-256 blocks fewer and no key setup.
    private let keyedPepper: HMAC<SHA256>

    init(orgID: String, dataKey: SymmetricKey) {
        self.orgID = orgID
        self.dataKey = dataKey
        self.encryptionKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: dataKey, salt: Data("gatehouse".utf8),
            info: Data("gatehouse/v1/data-encryption|\(orgID)".utf8), outputByteCount: 32)
        self.pepper = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: dataKey, salt: Data("gatehouse".utf8),
            info: Data("gatehouse/v1/key-pepper|\(orgID)".utf8), outputByteCount: 32)
        self.keyedPepper = HMAC<SHA256>(key: pepper)
    }

    // MARK: Provider keys

    static func providerKeyAssociatedData(orgID: String, rowID: String, provider: String) -> Data {
        Data("provider_key|\(orgID)|\(rowID)|\(provider)".utf8)
    }

    /// Seals a provider API key for the row `rowID`.
    public func sealProviderKey(_ secret: String, rowID: String, provider: String) throws -> Data {
        try Envelope.seal(
            Data(secret.utf8), key: encryptionKey, keyVersion: 1,
            associatedData: Self.providerKeyAssociatedData(orgID: orgID, rowID: rowID, provider: provider))
    }

    /// Opens a provider key sealed by ``sealProviderKey(_:rowID:provider:)`` for the same row.
    public func openProviderKey(_ envelope: Data, rowID: String, provider: String) throws(VaultError) -> String {
        let plain = try Envelope.open(
            envelope, key: encryptionKey,
            associatedData: Self.providerKeyAssociatedData(orgID: orgID, rowID: rowID, provider: provider))
        guard let text = String(data: plain, encoding: .utf8) else { throw .decryptionFailed }
        return text
    }

    /// Seals arbitrary data (request bodies, personal fields) bound to `context`.
    public func seal(_ plaintext: some DataProtocol, context: String) throws -> Data {
        try Envelope.seal(plaintext, key: encryptionKey, keyVersion: 1, associatedData: Data("data|\(orgID)|\(context)".utf8))
    }

    /// ``seal(_:context:)`` with the context `"<rowID>|<field>"`, its associated data built
    /// as bytes without formatting strings (this seals every logged request's bodies).
    public func seal(_ plaintext: some DataProtocol, rowID: String, field: StaticString) throws -> Data {
        let field = UnsafeRawBufferPointer(start: field.utf8Start, count: field.utf8CodeUnitCount)
        var authenticated = Envelope.header(keyVersion: 1, reserving: 6 + orgID.utf8.count + rowID.utf8.count + field.count)
        authenticated.append(contentsOf: "data|".utf8)
        authenticated.append(contentsOf: orgID.utf8)
        authenticated.append(UInt8(ascii: "|"))
        authenticated.append(contentsOf: rowID.utf8)
        authenticated.append(UInt8(ascii: "|"))
        authenticated.append(contentsOf: field)
        return try Envelope.seal(plaintext, key: encryptionKey, authenticated: authenticated)
    }

    public func open(_ envelope: Data, context: String) throws(VaultError) -> Data {
        try Envelope.open(envelope, key: encryptionKey, associatedData: Data("data|\(orgID)|\(context)".utf8))
    }

    // MARK: Gatehouse key hashes

    /// `HMAC-SHA256(pepper, full key)`: what is stored for a Gatehouse key.
    public func keyHash(_ keyText: String) -> Data {
        Data(pepperMAC(keyText))
    }

    /// Constant-time check of a presented key against a stored hash (swift-crypto's
    /// `MessageAuthenticationCode ==` compares with `safeCompare`).
    public func verifyKey(_ keyText: String, storedHash: Data) -> Bool {
        pepperMAC(keyText) == storedHash
    }

    /// `HMAC-SHA256(pepper, text)`, from the keyed copy and the string's own bytes.
    func pepperMAC(_ text: String) -> HMAC<SHA256>.MAC {
        var mac = keyedPepper
        var text = text
        text.withUTF8 { mac.update(data: UnsafeRawBufferPointer($0)) }
        return mac.finalize()
    }

    /// A keyed, non-reversible fingerprint of a secret, for audit details (never the secret itself).
    public func fingerprint(_ secret: String) -> String {
        "hmac:" + Data(pepperMAC("fingerprint|\(secret)")).prefix(12).hexString
    }
}

extension OrgKeys {
    /// A keyed hash of an end-user id (hex), so logs can be filtered and grouped by user
    /// without storing the id itself in plain text.
    public func userHash(_ userID: String) -> String {
        Data(pepperMAC("user|\(userID)")).prefix(16).hexString
    }
}
