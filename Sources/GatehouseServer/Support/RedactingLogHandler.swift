import GatehouseCore
import Logging

/// Wraps the real log handler so that nothing reaches a log without going through
/// ``Redactor``: the message, every metadata value (also metadata attached to a logger) and an
/// attached error.
public struct RedactingLogHandler: LogHandler {
    private var inner: any LogHandler
    private let redactor: Redactor
    /// Metadata attached to a logger is kept here, raw, and redacted only when a line is
    /// actually written (the server attaches a request id to every request's logger).
    public var metadata: Logger.Metadata = [:]

    public init(_ inner: any LogHandler, redactor: Redactor = .shared) {
        self.inner = inner
        self.redactor = redactor
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }

    public var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var event = event
        event.message = "\(redactor.redact(event.message.description))"
        var merged = self.metadata
        if let own = event.metadata { merged.merge(own) { _, line in line } }
        var metadata: Logger.Metadata? = merged.isEmpty ? nil : merged.mapValues(redact)
        if let error = event.error {
            metadata = metadata ?? [:]
            metadata?["error"] = .string(redactor.redact(String(describing: error)))
            event.error = nil
        }
        event.metadata = metadata
        inner.log(event: event)
    }

    func redact(_ value: Logger.Metadata.Value) -> Logger.Metadata.Value {
        switch value {
        case .string(let s): .string(redactor.redact(s))
        case .stringConvertible(let c): .string(redactor.redact(c.description))
        case .array(let a): .array(a.map(redact))
        case .dictionary(let d): .dictionary(d.mapValues(redact))
        }
    }
}
