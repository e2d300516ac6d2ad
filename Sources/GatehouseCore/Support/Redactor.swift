import Crypto
import Foundation
import Synchronization

/// The one redaction layer every sink uses (log lines and their metadata, error messages,
/// audit details, command-line error output): removes secrets from free text
///
/// - **by pattern**: Gatehouse keys (`gate_<kind>_…`, kept as their public prefix and id),
///   provider keys (`sk-…`, `sk-ant-…`, `sk-proj-…`, AWS `AKIA…`, Google `AIza…`), and the
///   credential of `Bearer …`, `Basic …` and `x-api-key: …`;
/// - **by value**: every secret the process has handled (provider keys when stored or
///   decrypted, the master keys). Only their SHA-256 digests are kept, never the values: each
///   run of key characters of a text is hashed and compared.
///
/// It is not on the request hot path: it runs when something is written to a sink.
public final class Redactor: Sendable {
    public static let shared = Redactor()

    public static let marker = "[redacted]"
    /// Shorter values are not registered (they would match ordinary words).
    public static let minimumSecretLength = 12

    private let digests = Mutex<Set<SHA256Digest>>([])
    private let shortest = Atomic<Int>(Int.max)

    public init() {}

    /// Remembers a secret (its digest only) so that it is removed wherever it appears whole.
    public func register(_ secret: some StringProtocol) {
        guard secret.utf8.count >= Self.minimumSecretLength else { return }
        let digest = SHA256.hash(data: Array(secret.utf8))
        digests.withLock { _ = $0.insert(digest) }
        var current = shortest.load(ordering: .relaxed)
        while secret.utf8.count < current {
            let (exchanged, original) = shortest.compareExchange(expected: current, desired: secret.utf8.count, ordering: .relaxed)
            if exchanged { break }
            current = original
        }
    }

    /// How many secrets are registered (for tests).
    public var registeredCount: Int { digests.withLock { $0.count } }

    /// `text` with every secret replaced.
    public func redact(_ text: String) -> String {
        var bytes = Array(text.utf8)
        guard bytes.count >= 8 else { return text }
        let changedByPattern = Self.redactPatterns(&bytes)
        let changedByValue = redactValues(&bytes)
        guard changedByPattern || changedByValue else { return text }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Characters of keys and tokens: a secret is a maximal run of these.
    @inline(__always)
    static func isTokenByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2D
    }

    /// Base64 adds these to the token characters.
    @inline(__always)
    static func isBase64Byte(_ b: UInt8) -> Bool {
        isTokenByte(b) || b == 0x2B || b == 0x2F || b == 0x3D
    }

    /// `bytes` with every occurrence of one known `secret` replaced by the marker: exact, at any
    /// position, in any bytes (not only text). For a body that may quote the very key that was
    /// sent with its request (a provider's error answer).
    public static func removing(_ secret: [UInt8], from bytes: [UInt8]) -> [UInt8] {
        guard secret.count >= 8, bytes.count >= secret.count, let first = secret.first else { return bytes }
        var out: [UInt8] = []
        var i = 0
        var copied = 0
        while i + secret.count <= bytes.count {
            if bytes[i] == first, bytes[i..<(i + secret.count)].elementsEqual(secret) {
                if out.isEmpty { out.reserveCapacity(bytes.count) }
                out.append(contentsOf: bytes[copied..<i])
                out.append(contentsOf: marker.utf8)
                i += secret.count
                copied = i
            } else {
                i += 1
            }
        }
        guard copied > 0 else { return bytes }
        out.append(contentsOf: bytes[copied...])
        return out
    }

    // MARK: Patterns

    static let gatePrefix = Array("gate_".utf8)
    static let providerPrefixes: [[UInt8]] = [Array("sk-".utf8), Array("AKIA".utf8), Array("AIza".utf8)]
    static let credentialLabels: [[UInt8]] = [Array("bearer ".utf8), Array("basic ".utf8), Array("x-api-key: ".utf8), Array("x-api-key=".utf8)]

    static func hasPrefix(_ bytes: [UInt8], at i: Int, _ prefix: [UInt8], caseInsensitive: Bool = false) -> Bool {
        guard i + prefix.count <= bytes.count else { return false }
        for j in 0..<prefix.count {
            var b = bytes[i + j]
            if caseInsensitive, b >= 0x41, b <= 0x5A { b += 0x20 }
            if b != prefix[j] { return false }
        }
        return true
    }

