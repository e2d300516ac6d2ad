import Foundation
import Crypto

/// The master key (key-encryption key) as a keyring of versions, one of them primary.
///
/// New data keys are wrapped with the primary version; older versions only unwrap. The keyring
/// never lives in the data directory or the database.
///
/// Text form (key file, or `GATEHOUSE_MASTER_KEY`):
/// - a single base64 value of 32 bytes: version 1, primary; or
/// - one `<version>:<base64>` entry per line (or separated by commas); the highest version is
///   primary. Lines starting with `#` are comments.
public struct MasterKeyring: Sendable {
    public private(set) var keys: [UInt32: SymmetricKey]
    public private(set) var primaryVersion: UInt32

    public init(keys: [UInt32: SymmetricKey], primaryVersion: UInt32) {
        precondition(keys[primaryVersion] != nil)
        self.keys = keys
        self.primaryVersion = primaryVersion
    }

    /// A new keyring with one random version.
    public static func generate() -> MasterKeyring {
        MasterKeyring(keys: [1: SymmetricKey(size: .bits256)], primaryVersion: 1)
    }

    public var primaryKey: SymmetricKey { keys[primaryVersion]! }

    public var versions: [UInt32] { keys.keys.sorted() }

    public func key(version: UInt32) throws(VaultError) -> SymmetricKey {
        guard let key = keys[version] else { throw .unknownMasterKeyVersion(version) }
        return key
    }

    /// Adds a new random version and makes it primary; returns the new version number.
    @discardableResult
    public mutating func addPrimary() -> UInt32 {
        let next = (keys.keys.max() ?? 0) + 1
        keys[next] = SymmetricKey(size: .bits256)
        primaryVersion = next
        return next
    }

    /// Removes a version that is not primary.
    public mutating func retire(version: UInt32) {
        guard version != primaryVersion else { return }
        keys[version] = nil
    }

    /// Parses the text form. `source` names where it came from, for error messages only.
    public static func parse(_ text: String, source: String) throws(VaultError) -> MasterKeyring {
        var keys: [UInt32: SymmetricKey] = [:]
        let entries = text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.hasPrefix("#") }
            .flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        guard !entries.isEmpty else { throw .masterKeyMalformed(source: source, reason: "it is empty") }
        if entries.count == 1, !entries[0].contains(":") {
            keys[1] = try decodeKey(entries[0], source: source)
            return MasterKeyring(keys: keys, primaryVersion: 1)
        }
        for entry in entries {
            let parts = entry.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let version = UInt32(parts[0].trimmingCharacters(in: .whitespaces)), version > 0
            else {
                throw .masterKeyMalformed(source: source, reason: "expected lines of the form <version>:<base64>")
            }
            guard keys[version] == nil else {
                throw .masterKeyMalformed(source: source, reason: "version \(version) appears twice")
            }
            keys[version] = try decodeKey(parts[1].trimmingCharacters(in: .whitespaces), source: source)
        }
        return MasterKeyring(keys: keys, primaryVersion: keys.keys.max()!)
    }

    /// The text form, for writing a key file.
    public func serialized() -> String {
        var text = "# Gatehouse master keyring. Keep it secret, outside the data directory, mode 0600.\n"
        text += "# One <version>:<base64> per line; the highest version is primary.\n"
        for version in versions {
            let raw = keys[version]!.withUnsafeBytes { Data($0) }
            Redactor.shared.register(raw.base64EncodedString())
            text += "\(version):\(raw.base64EncodedString())\n"
        }
        return text
    }

    private static func decodeKey(_ text: String, source: String) throws(VaultError) -> SymmetricKey {
        guard let raw = Data(base64Encoded: text) else {
            throw .masterKeyMalformed(source: source, reason: "not base64")
        }
        guard raw.count == 32 else {
            throw .masterKeyMalformed(source: source, reason: "must decode to 32 bytes, got \(raw.count)")
        }
        Redactor.shared.register(text)
        Redactor.shared.register(raw.base64EncodedString())
        return SymmetricKey(data: raw)
    }
}
