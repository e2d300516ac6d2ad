/// Token usage of one call, normalised across providers.
public struct Usage: Sendable, Equatable {
    /// All input tokens, including cached ones (OpenAI `prompt_tokens`; Anthropic
    /// `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`).
    public var promptTokens: Int
    public var completionTokens: Int
    /// Input tokens served from the provider's prompt cache (billed at the cached price).
    public var cachedTokens: Int
    /// Input tokens written to the prompt cache (Anthropic; billed at the cache-write price).
    public var cacheWriteTokens: Int

    public init(promptTokens: Int = 0, completionTokens: Int = 0, cachedTokens: Int = 0, cacheWriteTokens: Int = 0) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
        self.cacheWriteTokens = cacheWriteTokens
    }
}

/// The API dialect a response is in, for usage parsing.
public enum UsageDialect: Sendable {
    case openai
    case anthropic
}

/// Reads usage from provider responses: whole JSON bodies and, for streams, SSE event
/// payloads one at a time (see ``SSEEventSplitter``).
///
/// Values only ever grow or are replaced by later events, so feeding the events of a stream
/// in order gives the final usage even if the stream is cut short.
public struct UsageExtractor: Sendable {
    public let dialect: UsageDialect
    public private(set) var usage: Usage?
    /// The model the provider says it used (it may differ from the requested alias).
    public private(set) var model: String?

    public init(dialect: UsageDialect) {
        self.dialect = dialect
    }

    /// Feeds a complete JSON document (a non-streaming body or one SSE `data:` payload). It is
    /// scanned once without building it (``MiniJSON/scanObject(_:_:)-(UnsafeBufferPointer<UInt8>,_)``):
    /// only the members read below become values. The answer describes the payload, for the
    /// gateway's stream handling.
    @discardableResult
    public mutating func observe(json bytes: some Collection<UInt8>) -> Observed {
        var seen = Observed()
        let dialect = self.dialect
        let valid = MiniJSON.scanObject(bytes) { key, value in
            if key.is("model") {
                seen.model = value.string()
            } else if key.is("usage") {
                seen.usage = UsageFields.read(&value)
            } else if key.is("choices") {
                seen.choicesCount = value.arrayCount()
            } else if dialect == .openai ? key.is("response") : key.is("message") {
                seen.nested = Observed.Nested.read(&value)
            }
        }
        guard valid else { return Observed() }
        seen.valid = true
        apply(seen)
        return seen
    }

    /// Reads usage and the model from an already parsed document: the same answer as
    /// ``observe(json:)`` for the same bytes (the fuzz oracle checks that), from a tree.
    public mutating func observe(object: [String: MiniJSON.Value]) {
        var seen = Observed(valid: true)
        seen.model = object["model"]?.string
        seen.usage = object["usage"].flatMap(UsageFields.init(value:))
        if case .array(let choices)? = object["choices"] { seen.choicesCount = choices.count }
        if case .object(let nested)? = object[dialect == .openai ? "response" : "message"] {
            seen.nested = Observed.Nested(model: nested["model"]?.string, usage: nested["usage"].flatMap(UsageFields.init(value:)))
        }
        apply(seen)
    }

    /// What one payload holds that the extractor reads. For a repeated member the last one
    /// counts, as in a parsed object.
    public struct Observed: Sendable {
        /// The payload is one valid JSON object (otherwise nothing else is set).
        public var valid = false
        /// `model`, when it is a string.
        var model: String?
        /// `usage`, when it is an object.
        var usage: UsageFields?
        /// The number of `choices`, when it is an array.
        public var choicesCount: Int?
        /// OpenAI's `response` (Responses API stream events) or Anthropic's `message`
        /// (`message_start`), when it is an object.
        var nested: Nested?

        /// Whether `usage` is an object.
        public var hasUsageObject: Bool { usage != nil }

        struct Nested: Sendable {
            var model: String?
            var usage: UsageFields?

            static func read(_ value: inout MiniJSON.Scanner) -> Nested? {
                var nested = Nested()
                let isObject = value.object { key, value in
                    if key.is("model") {
                        nested.model = value.string()
                    } else if key.is("usage") {
                        nested.usage = UsageFields.read(&value)
                    }
                }
                return isObject ? nested : nil
            }
        }
    }

    /// The members of a usage object read by either dialect (`nil`: absent or not a whole number).
    struct UsageFields: Sendable {
        var promptTokens: Int?
        var inputTokens: Int?
        var completionTokens: Int?
        var outputTokens: Int?
        var totalTokens: Int?
        /// `completion_tokens` or `output_tokens` is there at all (whatever its value).
        var completionPresent = false
        var cacheCreationInputTokens: Int?
        var cacheReadInputTokens: Int?
        /// `prompt_tokens_details`, else `input_tokens_details`, when present at all: its
        /// `cached_tokens` if it is an object (`.some(nil)` when that is not a whole number).
        var details: Details = .absent
        var inputDetails: Details = .absent

        enum Details: Sendable {
            case absent
            case notObject
            case object(cachedTokens: Int?)
        }

        static func read(_ value: inout MiniJSON.Scanner) -> UsageFields? {
            var fields = UsageFields()
            var completionSeen = false
            var outputSeen = false
            let isObject = value.object { key, value in
                if key.is("prompt_tokens") {
                    fields.promptTokens = value.int()
                } else if key.is("completion_tokens") {
                    completionSeen = true
                    fields.completionTokens = value.int()
                } else if key.is("total_tokens") {
                    fields.totalTokens = value.int()
                } else if key.is("input_tokens") {
                    fields.inputTokens = value.int()
                } else if key.is("output_tokens") {
                    outputSeen = true
                    fields.outputTokens = value.int()
                } else if key.is("prompt_tokens_details") {
                    fields.details = Self.details(&value)
                } else if key.is("input_tokens_details") {
                    fields.inputDetails = Self.details(&value)
                } else if key.is("cache_creation_input_tokens") {
                    fields.cacheCreationInputTokens = value.int()
                } else if key.is("cache_read_input_tokens") {
                    fields.cacheReadInputTokens = value.int()
                }
            }
            fields.completionPresent = completionSeen || outputSeen
            return isObject ? fields : nil
        }

