import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Testing

@testable import GatehouseServer

/// What leaves ``RequestBoundaryHandler``: exactly one `Strict-Transport-Security` field with
/// Gatehouse's value on every head over TLS (whatever the head carried before), nothing added
/// without TLS, and the connection closed after a response that says `Connection: close`.
@Suite("Response heads: HSTS and Connection: close")
struct RequestBoundaryHandlerTests {
    private func channel(hsts: Bool) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(RequestBoundaryHandler(hsts: hsts))
        return channel
    }

    /// Writes a head with `fields` and returns the `Strict-Transport-Security` values that leave.
    private func hstsValues(hsts: Bool, _ fields: [HTTPField]) throws -> [String] {
        let channel = try channel(hsts: hsts)
        defer { _ = try? channel.finish() }
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok, headerFields: HTTPFields(fields))))
        guard case .head(let head)? = try channel.readOutbound(as: HTTPResponsePart.self) else {
            Issue.record("no head written")
            return []
        }
        #expect(head.headerFields[.contentType] == "application/json", "other fields are kept")
        return head.headerFields[values: .strictTransportSecurity]
    }

    static let ours = HTTPField(name: .strictTransportSecurity, value: RequestBoundaryHandler.hstsValue)
    static let json = HTTPField(name: .contentType, value: "application/json")

    @Test func aHeadWithoutHSTSGetsIt() throws {
        #expect(try hstsValues(hsts: true, [Self.json]) == [RequestBoundaryHandler.hstsValue])
    }

    @Test func aHeadAlreadyStampedPassesWithOneField() throws {
        // The gateway's own heads: stamped when built, not copied again.
        #expect(try hstsValues(hsts: true, [Self.json, Self.ours]) == [RequestBoundaryHandler.hstsValue])
    }

    @Test func anotherValueOrASecondFieldIsReplacedByOurs() throws {
        let providers = HTTPField(name: .strictTransportSecurity, value: "max-age=0")
        #expect(try hstsValues(hsts: true, [Self.json, providers]) == [RequestBoundaryHandler.hstsValue])
        #expect(try hstsValues(hsts: true, [providers, Self.json, Self.ours]) == [RequestBoundaryHandler.hstsValue])
        #expect(try hstsValues(hsts: true, [Self.ours, Self.json, providers]) == [RequestBoundaryHandler.hstsValue])
        #expect(try hstsValues(hsts: true, [Self.ours, Self.json, Self.ours]) == [RequestBoundaryHandler.hstsValue])
    }

    @Test func withoutTLSHeadsAreUntouched() throws {
        #expect(try hstsValues(hsts: false, [Self.json]) == [])
    }

    @Test(arguments: ["close", "Close", "keep-alive"])
    func connectionCloseClosesAfterTheResponse(value: String) throws {
        let channel = try channel(hsts: true)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let fields = HTTPFields([Self.json, HTTPField(name: .connection, value: value)])
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .contentTooLarge, headerFields: fields)))
        #expect(channel.isActive, "not before the end")
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        channel.embeddedEventLoop.run()
        #expect(channel.isActive == (value == "keep-alive"))
        _ = try? channel.finish()
    }
}
