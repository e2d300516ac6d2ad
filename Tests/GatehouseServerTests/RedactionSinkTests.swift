import Foundation
import GatehouseCore
import Logging
import Synchronization
import Testing

@testable import GatehouseServer

/// Every sink goes through the redaction layer: log messages and metadata (also metadata set
/// on a logger), attached errors.
@Suite("Redaction sinks")
struct RedactionSinkTests {
    final class Capture: Sendable {
        let events = Mutex<[LogEvent]>([])
    }

    struct CaptureHandler: LogHandler {
        let capture: Capture
        var metadata: Logger.Metadata = [:]
        var metadataProvider: Logger.MetadataProvider? = nil
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            var event = event
            event.metadata = (event.metadata ?? [:]).merging(metadata) { a, _ in a }
            capture.events.withLock { $0.append(event) }
        }
    }

    struct Boom: Error, CustomStringConvertible {
        let description: String
    }

    @Test func logLinesMetadataAndErrorsAreRedacted() throws {
        let capture = Capture()
        let secret = "sk-proj-" + Base62.random(count: 40)
        let registered = "qq" + Base62.random(count: 30)
        let redactor = Redactor()
        redactor.register(registered)
        var logger = Logger(label: "t") { _ in RedactingLogHandler(CaptureHandler(capture: capture), redactor: redactor) }
        logger[metadataKey: "attached"] = "\(registered)"
        logger.error(
            "upstream echoed \(secret)",
            error: Boom(description: "failed with \(secret)"),
            metadata: ["header": "Bearer \(registered)", "list": .array(["\(secret)"]), "nested": .dictionary(["k": "\(registered)"])])
        let text = capture.events.withLock { events in events.map { "\($0.message) \(String(describing: $0.metadata)) \(String(describing: $0.error))" }.joined() }
        #expect(!text.contains(secret))
        #expect(!text.contains(registered))
        #expect(text.contains(Redactor.marker))
        #expect(text.contains("upstream echoed"))
    }

    @Test func providerSecretCacheExpiresAndFollowsTheCiphertext() {
        let cache = ProviderSecretCache()
        let now = ContinuousClock.now
        let record = ProviderKeyRecord(
            id: "pk_1", orgID: "org", name: "n", provider: .openai, baseURL: nil, ciphertext: Data([1, 2, 3]), last4: "", createdAt: Date())
        cache.store("secret-one", for: record, now: now)
        #expect(cache.secret(for: record, now: now) == "secret-one")
        #expect(cache.secret(for: record, now: now.advanced(by: ProviderSecretCache.lifetime - .seconds(1))) == "secret-one")
        #expect(cache.secret(for: record, now: now.advanced(by: ProviderSecretCache.lifetime)) == nil, "expired")
        cache.store("secret-one", for: record, now: now)
        var replaced = record
        replaced.ciphertext = Data([9, 9, 9])
        #expect(cache.secret(for: replaced, now: now) == nil, "a different ciphertext never gets the old secret")
    }

    @Test func providerSecretCacheIsBounded() {
        let cache = ProviderSecretCache()
        for i in 0..<(ProviderSecretCache.capacity * 2) {
            let record = ProviderKeyRecord(
                id: "pk_\(i)", orgID: "org", name: "n", provider: .openai, baseURL: nil, ciphertext: Data([1]), last4: "", createdAt: Date())
            cache.store("s\(i)", for: record)
        }
        #expect(cache.count <= ProviderSecretCache.capacity)
    }
}
