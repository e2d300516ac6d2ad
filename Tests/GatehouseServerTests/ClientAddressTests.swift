import Foundation
import GatehouseCore
import GatehouseServer
import HTTPTypes
import Testing

/// `NetworkPolicy.clientAddress`: the socket peer, unless the peer is a trusted proxy — then
/// the right-most `X-Forwarded-For` entry that is not itself trusted (DESIGN §3).
@Suite("Client address")
struct ClientAddressTests {
    static func policy(trusted: [String]) -> NetworkPolicy {
        var settings = OrgSettings()
        settings.trustedProxies = trusted
        return NetworkPolicy(settings)
    }

    static func xff(_ values: String...) -> HTTPFields {
        var fields = HTTPFields()
        for value in values { fields.append(HTTPField(name: HTTPField.Name("X-Forwarded-For")!, value: value)) }
        return fields
    }

    static func resolve(trusted: [String], peer: String?, _ headers: HTTPFields) -> String? {
        policy(trusted: trusted).clientAddress(peer: peer.flatMap { IPAddress($0) }, headers: headers)?.description
    }

    // MARK: Without trusted proxies

    @Test(arguments: ["10.1.2.3", "10.9.9.9, 10.1.2.3", "::1", "127.0.0.1", "garbage", ""])
    func withoutTrustedProxiesTheHeaderIsIgnored(_ header: String) {
        #expect(Self.resolve(trusted: [], peer: "203.0.113.5", Self.xff(header)) == "203.0.113.5")
    }

    @Test func anUntrustedPeerCannotChooseItsAddress() {
        let trusted = ["10.0.0.0/8"]
        #expect(Self.resolve(trusted: trusted, peer: "203.0.113.5", Self.xff("10.1.2.3")) == "203.0.113.5")
        #expect(Self.resolve(trusted: trusted, peer: "203.0.113.5", Self.xff("192.0.2.1, 10.0.0.1")) == "203.0.113.5")
    }

    @Test func noPeerIsNoAddress() {
        #expect(Self.resolve(trusted: [], peer: nil, Self.xff("10.1.2.3")) == nil)
        #expect(Self.resolve(trusted: ["0.0.0.0/0"], peer: nil, Self.xff("10.1.2.3")) == nil)
    }

    // MARK: Trusted peers

    @Test func aTrustedPeerWithoutTheHeaderIsTheClient() {
        #expect(Self.resolve(trusted: ["127.0.0.1/32"], peer: "127.0.0.1", HTTPFields()) == "127.0.0.1")
    }

