#if canImport(GatehouseCore)
import GatehouseCore
#endif

/// Oracles for the streaming usage path: `SSEEventSplitter` (incremental event splitting) and
/// `UsageExtractor` (+ `MiniJSON`) over the events' payloads.
///
/// - Splitting is independent of chunking: the whole input, the input cut at points derived
///   from it, and the input fed byte by byte give the same events, and those equal an
///   independent whole-input reference splitter.
/// - No byte is lost or invented: the events' raw bytes concatenate to the input, also when a
///   small `maxEventBytes` makes the splitter overflow (the gateway forwards `raw`).
/// - Usage read from the events (both dialects) and from the input as one JSON body is never
///   negative, and cached / cache-write tokens never exceed the prompt tokens.
enum SSEUsageOracle {
    static let name = "SSEUsage"

    /// Events compared as plain values.
    struct Event: Equatable, CustomStringConvertible {
        var raw: [UInt8]
        var data: [UInt8]
        var name: String?
        init(raw: [UInt8], data: [UInt8], name: String?) {
            self.raw = raw
            self.data = data
            self.name = name
        }
        init(_ e: SSEEvent) { self.init(raw: e.raw, data: e.data, name: e.name) }
        var description: String { "Event(raw: \(fuzzDescribe(raw, limit: 60)), data: \(fuzzDescribe(data, limit: 60)), name: \(name ?? "nil"))" }
    }

    static func split(_ chunks: [ArraySlice<UInt8>], maxEventBytes: Int = 1 << 20) -> (events: [Event], overflowed: Bool) {
        var splitter = SSEEventSplitter(maxEventBytes: maxEventBytes)
        var events: [Event] = []
        for chunk in chunks { events += splitter.feed(chunk).map(Event.init) }
        let overflowed = splitter.overflowed
        if let tail = splitter.finish() { events.append(Event(tail)) }
        return (events, overflowed)
    }

    /// The splitter's format, written independently over the whole input: lines end at `\n`; a
    /// line with nothing but `\r` in it is blank and ends the event (blank line included); what
    /// is left at the end is one last event. In an event, `data:` lines (one trailing `\r` and one
    /// space after the colon dropped) are joined with `\n`; the last `event:` line names it.
    static func reference(_ bytes: [UInt8]) -> [Event] {
        var events: [Event] = []
        var current: [UInt8] = []
        var lines: [ArraySlice<UInt8>] = []
        func close() {
            var data: [UInt8] = []
            var name: String? = nil
            var sawData = false
            for var line in lines {
                if line.last == 13 { line.removeLast() }
                for (field, isData) in [("data:", true), ("event:", false)] {
                    let f = Array(field.utf8)
                    guard line.count >= f.count, Array(line.prefix(f.count)) == f else { continue }
                    var value = line.dropFirst(f.count)
                    if value.first == 32 { value.removeFirst() }
                    if isData {
                        if sawData { data.append(10) }
                        data += value
                        sawData = true
                    } else {
                        name = String(decoding: value, as: UTF8.self)
                    }
                }
            }
            events.append(Event(raw: current, data: data, name: name))
            current = []
            lines = []
        }
        var lineStart = 0
        for i in bytes.indices where bytes[i] == 10 {
            let line = bytes[lineStart..<i]
            current += bytes[lineStart...i]
            lines.append(line)
            lineStart = i + 1
            if line.allSatisfy({ $0 == 13 }) { close() }
        }
        if lineStart < bytes.count {
            current += bytes[lineStart...]
            lines.append(bytes[lineStart...])
        }
        if !current.isEmpty { close() }
        return events
    }

