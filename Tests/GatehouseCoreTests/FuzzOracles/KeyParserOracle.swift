#if canImport(GatehouseCore)
import GatehouseCore
#endif

/// Oracles for `GatehouseKey.parse`: it must agree with an independent reference validator of
/// the key format, accepted keys must round-trip exactly, and the checksum must catch every
/// single-symbol substitution and adjacent transposition.
enum KeyParserOracle {
    static let name = "KeyParser"

    enum Verdict: Equatable {
        case accepted(kind: KeyKind, id: String)
        case malformed
        case badChecksum
    }

    /// The key format written out directly from its description:
    /// `gate_<kind>_` + 12 id + 32 secret + 6 checksum symbols (base62), checksum =
    /// base62(CRC-32 of everything before it), 6 symbols wide.
    static func reference(_ utf8: [UInt8]) -> Verdict {
        for kind in KeyKind.allCases {
            let prefix = Array("gate_\(kind.rawValue)_".utf8)
            guard utf8.count >= prefix.count, Array(utf8[0..<prefix.count]) == prefix else { continue }
            let rest = Array(utf8[prefix.count...])
            guard rest.count == 12 + 32 + 6 else { return .malformed }
            for b in rest {
                let isDigit = b >= 48 && b <= 57
                let isUpper = b >= 65 && b <= 90
                let isLower = b >= 97 && b <= 122
                if !(isDigit || isUpper || isLower) { return .malformed }
            }
            let body = Array(utf8[0..<(utf8.count - 6)])
            let sum = Array(Base62.encode(UInt64(CRC32.checksum(body)), width: 6).utf8)
            guard Array(utf8[(utf8.count - 6)...]) == sum else { return .badChecksum }
            return .accepted(kind: kind, id: String(decoding: rest[0..<12], as: UTF8.self))
        }
        return .malformed
    }

    static func verdict(_ text: some StringProtocol) -> (Verdict, GatehouseKey?) {
        do throws(GatehouseKey.ParseError) {
            let key = try GatehouseKey.parse(text)
            return (.accepted(kind: key.kind, id: key.id), key)
        } catch {
            switch error {
            case .malformed: return (.malformed, nil)
            case .badChecksum: return (.badChecksum, nil)
            }
        }
    }

    static func run(_ bytes: [UInt8]) throws(FuzzOracleFailure) {
        // The parser takes text; invalid UTF-8 becomes U+FFFD exactly as an HTTP header would.
        let text = String(decoding: bytes, as: UTF8.self)
        let utf8 = Array(text.utf8)
        let expected = reference(utf8)
        let (got, key) = verdict(text)
        try fuzzCheck(got == expected, name, "parse(\(fuzzDescribe(utf8))) = \(got), reference says \(expected)")

        // The generic StringProtocol path: a Substring whose indices do not start at zero. NUL
        // around it (a control character) never joins a grapheme cluster with the text.
        let padded = "\u{0}" + text + "\u{0}"
        let (viaSubstring, _) = verdict(padded.dropFirst().dropLast())
        try fuzzCheck(viaSubstring == got, name, "Substring parse = \(viaSubstring), String parse = \(got)")

        var random = FuzzRandom(seed: utf8)
        if let key {
            try checkAccepted(key, text: text, random: &random)
        } else if expected == .badChecksum {
            // Same body with the right checksum must be accepted as the same kind and id.
            let body = Array(utf8[0..<(utf8.count - 6)])
            let fixed = String(decoding: body, as: UTF8.self) + Base62.encode(UInt64(CRC32.checksum(body)), width: 6)
            let (v, k) = verdict(fixed)
            try fuzzCheck(v == reference(Array(fixed.utf8)) && k != nil, name, "checksum-corrected key \(fixed.debugDescription) not accepted: \(v)")
            if let k { try checkAccepted(k, text: fixed, random: &random) }
        }
    }

    static func checkAccepted(_ key: GatehouseKey, text: String, random: inout FuzzRandom) throws(FuzzOracleFailure) {
        let prefix = "gate_\(key.kind.rawValue)_"
        let utf8 = Array(text.utf8)
        try fuzzCheck(key.text == text, name, "accepted key re-serialises as \(key.text.debugDescription), input was \(text.debugDescription)")
        try fuzzCheck(text.hasPrefix(prefix), name, "kind \(key.kind) does not match the prefix of \(text.debugDescription)")
        try fuzzCheck(utf8.count == prefix.utf8.count + GatehouseKey.idLength + GatehouseKey.secretLength + GatehouseKey.checksumLength,
                      name, "accepted key has length \(utf8.count)")
        try fuzzCheck(key.id.utf8.count == GatehouseKey.idLength && key.id.utf8.allSatisfy(Base62.isSymbol), name, "bad id \(key.id.debugDescription)")
        try fuzzCheck(String(decoding: utf8[prefix.utf8.count..<(prefix.utf8.count + GatehouseKey.idLength)], as: UTF8.self) == key.id,
                      name, "id \(key.id) is not the 12 symbols after the prefix")
        try fuzzCheck(key.redacted == "\(prefix)\(key.id)…", name, "redacted form \(key.redacted.debugDescription)")
        let (again, reparsed) = verdict(key.text)
        try fuzzCheck(reparsed == key, name, "re-parse of an accepted key gave \(again)")

        // Any single-symbol substitution after the prefix must be refused (CRC-32 catches every
        // error burst up to 32 bits; base62 checksum symbols are injective below 62^6).
        let start = prefix.utf8.count
        let pos = start + random.below(utf8.count - start)
        var mutated = utf8
        let replacement = Base62.alphabet[random.below(62)]
        if replacement != mutated[pos] {
            mutated[pos] = replacement
            let (v, _) = verdict(String(decoding: mutated, as: UTF8.self))
            try fuzzCheck(v == .badChecksum, name, "substituting position \(pos) of \(text.debugDescription) gave \(v)")
        }
        // Adjacent transposition.
        let t = start + random.below(utf8.count - start - 1)
        if utf8[t] != utf8[t + 1] {
            var swapped = utf8
            swapped.swapAt(t, t + 1)
            let (v, _) = verdict(String(decoding: swapped, as: UTF8.self))
            try fuzzCheck(v == .badChecksum, name, "transposing positions \(t),\(t + 1) of \(text.debugDescription) gave \(v)")
        }
        // Truncation or extension is malformed, never accepted.
        let (short, _) = verdict(String(decoding: utf8.dropLast(), as: UTF8.self))
        try fuzzCheck(short == .malformed, name, "truncated key gave \(short)")
        let (long, _) = verdict(text + "0")
        try fuzzCheck(long == .malformed, name, "extended key gave \(long)")
    }
}
