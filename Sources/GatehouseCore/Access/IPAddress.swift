import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 address as 16 bytes (IPv4 is held in its IPv4-mapped IPv6 form).
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]
    public let isIPv4: Bool

    /// Parses dotted IPv4 or textual IPv6 (with an optional `%zone`, which is ignored).
    public init?(_ text: some StringProtocol) {
        var s = String(text)
        if let pct = s.firstIndex(of: "%") { s = String(s[..<pct]) }
        if s.hasPrefix("["), s.hasSuffix("]") { s = String(s.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, s, &v4) == 1 {
            let raw = withUnsafeBytes(of: &v4) { Array($0) }
            self.bytes = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] + raw
            self.isIPv4 = true
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, s, &v6) == 1 {
            let raw = withUnsafeBytes(of: &v6) { Array($0) }
            self.bytes = raw
            // Treat IPv4-mapped IPv6 (::ffff:a.b.c.d) as the IPv4 address it carries.
            self.isIPv4 = raw[0..<10].allSatisfy { $0 == 0 } && raw[10] == 0xFF && raw[11] == 0xFF
            return
        }
        return nil
    }

    public var description: String {
        if isIPv4 { return bytes[12...].map(String.init).joined(separator: ".") }
        var addr = in6_addr()
        withUnsafeMutableBytes(of: &addr) { $0.copyBytes(from: bytes) }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count))
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or a bare address).
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    public let network: IPAddress
    /// Prefix length in the address's own family (0–32 for IPv4, 0–128 for IPv6).
    public let prefixLength: Int

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let address = IPAddress(parts[0]) else { return nil }
        let maxLength = address.isIPv4 ? 32 : 128
        var length = maxLength
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].allSatisfy(\.isASCII), parts[1].allSatisfy(\.isNumber),
                parts[1].count <= 3, let n = Int(parts[1]), n >= 0, n <= maxLength
            else { return nil }
            length = n
        }
        self.network = address
        self.prefixLength = length
    }

    /// `true` when `address` is inside this network. IPv4 networks match only IPv4 addresses
    /// (including IPv4-mapped IPv6 peers); IPv6 networks match by their 128-bit prefix.
    public func contains(_ address: IPAddress) -> Bool {
        if network.isIPv4 != address.isIPv4 && network.isIPv4 { return false }
        let bits = network.isIPv4 ? 96 + prefixLength : prefixLength
        var remaining = bits
        var i = 0
        while remaining > 0 {
            let mask: UInt8 = remaining >= 8 ? 0xFF : UInt8(truncatingIfNeeded: 0xFF << (8 - remaining))
            if (network.bytes[i] & mask) != (address.bytes[i] & mask) { return false }
            remaining -= 8
            i += 1
        }
        return true
    }

    public var description: String { "\(network)/\(prefixLength)" }
}

/// A list of networks; empty means "everyone".
public struct IPAllowlist: Sendable, Equatable {
    public let networks: [CIDR]

    public init(_ networks: [CIDR]) { self.networks = networks }

    /// Parses every entry; returns the entries that are not valid CIDRs as the error.
    public static func parse(_ entries: [String]) -> Result<IPAllowlist, InvalidEntries> {
        var nets: [CIDR] = []
        var bad: [String] = []
        for entry in entries {
            if let c = CIDR(entry.trimmingCharacters(in: .whitespaces)) { nets.append(c) } else { bad.append(entry) }
        }
        return bad.isEmpty ? .success(IPAllowlist(nets)) : .failure(InvalidEntries(entries: bad))
    }

    public struct InvalidEntries: Error, Sendable {
        public let entries: [String]
    }

    public var isOpen: Bool { networks.isEmpty }

    public func permits(_ address: IPAddress?) -> Bool {
        if networks.isEmpty { return true }
        guard let address else { return false }
        return networks.contains { $0.contains(address) }
    }
}
