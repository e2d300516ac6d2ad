import Foundation

extension Sequence where Element == UInt8 {
    /// Lower-case hexadecimal, two digits per byte.
    public var hexString: String { map { String(format: "%02x", $0) }.joined() }
}

extension Date {
    /// Milliseconds since 1970, rounded to nearest: the resolution every stored and hashed
    /// timestamp uses.
    public var unixMilliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
}
