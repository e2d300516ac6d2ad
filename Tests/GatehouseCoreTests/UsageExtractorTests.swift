import GatehouseCore
import Testing

/// Usage extraction from OpenAI and Anthropic bodies and streams.
@Suite("Usage extractor")
struct UsageExtractorTests {
    static func body(_ dialect: UsageDialect, _ json: String) -> UsageExtractor {
        var extractor = UsageExtractor(dialect: dialect)
        extractor.observe(json: Array(json.utf8))
        return extractor
    }

    /// Runs an SSE stream through the splitter and feeds every `data:` payload to the extractor,
    /// as the gateway does.
    static func stream(_ dialect: UsageDialect, _ sse: String) -> UsageExtractor {
        var splitter = SSEEventSplitter()
        var extractor = UsageExtractor(dialect: dialect)
        var events = splitter.feed(Array(sse.utf8))
        if let tail = splitter.finish() { events.append(tail) }
        for event in events where !event.data.isEmpty { extractor.observe(json: event.data) }
        return extractor
    }

    static func sse(_ payloads: [(event: String?, data: String)]) -> String {
        payloads.map { ($0.event.map { "event: \($0)\n" } ?? "") + "data: \($0.data)\n\n" }.joined()
    }

    // MARK: OpenAI

    @Test func openAIChatBodyWithCachedTokens() {
        let e = Self.body(.openai, """
            {"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini-2024-07-18",
             "choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],
             "usage":{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,
                      "prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},
                      "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}},
             "system_fingerprint":"fp_1"}
            """)
        #expect(e.usage == Usage(promptTokens: 1200, completionTokens: 300, cachedTokens: 1024, cacheWriteTokens: 0))
        #expect(e.model == "gpt-4o-mini-2024-07-18")
    }