        private static func details(_ value: inout MiniJSON.Scanner) -> Details {
            var cached: Int? = nil
            let isObject = value.object { key, value in
                if key.is("cached_tokens") { cached = value.int() }
            }
            return isObject ? .object(cachedTokens: cached) : .notObject
        }

        /// The same fields out of a parsed value (`nil` unless it is an object).
        init?(value: MiniJSON.Value) {
            guard case .object(let u) = value else { return nil }
            promptTokens = u["prompt_tokens"]?.int
            inputTokens = u["input_tokens"]?.int
            completionTokens = u["completion_tokens"]?.int
            outputTokens = u["output_tokens"]?.int
            totalTokens = u["total_tokens"]?.int
            completionPresent = u["completion_tokens"] != nil || u["output_tokens"] != nil
            cacheCreationInputTokens = u["cache_creation_input_tokens"]?.int
            cacheReadInputTokens = u["cache_read_input_tokens"]?.int
            func read(_ v: MiniJSON.Value?) -> Details {
                guard let v else { return .absent }
                guard case .object(let d) = v else { return .notObject }
                return .object(cachedTokens: d["cached_tokens"]?.int)
            }
            details = read(u["prompt_tokens_details"])
            inputDetails = read(u["input_tokens_details"])
        }

        init() {}
    }

    private mutating func apply(_ seen: Observed) {
        switch dialect {
        case .openai:
            if let m = seen.model { model = m }
            // Chat/embeddings put usage at the top; the Responses API streams it inside `response`.
            if let u = seen.usage {
                usage = Self.openAIUsage(u)
            } else if let response = seen.nested, let u = response.usage {
                usage = Self.openAIUsage(u)
                if let m = response.model { model = m }
            }
        case .anthropic:
            if let m = seen.model { model = m }
            if let message = seen.nested {  // message_start
                if let m = message.model { model = m }
                if let u = message.usage { merge(anthropic: u) }
            }
            if let u = seen.usage { merge(anthropic: u) }  // body or message_delta
        }
    }

    static func openAIUsage(_ u: UsageFields) -> Usage {
        // Counts from the upstream are clamped to be non-negative: usage can never refund spend.
        let prompt = max(0, u.promptTokens ?? u.inputTokens ?? 0)
        var completion = max(0, u.completionTokens ?? u.outputTokens ?? 0)
        if completion == 0, !u.completionPresent, let total = u.totalTokens {
            completion = max(0, total - prompt)
        }
        var cached = 0
        let details = if case .absent = u.details { u.inputDetails } else { u.details }
        if case .object(let cachedTokens) = details {
            cached = min(prompt, max(0, cachedTokens ?? 0))
        }
        return Usage(promptTokens: prompt, completionTokens: completion, cachedTokens: cached)
    }

    /// Anthropic reports input once (`message_start`) and cumulative output in `message_delta`;
    /// a field present in a later event replaces the earlier value.
    mutating func merge(anthropic u: UsageFields) {
        var current = usage ?? Usage()
        let input = u.inputTokens.map { max(0, $0) }
        let cacheWrite = u.cacheCreationInputTokens.map { max(0, $0) }
        let cacheRead = u.cacheReadInputTokens.map { max(0, $0) }
        if input != nil || cacheWrite != nil || cacheRead != nil {
            let plainInput = input ?? (current.promptTokens - current.cachedTokens - current.cacheWriteTokens)
            let write = cacheWrite ?? current.cacheWriteTokens
            let read = cacheRead ?? current.cachedTokens
            current.promptTokens = plainInput + write + read
            current.cacheWriteTokens = write
            current.cachedTokens = read
        }
        if let output = u.outputTokens { current.completionTokens = max(0, output) }
        usage = current
    }
}

extension UsageExtractor {
    /// `"usage"` followed by `:` and `{` (skipping whitespace): the cheap test run on every
    /// stream event before any parsing, since every OpenAI chunk carries `"usage":null`.
    public static func mentionsUsageObject(_ data: [UInt8]) -> Bool {
        data.withUnsafeBufferPointer { d in
            // "usage" with its quotes: 22 75 73 61 67 65 22. `memchr` finds each `g` (rare in a
            // chunk); the quoted word is checked around it.
            let n = d.count
            var from = 4
            while let g = d.index(of: 0x67, from: from, to: n - 2) {
                let i = g - 4
                if d[i] == 0x22, d[i + 1] == 0x75, d[i + 2] == 0x73, d[i + 3] == 0x61, d[i + 5] == 0x65, d[i + 6] == 0x22 {
                    var j = i + 7
                    while j < n, d[j] == 0x20 || d[j] == 0x0A || d[j] == 0x0D || d[j] == 0x09 { j += 1 }
                    if j < n, d[j] == UInt8(ascii: ":") {
                        j += 1
                        while j < n, d[j] == 0x20 || d[j] == 0x0A || d[j] == 0x0D || d[j] == 0x09 { j += 1 }
                        if j < n, d[j] == UInt8(ascii: "{") { return true }
                    }
                }
                from = g + 1
            }
            return false
        }
    }
}
