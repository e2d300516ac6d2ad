import Foundation
import GatehouseCore
import Testing

/// Model prices, name resolution and cost arithmetic in integer micro-dollars.
@Suite("Pricing table")
struct PricingTableTests {
    static let shipped = PricingTable.shipped

    static func table(_ json: String) throws -> PricingTable { try PricingTable.parse(Data(json.utf8)) }

    // MARK: Cost arithmetic

    @Test func gpt4oMiniWithCachedInput() {
        // 0.8M uncached × $0.15 + 0.2M cached × $0.075 + 0.5M output × $0.60 per 1M tokens
        // = $0.12 + $0.015 + $0.30 = $0.435 = 435,000 micro-dollars.
        let usage = Usage(promptTokens: 1_000_000, completionTokens: 500_000, cachedTokens: 200_000)
        #expect(Self.shipped.costMicros(model: "gpt-4o-mini", usage: usage) == 435_000)
        #expect(Self.shipped.costMicros(model: "gpt-4o-mini-2024-07-18", usage: usage) == 435_000)
    }

    struct CostCase: Sendable, CustomTestStringConvertible {
        var model: String
        var usage: Usage
        var micros: Int64
        init(_ model: String, prompt: Int, completion: Int, cached: Int, write: Int, micros: Int64) {
            self.model = model
            self.usage = Usage(promptTokens: prompt, completionTokens: completion, cachedTokens: cached, cacheWriteTokens: write)
            self.micros = micros
        }
        var testDescription: String { "\(model) \(usage) → \(micros) µ$" }
    }

    static let costCases: [CostCase] = [
        CostCase("gpt-4o", prompt: 1_000, completion: 500, cached: 0, write: 0, micros: 2_500 + 5_000),
        CostCase("gpt-4o-2024-08-06", prompt: 10_000, completion: 1_000, cached: 4_000, write: 0, micros: 15_000 + 5_000 + 10_000),
        CostCase("gpt-5", prompt: 1_000_000, completion: 1_000_000, cached: 0, write: 0, micros: 1_250_000 + 10_000_000),
        CostCase("gpt-4.1-nano", prompt: 2_000_000, completion: 0, cached: 1_000_000, write: 0, micros: 100_000 + 25_000),
        CostCase("o1", prompt: 100, completion: 100, cached: 0, write: 0, micros: 1_500 + 6_000),
        CostCase("gpt-4", prompt: 1_000, completion: 1_000, cached: 0, write: 0, micros: 30_000 + 60_000),
        // No cached price listed: cached tokens are billed at the input price.
        CostCase("gpt-4-turbo", prompt: 1_000, completion: 0, cached: 500, write: 0, micros: 10_000),
        CostCase("text-embedding-3-small", prompt: 1_000_000, completion: 0, cached: 0, write: 0, micros: 20_000),
        CostCase("text-embedding-3-large", prompt: 1_000, completion: 0, cached: 0, write: 0, micros: 130),
        // Anthropic: 50 input + 1,000 cache write + 2,000 cache read, 120 output.
        CostCase("claude-3-5-sonnet-20241022", prompt: 3_050, completion: 120, cached: 2_000, write: 1_000, micros: 150 + 3_750 + 600 + 1_800),
        CostCase("claude-opus-4-1", prompt: 1_000_000, completion: 0, cached: 0, write: 1_000_000, micros: 18_750_000),
        CostCase("claude-opus-4-1-20250805", prompt: 1_000_000, completion: 0, cached: 1_000_000, write: 0, micros: 1_500_000),
        CostCase("claude-3-5-haiku-latest", prompt: 1_100_000, completion: 1_000_000, cached: 100_000, write: 0, micros: 800_000 + 8_000 + 4_000_000),
        CostCase("claude-haiku-4-5", prompt: 3_000_000, completion: 0, cached: 1_000_000, write: 1_000_000, micros: 1_000_000 + 100_000 + 1_250_000),
    ]

    @Test(arguments: costCases)
    func costIsExact(_ c: CostCase) {
        #expect(Self.shipped.costMicros(model: c.model, usage: c.usage) == c.micros)
    }

