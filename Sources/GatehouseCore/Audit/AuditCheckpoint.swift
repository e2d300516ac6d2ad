import Crypto
import Foundation

/// A signed statement "the audit trail had `hash` at `sequence`", kept in the database and, by
/// the operator, outside it: a later trail that lacks this entry was truncated or rolled back.
///
/// Signed with Ed25519; the signing key is derived (HKDF) from a master key version, so only
/// someone holding the master key can make one, and anyone with the keyring can check one.
public struct AuditCheckpoint: Sendable, Equatable, Codable {
    public var sequence: Int64
    public var hash: Data
    public var time: Date
    public var masterKeyVersion: UInt32
    public var signature: Data

    public init(sequence: Int64, hash: Data, time: Date, masterKeyVersion: UInt32, signature: Data) {
        self.sequence = sequence
        self.hash = hash
        self.time = time
        self.masterKeyVersion = masterKeyVersion
        self.signature = signature
    }

    enum CodingKeys: String, CodingKey {
        case sequence, hash, time
        case masterKeyVersion = "master_key_version"
        case signature
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sequence, forKey: .sequence)
        try c.encode(hash.hexString, forKey: .hash)
        try c.encode(time.unixMilliseconds, forKey: .time)
        try c.encode(masterKeyVersion, forKey: .masterKeyVersion)
        try c.encode(signature.base64EncodedString(), forKey: .signature)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        sequence = try c.decode(Int64.self, forKey: .sequence)
        let hex = try c.decode(String.self, forKey: .hash)
        guard let hash = Data(hexString: hex) else {
            throw DecodingError.dataCorruptedError(forKey: .hash, in: c, debugDescription: "hash must be hex")
        }
        self.hash = hash
        time = Date(timeIntervalSince1970: Double(try c.decode(Int64.self, forKey: .time)) / 1000)
        masterKeyVersion = try c.decode(UInt32.self, forKey: .masterKeyVersion)
        guard let sig = Data(base64Encoded: try c.decode(String.self, forKey: .signature)) else {
            throw DecodingError.dataCorruptedError(forKey: .signature, in: c, debugDescription: "signature must be base64")
        }
        signature = sig
    }

    /// The exact bytes that are signed.
    func message() -> Data {
        Data("gatehouse-audit-checkpoint|v1|\(sequence)|\(hash.hexString)|\(time.unixMilliseconds)|\(masterKeyVersion)".utf8)
    }

    static func signingKey(_ masterKey: SymmetricKey) -> Curve25519.Signing.PrivateKey {
        let seed = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: masterKey, salt: Data("gatehouse".utf8), info: Data("gatehouse/v1/audit-signing".utf8),
            outputByteCount: 32)
        return try! Curve25519.Signing.PrivateKey(rawRepresentation: seed.withUnsafeBytes { Data($0) })
    }

    /// Signs `(sequence, hash)` with the keyring's primary version.
    public static func sign(sequence: Int64, hash: Data, time: Date = Date(), keyring: MasterKeyring) throws -> AuditCheckpoint {
        let ms = (time.timeIntervalSince1970 * 1000).rounded()
        var checkpoint = AuditCheckpoint(
            sequence: sequence, hash: hash, time: Date(timeIntervalSince1970: ms / 1000),
            masterKeyVersion: keyring.primaryVersion, signature: Data())
        checkpoint.signature = try signingKey(keyring.primaryKey).signature(for: checkpoint.message())
        return checkpoint
    }

    /// `true` when the signature was made with the key of `masterKeyVersion` in `keyring`.
    public func isValid(keyring: MasterKeyring) -> Bool {
        guard let key = keyring.keys[masterKeyVersion] else { return false }
        return Self.signingKey(key).publicKey.isValidSignature(signature, for: message())
    }
}

extension Data {
    init?(hexString: String) {
        guard hexString.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hexString.count / 2)
        var index = hexString.startIndex
        while index < hexString.endIndex {
            let next = hexString.index(index, offsetBy: 2)
            guard let b = UInt8(hexString[index..<next], radix: 16) else { return nil }
            bytes.append(b)
            index = next
        }
        self.init(bytes)
    }
}