    /// End of the token run starting at `i`.
    static func runEnd(_ bytes: [UInt8], from i: Int, allowing allowed: (UInt8) -> Bool = isTokenByte) -> Int {
        var j = i
        while j < bytes.count, allowed(bytes[j]) { j += 1 }
        return j
    }

    static func redactPatterns(_ bytes: inout [UInt8]) -> Bool {
        var out: [UInt8] = []
        var changed = false
        var i = 0
        var copiedUpTo = 0
        let marker = Array(Self.marker.utf8)
        func replace(_ start: Int, _ end: Int, keeping keep: Int) {
            out.append(contentsOf: bytes[copiedUpTo..<(start + keep)])
            out.append(contentsOf: marker)
            copiedUpTo = end
            changed = true
        }
        while i < bytes.count {
            let atBoundary = i == 0 || !isTokenByte(bytes[i - 1])
            if atBoundary, hasPrefix(bytes, at: i, gatePrefix) {
                // gate_<kind>_<12-char id><secret…>: keep the prefix and id, drop the rest.
                let end = runEnd(bytes, from: i)
                let token = bytes[i..<end]
                if let second = token.dropFirst(5).firstIndex(of: 0x5F) {
                    let keep = second + 1 + 12 - i
                    if end - i > keep + 8 {
                        replace(i, end, keeping: keep)
                        i = end
                        continue
                    }
                }
                i = end
                continue
            }
            if atBoundary, providerPrefixes.contains(where: { hasPrefix(bytes, at: i, $0) }) {
                let end = runEnd(bytes, from: i)
                if end - i >= 16 {
                    replace(i, end, keeping: hasPrefix(bytes, at: i, providerPrefixes[0]) ? 3 : 0)
                }
                i = max(end, i + 1)
                continue
            }
            if atBoundary, let label = credentialLabels.first(where: { hasPrefix(bytes, at: i, $0, caseInsensitive: true) }) {
                var start = i + label.count
                while start < bytes.count, bytes[start] == 0x20 { start += 1 }
                let end = runEnd(bytes, from: start, allowing: { isBase64Byte($0) || $0 == 0x2E })
                if end - start >= 8 {
                    replace(start, end, keeping: 0)
                }
                i = max(end, i + 1)
                continue
            }
            i += 1
        }
        guard changed else { return false }
        out.append(contentsOf: bytes[copiedUpTo...])
        bytes = out
        return true
    }

    // MARK: Values

    func redactValues(_ bytes: inout [UInt8]) -> Bool {
        let minimum = shortest.load(ordering: .relaxed)
        guard minimum != Int.max, bytes.count >= minimum else { return false }
        let known = digests.withLock { $0 }
        guard !known.isEmpty else { return false }
        var out: [UInt8] = []
        var copiedUpTo = 0
        var changed = false
        var i = 0
        while i < bytes.count {
            guard Self.isBase64Byte(bytes[i]) else { i += 1; continue }
            // Secrets are token runs; base64 (a master key) also uses + / =. Try the wider
            // run, then the narrower one.
            let wide = Self.runEnd(bytes, from: i, allowing: Self.isBase64Byte)
            var matched: Int? = nil
            if wide - i >= minimum, known.contains(SHA256.hash(data: bytes[i..<wide])) {
                matched = wide
            } else {
                var j = i
                while j < wide {
                    let end = Self.runEnd(bytes, from: j)
                    if end - j >= minimum, known.contains(SHA256.hash(data: bytes[j..<end])) {
                        out.append(contentsOf: bytes[copiedUpTo..<j])
                        out.append(contentsOf: Array(Self.marker.utf8))
                        copiedUpTo = end
                        changed = true
                    }
                    j = end == j ? j + 1 : end
                    while j < wide, !Self.isTokenByte(bytes[j]) { j += 1 }
                }
            }
            if let end = matched {
                out.append(contentsOf: bytes[copiedUpTo..<i])
                out.append(contentsOf: Array(Self.marker.utf8))
                copiedUpTo = end
                changed = true
            }
            i = wide
        }
        guard changed else { return false }
        out.append(contentsOf: bytes[copiedUpTo...])
        bytes = out
        return true
    }
}
