import Foundation
import Crypto

/// The versioned binary format of every value Gatehouse encrypts.
///
/// ```
/// byte 0      format version (1)
/// byte 1      algorithm (1 = AES-256-GCM)
/// bytes 2..5  key version, big endian (master key version for wrapped DEKs, 1 for DEK-sealed data)
/// bytes 6..17 nonce (96 bits, random)
/// bytes 18..  ciphertext ‖ 128-bit tag
/// ```
/// The header is part of the authenticated data. The associated data is never stored: the caller rebuilds it from the row it reads, which is
/// what binds a ciphertext to its org, row and provider.
public enum Envelope {
    public static let formatVersion: UInt8 = 1
    public static let algorithmAESGCM: UInt8 = 1
    static let headerLength = 6
    static let nonceLength = 12
    static let tagLength = 16

    /// Encrypts `plaintext` under `key`, binding it to `associatedData`.
    public static func seal(
        _ plaintext: some DataProtocol,
        key: SymmetricKey,
        keyVersion: UInt32,
        associatedData: some DataProtocol
    ) throws -> Data {
        var authenticated = header(keyVersion: keyVersion, reserving: associatedData.count)
        // The header is authenticated too: a flipped version or format byte fails to open.
        authenticated.append(contentsOf: associatedData)
        return try seal(plaintext, key: key, authenticated: authenticated)
    }

    /// The 6-byte header, in an array with room for `extra` more bytes (the associated data).
    static func header(keyVersion: UInt32, reserving extra: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(headerLength + extra)
        bytes.append(contentsOf: [
            formatVersion, algorithmAESGCM,
            UInt8(truncatingIfNeeded: keyVersion >> 24), UInt8(truncatingIfNeeded: keyVersion >> 16),
            UInt8(truncatingIfNeeded: keyVersion >> 8), UInt8(truncatingIfNeeded: keyVersion),
        ])
        return bytes
    }

    /// Seals with `authenticated` = header ‖ associated data, already built (its first
    /// ``headerLength`` bytes are written as the envelope's header). The envelope is written
    /// into one `Data` of its final size: `Data.append` is ~1,000 instructions a call, and
    /// this runs for every body of every logged request.
    static func seal(_ plaintext: some DataProtocol, key: SymmetricKey, authenticated: [UInt8]) throws -> Data {
        let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(), authenticating: authenticated)
        // `combined` is nonce ‖ ciphertext ‖ tag, always there for a 96-bit nonce.
        guard let combined = box.combined else { throw VaultError.malformedEnvelope }
        var out = Data(count: headerLength + combined.count)
        out.withUnsafeMutableBytes { raw in
            authenticated.withUnsafeBytes { raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<headerLength])) }
            combined.withUnsafeBytes {
                UnsafeMutableRawBufferPointer(rebasing: raw[headerLength...]).copyMemory(from: $0)
            }
        }
        return out
    }

    /// The key version written in an envelope's header.
    public static func keyVersion(of envelope: Data) throws(VaultError) -> UInt32 {
        let bytes = [UInt8](envelope.prefix(headerLength))
        guard bytes.count == headerLength, bytes[0] == formatVersion, bytes[1] == algorithmAESGCM else {
            throw .malformedEnvelope
        }
        return UInt32(bytes[2]) << 24 | UInt32(bytes[3]) << 16 | UInt32(bytes[4]) << 8 | UInt32(bytes[5])
    }

    /// Decrypts an envelope made by ``seal(_:key:keyVersion:associatedData:)``.
    public static func open(
        _ envelope: Data,
        key: SymmetricKey,
        associatedData: some DataProtocol
    ) throws(VaultError) -> Data {
        _ = try keyVersion(of: envelope)
        let bytes = Data(envelope)  // rebase indices to 0
        guard bytes.count >= headerLength + nonceLength + tagLength else { throw .malformedEnvelope }
        let nonceStart = headerLength
        let cipherStart = nonceStart + nonceLength
        let tagStart = bytes.count - tagLength
        do {
            let nonce = try AES.GCM.Nonce(data: bytes[nonceStart..<cipherStart])
            let box = try AES.GCM.SealedBox(
                nonce: nonce,
                ciphertext: bytes[cipherStart..<tagStart],
                tag: bytes[tagStart...]
            )
            let header = bytes[0..<headerLength]
            return try AES.GCM.open(box, using: key, authenticating: Data(header) + Data(associatedData))
        } catch {
            throw .decryptionFailed
        }
    }
}
