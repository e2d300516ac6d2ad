import Foundation
import GatehouseCore
import Testing

/// The key format: `gate_<kind>_` + 12-char id + 32-char secret + 6-char base62 CRC32.
@Suite("Gatehouse key format")
struct GatehouseKeyTests {
    static let printableASCII: [Character] = (0x21...0x7E).map { Character(Unicode.Scalar(UInt8($0))) }

    static func replacing(_ text: String, at offset: Int, with c: Character) -> String {
        var chars = Array(text)
        chars[offset] = c
        return String(chars)
    }

    /// Parses `text`, returning the error (or `nil` when it was accepted).
    static func parseError(_ text: String) -> GatehouseKey.ParseError? {
        do {
            _ = try GatehouseKey.parse(text)
            return nil
        } catch {
            return error
        }
    }

    @Test(arguments: KeyKind.allCases)
    func generatedKeyParsesBackToTheSameKindIdAndText(kind: KeyKind) throws {
        let key = GatehouseKey.generate(kind: kind)
        let parsed = try GatehouseKey.parse(key.text)
        #expect(parsed == key)
        #expect(parsed.kind == kind)
        #expect(parsed.id == key.id)
        #expect(parsed.id.count == GatehouseKey.idLength)
        #expect(key.text.hasPrefix("gate_\(kind.rawValue)_\(key.id)"))
    }

    @Test(arguments: KeyKind.allCases)
    func generatedKeyWithAGivenIdCarriesThatId(kind: KeyKind) throws {
        let id = "AbCdEf012345"
        let key = GatehouseKey.generate(kind: kind, id: id)
        #expect(key.id == id)
        #expect(try GatehouseKey.parse(key.text).id == id)
    }

    @Test(arguments: KeyKind.allCases)
    func generatedKeyMatchesThePublishedFormat(kind: KeyKind) {
        for _ in 0..<200 {
            let text = GatehouseKey.generate(kind: kind).text
            #expect(text.wholeMatch(of: #/gate_(api|read|proxy)_[0-9A-Za-z]{50}/#) != nil, "\(text.prefix(12))…")
            #expect(text.hasPrefix("gate_\(kind.rawValue)_"))
        }
    }

    @Test func checksumIsBase62OfCRC32OverEverythingBeforeIt() {
        for kind in KeyKind.allCases {
            let text = GatehouseKey.generate(kind: kind).text
            let body = text.dropLast(GatehouseKey.checksumLength)
            let expected = Base62.encode(UInt64(CRC32.checksum(body.utf8)), width: GatehouseKey.checksumLength)
            #expect(String(text.suffix(GatehouseKey.checksumLength)) == expected)
        }
    }

    @Test func generatedKeysAreUnique() {
        let texts = (0..<2000).map { _ in GatehouseKey.generate(kind: .proxy).text }
        let ids = texts.map { $0.dropFirst("gate_proxy_".count).prefix(GatehouseKey.idLength) }
        #expect(Set(texts).count == texts.count)
        #expect(Set(ids).count == ids.count)
    }

    @Test func redactedFormShowsOnlyKindAndId() {
        let key = GatehouseKey.generate(kind: .proxy)
        #expect(key.redacted == "gate_proxy_\(key.id)…")
        let secret = String(key.text.dropFirst("gate_proxy_".count + GatehouseKey.idLength).prefix(GatehouseKey.secretLength))
        #expect(!key.redacted.contains(secret))
    }

    // MARK: Single-character substitutions

    /// Every position, every printable ASCII replacement (which includes all 61 other base62
    /// symbols): no single-character typo is ever accepted.
    @Test(arguments: KeyKind.allCases)
    func everySingleCharacterSubstitutionIsRejected(kind: KeyKind) {
        let text = GatehouseKey.generate(kind: kind).text
        let chars = Array(text)
        var accepted: [String] = []
        var tried = 0
        for offset in chars.indices {
            for c in Self.printableASCII + [" ", "\u{00E9}", "\u{0430}", "\u{FF10}"] where c != chars[offset] {
                let mutated = Self.replacing(text, at: offset, with: c)
                tried += 1
                if Self.parseError(mutated) == nil { accepted.append("position \(offset) → \(c)") }
            }
        }
        #expect(tried >= chars.count * 3)
        #expect(accepted.isEmpty, "accepted substitutions: \(accepted.prefix(20))")
    }

