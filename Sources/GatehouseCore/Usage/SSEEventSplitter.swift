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
    /// Whether the current line, scanned so far, has a byte other than `\r` (for blank-line
    /// detection).
    private var lineHasContent = false
    private var scanned = 0
    public private(set) var overflowed = false

    public init(maxEventBytes: Int = 1 << 20) {
        self.maxEventBytes = maxEventBytes
    }

    /// Feeds a chunk; returns the events it completed. After an overflow the splitter stops
    /// splitting and returns every later chunk as one raw, data-less "event".
    public mutating func feed(_ chunk: some Collection<UInt8>) -> [SSEEvent] {
        // One dynamic call into the bytes (e.g. a ByteBuffer's storage), then a specialised
        // loop over raw memory: no per-byte generic dispatch across the module boundary.
        if let events = chunk.withContiguousStorageIfAvailable({ feed(bytes: UnsafeRawBufferPointer($0)) }) {
            return events
        }
        return Array(chunk).withUnsafeBytes { feed(bytes: $0) }
    }

    public mutating func feed(bytes chunk: UnsafeRawBufferPointer) -> [SSEEvent] {
        if overflowed { return [SSEEvent(raw: Array(chunk), data: [], name: nil)] }
        pending.append(contentsOf: chunk)
        var events: [SSEEvent] = []
        var eventStart = 0
        var lineHasContent = self.lineHasContent
        pending.withUnsafeBufferPointer { bytes in
            let count = bytes.count
            var i = scanned
            // Line by line: `memchr` finds each `\n` (vectorised in libc); a line is blank when
            // it holds nothing but `\r`.
            while i < count {
                guard let newline = bytes.index(of: 0x0A, from: i, to: count) else {
                    if !lineHasContent { lineHasContent = Self.hasContent(bytes, from: i, to: count) }
                    break
                }
                if !lineHasContent, !Self.hasContent(bytes, from: i, to: newline) {
                    // Blank line: the event is bytes[eventStart...newline].
                    events.append(Self.parse(UnsafeBufferPointer(rebasing: bytes[eventStart...newline])))
                    eventStart = newline + 1
                }
                lineHasContent = false
                i = newline + 1
            }
        }
        self.lineHasContent = lineHasContent
        if eventStart > 0 { pending.removeFirst(eventStart) }
        scanned = pending.count
        if pending.count > maxEventBytes {
            overflowed = true
            events.append(SSEEvent(raw: pending, data: [], name: nil))
            pending = []
            scanned = 0
        }
        return events
    }

    /// Whether `bytes[start..<end]` holds anything but `\r`.
    private static func hasContent(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) -> Bool {
        var i = start
        while i < end {
            if bytes[i] != 0x0D { return true }
            i += 1
        }
        return false
    }

    /// Whatever is left when the stream ends (an event without its closing blank line).
    public mutating func finish() -> SSEEvent? {
        defer { pending = []; scanned = 0; lineHasContent = false }
        guard !pending.isEmpty else { return nil }
        return overflowed ? SSEEvent(raw: pending, data: [], name: nil) : pending.withUnsafeBufferPointer { Self.parse($0) }
    }

    /// The `data:` lines joined with `\n`, and the `event:` name, of one event's bytes.
    static func parse(_ raw: UnsafeBufferPointer<UInt8>) -> SSEEvent {
        var data: [UInt8] = []
        var name: String? = nil
        var firstData = true
        var lineStart = 0
        let count = raw.count
        while lineStart < count {
            let lineEnd = raw.index(of: 0x0A, from: lineStart, to: count) ?? count
            var end = lineEnd
            if end > lineStart, raw[end - 1] == 0x0D { end -= 1 }
            let length = end - lineStart
            // "data:" = 64 61 74 61 3A; "event:" = 65 76 65 6E 74 3A
            if length >= 5, raw[lineStart] == 0x64, raw[lineStart + 1] == 0x61, raw[lineStart + 2] == 0x74,
                raw[lineStart + 3] == 0x61, raw[lineStart + 4] == 0x3A
            {
                var valueStart = lineStart + 5
                if valueStart < end, raw[valueStart] == 0x20 { valueStart += 1 }
                if !firstData { data.append(0x0A) }
                data.append(contentsOf: UnsafeBufferPointer(rebasing: raw[valueStart..<end]))
                firstData = false
            } else if length >= 6, raw[lineStart] == 0x65, raw[lineStart + 1] == 0x76, raw[lineStart + 2] == 0x65,
                raw[lineStart + 3] == 0x6E, raw[lineStart + 4] == 0x74, raw[lineStart + 5] == 0x3A
            {
                var valueStart = lineStart + 6
                if valueStart < end, raw[valueStart] == 0x20 { valueStart += 1 }
                name = String(decoding: UnsafeBufferPointer(rebasing: raw[valueStart..<end]), as: UTF8.self)
            }
            lineStart = lineEnd + 1
        }
        return SSEEvent(raw: Array(raw), data: data, name: name)
    }
}