    static func run(_ bytes: [UInt8]) throws(FuzzOracleFailure) {
        let input = bytes[...]
        let whole = split([input])
        try fuzzCheck(!whole.overflowed, name, "overflowed below maxEventBytes")
        let expected = reference(bytes)
        try fuzzCheck(whole.events == expected, name, "whole-input events differ from the reference:\n  got      \(whole.events)\n  expected \(expected)")

        // Cut at points derived from the input (including empty chunks).
        var random = FuzzRandom(seed: bytes)
        for _ in 0..<3 {
            var chunks: [ArraySlice<UInt8>] = []
            var at = 0
            while at < bytes.count {
                let n = random.below(4) == 0 ? 0 : 1 + random.below(min(bytes.count - at, 1 + random.below(64)))
                chunks.append(input[at..<(at + n)])
                at += n
            }
            let cut = split(chunks)
            try fuzzCheck(cut.events == whole.events, name,
                          "chunk sizes \(chunks.map(\.count)) give different events:\n  got      \(cut.events)\n  expected \(whole.events)")
        }
        if bytes.count <= 1024 {  // (longer inputs get 1-byte chunks from the cuts above)
            let single = split(bytes.indices.map { input[$0..<($0 + 1)] })
            try fuzzCheck(single.events == whole.events, name, "byte-by-byte feeding gives different events:\n  got      \(single.events)\n  expected \(whole.events)")
        }

        // Overflow guard: small maxEventBytes, random chunks. Bytes are conserved; events before
        // the overflow are the ordinary ones; after it, everything is raw pass-through.
        let maxEventBytes = 1 + random.below(96)
        var splitter = SSEEventSplitter(maxEventBytes: maxEventBytes)
        var out: [Event] = []
        var at = 0
        var overflowIndex: Int? = nil
        while at < bytes.count {
            let n = min(bytes.count - at, 1 + random.below(128))
            let wasOverflowed = splitter.overflowed
            let produced = splitter.feed(input[at..<(at + n)]).map(Event.init)
            if !wasOverflowed, splitter.overflowed, overflowIndex == nil { overflowIndex = out.count + produced.count - 1 }
            out += produced
            at += n
        }
        if let tail = splitter.finish() { out.append(Event(tail)) }
        let joined = out.flatMap(\.raw)
        try fuzzCheck(joined == bytes, name, "maxEventBytes \(maxEventBytes): raw bytes do not add up to the input (\(joined.count) vs \(bytes.count))")
        // The guard fires only for an event larger than the limit, and never for smaller ones.
        let largest = whole.events.map(\.raw.count).max() ?? 0
        try fuzzCheck(overflowIndex == nil || largest > maxEventBytes, name,
                      "overflowed with maxEventBytes \(maxEventBytes) though no event is larger than \(largest) bytes")
        if let overflowIndex {
            try fuzzCheck(Array(out[..<overflowIndex]) == Array(whole.events.prefix(overflowIndex)), name,
                          "events before the overflow differ from the ordinary split")
            try fuzzCheck(overflowIndex < whole.events.count && whole.events[overflowIndex].raw.count > maxEventBytes, name,
                          "overflow at event \(overflowIndex) of \(whole.events.count), which is not larger than \(maxEventBytes) bytes")
            for e in out[overflowIndex...] {
                try fuzzCheck(e.data.isEmpty && e.name == nil, name, "an event after the overflow was parsed: \(e)")
            }
        } else {
            try fuzzCheck(out == whole.events, name, "maxEventBytes \(maxEventBytes) without overflow changed the events")
        }

        // Usage, both dialects: every event payload in order, as the gateway does for streams,
        // and the whole input as one (non-streaming) JSON body. Each payload is parsed once
        // (the slow part) and shown to both dialects.
        var openai = UsageExtractor(dialect: .openai)
        var anthropic = UsageExtractor(dialect: .anthropic)
        for event in whole.events where !event.data.isEmpty {
            guard let object = MiniJSON.parseObject(event.data) else { continue }
            openai.observe(object: object)
            anthropic.observe(object: object)
            try checkUsage(openai.usage, .openai)
            try checkUsage(anthropic.usage, .anthropic)
        }
        if let object = MiniJSON.parseObject(bytes) {
            var openai = UsageExtractor(dialect: .openai)
            var anthropic = UsageExtractor(dialect: .anthropic)
            openai.observe(object: object)
            anthropic.observe(object: object)
            try checkUsage(openai.usage, .openai)
            try checkUsage(anthropic.usage, .anthropic)
        }
        // observe(json:) scans the bytes without building them; observe(object:) reads the
        // parsed tree. They must agree after every payload, in both dialects, and on whether a
        // payload is valid, a usage object and an empty `choices`.
        for dialect in [UsageDialect.openai, .anthropic] {
            var viaJSON = UsageExtractor(dialect: dialect)
            var viaObject = UsageExtractor(dialect: dialect)
            for payload in whole.events.map(\.data) + [bytes] where !payload.isEmpty {
                let seen = viaJSON.observe(json: payload)
                let object = MiniJSON.parseObject(payload)
                if let object { viaObject.observe(object: object) }
                try fuzzCheck(seen.valid == (object != nil), name, "observe(json:) and parseObject disagree on validity (\(dialect))")
                try fuzzCheck(viaJSON.usage == viaObject.usage && viaJSON.model == viaObject.model, name,
                              "observe(json:) and parseObject + observe(object:) disagree (\(dialect))")
                if let object {
                    var choices: Int? = nil
                    if case .array(let a)? = object["choices"] { choices = a.count }
                    var usageObject = false
                    if case .object? = object["usage"] { usageObject = true }
                    try fuzzCheck(seen.choicesCount == choices && seen.hasUsageObject == usageObject, name,
                                  "observe(json:) misreads choices or usage (\(dialect))")
                }
            }
        }
    }

    static func checkUsage(_ usage: Usage?, _ dialect: UsageDialect) throws(FuzzOracleFailure) {
        guard let u = usage else { return }
        try fuzzCheck(u.promptTokens >= 0 && u.completionTokens >= 0 && u.cachedTokens >= 0 && u.cacheWriteTokens >= 0,
                      name, "negative usage \(u) (\(dialect))")
        try fuzzCheck(u.cachedTokens <= u.promptTokens, name, "cached > prompt tokens: \(u) (\(dialect))")
        try fuzzCheck(u.cachedTokens + u.cacheWriteTokens <= u.promptTokens, name, "cached + cache-write > prompt tokens: \(u) (\(dialect))")
        // What the gateway settles against limits; must not overflow.
        let (_, overflow) = u.promptTokens.addingReportingOverflow(u.completionTokens)
        try fuzzCheck(!overflow, name, "prompt + completion tokens overflow: \(u)")
    }
}
