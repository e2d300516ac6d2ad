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

    /// Feeds a complete JSON document (a non-streaming body or one SSE `data:` payload).
    public mutating func observe(json bytes: some Collection<UInt8>) {
        guard let object = MiniJSON.parseObject(bytes, keeping: Self.topLevelKeySet) else { return }
        observe(object: object)
    }

    /// The top-level members ``observe(object:)`` reads, in either dialect.
    public static let topLevelKeys: Set<String> = ["model", "usage", "response", "message"]
    static let topLevelKeySet = MiniJSON.KeySet(topLevelKeys)

    public mutating func observe(object: [String: MiniJSON.Value]) {
        switch dialect {
        case .openai:
            if case .string(let m)? = object["model"] { model = m }
            // Chat/embeddings put usage at the top; the Responses API streams it inside `response`.
            if case .object(let u)? = object["usage"] {
                usage = Self.openAIUsage(u)
            } else if case .object(let r)? = object["response"], case .object(let u)? = r["usage"] {
                usage = Self.openAIUsage(u)
                if case .string(let m)? = r["model"] { model = m }
            }
        case .anthropic:
            if case .string(let m)? = object["model"] { model = m }
            if case .object(let message)? = object["message"] {  // message_start
                if case .string(let m)? = message["model"] { model = m }
                if case .object(let u)? = message["usage"] { merge(anthropic: u) }
            }
            if case .object(let u)? = object["usage"] { merge(anthropic: u) }  // body or message_delta
        }
    }

    static func openAIUsage(_ u: [String: MiniJSON.Value]) -> Usage {
        // Counts from the upstream are clamped to be non-negative: usage can never refund spend.
        let prompt = max(0, u["prompt_tokens"]?.int ?? u["input_tokens"]?.int ?? 0)
        var completion = max(0, u["completion_tokens"]?.int ?? u["output_tokens"]?.int ?? 0)
        if completion == 0, u["completion_tokens"] == nil, u["output_tokens"] == nil, let total = u["total_tokens"]?.int {
            completion = max(0, total - prompt)
        }
        var cached = 0
        if case .object(let d)? = u["prompt_tokens_details"] ?? u["input_tokens_details"] {
            cached = min(prompt, max(0, d["cached_tokens"]?.int ?? 0))
        }
        return Usage(promptTokens: prompt, completionTokens: completion, cachedTokens: cached)
    }

    /// Anthropic reports input once (`message_start`) and cumulative output in `message_delta`;
    /// a field present in a later event replaces the earlier value.
    mutating func merge(anthropic u: [String: MiniJSON.Value]) {
        var current = usage ?? Usage()
        let input = u["input_tokens"]?.int.map { max(0, $0) }
        let cacheWrite = u["cache_creation_input_tokens"]?.int.map { max(0, $0) }
        let cacheRead = u["cache_read_input_tokens"]?.int.map { max(0, $0) }
        if input != nil || cacheWrite != nil || cacheRead != nil {
            let plainInput = input ?? (current.promptTokens - current.cachedTokens - current.cacheWriteTokens)
            let write = cacheWrite ?? current.cacheWriteTokens
            let read = cacheRead ?? current.cachedTokens
            current.promptTokens = plainInput + write + read
            current.cacheWriteTokens = write
            current.cachedTokens = read
        }
        if let output = u["output_tokens"]?.int { current.completionTokens = max(0, output) }
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
