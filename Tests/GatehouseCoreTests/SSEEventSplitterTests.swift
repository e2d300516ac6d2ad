import GatehouseCore
import Testing

/// The incremental SSE splitter: event boundaries, field parsing, chunking independence and
/// the overflow guard.
@Suite("SSE event splitter")
struct SSEEventSplitterTests {
    /// An event reduced to comparable strings.
    struct Event: Equatable, CustomStringConvertible {
        var raw: String
        var data: String
        var name: String?
        init(raw: String, data: String, name: String? = nil) {
            self.raw = raw
            self.data = data
            self.name = name
        }
        init(_ e: SSEEvent) {
            self.init(raw: String(decoding: e.raw, as: UTF8.self), data: String(decoding: e.data, as: UTF8.self), name: e.name)
        }
        var description: String { "Event(raw: \(raw.debugDescription), data: \(data.debugDescription), name: \(name ?? "nil"))" }
    }

    /// Feeds `chunks` in order, then `finish()`; returns every event (the tail last, if any).
    static func run(_ chunks: [[UInt8]], maxEventBytes: Int = 1 << 20) -> [SSEEvent] {
        var splitter = SSEEventSplitter(maxEventBytes: maxEventBytes)
        var events: [SSEEvent] = []
        for chunk in chunks { events += splitter.feed(chunk) }
        if let tail = splitter.finish() { events.append(tail) }
        return events
    }

    static func run(_ text: String) -> [Event] { run([Array(text.utf8)]).map(Event.init) }

    // MARK: Boundaries

