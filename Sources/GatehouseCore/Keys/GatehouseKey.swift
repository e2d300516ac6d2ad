/// The three kinds of key that Gatehouse hands out.
public enum KeyKind: String, Sendable, Codable, CaseIterable {
    /// Organization automation key with admin-level access to `/api`.
    case api
    /// Read-only organization key: `GET` on logs, usage, metrics and audit.
    case read
    /// Gateway key: `/v1/*` only, bound to one provider key.
    case proxy
}

/// A parsed Gatehouse key: `gate_<kind>_` + 12-char key id + 32-char secret + 6-char checksum.
///
/// The checksum is CRC32 over everything before it, written in base62. Parsing checks the
/// prefix, lengths, alphabet and checksum and touches no storage, so junk and typos are
/// rejected for the price of a few hundred nanoseconds.
///
/// ```swift
/// let key = GatehouseKey.generate(kind: .proxy)
/// let parsed = try GatehouseKey.parse(key.text)   // same id, same secret
/// ```
public struct GatehouseKey: Sendable, Equatable {
    public static let idLength = 12
    public static let secretLength = 32
    public static let checksumLength = 6

    public let kind: KeyKind
    /// Public identifier, safe to log and show (it is the row id).
    public let id: String
    /// The full key text. Secret: never log it.
    public let text: String

    /// Errors from ``parse(_:)``. Deliberately coarse: callers answer every one with the same 401.
    public enum ParseError: Error, Equatable, Sendable {
        case malformed
        case badChecksum
    }

    /// Creates a new random key of `kind` (≥ 190 bits of secret entropy).
    public static func generate(kind: KeyKind) -> GatehouseKey {
        generate(kind: kind, id: Base62.random(count: idLength))
    }

    /// Creates a new random key of `kind` with a given id (used when a row id must be known first).
    public static func generate(kind: KeyKind, id: String) -> GatehouseKey {
        precondition(id.utf8.count == idLength && id.utf8.allSatisfy(Base62.isSymbol))
        let body = "gate_\(kind.rawValue)_\(id)\(Base62.random(count: secretLength))"
        let text = body + checksum(of: body)
        return GatehouseKey(kind: kind, id: id, text: text)
    }

    /// Parses and checks a key presented by a client.
    public static func parse(_ text: some StringProtocol) throws(ParseError) -> GatehouseKey {
        let utf8 = Array(text.utf8)
        // gate_ + kind + _ : find the kind between the first two underscores.
        guard utf8.count > 5, utf8[0..<5].elementsEqual("gate_".utf8) else { throw .malformed }
        guard let sep = utf8[5...].firstIndex(of: UInt8(ascii: "_")) else { throw .malformed }
        guard let kind = KeyKind(rawValue: String(decoding: utf8[5..<sep], as: UTF8.self)) else {
            throw .malformed
        }
        let start = sep + 1
        guard utf8.count == start + idLength + secretLength + checksumLength else { throw .malformed }
        guard utf8[start...].allSatisfy(Base62.isSymbol) else { throw .malformed }
        let bodyEnd = utf8.count - checksumLength
        let expected = Array(checksum(of: utf8[0..<bodyEnd]).utf8)
        // Not secret-dependent in a useful way (the checksum is public), so a plain compare is fine.
        guard utf8[bodyEnd...].elementsEqual(expected) else { throw .badChecksum }
        let id = String(decoding: utf8[start..<(start + idLength)], as: UTF8.self)
        return GatehouseKey(kind: kind, id: id, text: String(decoding: utf8, as: UTF8.self))
    }

    /// A short, non-secret form for display: `gate_proxy_<id>…`.
    public var redacted: String { "gate_\(kind.rawValue)_\(id)…" }

    static func checksum(of body: String) -> String {
        checksum(of: Array(body.utf8)[...])
    }

    static func checksum(of body: ArraySlice<UInt8>) -> String {
        Base62.encode(UInt64(CRC32.checksum(body)), width: checksumLength)
    }
}