    @Test func theRightMostUntrustedEntryIsTheClient() {
        let trusted = ["127.0.0.1/32"]
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("10.1.2.3")) == "10.1.2.3")
        // A client's own (spoofed) entries come first; the proxy appends the real one.
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("10.9.9.9, 10.1.2.3")) == "10.1.2.3")
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("1.1.1.1,2.2.2.2,  3.3.3.3  ")) == "3.3.3.3")
    }

    @Test func severalTrustedHopsAreSkipped() {
        let trusted = ["127.0.0.1/32", "10.200.0.0/16"]
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("10.9.9.9, 10.1.2.3, 10.200.0.7, 10.200.1.1")) == "10.1.2.3")
        // A trusted hop between untrusted ones does not make the left one believable.
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("192.0.2.9, 10.200.0.1, 198.51.100.4, 10.200.0.7")) == "198.51.100.4")
    }

    @Test func whenEveryHopIsTrustedTheLeftMostIsTheClient() {
        let trusted = ["127.0.0.1/32", "10.200.0.0/16"]
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("10.200.0.5, 10.200.0.7")) == "10.200.0.5")
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("127.0.0.1")) == "127.0.0.1")
    }

    @Test(arguments: ["garbage", "10.1.2.3:8080", "unknown", "_hidden", "300.1.1.1", "10.1.2"])
    func anUnparseableHopEndsTheChainAtTheLastTrustedProxy(_ junk: String) {
        let trusted = ["127.0.0.1/32", "10.200.0.0/16"]
        // The junk sits where the client's address should be: the last proxy seen is all we know.
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("10.1.2.3, \(junk), 10.200.0.7")) == "10.200.0.7")
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff(junk)) == "127.0.0.1")
        // Junk to the left of the right-most untrusted entry does not matter.
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("\(junk), 10.1.2.3")) == "10.1.2.3")
    }

    @Test func emptyEntriesDoNotHideTheClient() {
        let trusted = ["127.0.0.1/32"]
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("10.9.9.9,,10.1.2.3")) == "10.1.2.3")
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("")) == "127.0.0.1")
    }

    @Test func severalHeaderLinesFormOneListInOrder() {
        let trusted = ["127.0.0.1/32", "10.200.0.0/16"]
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("10.9.9.9", "10.1.2.3")) == "10.1.2.3")
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("10.9.9.9, 10.1.2.3", "10.200.0.7")) == "10.1.2.3")
        #expect(Self.resolve(trusted: trusted, peer: "127.0.0.1", Self.xff("10.200.0.1", "10.200.0.7")) == "10.200.0.1")
    }

    @Test func theHeaderNameIsCaseInsensitive() {
        var fields = HTTPFields()
        fields.append(HTTPField(name: HTTPField.Name("x-forwarded-for")!, value: "10.1.2.3"))
        #expect(Self.resolve(trusted: ["127.0.0.1/32"], peer: "127.0.0.1", fields) == "10.1.2.3")
    }

    // MARK: IPv6

    @Test func ipv6PeersAndEntries() {
        let trusted = ["::1/128", "2001:db8:ffff::/48"]
        #expect(Self.resolve(trusted: trusted, peer: "::1", Self.xff("2001:db8:1::5")) == "2001:db8:1::5")
        #expect(Self.resolve(trusted: trusted, peer: "::1", Self.xff("2001:db8:1::5, 2001:db8:ffff::7")) == "2001:db8:1::5")
        #expect(Self.resolve(trusted: trusted, peer: "2001:db8:ffff::1", Self.xff("192.0.2.4")) == "192.0.2.4")
        #expect(Self.resolve(trusted: trusted, peer: "::1", Self.xff("[2001:db8:1::5]")) == "2001:db8:1::5")
        #expect(Self.resolve(trusted: trusted, peer: "2001:db8:1::9", Self.xff("192.0.2.4")) == "2001:db8:1::9")
        // An IPv4 trusted-proxy network does not trust IPv6 peers.
        #expect(Self.resolve(trusted: ["127.0.0.0/8"], peer: "::1", Self.xff("10.1.2.3")) == "::1")
    }

    @Test func ipv4MappedPeersAreTheirIPv4Address() {
        #expect(Self.resolve(trusted: ["127.0.0.1/32"], peer: "::ffff:127.0.0.1", Self.xff("10.1.2.3")) == "10.1.2.3")
        #expect(Self.resolve(trusted: ["127.0.0.1/32"], peer: "::ffff:127.0.0.1", HTTPFields()) == "127.0.0.1")
        #expect(Self.resolve(trusted: [], peer: "::ffff:192.0.2.1", Self.xff("10.1.2.3")) == "192.0.2.1")
        // A mapped entry of a trusted proxy is skipped like the plain one.
        #expect(Self.resolve(trusted: ["127.0.0.1/32", "10.200.0.0/16"], peer: "127.0.0.1", Self.xff("10.1.2.3, ::ffff:10.200.0.7")) == "10.1.2.3")
    }

    @Test func aResolvedAddressIsCheckedAgainstAnIPv6Allowlist() {
        var settings = OrgSettings()
        settings.trustedProxies = ["::1/128"]
        settings.gatewayIPAllowlist = ["2001:db8::/32"]
        let policy = NetworkPolicy(settings)
        let inside = policy.clientAddress(peer: IPAddress("::1"), headers: Self.xff("2001:db8::42"))
        let outside = policy.clientAddress(peer: IPAddress("::1"), headers: Self.xff("2001:db9::42"))
        #expect(policy.gatewayAllowlist.permits(inside))
        #expect(!policy.gatewayAllowlist.permits(outside))
        #expect(!policy.gatewayAllowlist.permits(IPAddress("10.0.0.1")))
    }
}