    @Test func eventsSplitOnLF() {
        #expect(Self.run("data: a\n\ndata: b\n\n") == [
            Event(raw: "data: a\n\n", data: "a"), Event(raw: "data: b\n\n", data: "b"),
        ])
    }

    @Test func eventsSplitOnCRLF() {
        #expect(Self.run("data: a\r\n\r\ndata: b\r\n\r\n") == [
            Event(raw: "data: a\r\n\r\n", data: "a"), Event(raw: "data: b\r\n\r\n", data: "b"),
        ])
    }

    @Test func eventsSplitOnMixedLineEndings() {
        #expect(Self.run("data: a\r\n\ndata: b\n\r\nevent: x\r\ndata: c\n\n") == [
            Event(raw: "data: a\r\n\n", data: "a"),
            Event(raw: "data: b\n\r\n", data: "b"),
            Event(raw: "event: x\r\ndata: c\n\n", data: "c", name: "x"),
        ])
    }

    @Test func aLineOfOnlyCarriageReturnsIsBlank() {
        #expect(Self.run("data: a\n\r\r\ndata: b\r\n\r\n") == [
            Event(raw: "data: a\n\r\r\n", data: "a"), Event(raw: "data: b\r\n\r\n", data: "b"),
        ])
        // A line with content after a carriage return is not blank.
        var splitter = SSEEventSplitter()
        #expect(splitter.feed(Array("data: a\n\rx\n".utf8)).isEmpty)
        #expect(splitter.feed(Array("\n".utf8)).count == 1)
    }

    @Test func aSingleNewlineDoesNotEndAnEvent() {
        var splitter = SSEEventSplitter()
        #expect(splitter.feed(Array("data: a\n".utf8)).isEmpty)
        #expect(splitter.feed(Array("data: b\n".utf8)).isEmpty)
        #expect(splitter.feed(Array("\n".utf8)).map(Event.init) == [Event(raw: "data: a\ndata: b\n\n", data: "a\nb")])
    }

    // MARK: Chunking independence

    /// A stream with every feature the splitter handles: names, comments, multi-line data,
    /// CRLF and mixed endings, fields without a space, non-ASCII payloads and an unterminated tail.
    static let stream = Array((
        "event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n"
            + ": keepalive\n\n"
            + "data: line one\ndata:line two\ndata: \n\n"
            + "id: 7\nevent:ping\ndata: {\"type\": \"ping\"}\n\r\n"
            + "data: h\u{E9}llo \u{1F600}\r\n\n"
            + "retry: 1000\n\n"
            + "data: [DONE]\n\n"
            + "data: tail without blank line\n"
    ).utf8)

    static let expectedStream: [Event] = [
        Event(raw: "event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n", data: "{\"type\":\"message_start\"}", name: "message_start"),
        Event(raw: ": keepalive\n\n", data: ""),
        Event(raw: "data: line one\ndata:line two\ndata: \n\n", data: "line one\nline two\n"),
        Event(raw: "id: 7\nevent:ping\ndata: {\"type\": \"ping\"}\n\r\n", data: "{\"type\": \"ping\"}", name: "ping"),
        Event(raw: "data: h\u{E9}llo \u{1F600}\r\n\n", data: "h\u{E9}llo \u{1F600}"),
        Event(raw: "retry: 1000\n\n", data: ""),
        Event(raw: "data: [DONE]\n\n", data: "[DONE]"),
        Event(raw: "data: tail without blank line\n", data: "tail without blank line"),
    ]

    @Test func wholeStreamInOneChunk() {
        let events = Self.run([Self.stream])
        #expect(events.map(Event.init) == Self.expectedStream)
        #expect(events.flatMap(\.raw) == Self.stream)
    }

    @Test func streamFedOneByteAtATimeGivesTheSameEvents() {
        let events = Self.run(Self.stream.map { [$0] })
        #expect(events.map(Event.init) == Self.expectedStream)
        #expect(events.flatMap(\.raw) == Self.stream)
    }

    @Test func streamSplitInTwoAtEveryByteBoundaryGivesTheSameEvents() {
        for cut in 0...Self.stream.count {
            let events = Self.run([Array(Self.stream[..<cut]), Array(Self.stream[cut...])])
            #expect(events.map(Event.init) == Self.expectedStream, "split at byte \(cut)")
            #expect(events.flatMap(\.raw) == Self.stream, "split at byte \(cut)")
            #expect(events.map(\.data) == Self.run([Self.stream]).map(\.data), "split at byte \(cut)")
        }
    }

    @Test func streamSplitInThreeAtEveryPairOfBoundariesGivesTheSameEvents() {
        let n = Self.stream.count
        var failures = 0
        for a in stride(from: 0, through: n, by: 1) {
            for b in a...n {
                let events = Self.run([Array(Self.stream[..<a]), Array(Self.stream[a..<b]), Array(Self.stream[b...])])
                if events.map(Event.init) != Self.expectedStream { failures += 1 }
            }
        }
        #expect(failures == 0)
    }

    @Test func emptyChunksAreHarmless() {
        var splitter = SSEEventSplitter()
        #expect(splitter.feed([UInt8]()).isEmpty)
        #expect(splitter.feed(Array("data: a\n".utf8)).isEmpty)
        #expect(splitter.feed([UInt8]()).isEmpty)
        #expect(splitter.feed(Array("\n".utf8)).map(Event.init) == [Event(raw: "data: a\n\n", data: "a")])
        #expect(splitter.finish() == nil)
    }

    // MARK: Fields

    @Test func multiLineDataIsJoinedWithNewlines() {
        #expect(Self.run("data: {\"a\":\ndata: 1}\n\n") == [Event(raw: "data: {\"a\":\ndata: 1}\n\n", data: "{\"a\":\n1}")])
        #expect(Self.run("data: x\r\ndata: y\r\ndata: z\r\n\r\n").map(\.data) == ["x\ny\nz"])
    }

    @Test func eventNameIsParsed() {
        #expect(Self.run("event: message_delta\ndata: {}\n\n").map(\.name) == ["message_delta"])
        #expect(Self.run("event:ping\ndata: {}\n\n").map(\.name) == ["ping"])
        #expect(Self.run("event: content_block_stop\r\ndata: {}\r\n\r\n").map(\.name) == ["content_block_stop"])
        #expect(Self.run("data: {}\n\n").map(\.name) == [nil])
    }

    @Test func dataWithoutASpaceAfterTheColon() {
        #expect(Self.run("data:{\"a\":1}\n\n").map(\.data) == ["{\"a\":1}"])
        // Only one leading space is part of the syntax.
        #expect(Self.run("data:  two spaces\n\n").map(\.data) == [" two spaces"])
        #expect(Self.run("data:\n\n").map(\.data) == [""])
    }

    @Test func commentsAreNotData() {
        #expect(Self.run(": keepalive\n\n") == [Event(raw: ": keepalive\n\n", data: "")])
        #expect(Self.run(": keepalive\ndata: x\n: data: not data\ndata: y\n\n").map(\.data) == ["x\ny"])
        #expect(Self.run(":\r\n\r\n").map(\.data) == [""])
    }

    @Test func otherFieldsAreNotData() {
        #expect(Self.run("id: 1\nretry: 5\ndatum: no\nData: no\ndata: yes\n\n").map(\.data) == ["yes"])
    }

    // MARK: End of stream

    @Test func finishReturnsTheUnterminatedTail() {
        var splitter = SSEEventSplitter()
        #expect(splitter.feed(Array("data: a\n\nevent: e\ndata: b".utf8)).map(Event.init) == [Event(raw: "data: a\n\n", data: "a")])
        let tail = splitter.finish().map(Event.init)
        #expect(tail == Event(raw: "event: e\ndata: b", data: "b", name: "e"))
        #expect(splitter.finish() == nil, "finish() empties the splitter")
    }

    @Test func finishAfterASingleNewlineReturnsTheTail() {
        var splitter = SSEEventSplitter()
        #expect(splitter.feed(Array("data: b\r\n".utf8)).isEmpty)
        #expect(splitter.finish().map(Event.init) == Event(raw: "data: b\r\n", data: "b"))
    }

    @Test func finishOnACleanEndIsNil() {
        var splitter = SSEEventSplitter()
        #expect(splitter.finish() == nil)
        _ = splitter.feed(Array("data: a\n\n".utf8))
        #expect(splitter.finish() == nil)
    }

    // MARK: Overflow

    @Test func anEventOfExactlyMaxEventBytesIsParsed() {
        let max = 64
        let event = "data: " + String(repeating: "x", count: max - 8) + "\n\n"
        #expect(event.utf8.count == max)
        for chunks in [[Array(event.utf8)], Array(event.utf8).map { [$0] }] {
            var splitter = SSEEventSplitter(maxEventBytes: max)
            var events: [SSEEvent] = []
            for chunk in chunks { events += splitter.feed(chunk) }
            #expect(!splitter.overflowed)
            #expect(events.map(Event.init) == [Event(raw: event, data: String(repeating: "x", count: max - 8))])
        }
    }

    @Test func overflowPassesBytesThroughRawWithoutBuffering() {
        let max = 64
        let input = Array(("data: small\n\n" + "data: " + String(repeating: "y", count: 1000) + "\n\ndata: after\n\n").utf8)
        var splitter = SSEEventSplitter(maxEventBytes: max)
        var out: [UInt8] = []
        var events: [SSEEvent] = []
        for (i, byte) in input.enumerated() {
            let produced = splitter.feed([byte])
            events += produced
            out += produced.flatMap(\.raw)
            // Never more than maxEventBytes held back.
            #expect(i + 1 - out.count <= max, "holding \(i + 1 - out.count) bytes after byte \(i)")
            if splitter.overflowed { #expect(out.count == i + 1, "after the overflow every byte passes straight through") }
        }
        if let tail = splitter.finish() { out += tail.raw }
        #expect(splitter.overflowed)
        #expect(out == input, "the concatenation of all raw outputs is the input")
        #expect(events.first.map(Event.init) == Event(raw: "data: small\n\n", data: "small"))
        #expect(events.dropFirst().allSatisfy { $0.data.isEmpty && $0.name == nil }, "overflowed bytes are not parsed")
    }

    @Test func overflowInOneBigChunkKeepsEarlierEventsAndPassesTheRestThrough() {
        let max = 64
        // The oversized event is still open at the end of the chunk.
        let input = Array(("data: a\n\n" + "data: " + String(repeating: "z", count: 500)).utf8)
        var splitter = SSEEventSplitter(maxEventBytes: max)
        let events = splitter.feed(input)
        #expect(splitter.overflowed)
        #expect(events.first.map(Event.init) == Event(raw: "data: a\n\n", data: "a"))
        var out = events.flatMap(\.raw)
        let later = Array("zzz\n\ndata: c\n\n".utf8)
        let passed = splitter.feed(later)
        #expect(passed.count == 1 && passed[0].raw == later && passed[0].data.isEmpty)
        out += passed.flatMap(\.raw)
        if let tail = splitter.finish() { out += tail.raw }
        #expect(out == input + later)
    }

    @Test func overflowAtEveryTwoWaySplitPreservesTheBytes() {
        let max = 32
        let input = Array(("data: 1\n\n" + "data: " + String(repeating: "w", count: 80) + "\n\ndata: 2\n\n" + "data: tail").utf8)
        for cut in 0...input.count {
            let events = Self.run([Array(input[..<cut]), Array(input[cut...])], maxEventBytes: max)
            #expect(events.flatMap(\.raw) == input, "split at byte \(cut)")
            #expect(events.first.map(Event.init) == Event(raw: "data: 1\n\n", data: "1"), "split at byte \(cut)")
        }
    }
}

@Suite("Usage object scan")
struct UsageObjectScanTests {
    @Test(arguments: [
        (#"{"usage":{"prompt_tokens":1}}"#, true),
        ("{\"usage\" : \t{ }}", true),
        (#"{"choices":[],"usage":null}"#, false),
        (#"{"text":"usage: {"}"#, false),
        (#"{"usage":"#, false),
        (#""#, false),
        (#"{"x":{"usage"  :{"a":1}}}"#, true),
        // The scan jumps between `g`s: words with a g before, inside and after the real key.
        (#"{"model":"gpt-4o","tag":"usage","usage":{"a":1}}"#, true),
        (#"{"gggusage":{"usage":"g","usag":{}}}"#, false),
        (#""usage"{"#, false),
        (#""usage":{"#, true),
        ("\"usage\":", false),
        ("g", false),
        ("usage", false),
    ])
    func findsOnlyAUsageObject(_ text: String, _ expected: Bool) {
        #expect(UsageExtractor.mentionsUsageObject(Array(text.utf8)) == expected)
    }
}