    /// A base62 substitution inside id, secret or checksum keeps the shape and must be caught
    /// by the checksum; anything else is malformed.
    @Test(arguments: KeyKind.allCases)
    func base62SubstitutionAfterThePrefixIsABadChecksum(kind: KeyKind) {
        let text = GatehouseKey.generate(kind: kind).text
        let prefixLength = "gate_\(kind.rawValue)_".count
        let chars = Array(text)
        for offset in prefixLength..<chars.count {
            for c in Base62.alphabet.map({ Character(Unicode.Scalar($0)) }) where c != chars[offset] {
                let error = Self.parseError(Self.replacing(text, at: offset, with: c))
                #expect(error == .badChecksum, "position \(offset) → \(c): \(String(describing: error))")
            }
            for c: Character in ["_", "-", "+", "/", "=", ".", " "] {
                let error = Self.parseError(Self.replacing(text, at: offset, with: c))
                #expect(error == .malformed, "position \(offset) → \(c): \(String(describing: error))")
            }
        }
    }

    @Test(arguments: KeyKind.allCases)
    func substitutionInThePrefixIsMalformed(kind: KeyKind) {
        let text = GatehouseKey.generate(kind: kind).text
        let prefixLength = "gate_\(kind.rawValue)_".count
        let chars = Array(text)
        for offset in 0..<prefixLength {
            for c: Character in ["a", "x", "G", "0", "_", "-", " "] where c != chars[offset] {
                let error = Self.parseError(Self.replacing(text, at: offset, with: c))
                #expect(error != nil, "position \(offset) → \(c) accepted")
            }
        }
    }

    // MARK: Length, prefix, kind, encoding

    @Test(arguments: KeyKind.allCases)
    func truncatedOrExtendedKeyIsRejected(kind: KeyKind) {
        let text = GatehouseKey.generate(kind: kind).text
        for length in 0..<text.count {
            #expect(Self.parseError(String(text.prefix(length))) != nil, "truncated to \(length)")
            #expect(Self.parseError(String(text.dropFirst(text.count - length))) != nil, "suffix of \(length)")
        }
        for extra in ["A", "0", "z", "_", " ", "\n", "\0", "AAAAAA"] {
            #expect(Self.parseError(text + extra) == .malformed, "extended with \(extra.debugDescription)")
            #expect(Self.parseError(extra + text) != nil, "prefixed with \(extra.debugDescription)")
        }
    }

    @Test func keyWithADroppedMiddleCharacterIsRejected() {
        let text = GatehouseKey.generate(kind: .api).text
        let chars = Array(text)
        for offset in chars.indices {
            var shorter = chars
            shorter.remove(at: offset)
            #expect(Self.parseError(String(shorter)) != nil, "dropped position \(offset)")
        }
    }

    @Test func unknownKindOrPrefixIsRejected() {
        let key = GatehouseKey.generate(kind: .api)
        let rest = String(key.text.dropFirst("gate_api_".count))
        for prefix in ["gate_xyz_", "gate_admin_", "gate_API_", "Gate_api_", "gate-api-", "gateapi_", "gate__", "gate_", "sk_api_", "gate_api", "gate_apiread_"] {
            #expect(Self.parseError(prefix + rest) == .malformed, "\(prefix)")
        }
    }

    @Test func swappingTheKindOfAValidKeyIsRejected() {
        // The checksum covers the kind, so `gate_api_X` cannot be replayed as `gate_read_X`.
        for kind in KeyKind.allCases {
            let key = GatehouseKey.generate(kind: kind)
            let rest = key.text.dropFirst("gate_\(kind.rawValue)_".count)
            for other in KeyKind.allCases where other != kind {
                #expect(Self.parseError("gate_\(other.rawValue)_" + rest) == .badChecksum)
            }
        }
    }

