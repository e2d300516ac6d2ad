/// One server-sent event: its raw bytes (including the blank line that ends it) and the
/// joined payload of its `data:` lines.
public struct SSEEvent: Sendable, Equatable {
    public var raw: [UInt8]
    public var data: [UInt8]
    public var name: String?
}

/// Splits a byte stream into server-sent events incrementally, as chunks arrive, holding at
/// most one incomplete event. A state machine over bytes: no `String` copies of the stream.
///
/// Events end at a blank line (`\n\n`, `\r\n\r\n` or mixed). An event larger than
/// `maxEventBytes` is not parsed: the splitter reports it as overflowed and passes the bytes
/// through raw, so a hostile upstream cannot make the gateway buffer without bound.
public struct SSEEventSplitter: Sendable {
    public let maxEventBytes: Int
    private var pending: [UInt8] = []
    /// Bytes of the current line scanned so far (for blank-line detection).
    private var lineLength = 0
    private var scanned = 0
    public private(set) var overflowed = false

    public init(maxEventBytes: Int = 1 << 20) {
        self.maxEventBytes = maxEventBytes
    }

    /// Feeds a chunk; returns the events it completed. After an overflow the splitter stops
    /// splitting and returns every later chunk as one raw, data-less "event".
    public mutating func feed(_ chunk: some Collection<UInt8>) -> [SSEEvent] {
        if overflowed { return [SSEEvent(raw: Array(chunk), data: [], name: nil)] }
        pending.append(contentsOf: chunk)
        var events: [SSEEvent] = []
        var eventStart = 0
        var i = scanned
        while i < pending.count {
            let b = pending[i]
            if b == UInt8(ascii: "\n") {
                if lineLength == 0 {
                    // Blank line: the event is pending[eventStart...i].
                    let raw = Array(pending[eventStart...i])
                    events.append(Self.parse(raw))
                    eventStart = i + 1
                }
                lineLength = 0
            } else if b != UInt8(ascii: "\r") {
                lineLength += 1
            }
            i += 1
        }
        pending.removeFirst(eventStart)
        scanned = pending.count
        if pending.count > maxEventBytes {
            overflowed = true
            events.append(SSEEvent(raw: pending, data: [], name: nil))
            pending = []
            scanned = 0
        }
        return events
    }

    /// Whatever is left when the stream ends (an event without its closing blank line).
    public mutating func finish() -> SSEEvent? {
        defer { pending = []; scanned = 0; lineLength = 0 }
        guard !pending.isEmpty else { return nil }
        return overflowed ? SSEEvent(raw: pending, data: [], name: nil) : Self.parse(pending)
    }

    static func parse(_ raw: [UInt8]) -> SSEEvent {
        var data: [UInt8] = []
        var name: String? = nil
        var firstData = true
        var lineStart = 0
        var i = 0
        func handleLine(_ line: ArraySlice<UInt8>) {
            var line = line
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            if line.starts(with: "data:".utf8) {
                var value = line.dropFirst(5)
                if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
                if !firstData { data.append(UInt8(ascii: "\n")) }
                data.append(contentsOf: value)
                firstData = false
            } else if line.starts(with: "event:".utf8) {
                var value = line.dropFirst(6)
                if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
                name = String(decoding: value, as: UTF8.self)
            }
        }
        while i < raw.count {
            if raw[i] == UInt8(ascii: "\n") {
                handleLine(raw[lineStart..<i])
                lineStart = i + 1
            }
            i += 1
        }
        if lineStart < raw.count { handleLine(raw[lineStart...]) }
        return SSEEvent(raw: raw, data: data, name: name)
    }
}
