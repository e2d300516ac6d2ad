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
        let text = body + checksum(of: body.utf8)
        return GatehouseKey(kind: kind, id: id, text: text)
    }

    /// Parses and checks a key presented by a client.
    public static func parse(_ text: some StringProtocol) throws(ParseError) -> GatehouseKey {
        // Checked on the string's own UTF-8 bytes: no array of them, no second copy of the text.
        var owned = String(text)
        let checked: Result<(KeyKind, String), ParseError> = owned.withUTF8 { utf8 in
            // gate_ + kind + _ : find the kind between the first two underscores.
            guard utf8.count > 5, utf8[0..<5].elementsEqual("gate_".utf8) else { return .failure(.malformed) }
            guard let sep = utf8[5...].firstIndex(of: UInt8(ascii: "_")) else { return .failure(.malformed) }
            guard let kind = KeyKind.allCases.first(where: { $0.rawValue.utf8.elementsEqual(utf8[5..<sep]) }) else {
                return .failure(.malformed)
            }
            let start = sep + 1
            guard utf8.count == start + idLength + secretLength + checksumLength else { return .failure(.malformed) }
            guard utf8[start...].allSatisfy(Base62.isSymbol) else { return .failure(.malformed) }
            let bodyEnd = utf8.count - checksumLength
            let expected = checksum(of: UnsafeBufferPointer(rebasing: utf8[0..<bodyEnd]))
            // Not secret-dependent in a useful way (the checksum is public), so a plain compare is fine.
            guard utf8[bodyEnd...].elementsEqual(expected.utf8) else { return .failure(.badChecksum) }
            return .success((kind, String(decoding: UnsafeBufferPointer(rebasing: utf8[start..<(start + idLength)]), as: UTF8.self)))
        }
        switch checked {
        case .success(let (kind, id)): return GatehouseKey(kind: kind, id: id, text: owned)
        case .failure(let error): throw error
        }
    }

    /// A short, non-secret form for display: `gate_proxy_<id>…`.
    public var redacted: String { "gate_\(kind.rawValue)_\(id)…" }

    /// CRC32 of the key's bytes before the checksum, in base62.
    static func checksum(of body: some Sequence<UInt8>) -> String {
        Base62.encode(UInt64(CRC32.checksum(body)), width: checksumLength)
    }
}