    @Test func nonASCIIKeyIsRejected() {
        let text = GatehouseKey.generate(kind: .read).text
        let chars = Array(text)
        // Look-alikes: Cyrillic a, fullwidth digit, combining accent, zero-width space, emoji.
        for c: Character in ["\u{0430}", "\u{FF10}", "\u{00E9}", "\u{200B}", "\u{1F511}", "\u{00A0}"] {
            for offset in [0, 3, 10, chars.count / 2, chars.count - 1] {
                #expect(Self.parseError(Self.replacing(text, at: offset, with: c)) == .malformed)
            }
        }
        #expect(Self.parseError(text + "\u{0301}") == .malformed)  // combining mark on the last char
        #expect(Self.parseError("\u{FEFF}" + text) == .malformed)  // byte order mark
    }

    @Test func emptyAndJunkInputsAreMalformed() {
        for junk in ["", "gate", "gate_", "gate_api_", "Bearer", "null", String(repeating: "A", count: 59), String(repeating: "_", count: 100)] {
            #expect(Self.parseError(junk) == .malformed, "\(junk.prefix(20))")
        }
    }

    @Test func parseAcceptsASubstringView() throws {
        let key = GatehouseKey.generate(kind: .proxy)
        let wrapped = "  \(key.text)  "
        let slice = wrapped.dropFirst(2).dropLast(2)
        #expect(try GatehouseKey.parse(slice) == key)
    }

    // MARK: CRC32 and Base62

    @Test func crc32MatchesTheStandardCheckValue() {
        #expect(CRC32.checksum("123456789".utf8) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
        #expect(CRC32.checksum("The quick brown fox jumps over the lazy dog".utf8) == 0x414F_A339)
    }

    @Test func base62RandomUsesOnlyTheAlphabetWithTheRequestedLength() {
        for count in [0, 1, 12, 32, 1000] {
            let s = Base62.random(count: count)
            #expect(s.utf8.count == count)
            #expect(s.utf8.allSatisfy { Base62.alphabet.contains($0) })
        }
        #expect(Base62.alphabet.count == 62)
        #expect(Set(Base62.alphabet).count == 62)
    }

    @Test func base62RandomReachesEverySymbol() {
        // 20 000 symbols: the chance that a fair generator misses one of 62 is negligible (< 1e-130).
        let seen = Set(Base62.random(count: 20_000).utf8)
        #expect(seen == Set(Base62.alphabet))
    }

    @Test func base62IsSymbolAgreesWithTheAlphabet() {
        for byte in UInt8.min...UInt8.max {
            #expect(Base62.isSymbol(byte) == Base62.alphabet.contains(byte), "byte \(byte)")
        }
    }

    @Test func base62EncodeIsFixedWidthMostSignificantFirst() {
        #expect(Base62.encode(0, width: 6) == "000000")
        #expect(Base62.encode(61, width: 2) == "0z")
        #expect(Base62.encode(62, width: 2) == "10")
        #expect(Base62.encode(UInt64(UInt32.max), width: 6) == "4gfFC3")
        // Six symbols hold every CRC32 value, so distinct checksums never collide in text.
        #expect(62 * 62 * 62 * 62 * 62 * 62 > Int(UInt32.max))
    }

    @Test func timeOrderedIDsSortByTimeAndStayRandom() {
        let t0 = Date(timeIntervalSince1970: 1_790_000_000.123)
        let a = Base62.timeOrderedID(prefix: "req_", at: t0)
        let b = Base62.timeOrderedID(prefix: "req_", at: t0)
        let later = Base62.timeOrderedID(prefix: "req_", at: t0.addingTimeInterval(0.001))
        let muchLater = Base62.timeOrderedID(prefix: "req_", at: t0.addingTimeInterval(86_400 * 365))
        for id in [a, b, later, muchLater] {
            #expect(id.hasPrefix("req_"))
            #expect(id.utf8.count == 24)
            #expect(id.utf8.dropFirst(4).allSatisfy(Base62.isSymbol))
        }
        // The first 8 symbols are the millisecond; the other 12 are random.
        #expect(a.prefix(12) == "req_" + Base62.encode(1_790_000_000_123, width: 8))
        #expect(a != b)
        #expect(a.prefix(12) == b.prefix(12))
        #expect(a < later && b < later && later < muchLater)
        // Before 1970 (a broken clock) is clamped, never a crash.
        #expect(Base62.timeOrderedID(prefix: "", at: Date(timeIntervalSince1970: -5)).hasPrefix("00000000"))
    }
}
