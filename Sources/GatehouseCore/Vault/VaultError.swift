/// Errors from the vault. None of them ever carries key material.
public enum VaultError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No master key was found (neither `GATEHOUSE_MASTER_KEY` nor the key file).
    case masterKeyMissing(source: String)
    /// The master key text is not valid (wrong length, not base64, bad keyring syntax).
    case masterKeyMalformed(source: String, reason: String)
    /// The key file is readable by group or others.
    case masterKeyFileTooOpen(path: String)
    /// An envelope names a master key version the keyring does not hold.
    case unknownMasterKeyVersion(UInt32)
    /// An envelope is truncated or has an unknown format or algorithm byte.
    case malformedEnvelope
    /// Authentication failed: wrong key, tampered ciphertext, or ciphertext bound to another context.
    case decryptionFailed

    public var description: String {
        switch self {
        case .masterKeyMissing(let source):
            "no master key found (\(source)); set GATEHOUSE_MASTER_KEY or provide the key file"
        case .masterKeyMalformed(let source, let reason):
            "the master key from \(source) is not valid: \(reason)"
        case .masterKeyFileTooOpen(let path):
            "the master key file \(path) is readable by other users; run: chmod 600 \(path)"
        case .unknownMasterKeyVersion(let version):
            "data is wrapped with master key version \(version), which the keyring does not hold"
        case .malformedEnvelope:
            "encrypted value is malformed"
        case .decryptionFailed:
            "decryption failed (wrong master key or tampered data)"
        }
    }
}
