import GatehouseCore
import Testing

/// IP allow-lists: parsing of addresses and CIDRs, and membership.
@Suite("CIDR and IP allow-lists")
struct CIDRTests {
    static func cidr(_ text: String) throws -> CIDR { try #require(CIDR(text), "\(text) should parse") }
    static func ip(_ text: String) throws -> IPAddress { try #require(IPAddress(text), "\(text) should parse") }

    // MARK: Parsing

    @Test(arguments: [
        ("10.0.0.0/8", 8), ("0.0.0.0/0", 0), ("192.168.1.5/32", 32), ("192.168.1.5", 32),
        ("2001:db8::/32", 32), ("::/0", 0), ("::1/128", 128), ("::1", 128), ("2001:db8::/127", 127),
        ("fe80::1%eth0", 128), ("[2001:db8::1]", 128),
    ])
    func validCIDRParsesWithItsPrefixLength(text: String, length: Int) throws {
        #expect(try Self.cidr(text).prefixLength == length)
    }

    @Test(arguments: [
        "10.0.0.0/33", "1.2.3", "::1/129", "10.0.0.0/", " /8", "/8", "", " ", "10.0.0.0/8/8", "300.1.1.1",
        "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/ 8", "10.0.0.0/8 ", "10.0.0.0/1000", "10.0.0.0/0x8", "10.0.0.0/\u{0668}",
        "10.0.0.0/\u{FF18}", "not-an-ip", "1.2.3.4.5", "1.2.3.-4", "::g", "2001:db8::/", "2001:db8:::1", "::1/-0",
        "10.0.0.0/8\n", "localhost", "10.0.0.0 /8", "1.2.3.4/32/", "0x0a.0.0.1",
    ])
    func invalidCIDRIsRejected(text: String) {
        #expect(CIDR(text) == nil)
    }

    @Test func ipv4MappedIPv6AddressIsTreatedAsIPv4() throws {
        let mapped = try Self.ip("::ffff:10.1.2.3")
        #expect(mapped.isIPv4)
        #expect(try mapped == Self.ip("10.1.2.3"))
        #expect(mapped.description == "10.1.2.3")
    }

    @Test func addressDescriptionsAreCanonical() throws {
        #expect(try Self.ip("2001:0db8:0000:0000:0000:0000:0000:0001").description == "2001:db8::1")
        #expect(try Self.cidr("10.0.0.0/8").description == "10.0.0.0/8")
        #expect(try Self.cidr("2001:DB8::/32").description == "2001:db8::/32")
        #expect(try Self.cidr("192.168.1.5").description == "192.168.1.5/32")
    }

    // MARK: Membership

    @Test func slashZeroIPv4MatchesEveryIPv4AddressAndNoIPv6() throws {
        let all = try Self.cidr("0.0.0.0/0")
        for a in ["0.0.0.0", "1.2.3.4", "255.255.255.255", "::ffff:8.8.8.8"] {
            #expect(all.contains(try Self.ip(a)), "\(a)")
        }
        for a in ["::1", "2001:db8::1", "::"] {
            #expect(!all.contains(try Self.ip(a)), "\(a)")
        }
    }

    @Test func slashZeroIPv6MatchesEveryIPv6Address() throws {
        let all = try Self.cidr("::/0")
        for a in ["::", "::1", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"] {
            #expect(all.contains(try Self.ip(a)), "\(a)")
        }
    }

    @Test func slash32MatchesOnlyThatAddress() throws {
        let one = try Self.cidr("192.168.1.5/32")
        #expect(one.contains(try Self.ip("192.168.1.5")))
        #expect(one.contains(try Self.ip("::ffff:192.168.1.5")))
        for a in ["192.168.1.4", "192.168.1.6", "192.168.1.133", "64.168.1.5", "0.0.0.0"] {
            #expect(!one.contains(try Self.ip(a)), "\(a)")
        }
    }

    @Test func slash31And127MatchExactlyAPair() throws {
        let v4 = try Self.cidr("10.0.0.2/31")
        #expect(v4.contains(try Self.ip("10.0.0.2")))
        #expect(v4.contains(try Self.ip("10.0.0.3")))
        #expect(!v4.contains(try Self.ip("10.0.0.1")))
        #expect(!v4.contains(try Self.ip("10.0.0.4")))
        let v6 = try Self.cidr("2001:db8::/127")
        #expect(v6.contains(try Self.ip("2001:db8::")))
        #expect(v6.contains(try Self.ip("2001:db8::1")))
        #expect(!v6.contains(try Self.ip("2001:db8::2")))
        #expect(!v6.contains(try Self.ip("2001:db8::1:0")))
        #expect(!v6.contains(try Self.ip("2001:db9::")))
    }

    @Test func slash128MatchesOnlyThatAddress() throws {
        let one = try Self.cidr("::1/128")
        #expect(one.contains(try Self.ip("::1")))
        #expect(!one.contains(try Self.ip("::")))
        #expect(!one.contains(try Self.ip("::2")))
        #expect(!one.contains(try Self.ip("1::1")))
        #expect(!one.contains(try Self.ip("127.0.0.1")))
    }

    @Test func prefixBoundariesInsideAByte() throws {
        let net = try Self.cidr("172.16.0.0/12")
        #expect(net.contains(try Self.ip("172.16.0.1")))
        #expect(net.contains(try Self.ip("172.31.255.255")))
        #expect(!net.contains(try Self.ip("172.32.0.0")))
        #expect(!net.contains(try Self.ip("172.15.255.255")))
        let v6 = try Self.cidr("2001:db8:8000::/33")
        #expect(v6.contains(try Self.ip("2001:db8:ffff::1")))
        #expect(!v6.contains(try Self.ip("2001:db8:7fff::1")))
    }

    @Test func hostBitsInTheNetworkAreIgnored() throws {
        let net = try Self.cidr("10.1.2.3/8")
        #expect(net.contains(try Self.ip("10.200.0.1")))
        #expect(!net.contains(try Self.ip("11.1.2.3")))
    }

    @Test func ipv4MappedIPv6PeerMatchesAnIPv4Network() throws {
        let net = try Self.cidr("10.0.0.0/8")
        #expect(net.contains(try Self.ip("::ffff:10.1.2.3")))
        #expect(!net.contains(try Self.ip("::ffff:11.1.2.3")))
    }

    @Test func mismatchedFamiliesDoNotMatch() throws {
        // An IPv4 network never matches a native IPv6 address that happens to share low bits.
        let v4 = try Self.cidr("10.0.0.0/8")
        for a in ["::a00:1", "::10.0.0.1", "a00::1", "2001:db8::a00:1", "64:ff9b::10.0.0.1"] {
            #expect(!v4.contains(try Self.ip(a)), "\(a)")
        }
        // An ordinary IPv6 network never matches an IPv4 peer.
        let v6 = try Self.cidr("2001:db8::/32")
        for a in ["10.0.0.1", "32.1.13.184", "::ffff:10.0.0.1"] {
            #expect(!v6.contains(try Self.ip(a)), "\(a)")
        }
        #expect(try !Self.cidr("::1/128").contains(Self.ip("0.0.0.1")))
    }

    // MARK: Allow-lists

    @Test func emptyAllowlistPermitsEveryoneAndANonEmptyOneRequiresAMatch() throws {
        let open = IPAllowlist([])
        #expect(open.isOpen)
        #expect(open.permits(nil))
        #expect(open.permits(try Self.ip("8.8.8.8")))

        guard case .success(let list) = IPAllowlist.parse(["10.0.0.0/8", " 2001:db8::/32 ", "192.168.1.5"]) else {
            Issue.record("valid allow-list rejected")
            return
        }
        #expect(!list.isOpen)
        #expect(list.permits(try Self.ip("10.9.9.9")))
        #expect(list.permits(try Self.ip("2001:db8::42")))
        #expect(list.permits(try Self.ip("192.168.1.5")))
        #expect(!list.permits(try Self.ip("192.168.1.6")))
        #expect(!list.permits(try Self.ip("::1")))
        #expect(!list.permits(nil), "an unknown peer must not pass a non-empty allow-list")
    }

    @Test func allowlistParseReportsEveryInvalidEntry() {
        guard case .failure(let invalid) = IPAllowlist.parse(["10.0.0.0/8", "10.0.0.0/33", "nope", "::1"]) else {
            Issue.record("invalid allow-list accepted")
            return
        }
        #expect(invalid.entries == ["10.0.0.0/33", "nope"])
    }
}
