import Foundation

/// List prices per model, in US dollars per million tokens, and the cost arithmetic.
///
/// Costs are integer micro-dollars. One token at a price of `p` USD per million tokens costs
/// exactly `p` micro-dollars, so a cost is Σ tokens × price, rounded once at the end.
/// An unknown model has no cost (`nil`), never a guess.
public struct PricingTable: Sendable, Equatable {
    public struct Price: Sendable, Equatable, Codable {
        /// USD per 1M input tokens.
        public var input: Double
        /// USD per 1M output tokens.
        public var output: Double
        /// USD per 1M cached input tokens (read from the prompt cache); defaults to `input`.
        public var cachedInput: Double?
        /// USD per 1M tokens written to the prompt cache (Anthropic); defaults to `input`.
        public var cacheWrite: Double?
        /// The most output tokens one call can produce: the worst case reserved against limits
        /// when a request sets no `max_tokens`.
        public var maxOutputTokens: Int?

        public init(input: Double, output: Double, cachedInput: Double? = nil, cacheWrite: Double? = nil, maxOutputTokens: Int? = nil) {
            self.input = input
            self.output = output
            self.cachedInput = cachedInput
            self.cacheWrite = cacheWrite
            self.maxOutputTokens = maxOutputTokens
        }

        enum CodingKeys: String, CodingKey {
            case input, output
            case cachedInput = "cached_input"
            case cacheWrite = "cache_write"
            case maxOutputTokens = "max_output_tokens"
        }
    }

    public var models: [String: Price]

    public init(models: [String: Price]) {
        self.models = models
    }

    public enum LoadError: Error, CustomStringConvertible {
        case invalid(String)
        public var description: String {
            switch self { case .invalid(let why): "pricing table is not valid: \(why)" }
        }
    }

    /// Parses `{"models": {"<model>": {"input": …, "output": …, "cached_input"?: …, "cache_write"?: …}}}`.
    public static func parse(_ data: Data) throws -> PricingTable {
        struct File: Decodable { var models: [String: Price] }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: data) } catch {
            throw LoadError.invalid("expected {\"models\": {\"<model>\": {\"input\": <usd per 1M>, \"output\": <usd per 1M>}}}")
        }
        for (model, p) in file.models {
            for v in [p.input, p.output, p.cachedInput ?? 0, p.cacheWrite ?? 0] where !(v.isFinite && v >= 0) {
                throw LoadError.invalid("model \(model.prefix(100)) has a negative or non-finite price")
            }
        }
        return PricingTable(models: file.models)
    }

    /// The shipped table, overlaid with `overrides` (their entries win).
    public func merging(_ overrides: PricingTable) -> PricingTable {
        PricingTable(models: models.merging(overrides.models, uniquingKeysWith: { _, new in new }))
    }

    /// The price of `model`: an exact match, else the longest listed name that the model
    /// extends by a dated or `-latest` suffix (`gpt-4o-2024-08-06` → `gpt-4o`,
    /// `claude-3-5-sonnet-20241022` → `claude-3-5-sonnet`).
    public func price(for model: String) -> Price? {
        if let p = models[model] { return p }
        // The longest priced name that the model extends with a version suffix: try the model
        // cut at each `-`, from the right (one lookup per dash, not a scan of the table).
        // The suffix is checked first (bytes, no allocation): a dictionary lookup needs a new
        // String, and only a cut before a version suffix can match.
        let utf8 = model.utf8
        var end = utf8.endIndex
        while let dash = utf8[..<end].lastIndex(of: UInt8(ascii: "-")) {
            if Self.isVersionSuffix(model[utf8.index(after: dash)...]), let price = models[String(model[..<dash])] {
                return price
            }
            end = dash
        }
        return nil
    }

    /// `latest`, a date `YYYY-MM-DD` or `YYYYMMDD`, or an OpenAI snapshot `MMDD` (`gpt-4-0613`).
    static func isVersionSuffix(_ s: Substring) -> Bool {
        // Bytes, not Characters: this runs for every priced response.
        switch s.utf8.count {
        case 4, 6, 8, 10: break
        default: return false
        }
        let b = Array(s.utf8)
        func digits(_ from: Int, _ n: Int) -> Bool {
            from + n <= b.count && b[from..<from + n].allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        }
        func number(_ from: Int) -> Int { Int(b[from] - UInt8(ascii: "0")) * 10 + Int(b[from + 1] - UInt8(ascii: "0")) }
        switch b.count {
        case 6: return s == "latest"
        case 8: return digits(0, 8)
        // MMDD: a real month and day, so `gpt-4o-2024` is not a snapshot of gpt-4o.
        case 4: return digits(0, 4) && (1...12).contains(number(0)) && (1...31).contains(number(2))
        case 10:
            return digits(0, 4) && b[4] == UInt8(ascii: "-") && digits(5, 2) && b[7] == UInt8(ascii: "-") && digits(8, 2)
        default: return false
        }
    }

    /// Cost in micro-dollars, or `nil` for an unknown model.
    public func costMicros(model: String?, usage: Usage) -> Int64? {
        guard let model, let p = price(for: model) else { return nil }
        let uncachedInput = max(0, usage.promptTokens - usage.cachedTokens - usage.cacheWriteTokens)
        let micros =
            Double(uncachedInput) * p.input
            + Double(usage.cachedTokens) * (p.cachedInput ?? p.input)
            + Double(usage.cacheWriteTokens) * (p.cacheWrite ?? p.input)
            + Double(usage.completionTokens) * p.output
        // An absurd product (a units typo in --pricing, an upstream reporting 9e15 tokens) is
        // not a cost anyone can be charged: report it as unknown rather than trap.
        guard micros.isFinite, micros >= 0, micros < 9.0e18 else { return nil }
        return Int64(micros.rounded(.toNearestOrAwayFromZero))
    }
}

extension PricingTable {
    /// The worst-case usage of a request, for reservations: the prompt estimated from its size
    /// (about four bytes per token) plus `max_tokens`, or the model's output limit when the
    /// request sets none (4096 for a model the table does not list).
    public func worstCase(model: String?, bodyBytes: Int, maxTokens: Int?) -> (tokens: Int, costMicros: Int64?) {
        let prompt = (bodyBytes + 3) / 4
        let output = maxTokens ?? model.flatMap { price(for: $0)?.maxOutputTokens } ?? 4096
        let usage = Usage(promptTokens: prompt, completionTokens: max(0, output))
        return (prompt + max(0, output), costMicros(model: model, usage: usage))
    }
}