    @Test func openAIChatBodyWithoutDetails() {
        let e = Self.body(.openai, #"{"model":"gpt-4o","usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#)
        #expect(e.usage == Usage(promptTokens: 9, completionTokens: 12))
    }

    @Test func openAICompatibleBodyWithNullDetails() {
        let e = Self.body(.openai, #"{"model":"llama","usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":null}}"#)
        #expect(e.usage == Usage(promptTokens: 9, completionTokens: 12))
    }

    @Test func embeddingsBodyHasNoCompletionTokens() {
        let e = Self.body(.openai, """
            {"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023,-0.0093]}],
             "model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}
            """)
        #expect(e.usage == Usage(promptTokens: 8, completionTokens: 0))
        #expect(e.model == "text-embedding-3-small")
    }

    @Test func responsesAPIBody() {
        let e = Self.body(.openai, """
            {"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1-2025-04-14",
             "output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hi"}]}],
             "usage":{"input_tokens":328,"input_tokens_details":{"cached_tokens":128},
                      "output_tokens":52,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":380}}
            """)
        #expect(e.usage == Usage(promptTokens: 328, completionTokens: 52, cachedTokens: 128))
        #expect(e.model == "gpt-4.1-2025-04-14")
    }

    @Test func responsesAPIStreamReadsUsageFromResponseCompleted() {
        let e = Self.stream(.openai, Self.sse([
            ("response.created", #"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-4.1-2025-04-14","output":[],"usage":null}}"#),
            ("response.in_progress", #"{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","status":"in_progress","model":"gpt-4.1-2025-04-14","usage":null}}"#),
            ("response.output_text.delta", #"{"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}"#),
            ("response.output_text.done", #"{"type":"response.output_text.done","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Hi"}"#),
            ("response.completed", #"{"type":"response.completed","sequence_number":4,"response":{"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1-2025-04-14","usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48}}}"#),
        ]))
        #expect(e.usage == Usage(promptTokens: 37, completionTokens: 11))
        #expect(e.model == "gpt-4.1-2025-04-14")
    }

    @Test func openAIChatStreamWithNullUsageUntilTheFinalChunk() {
        let chunk = { (content: String) in
            #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"\#(content)"},"finish_reason":null}],"usage":null}"#
        }
        var extractor = UsageExtractor(dialect: .openai)
        for content in ["Hel", "lo", "!"] {
            extractor.observe(json: Array(chunk(content).utf8))
            #expect(extractor.usage == nil, "usage:null is not usage")
        }
        extractor.observe(json: Array(#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#.utf8))
        extractor.observe(json: Array(#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":3,"total_tokens":22,"prompt_tokens_details":{"cached_tokens":0}}}"#.utf8))
        extractor.observe(json: Array("[DONE]".utf8))
        #expect(extractor.usage == Usage(promptTokens: 19, completionTokens: 3))
        #expect(extractor.model == "gpt-4o-2024-08-06")
    }

    @Test func openAIChatStreamThroughTheSplitter() {
        let e = Self.stream(.openai, Self.sse([
            (nil, #"{"object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}"#),
            (nil, #"{"object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}"#),
            (nil, #"{"object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":2000,"completion_tokens":7,"total_tokens":2007,"prompt_tokens_details":{"cached_tokens":1920}}}"#),
            (nil, "[DONE]"),
        ]))
        #expect(e.usage == Usage(promptTokens: 2000, completionTokens: 7, cachedTokens: 1920))
        #expect(e.model == "gpt-4o-mini-2024-07-18")
    }

    // MARK: Anthropic

    @Test func anthropicBodyWithCacheReadAndWrite() {
        let e = Self.body(.anthropic, """
            {"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022",
             "content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,
             "usage":{"input_tokens":50,"cache_creation_input_tokens":1000,"cache_read_input_tokens":2000,"output_tokens":120}}
            """)
        #expect(e.usage == Usage(promptTokens: 3050, completionTokens: 120, cachedTokens: 2000, cacheWriteTokens: 1000))
        #expect(e.model == "claude-3-5-sonnet-20241022")
    }

    @Test func anthropicBodyWithoutCacheFields() {
        let e = Self.body(.anthropic, #"{"type":"message","model":"claude-3-haiku-20240307","usage":{"input_tokens":12,"output_tokens":6}}"#)
        #expect(e.usage == Usage(promptTokens: 12, completionTokens: 6))
    }

    static let anthropicStart = #"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":200,"output_tokens":1}}}"#

    @Test func anthropicStreamFinalOutputIsTheLastCumulativeDelta() {
        let e = Self.stream(.anthropic, Self.sse([
            ("message_start", Self.anthropicStart),
            ("content_block_start", #"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            ("ping", #"{"type": "ping"}"#),
            ("content_block_delta", #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#),
            ("message_delta", #"{"type":"message_delta","delta":{"stop_reason":null,"stop_sequence":null},"usage":{"output_tokens":5}}"#),
            ("message_delta", #"{"type":"message_delta","delta":{"stop_reason":null,"stop_sequence":null},"usage":{"output_tokens":12}}"#),
            ("content_block_stop", #"{"type":"content_block_stop","index":0}"#),
            ("message_delta", #"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":30}}"#),
            ("message_stop", #"{"type":"message_stop"}"#),
        ]))
        #expect(e.usage == Usage(promptTokens: 325, completionTokens: 30, cachedTokens: 200, cacheWriteTokens: 100))
        #expect(e.model == "claude-sonnet-4-5-20250929", "the model the provider reports, not the requested alias")
    }

    @Test func anthropicDeltaRepeatingCumulativeInputDoesNotDoubleCount() {
        let e = Self.stream(.anthropic, Self.sse([
            ("message_start", Self.anthropicStart),
            ("message_delta", #"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":200,"output_tokens":30}}"#),
        ]))
        #expect(e.usage == Usage(promptTokens: 325, completionTokens: 30, cachedTokens: 200, cacheWriteTokens: 100))
    }

    @Test func anthropicStreamCutBeforeMessageDeltaStillReportsInputTokens() {
        let e = Self.stream(.anthropic, Self.sse([
            ("message_start", Self.anthropicStart),
            ("content_block_start", #"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            ("content_block_delta", #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#),
        ]) + "event: content_block_delta\ndata: {\"type\":\"content_bl")  // cut mid-event
        #expect(e.usage?.promptTokens == 325)
        #expect(e.usage?.cachedTokens == 200)
        #expect(e.usage?.cacheWriteTokens == 100)
        #expect(e.usage?.completionTokens == 1)
        #expect(e.model == "claude-sonnet-4-5-20250929")
    }

    // MARK: Robustness

    @Test(arguments: [
        "", "not json", "{", "[DONE]", "[1,2,3]", "null", "42", "\"usage\"", #"{"usage":5}"#, #"{"usage":[1]}"#,
        #"{"type":"message_delta","usage":{"output_tokens":"#, "\u{FF}\u{FE}{}",
    ])
    func garbageIsIgnored(text: String) {
        for dialect in [UsageDialect.openai, .anthropic] {
            var e = UsageExtractor(dialect: dialect)
            e.observe(json: Array(text.utf8))
            #expect(e.usage == nil)
            #expect(e.model == nil)
        }
    }

    @Test func garbageAfterUsageKeepsTheEarlierUsage() {
        var e = UsageExtractor(dialect: .anthropic)
        e.observe(json: Array(Self.anthropicStart.utf8))
        let before = e.usage
        for junk in ["{", "]]]", #"{"type":"message_delta","usage":{"output_tokens":"#, #"{"usage":"none"}"#] {
            e.observe(json: Array(junk.utf8))
        }
        #expect(e.usage == before)
        #expect(e.model == "claude-sonnet-4-5-20250929")
    }

    @Test func nonIntegerTokenCountsAreNotTrusted() {
        let e = Self.body(.openai, #"{"model":"gpt-4o","usage":{"prompt_tokens":1.5,"completion_tokens":"7","total_tokens":1e300}}"#)
        #expect(e.usage.map { $0.promptTokens >= 0 && $0.completionTokens >= 0 } ?? true)
        #expect(e.usage?.completionTokens != 7, "a string is not a count")
    }

    /// An upstream (any `openai-compatible` base URL) must not be able to report negative usage:
    /// it would make the logged cost negative and offset spend against budgets.
    @Test func negativeTokenCountsAreNotTrusted() {
        let openAI = Self.body(.openai, #"{"model":"gpt-4o","usage":{"prompt_tokens":-1000000,"completion_tokens":-500000,"total_tokens":-1500000,"prompt_tokens_details":{"cached_tokens":-10}}}"#)
        let anthropic = Self.body(.anthropic, #"{"model":"claude-3-5-sonnet-20241022","usage":{"input_tokens":-1000,"cache_creation_input_tokens":-1,"cache_read_input_tokens":-1,"output_tokens":-99}}"#)
        for usage in [openAI.usage, anthropic.usage] {
            if let usage {
                #expect(usage.promptTokens >= 0 && usage.completionTokens >= 0 && usage.cachedTokens >= 0 && usage.cacheWriteTokens >= 0,
                        "negative usage accepted: \(usage)")
                #expect((PricingTable.shipped.costMicros(model: "gpt-4o", usage: usage) ?? 0) >= 0)
            }
        }
    }
    // MARK: Scanning and the parsed tree agree

    /// Payloads whose members repeat, change type or are spelled with escapes: the scan
    /// (`observe(json:)`) must read them exactly as the parsed object (`observe(object:)`) does,
    /// where the last of a repeated member counts.
    @Test(arguments: [
        #"{"usage":{"prompt_tokens":5,"completion_tokens":2},"usage":null,"response":{"usage":{"input_tokens":7,"output_tokens":1},"model":"r"}}"#,
        #"{"usage":null,"usage":{"prompt_tokens":5,"completion_tokens":2},"model":"a","model":1}"#,
        #"{"model":"a","model":"b","usage":{"prompt_tokens":9,"prompt_tokens":3,"completion_tokens":null,"total_tokens":10}}"#,
        #"{"usage":{"prompt_tokens":9,"total_tokens":12,"prompt_tokens_details":null,"input_tokens_details":{"cached_tokens":4}}}"#,
        #"{"usage":{"prompt_tokens":9,"total_tokens":12,"input_tokens_details":{"cached_tokens":4}}}"#,
        #"{"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":40,"cached_tokens":2.5}}}"#,
        #"{"us\u0061ge":{"pr\u006fmpt_tokens":11,"completion_tokens":1e1},"m\u006fdel":"esc"}"#,
        #"{"type":"message_start","message":{"model":"claude","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
        #"{"message":{"usage":{"input_tokens":10}},"message":"x","usage":{"output_tokens":3,"cache_creation_input_tokens":2}}"#,
        #"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1},"choices":[{"delta":{}}]}"#,
        #"{"usage":{"prompt_tokens":-4,"completion_tokens":-1,"total_tokens":-9}}"#,
        #"{"usage":{"prompt_tokens":1,"completion_tokens":2},"extra":[1,2,{"usage":{"prompt_tokens":99}}]}"#,
        #"{"usage":{"prompt_tokens":1,"completion_tokens":2}} trailing"#,
        #"{"usage":{"prompt_tokens":1,"completion_tokens":2},"bad":tru}"#,
    ])
    func scanAgreesWithTheParsedObject(_ payload: String) {
        for dialect in [UsageDialect.openai, .anthropic] {
            var scanned = UsageExtractor(dialect: dialect)
            let seen = scanned.observe(json: Array(payload.utf8))
            var parsed = UsageExtractor(dialect: dialect)
            let object = MiniJSON.parseObject(Array(payload.utf8))
            if let object { parsed.observe(object: object) }
            #expect(seen.valid == (object != nil), "\(dialect): \(payload)")
            #expect(scanned.usage == parsed.usage, "\(dialect): \(payload)")
            #expect(scanned.model == parsed.model, "\(dialect): \(payload)")
        }
    }

    @Test func aRepeatedMemberCountsAsItsLastOccurrence() {
        let e = Self.body(.openai, #"{"usage":{"prompt_tokens":5,"completion_tokens":2},"usage":null,"response":{"usage":{"input_tokens":7,"output_tokens":1},"model":"r"}}"#)
        #expect(e.usage == Usage(promptTokens: 7, completionTokens: 1))
        #expect(e.model == "r")
        var x = UsageExtractor(dialect: .openai)
        let seen = x.observe(json: Array(#"{"choices":[],"usage":{"prompt_tokens":1},"choices":[{"delta":{}}]}"#.utf8))
        #expect(seen.choicesCount == 1 && seen.hasUsageObject)
        #expect(!x.observe(json: Array(#"{"usage":{"prompt_tokens":1}} x"#.utf8)).valid)
    }
}