    @Test func anthropicCacheWriteFallsBackToTheInputPriceWhenNotListed() throws {
        let table = try Self.table(#"{"models": {"m": {"input": 2, "output": 4}}}"#)
        #expect(table.costMicros(model: "m", usage: Usage(promptTokens: 30, completionTokens: 1, cachedTokens: 10, cacheWriteTokens: 10)) == 64)  // 30 × 2 + 1 × 4
    }

    @Test func costIsRoundedOnceAtTheEnd() {
        // 3 uncached × 0.15 + 4 cached × 0.075 = 0.45 + 0.30 = 0.75 µ$ → 1 (rounding each part would give 0).
        #expect(Self.shipped.costMicros(model: "gpt-4o-mini", usage: Usage(promptTokens: 7, cachedTokens: 4)) == 1)
        #expect(Self.shipped.costMicros(model: "gpt-4o-mini", usage: Usage(promptTokens: 2)) == 0)
        #expect(Self.shipped.costMicros(model: "gpt-4o-mini", usage: Usage()) == 0)
    }

    @Test func largeCountsStayExact() {
        // 10 billion tokens of claude-3-opus output: 10^10 × 75 µ$ = 750,000 USD.
        #expect(Self.shipped.costMicros(model: "claude-3-opus", usage: Usage(completionTokens: 10_000_000_000)) == 750_000_000_000)
    }

    /// An out-of-range cost must not trap the gateway (`Int64(Double)` crashes when the value
    /// does not fit). Upstream-reported counts reach 9e15 (MiniJSON's limit); an operator price
    /// of a few thousand USD per 1M tokens (a units typo) is enough to overflow.
    @Test func outOfRangeCostDoesNotCrash() async {
        await #expect(processExitsWith: .success) {
            let table = PricingTable(models: ["m": .init(input: 5_000, output: 5_000)])
            _ = table.costMicros(model: "m", usage: Usage(promptTokens: 8_000_000_000_000_000, completionTokens: 8_000_000_000_000_000))
        }
    }

    // MARK: Name resolution

