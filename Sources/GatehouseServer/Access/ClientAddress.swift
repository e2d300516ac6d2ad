import Foundation
import GatehouseCore
import HTTPTypes

/// An organization's network rules, parsed once per settings change.
public struct NetworkPolicy: Sendable, Equatable {
    public var apiAllowlist = IPAllowlist([])
    public var gatewayAllowlist = IPAllowlist([])
    public var trustedProxies = IPAllowlist([])

    public init() {}

    public init(_ settings: OrgSettings) {
        apiAllowlist = IPAllowlist(settings.apiIPAllowlist.compactMap { CIDR($0) })
        gatewayAllowlist = IPAllowlist(settings.gatewayIPAllowlist.compactMap { CIDR($0) })
        trustedProxies = IPAllowlist(settings.trustedProxies.compactMap { CIDR($0) })
    }

    /// The client's address: the socket peer, unless the peer is a trusted proxy — then the
    /// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. `X-Forwarded-For`
    /// from anyone else is ignored, so a client cannot choose its own address.
    public func clientAddress(peer: IPAddress?, headers: HTTPFields) -> IPAddress? {
        guard let peer, !trustedProxies.isOpen, trustedProxies.permits(peer) else { return peer }
        return clientAddress(trustedPeer: peer, forwardedFor: headers[values: .xForwardedFor])
    }

    /// The same from the `X-Forwarded-For` values of a gateway request (``ClientHeaders``).
    func clientAddress(peer: IPAddress?, forwardedFor: [String]) -> IPAddress? {
        guard let peer, !trustedProxies.isOpen, trustedProxies.permits(peer) else { return peer }
        return clientAddress(trustedPeer: peer, forwardedFor: forwardedFor)
    }

    private func clientAddress(trustedPeer peer: IPAddress, forwardedFor values: [String]) -> IPAddress? {
        var entries: [Substring] = []
        for value in values {
            entries.append(contentsOf: value.split(separator: ","))
        }
        var candidate = peer
        for entry in entries.reversed() {
            // An unparseable hop ends what can be believed: the last proxy seen is the client.
            guard let ip = IPAddress(entry.trimmingCharacters(in: .whitespaces)) else { return candidate }
            if trustedProxies.permits(ip) {
                candidate = ip
                continue
            }
            return ip
        }
        return candidate
    }
}

extension HTTPField.Name {
    static let xForwardedFor = Self("X-Forwarded-For")!
}
