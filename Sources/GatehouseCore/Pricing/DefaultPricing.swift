import Foundation

extension PricingTable {
    /// List prices shipped with Gatehouse (USD per 1M tokens), as published by OpenAI and
    /// Anthropic. Override or extend them with `gatehouse serve --pricing FILE`.
    public static let shipped: PricingTable = {
        try! PricingTable.parse(Data(shippedJSON.utf8))
    }()

    /// The shipped table as JSON (the same format `--pricing` reads).
    public static let shippedJSON = #"""
    {"models": {
      "gpt-5":                   {"input": 1.25,  "cached_input": 0.125, "output": 10.00, "max_output_tokens": 128000},
      "gpt-5-mini":              {"input": 0.25,  "cached_input": 0.025, "output": 2.00, "max_output_tokens": 128000},
      "gpt-5-nano":              {"input": 0.05,  "cached_input": 0.005, "output": 0.40, "max_output_tokens": 128000},
      "gpt-4.1":                 {"input": 2.00,  "cached_input": 0.50,  "output": 8.00, "max_output_tokens": 32768},
      "gpt-4.1-mini":            {"input": 0.40,  "cached_input": 0.10,  "output": 1.60, "max_output_tokens": 32768},
      "gpt-4.1-nano":            {"input": 0.10,  "cached_input": 0.025, "output": 0.40, "max_output_tokens": 32768},
      "gpt-4o":                  {"input": 2.50,  "cached_input": 1.25,  "output": 10.00, "max_output_tokens": 16384},
      "gpt-4o-mini":             {"input": 0.15,  "cached_input": 0.075, "output": 0.60, "max_output_tokens": 16384},
      "gpt-4-turbo":             {"input": 10.00, "output": 30.00, "max_output_tokens": 4096},
      "gpt-4":                   {"input": 30.00, "output": 60.00, "max_output_tokens": 8192},
      "gpt-3.5-turbo":           {"input": 0.50,  "output": 1.50, "max_output_tokens": 4096},
      "o1":                      {"input": 15.00, "cached_input": 7.50,  "output": 60.00, "max_output_tokens": 100000},
      "o1-mini":                 {"input": 1.10,  "cached_input": 0.55,  "output": 4.40, "max_output_tokens": 65536},
      "o3":                      {"input": 2.00,  "cached_input": 0.50,  "output": 8.00, "max_output_tokens": 100000},
      "o3-mini":                 {"input": 1.10,  "cached_input": 0.55,  "output": 4.40, "max_output_tokens": 100000},
      "o4-mini":                 {"input": 1.10,  "cached_input": 0.275, "output": 4.40, "max_output_tokens": 100000},
      "text-embedding-3-small":  {"input": 0.02,  "output": 0, "max_output_tokens": 0},
      "text-embedding-3-large":  {"input": 0.13,  "output": 0, "max_output_tokens": 0},
      "text-embedding-ada-002":  {"input": 0.10,  "output": 0, "max_output_tokens": 0},
      "claude-opus-4-5":         {"input": 5.00,  "cache_write": 6.25,  "cached_input": 0.50, "output": 25.00, "max_output_tokens": 64000},
      "claude-opus-4-1":         {"input": 15.00, "cache_write": 18.75, "cached_input": 1.50, "output": 75.00, "max_output_tokens": 32000},
      "claude-opus-4":           {"input": 15.00, "cache_write": 18.75, "cached_input": 1.50, "output": 75.00, "max_output_tokens": 32000},
      "claude-sonnet-4-5":       {"input": 3.00,  "cache_write": 3.75,  "cached_input": 0.30, "output": 15.00, "max_output_tokens": 64000},
      "claude-sonnet-4":         {"input": 3.00,  "cache_write": 3.75,  "cached_input": 0.30, "output": 15.00, "max_output_tokens": 64000},
      "claude-haiku-4-5":        {"input": 1.00,  "cache_write": 1.25,  "cached_input": 0.10, "output": 5.00, "max_output_tokens": 64000},
      "claude-3-7-sonnet":       {"input": 3.00,  "cache_write": 3.75,  "cached_input": 0.30, "output": 15.00, "max_output_tokens": 64000},
      "claude-3-5-sonnet":       {"input": 3.00,  "cache_write": 3.75,  "cached_input": 0.30, "output": 15.00, "max_output_tokens": 8192},
      "claude-3-5-haiku":        {"input": 0.80,  "cache_write": 1.00,  "cached_input": 0.08, "output": 4.00, "max_output_tokens": 8192},
      "claude-3-opus":           {"input": 15.00, "cache_write": 18.75, "cached_input": 1.50, "output": 75.00, "max_output_tokens": 4096},
      "claude-3-haiku":          {"input": 0.25,  "cache_write": 0.30,  "cached_input": 0.03, "output": 1.25, "max_output_tokens": 4096}
    }}
    """#
}