    @Test(arguments: [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("o1-2024-12-17", "o1"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
    ])
    func datedNamesResolveToTheirBaseModel(model: String, base: String) throws {
        let expected = try #require(Self.shipped.models[base])
        #expect(Self.shipped.price(for: model) == expected)
    }

    @Test(arguments: [
        "gpt-4o-audio-preview", "gpt-4o-audio-preview-2024-12-17", "gpt-4o-mini-tts", "gpt-4o-mini-transcribe",
        "gpt-4o-realtime-preview", "gpt-4o-realtime-preview-2024-12-17", "gpt-4o-mini-search-preview",
        "gpt-4o-transcribe", "chatgpt-4o-latest", "gpt-4o-", "gpt-4o-2024", "gpt-4o-latest-2024-08-06",
        "gpt-4o-20240806x", "GPT-4O", "gpt-4o ", " gpt-4o", "gpt-5-chat-latest-2025", "claude-3-5-sonnet-v2@20241022",
    ])
    func otherVariantsDoNotResolveToABaseModel(model: String) {
        #expect(Self.shipped.price(for: model) == nil, "\(model) must not be priced as another model")
        #expect(Self.shipped.costMicros(model: model, usage: Usage(promptTokens: 1_000, completionTokens: 1_000)) == nil)
    }

    /// Only well-formed dates (`YYYYMMDD` or `YYYY-MM-DD`) count as a version suffix.
    @Test(arguments: ["gpt-4o-20240806--", "gpt-4o--20240806", "gpt-4o-2-02408-06", "gpt-4o-202-40806-"])
    func malformedDateSuffixesDoNotResolve(model: String) {
        #expect(Self.shipped.price(for: model) == nil, "\(model) is not a dated gpt-4o")
    }

    /// OpenAI answers requests for `gpt-4` and `gpt-3.5-turbo` with snapshot names that carry a
    /// four-digit (MMDD) suffix; the gateway records the model the response names, so without
    /// resolving these the shipped `gpt-4` / `gpt-3.5-turbo` prices are never applied.
    @Test(arguments: [("gpt-4-0613", "gpt-4"), ("gpt-3.5-turbo-0125", "gpt-3.5-turbo")])
    func openAIFourDigitSnapshotNamesResolve(model: String, base: String) throws {
        let expected = try #require(Self.shipped.models[base])
        #expect(Self.shipped.price(for: model) == expected)
    }

    @Test func unknownModelHasNoCost() {
        let usage = Usage(promptTokens: 100, completionTokens: 100)
        #expect(Self.shipped.costMicros(model: "llama-3.1-70b-instruct", usage: usage) == nil)
        #expect(Self.shipped.costMicros(model: "", usage: usage) == nil)
        #expect(Self.shipped.costMicros(model: nil, usage: usage) == nil)
        #expect(Self.shipped.costMicros(model: "gpt", usage: usage) == nil)
        #expect(PricingTable(models: [:]).costMicros(model: "gpt-4o", usage: usage) == nil)
    }

    @Test func longestMatchingBaseNameWins() throws {
        let table = try Self.table(#"{"models": {"a": {"input": 1, "output": 1}, "a-b": {"input": 2, "output": 2}}}"#)
        #expect(table.price(for: "a-b-20250101")?.input == 2)
        #expect(table.price(for: "a-20250101")?.input == 1)
        #expect(table.price(for: "a-b-c-20250101") == nil)
    }

    // MARK: Parsing

    @Test func parseReadsAllFields() throws {
        let table = try Self.table(#"{"models": {"m": {"input": 1.5, "output": 2, "cached_input": 0.5, "cache_write": 1.75}, "free": {"input": 0, "output": 0}}}"#)
        #expect(table.models["m"] == PricingTable.Price(input: 1.5, output: 2, cachedInput: 0.5, cacheWrite: 1.75))
        #expect(table.models["free"] == PricingTable.Price(input: 0, output: 0))
        #expect(table.costMicros(model: "free", usage: Usage(promptTokens: 10, completionTokens: 10)) == 0)
    }

    @Test func parseAcceptsAnEmptyTable() throws {
        #expect(try Self.table(#"{"models": {}}"#).models.isEmpty)
    }

    @Test(arguments: [
        #"{"models": {"m": {"input": -1, "output": 1}}}"#,
        #"{"models": {"m": {"input": 1, "output": -0.01}}}"#,
        #"{"models": {"m": {"input": 1, "output": 1, "cached_input": -1}}}"#,
        #"{"models": {"m": {"input": 1, "output": 1, "cache_write": -5}}}"#,
        #"{"models": {"m": {"input": 1e400, "output": 1}}}"#,
        #"{"models": {"m": {"input": 1}}}"#,
        #"{"models": {"m": {"output": 1}}}"#,
        #"{"models": {"m": {"input": "1", "output": 1}}}"#,
        #"{"models": {"m": {"input": null, "output": 1}}}"#,
        #"{"models": {"m": [1, 2]}}"#,
        #"{"models": []}"#,
        #"{"models": null}"#,
        #"{"model": {"m": {"input": 1, "output": 1}}}"#,
        #"{}"#,
        #"[]"#,
        #"{"models": {"m": {"input": 1, "output": 1}}"#,
        "",
        "not json",
    ])
    func parseRejectsInvalidFiles(json: String) {
        #expect(throws: PricingTable.LoadError.self) { try Self.table(json) }
    }

    // MARK: Overrides

    @Test func mergingOverridesWin() throws {
        let overrides = try Self.table("""
            {"models": {"gpt-4o": {"input": 1, "output": 2}, "my-local-model": {"input": 0.1, "output": 0.2},
                        "claude-3-5-sonnet-20241022": {"input": 9, "output": 9}}}
            """)
        let merged = Self.shipped.merging(overrides)
        #expect(merged.models["gpt-4o"] == PricingTable.Price(input: 1, output: 2))
        #expect(merged.price(for: "gpt-4o-2024-08-06") == PricingTable.Price(input: 1, output: 2))
        #expect(merged.models["my-local-model"] == PricingTable.Price(input: 0.1, output: 0.2))
        #expect(merged.models["gpt-4o-mini"] == Self.shipped.models["gpt-4o-mini"], "entries not overridden are kept")
        // An exact override beats the resolution of a dated name to its base.
        #expect(merged.price(for: "claude-3-5-sonnet-20241022")?.input == 9)
        #expect(merged.price(for: "claude-3-5-sonnet-20240620") == Self.shipped.models["claude-3-5-sonnet"])
        #expect(merged.models.count == Self.shipped.models.count + 2)
        #expect(merged.costMicros(model: "my-local-model", usage: Usage(promptTokens: 1_000_000, completionTokens: 1_000_000)) == 300_000)
        // The receiver is unchanged.
        #expect(Self.shipped.models["gpt-4o"]?.input == 2.5)
    }

    // MARK: Shipped table

    @Test func shippedTableParsesAndEveryEntryHasInputAndOutputPrices() throws {
        let table = try PricingTable.parse(Data(PricingTable.shippedJSON.utf8))
        #expect(table == PricingTable.shipped)
        #expect(table.models.count >= 30)
        // Check the raw JSON too: `input` and `output` present in every entry, not defaulted.
        let raw = try #require(try JSONSerialization.jsonObject(with: Data(PricingTable.shippedJSON.utf8)) as? [String: Any])
        let models = try #require(raw["models"] as? [String: [String: Any]])
        #expect(models.count == table.models.count)
        for (name, entry) in models {
            #expect(entry["input"] is NSNumber, "\(name) has no input price")
            #expect(entry["output"] is NSNumber, "\(name) has no output price")
            #expect(Set(entry.keys).isSubset(of: ["input", "output", "cached_input", "cache_write", "max_output_tokens"]), "\(name) has unknown fields")
        }
        for (name, price) in table.models {
            #expect(price.input > 0, "\(name)")
            #expect(price.output >= 0, "\(name)")
            if !name.hasPrefix("text-embedding") { #expect(price.output > price.input, "\(name): output costs more than input") }
            if let cached = price.cachedInput { #expect(cached < price.input, "\(name): cached input is cheaper") }
            if let write = price.cacheWrite { #expect(write > price.input, "\(name): a cache write costs more than input") }
            if name.hasPrefix("claude") { #expect(price.cachedInput != nil && price.cacheWrite != nil, "\(name): Anthropic cache prices") }
            #expect(Self.shipped.price(for: name) == price, "\(name) resolves to itself")
        }
    }
}
