import GatehouseCore
import Logging

/// Wraps the real log handler so that nothing reaches a log without going through
/// ``Redactor``: the message, every metadata value (also metadata attached to a logger) and an
/// attached error.
public struct RedactingLogHandler: LogHandler {
    private var inner: any LogHandler
    private let redactor: Redactor

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

    public var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue.mapValues(redact) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue.map(redact) }
    }

    public func log(event: LogEvent) {
        var event = event
        event.message = "\(redactor.redact(event.message.description))"
        var metadata = event.metadata?.mapValues(redact)
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
