import Foundation

/// Base62 alphabet used by Gatehouse key identifiers, secrets and checksums.
///
/// Base62 (`0-9A-Za-z`) survives double-click selection, URLs and shell quoting, which is
/// why the key format uses it rather than base64.
public enum Base62 {
    /// The 62 symbols in value order.
    public static let alphabet: [UInt8] = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// `true` when `byte` is one of the 62 symbols.
    @inlinable
    public static func isSymbol(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
    }

    /// Encodes `value` as exactly `width` symbols, most significant first (left-padded with `0`).
    public static func encode(_ value: UInt64, width: Int) -> String {
        var digits = [UInt8](repeating: alphabet[0], count: width)
        var v = value
        var i = width - 1
        while i >= 0 {
            digits[i] = alphabet[Int(v % 62)]
            v /= 62
            i -= 1
        }
        return String(decoding: digits, as: UTF8.self)
    }

    /// Returns `count` uniformly random base62 symbols from a cryptographically secure generator.
    ///
    /// Uses rejection sampling on random bytes so that every symbol is equally likely
    /// (a plain `byte % 62` would bias the first eight symbols).
    public static func random(count: Int) -> String {
        var rng = SystemRandomNumberGenerator()
        var out = [UInt8]()
        out.reserveCapacity(count)
        // Eight random bytes per generator call (each call is a system call).
        while out.count < count {
            var word = rng.next()
            for _ in 0..<8 where out.count < count {
                let byte = UInt8(truncatingIfNeeded: word)
                word >>= 8
                if byte < 248 {  // 248 = 4 * 62
                    out.append(alphabet[Int(byte % 62)])
                }
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `prefix`, then the time in milliseconds since 1970 as 8 symbols (sortable until the year
    /// 8800), then 12 random symbols (71 bits): identifiers made later sort later, so rows keyed
    /// by them are appended to their index instead of landing on a random page of it.
    public static func timeOrderedID(prefix: String, at date: Date) -> String {
        let ms = UInt64(max(0, (date.timeIntervalSince1970 * 1000).rounded(.down)))
        return prefix + encode(ms, width: 8) + random(count: 12)
    }
}
